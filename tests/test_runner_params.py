"""
Tests for L{bwcd.execution.runners.params} and L{bwcd.execution.runners.types}.
"""

from __future__ import annotations

import copy

from twisted.trial.unittest import SynchronousTestCase

from bwcd.execution.runners.params import (
    maskText,
    secretValues,
    MASKED_VALUE,
    ParameterError,
    ParameterOverrideError,
    jsonSchemaFor,
    maskSecrets,
    mergeSchema,
    splitRunnerAndAction,
    validateParameters,
)
from bwcd.execution.runners.types import (
    LOCAL_SHELL_CMD,
    LOCAL_SHELL_SCRIPT,
    runnerNames,
    runnerParameters,
    runnerTypeDict,
    runnerTypeId,
)

CORE_LOCAL = {
    "cmd": {"type": "string", "required": True, "description": "Arbitrary Linux command."},
    "sudo": {"immutable": True},
}

CORE_LOCAL_SUDO = {
    "cmd": {"type": "string", "required": True},
    "sudo": {"default": True, "immutable": True},
}


def coreLocalSchema():
    return mergeSchema(runnerParameters(LOCAL_SHELL_CMD), CORE_LOCAL, "core.local")


class RunnerTypesTests(SynchronousTestCase):
    """
    The runner type documents.
    """

    def test_names(self):
        """
        Exactly the HTTP runner and the two local shell runners exist,
        listed sorted.
        """
        self.assertEqual(runnerNames(), ["http-request", "local-shell-cmd", "local-shell-script"])

    def test_commonParameters(self):
        """
        Both runners declare the reference's parameters with its types and
        defaults; cmd, cwd and env have no default.
        """
        expected = {
            "cmd": ("string", None),
            "cwd": ("string", None),
            "env": ("object", None),
            "kwarg_op": ("string", "--"),
            "sudo": ("boolean", False),
            "sudo_password": ("string", None),
            "timeout": ("integer", 60),
        }
        for name in (LOCAL_SHELL_CMD, LOCAL_SHELL_SCRIPT):
            params = runnerParameters(name)
            for param, (ptype, default) in expected.items():
                self.assertEqual(params[param]["type"], ptype, (name, param))
                self.assertEqual(params[param].get("default"), default, (name, param))
            self.assertNotIn("default", params["cmd"])
            self.assertIs(params["sudo_password"]["secret"], True)
            self.assertIn("default", params["sudo_password"])

    def test_scriptOnlyParameters(self):
        """
        Only the script runner has debug and content_version.
        """
        script = runnerParameters(LOCAL_SHELL_SCRIPT)
        self.assertEqual(script["debug"]["type"], "boolean")
        self.assertIs(script["debug"]["default"], False)
        self.assertEqual(script["content_version"]["type"], "string")
        cmd = runnerParameters(LOCAL_SHELL_CMD)
        self.assertNotIn("debug", cmd)
        self.assertNotIn("content_version", cmd)

    def test_apiDict(self):
        """
        The API dict carries id, uid and the st2 fields.
        """
        doc = runnerTypeDict(LOCAL_SHELL_CMD)
        self.assertEqual(doc["uid"], "runner_type:local-shell-cmd")
        self.assertEqual(doc["name"], "local-shell-cmd")
        self.assertIs(doc["enabled"], True)
        self.assertEqual(doc["runner_package"], "local_runner")
        self.assertEqual(doc["runner_module"], "local_shell_command_runner")
        self.assertEqual(runnerTypeDict(LOCAL_SHELL_SCRIPT)["runner_module"], "local_shell_script_runner")
        self.assertIsInstance(doc["description"], str)
        self.assertEqual(doc["runner_parameters"], runnerParameters(LOCAL_SHELL_CMD))

    def test_idStable(self):
        """
        Ids are 24 hex digits, the same on every call, distinct per runner.
        """
        first = runnerTypeDict(LOCAL_SHELL_CMD)["id"]
        self.assertRegex(first, "^[0-9a-f]{24}$")
        self.assertEqual(first, runnerTypeId(LOCAL_SHELL_CMD))
        self.assertEqual(first, runnerTypeDict(LOCAL_SHELL_CMD)["id"])
        self.assertNotEqual(first, runnerTypeDict(LOCAL_SHELL_SCRIPT)["id"])

    def test_copies(self):
        """
        Mutating a returned document does not change the next one.
        """
        doc = runnerTypeDict(LOCAL_SHELL_CMD)
        doc["runner_parameters"]["timeout"]["default"] = 1
        runnerParameters(LOCAL_SHELL_CMD)["timeout"]["default"] = 2
        self.assertEqual(runnerTypeDict(LOCAL_SHELL_CMD)["runner_parameters"]["timeout"]["default"], 60)

    def test_unknown(self):
        """
        An unknown runner name is a KeyError.
        """
        self.assertRaises(KeyError, runnerTypeDict, "python-script")


class MergeSchemaTests(SynchronousTestCase):
    """
    L{mergeSchema}.
    """

    def test_coreLocal(self):
        """
        Action attributes are deep-merged over the runner's: core.local's
        cmd stays a string and becomes required; its sudo keeps type and
        default and becomes immutable.
        """
        schema = coreLocalSchema()
        self.assertEqual(schema["cmd"]["type"], "string")
        self.assertIs(schema["cmd"]["required"], True)
        self.assertEqual(schema["cmd"]["description"], "Arbitrary Linux command.")
        self.assertEqual(schema["sudo"], {
            "default": False,
            "description": "The command will be executed with sudo.",
            "type": "boolean",
            "immutable": True,
        })
        self.assertEqual(set(schema), set(runnerParameters(LOCAL_SHELL_CMD)))

    def test_actionOnlyParameters(self):
        """
        Parameters only the action defines are part of the result.
        """
        schema = mergeSchema(runnerParameters(LOCAL_SHELL_SCRIPT), {"name": {"type": "string", "position": 0}}, "p.a")
        self.assertEqual(schema["name"], {"type": "string", "position": 0})
        self.assertIn("timeout", schema)

    def test_overridableAttributes(self):
        """
        default, description, enum, immutable and required may be
        overridden.
        """
        for attribute, value in [
            ("default", 5),
            ("description", "d"),
            ("enum", [1, 2]),
            ("immutable", True),
            ("required", True),
        ]:
            schema = mergeSchema(runnerParameters(LOCAL_SHELL_CMD), {"timeout": {attribute: value}}, "p.a")
            self.assertEqual(schema["timeout"][attribute], value, attribute)
            self.assertEqual(schema["timeout"]["type"], "integer")

    def test_notOverridable(self):
        """
        Other attributes with a different value are rejected with st2's
        message.
        """
        for attribute, value in [("type", "integer"), ("position", 0), ("secret", True)]:
            exc = self.assertRaises(
                ParameterOverrideError,
                mergeSchema,
                runnerParameters(LOCAL_SHELL_CMD),
                {"cmd": {attribute: value}},
                "core.local",
            )
            self.assertEqual(
                str(exc),
                'The attribute "%s" for the runner parameter "cmd" in action "core.local" '
                "cannot be overridden." % (attribute,),
            )
            self.assertIsInstance(exc, ValueError)

    def test_restateSameValue(self):
        """
        Repeating a runner attribute with the same value is not an override.
        """
        schema = mergeSchema(runnerParameters(LOCAL_SHELL_CMD), {"timeout": {"type": "integer"}}, "p.a")
        self.assertEqual(schema["timeout"]["type"], "integer")

    def test_inputsUntouched(self):
        """
        Neither input is modified and the result shares no nested objects.
        """
        runner = runnerParameters(LOCAL_SHELL_CMD)
        action = {"kwarg_op": {"enum": ["--", "-"]}}
        runnerCopy, actionCopy = copy.deepcopy(runner), copy.deepcopy(action)
        schema = mergeSchema(runner, action, "p.a")
        schema["kwarg_op"]["enum"].append("+")
        schema["timeout"]["default"] = 1
        self.assertEqual((runner, action), (runnerCopy, actionCopy))


class ValidateParametersTests(SynchronousTestCase):
    """
    L{validateParameters}.
    """

    def assertParameterError(self, schema, given, message):
        exc = self.assertRaises(ParameterError, validateParameters, schema, given)
        self.assertEqual(str(exc), message)
        self.assertIsInstance(exc, ValueError)

    def test_defaultsFilled(self):
        """
        The result holds the given values plus every default, and only
        parameters without a default stay absent.
        """
        self.assertEqual(
            validateParameters(coreLocalSchema(), {"cmd": "date"}),
            {"cmd": "date", "kwarg_op": "--", "sudo": False, "sudo_password": None, "timeout": 60},
        )

    def test_immutableDefaultWins(self):
        """
        core.local_sudo runs with sudo true without the caller giving it.
        """
        schema = mergeSchema(runnerParameters(LOCAL_SHELL_CMD), CORE_LOCAL_SUDO, "core.local_sudo")
        self.assertIs(validateParameters(schema, {"cmd": "id"})["sudo"], True)

    def test_nullReplacedByDefault(self):
        """
        A given null is replaced by the default, as st2 does.
        """
        self.assertEqual(validateParameters(coreLocalSchema(), {"cmd": "x", "timeout": None})["timeout"], 60)

    def test_errors(self):
        """
        The messages clients see, for each kind of invalid request.
        """
        schema = coreLocalSchema()
        for given, message in [
            ({}, "'cmd' is a required property"),
            ({"cmd": "date", "foo": 1}, "Additional properties are not allowed ('foo' was unexpected)"),
            ({"cmd": "date", "sudo": False}, "Override of immutable parameter(s) ['sudo'] is unsupported."),
            ({"cmd": "date", "sudo": True}, "Override of immutable parameter(s) ['sudo'] is unsupported."),
            ({"cmd": 1}, "1 is not of type 'string'"),
            ({"cmd": None}, "None is not of type 'string'"),
            ({"cmd": "x", "timeout": "a"}, "'a' is not of type 'integer'"),
            ({"cmd": "x", "timeout": True}, "True is not of type 'integer'"),
            ({"cmd": "x", "timeout": 1.5}, "1.5 is not of type 'integer'"),
            ({"cmd": "x", "env": "A=b"}, "'A=b' is not of type 'object', 'null'"),
        ]:
            self.assertParameterError(schema, given, message)

    def test_immutableListsAll(self):
        """
        Every supplied immutable parameter is named, in the order given.
        """
        schema = mergeSchema(
            runnerParameters(LOCAL_SHELL_CMD),
            {"kwarg_op": {"immutable": True}, "sudo": {"immutable": True}},
            "core.echo",
        )
        self.assertParameterError(
            schema,
            {"sudo": False, "cmd": "x", "kwarg_op": "--"},
            "Override of immutable parameter(s) ['sudo', 'kwarg_op'] is unsupported.",
        )

    def test_optionalNull(self):
        """
        Optional parameters without a default (or with a null default)
        accept null.
        """
        result = validateParameters(coreLocalSchema(), {"cmd": "x", "cwd": None, "sudo_password": None})
        self.assertIsNone(result["cwd"])

    def test_requiredWithDefault(self):
        """
        A required parameter with a default is satisfied by the default.
        """
        schema = mergeSchema(runnerParameters(LOCAL_SHELL_CMD), {"cmd": {"required": True, "default": "true"}}, "p.a")
        self.assertEqual(validateParameters(schema, {})["cmd"], "true")

    def test_enum(self):
        """
        An enum added by the action applies.
        """
        schema = mergeSchema(runnerParameters(LOCAL_SHELL_CMD), {"kwarg_op": {"enum": ["--", "-"]}}, "p.a")
        self.assertEqual(validateParameters(schema, {"kwarg_op": "-"})["kwarg_op"], "-")
        self.assertParameterError(schema, {"kwarg_op": "+"}, "'+' is not one of ['--', '-']")

    def test_emptySpecAnyType(self):
        """
        A parameter with an empty spec takes any JSON value, null included
        (it is optional with no default).
        """
        schema = {"x": {}}
        for value in [1, 1.5, "s", True, [1], {"a": 1}, None]:
            self.assertEqual(validateParameters(schema, {"x": value}), {"x": value})

    def test_untypedSpecIsString(self):
        """
        st2 quirk kept on purpose: an optional parameter with a non-empty
        spec but no type only accepts strings (or null).
        """
        schema = {"x": {"description": "no type"}}
        self.assertEqual(validateParameters(schema, {"x": "s"}), {"x": "s"})
        self.assertEqual(validateParameters(schema, {"x": None}), {"x": None})
        self.assertParameterError(schema, {"x": 5}, "5 is not of type 'string', 'null'")

    def test_requiredObjectParameter(self):
        """
        A boolean required on an object-typed parameter is draft-3 style,
        not a list of property names.
        """
        schema = {"data": {"type": "object", "required": True}}
        self.assertEqual(validateParameters(schema, {"data": {"a": 1}}), {"data": {"a": 1}})
        self.assertParameterError(schema, {}, "'data' is a required property")

    def test_nestedDefaults(self):
        """
        Defaults of object properties are filled inside a given object.
        """
        schema = {
            "opts": {
                "type": "object",
                "properties": {"level": {"type": "integer", "default": 3}},
            }
        }
        self.assertEqual(validateParameters(schema, {"opts": {}}), {"opts": {"level": 3}})

    def test_templateDefaultVerbatim(self):
        """
        Jinja defaults are copied as the literal template; rendering is not
        done here.
        """
        schema = {"message": {"type": "string", "required": True}, "cmd": {"type": "string", "default": 'echo "{{message}}"', "immutable": True}}
        self.assertEqual(validateParameters(schema, {"message": "hi"})["cmd"], 'echo "{{message}}"')

    def test_givenUntouched(self):
        """
        The caller's dict is not modified.
        """
        given = {"cmd": "x", "env": {"A": "1"}}
        result = validateParameters(coreLocalSchema(), given)
        result["env"]["B"] = "2"
        self.assertEqual(given, {"cmd": "x", "env": {"A": "1"}})

    def test_noParameters(self):
        """
        An action and runner without parameters accept an empty set.
        """
        self.assertEqual(jsonSchemaFor({}), {})
        self.assertEqual(validateParameters({}, {}), {})


class MaskSecretsTests(SynchronousTestCase):
    """
    L{maskSecrets}.
    """

    def test_topLevel(self):
        """
        Secret values are masked, others kept, absent ones stay absent.
        """
        schema = coreLocalSchema()
        self.assertEqual(
            maskSecrets(schema, {"cmd": "x", "sudo_password": "hunter2"}),
            {"cmd": "x", "sudo_password": MASKED_VALUE},
        )
        self.assertEqual(maskSecrets(schema, {"cmd": "x"}), {"cmd": "x"})
        self.assertEqual(MASKED_VALUE, "********")

    def test_secretInErrorMessageMasked(self):
        """
        maskText hides a secret value quoted in an error message (as
        jsonschema quotes it, also inside an object's repr), and leaves the
        message alone when no secret is present.
        """
        schema = {
            "pin": {"type": "integer", "secret": True},
            "creds": {"type": "object", "properties": {"password": {"type": "string", "secret": True}}},
            "name": {"type": "string"},
        }
        params = {"pin": "hunter2", "creds": {"password": "pw"}, "name": "bob"}
        self.assertEqual(secretValues(schema, params), ["hunter2", "pw"])
        self.assertEqual(maskText("'hunter2' is not of type 'integer'", schema, params), "******** is not of type 'integer'")
        self.assertEqual(maskText("{'password': 'pw'} is not valid", schema, params), "{'password': ********} is not valid")
        self.assertEqual(maskText("'bob' is too short", schema, params), "'bob' is too short")

    def test_nested(self):
        """
        Secrets declared inside object properties and array items are masked.
        """
        schema = {
            "creds": {"type": "object", "properties": {"password": {"type": "string", "secret": True}}},
            "tokens": {"type": "array", "items": {"type": "string", "secret": True}},
        }
        params = {"creds": {"user": "u", "password": "p"}, "tokens": ["a", "b"]}
        self.assertEqual(
            maskSecrets(schema, params),
            {"creds": {"user": "u", "password": MASKED_VALUE}, "tokens": [MASKED_VALUE, MASKED_VALUE]},
        )
        self.assertEqual(params["creds"]["password"], "p")

    def test_unknownParameter(self):
        """
        Parameters missing from the schema are copied unchanged.
        """
        self.assertEqual(maskSecrets({}, {"x": [1]}), {"x": [1]})


class SplitTests(SynchronousTestCase):
    """
    L{splitRunnerAndAction}.
    """

    def test_split(self):
        """
        Runner parameters (including ones the action overrides) go to the
        runner; the action's own ones to the action.
        """
        runner = runnerParameters(LOCAL_SHELL_SCRIPT)
        action = {"name": {"type": "string"}, "timeout": {"default": 5}}
        self.assertEqual(
            splitRunnerAndAction(runner, action, {"name": "n", "timeout": 5, "cwd": "/"}),
            ({"timeout": 5, "cwd": "/"}, {"name": "n"}),
        )

