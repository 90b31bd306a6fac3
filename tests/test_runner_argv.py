"""
Tests for L{bwcd.execution.runners.argv}.
"""

from __future__ import annotations

import shlex

from twisted.trial.unittest import SynchronousTestCase

from bwcd.execution.runners.argv import (
    actionArgv,
    argvToShell,
    namedArgs,
    positionalOrder,
    scriptArgv,
    serializePositional,
    shellCmdArgv,
    sudoArgv,
)

SCRIPT = "/opt/packs/p/actions/run.sh"


class NamedArgsTests(SynchronousTestCase):
    """
    L{namedArgs}.
    """

    def test_values(self):
        """
        Each kind of value, formatted (or skipped) as st2 does.
        """
        for value, expected in [
            ("v1", ["--k=v1"]),
            ("two words", ["--k=two words"]),
            (5, ["--k=5"]),
            (0, ["--k=0"]),
            (1.5, ["--k=1.5"]),
            (True, ["--k"]),
            (False, []),
            (None, []),
            ("", []),
            ({"a": 1}, ["--k={'a': 1}"]),
            (["a", "b"], ["--k=['a', 'b']"]),
        ]:
            self.assertEqual(namedArgs({"k": value}, "--"), expected, repr(value))

    def test_orderAndOperator(self):
        """
        Arguments follow the order of the parameters; the operator is the
        kwarg_op given.
        """
        self.assertEqual(namedArgs({"b": "1", "a": "2"}, "-"), ["-b=1", "-a=2"])


class PositionalTests(SynchronousTestCase):
    """
    L{serializePositional} and L{positionalOrder}.
    """

    def test_serialization(self):
        """
        The per-type serialization table, including falsy values turning
        into empty strings for unlisted types.
        """
        for argType, value, expected in [
            ("string", "s", "s"),
            ("string", None, ""),
            ("string", "", ""),
            ("number", 0, "0"),
            ("number", 1.5, "1.5"),
            ("float", 2.0, "2.0"),
            ("boolean", True, "1"),
            ("boolean", False, "0"),
            ("boolean", None, ""),
            ("array", ["a", 1], "a,1"),
            ("array", [], ""),
            ("list", ["x"], "x"),
            ("object", {"a": 1}, '{"a": 1}'),
            ("object", {}, ""),
            ("null", "anything", ""),
            ("integer", 7, "7"),
            ("integer", 0, ""),
            ("integer", None, ""),
            (None, "untyped", "untyped"),
            (None, None, ""),
        ]:
            self.assertEqual(serializePositional(argType, value), expected, (argType, value))

    def test_order(self):
        """
        Positional parameters are ordered by position value; non-positional
        ones are left out; a duplicated position goes to the later one.
        """
        schema = {
            "c": {"position": 2},
            "a": {"position": 1},
            "named": {"type": "string"},
            "empty": {},
        }
        self.assertEqual(positionalOrder(schema), ["a", "c"])
        self.assertEqual(positionalOrder({"x": {"position": 0}, "y": {"position": 0}}), ["y"])


class ScriptArgvTests(SynchronousTestCase):
    """
    L{scriptArgv}.
    """

    schema = {
        "first": {"type": "string", "position": 0},
        "second": {"type": "string", "position": 1},
        "third": {"type": "integer", "position": 2},
        "flag": {"type": "boolean"},
        "name": {"type": "string"},
    }

    def test_namedBeforePositional(self):
        """
        The script comes first, then named, then positional arguments, each
        as one argv element (no shell quoting).
        """
        argv = scriptArgv(
            SCRIPT,
            self.schema,
            {"first": "v 1", "second": "v2", "third": 3, "flag": True, "name": "it's"},
        )
        self.assertEqual(argv, [SCRIPT, "--flag", "--name=it's", "v 1", "v2", "3"])

    def test_missingPositional(self):
        """
        A missing positional value is an empty argument, as is a falsy
        integer, so later positions keep their place.
        """
        argv = scriptArgv(SCRIPT, self.schema, {"first": "v1", "third": 0})
        self.assertEqual(argv, [SCRIPT, "v1", "", ""])
        argv = scriptArgv(SCRIPT, self.schema, {"first": "v1", "third": 9})
        self.assertEqual(argv, [SCRIPT, "v1", "", "9"])

    def test_noParameters(self):
        """
        An action without parameters runs the bare script.
        """
        self.assertEqual(scriptArgv(SCRIPT, {}, {}), [SCRIPT])

    def test_kwargOp(self):
        """
        The kwarg_op prefixes named arguments.
        """
        self.assertEqual(scriptArgv(SCRIPT, {"k": {}}, {"k": "v"}, "-"), [SCRIPT, "-k=v"])

    def test_cmdReplacesPositional(self):
        """
        With cmd set, it is split like a shell would and used as the
        positional part, and every action parameter (positional ones too)
        is named.
        """
        argv = scriptArgv(
            SCRIPT,
            self.schema,
            {"first": "a", "flag": False, "name": "n"},
            "--",
            cmd="x 'y z'",
        )
        self.assertEqual(argv, [SCRIPT, "--first=a", "--name=n", "x", "y z"])


class CommandArgvTests(SynchronousTestCase):
    """
    L{shellCmdArgv}, L{sudoArgv} and L{argvToShell}.
    """

    def test_shell(self):
        """
        The cmd runner runs its command through /bin/sh -c.
        """
        self.assertEqual(shellCmdArgv("echo hi | wc"), ["/bin/sh", "-c", "echo hi | wc"])

    def test_sudo(self):
        """
        sudo -E -- bash -c <cmd>, with -S when a password is fed on stdin and
        -H -u <user> to run as another user.
        """
        self.assertEqual(sudoArgv("id"), ["sudo", "-E", "--", "bash", "-c", "id"])
        self.assertEqual(sudoArgv("id", password=True), ["sudo", "-S", "-E", "--", "bash", "-c", "id"])
        self.assertEqual(
            sudoArgv("id", user="stanley"),
            ["sudo", "-E", "-H", "-u", "stanley", "--", "bash", "-c", "id"],
        )

    def test_scriptThroughSudo(self):
        """
        A script argv survives being turned into a shell line for sudo.
        """
        argv = [SCRIPT, "--name=it's", "", "a b"]
        line = argvToShell(argv)
        self.assertEqual(shlex.split(line), argv)
        self.assertEqual(sudoArgv(line)[-1], line)


class ActionArgvTests(SynchronousTestCase):
    """
    L{actionArgv}.
    """

    def test_cmd(self):
        """
        A cmd action runs its command through the shell, or through sudo
        when asked (with -S when a password is given).
        """
        self.assertEqual(actionArgv("local-shell-cmd", {"cmd": "date"}, {}, {}), ["/bin/sh", "-c", "date"])
        self.assertEqual(
            actionArgv("local-shell-cmd", {"cmd": "date", "sudo": True, "sudo_password": "pw"}, {}, {}),
            ["sudo", "-S", "-E", "--", "bash", "-c", "date"],
        )
        self.assertEqual(
            actionArgv("local-shell-cmd", {"cmd": "date"}, {}, {}, user="stanley"),
            ["sudo", "-E", "-H", "-u", "stanley", "--", "bash", "-c", "date"],
        )

    def test_script(self):
        """
        A script action gets its arguments with the configured kwarg_op;
        under sudo the script line is shell-quoted for bash -c.
        """
        schema = {"p": {"type": "string", "position": 0}, "n": {"type": "string"}}
        params = {"p": "a b", "n": "v"}
        self.assertEqual(
            actionArgv("local-shell-script", {"kwarg_op": "-"}, schema, params, SCRIPT),
            [SCRIPT, "-n=v", "a b"],
        )
        argv = actionArgv("local-shell-script", {"sudo": True}, schema, params, SCRIPT)
        self.assertEqual(argv[:5], ["sudo", "-E", "--", "bash", "-c"])
        self.assertEqual(shlex.split(argv[5]), [SCRIPT, "--n=v", "a b"])

    def test_errors(self):
        """
        Missing cmd, missing entry point and foreign runners are refused.
        """
        self.assertRaises(ValueError, actionArgv, "local-shell-cmd", {}, {}, {})
        self.assertRaises(ValueError, actionArgv, "local-shell-script", {}, {}, {})
        self.assertRaises(ValueError, actionArgv, "python-script", {"cmd": "x"}, {}, {}, SCRIPT)
