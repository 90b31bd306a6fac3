"""
Tests for the pure parts of rules and triggers: L{bwcd.rules.model}, the
document and schema helpers of L{bwcd.rules.triggers}, and reading pack files in
L{bwcd.packs.rules}.
"""

from __future__ import annotations

import os

from twisted.trial.unittest import SynchronousTestCase

from bwcd.packs.loader import Pack
from bwcd.packs.rules import loadRules
from bwcd.rules.model import RuleError, normaliseRule, ruleFromYaml
from bwcd.packs.triggers import loadTriggerTypes
from bwcd.rules.triggers import (
    SYSTEM_TRIGGER_TYPES,
    TriggerError,
    parameterisedTrigger,
    payloadError,
    schemaError,
    shadowTrigger,
    triggerUid,
    validateTriggerParameters,
    webhookUrl,
)

WEBHOOK_RULE = {
    "name": "sample_rule",
    "pack": "examples",
    "enabled": True,
    "trigger": {"type": "core.st2.webhook", "parameters": {"url": "sample"}},
    "criteria": {"trigger.body.key1": {"type": "equals", "pattern": "value1"}},
    "action": {"ref": "core.local", "parameters": {"cmd": "echo {{trigger.body.key1}}"}},
}


def systemType(ref):
    return next(t for t in SYSTEM_TRIGGER_TYPES if t["ref"] == ref)


class NormaliseRuleTests(SynchronousTestCase):
    def test_document(self):
        """
        A valid body becomes the stored shape with ref, uid, defaults and
        the caller in context.user.
        """
        doc = normaliseRule(dict(WEBHOOK_RULE), user="alice")
        self.assertEqual(doc["ref"], "examples.sample_rule")
        self.assertEqual(doc["uid"], "rule:examples:sample_rule")
        self.assertEqual(doc["type"], {"ref": "standard", "parameters": {}})
        self.assertEqual(doc["context"], {"user": "alice"})
        self.assertEqual(doc["tags"], [])
        self.assertEqual(doc["description"], "")
        self.assertEqual(doc["trigger"], {"type": "core.st2.webhook", "parameters": {"url": "sample"}})
        self.assertNotIn("id", doc)

    def test_defaults(self):
        """
        pack defaults to C{default}, enabled to false (the API schema's
        default), criteria and parameters to empty.
        """
        doc = normaliseRule({"name": "r", "trigger": {"type": "core.st2.webhook"}, "action": {"ref": "core.noop"}})
        self.assertEqual(doc["pack"], "default")
        self.assertIs(doc["enabled"], False)
        self.assertEqual(doc["criteria"], {})
        self.assertEqual(doc["trigger"]["parameters"], {})
        self.assertEqual(doc["action"]["parameters"], {})

    def test_clientRefIgnored(self):
        """
        A trigger ref sent by the client is dropped: it is the server's to
        set.
        """
        body = dict(WEBHOOK_RULE, trigger={"type": "core.st2.webhook", "parameters": {"url": "x"}, "ref": "core.fake"})
        self.assertNotIn("ref", normaliseRule(body)["trigger"])

    def assertRuleError(self, body, message, field=None):
        with self.assertRaises(RuleError) as caught:
            normaliseRule(body)
        self.assertEqual(str(caught.exception), message)
        if field is not None:
            self.assertEqual(caught.exception.field, field)

    def test_schemaMessages(self):
        """
        Schema failures give jsonschema's messages, as StackStorm's API does.
        """
        self.assertRuleError({"trigger": {"type": "t"}, "action": {"ref": "a"}}, "'name' is a required property", "name")
        self.assertRuleError({"name": "r", "trigger": {"type": "t"}}, "'action' is a required property", "action")
        self.assertRuleError({"name": "r", "trigger": {}, "action": {"ref": "a"}}, "'type' is a required property", "trigger.type")
        self.assertRuleError(
            {"name": "r", "trigger": {"type": "t"}, "action": {"ref": "a", "foo": 1}},
            "Additional properties are not allowed ('foo' was unexpected)",
            "action",
        )
        self.assertRuleError(
            {"name": "r", "trigger": {"type": "t"}, "action": {"ref": "a"}, "bogus": 1},
            "Additional properties are not allowed ('bogus' was unexpected)",
        )
        self.assertRuleError({"name": "r", "trigger": {"type": "t"}, "action": {"ref": "a"}, "enabled": "yes"}, "'yes' is not of type 'boolean'", "enabled")

    def test_notAnObject(self):
        """
        A body that is not an object is refused.
        """
        self.assertRuleError([1], "[1] is not of type 'object'")

    def test_criteriaMessages(self):
        """
        Criteria are validated with StackStorm's messages, including its
        demand for a pattern on exists (st2#6197) and case-sensitive operator
        names.
        """
        base = {"name": "r", "trigger": {"type": "t"}, "action": {"ref": "a"}}
        self.assertRuleError(dict(base, criteria={"trigger.a": {"pattern": 1}}), "Operator not specified for field: trigger.a", "criteria")
        self.assertRuleError(dict(base, criteria={"trigger.a": {"type": "exists"}}), "For field: trigger.a, no pattern specified for operator exists")
        with self.assertRaises(RuleError) as caught:
            normaliseRule(dict(base, criteria={"trigger.a": {"type": "Equals", "pattern": 1}}))
        self.assertTrue(str(caught.exception).startswith("For field: trigger.a, operator Equals not in list of allowed operators: ["))

    def test_ruleType(self):
        """
        Only standard and backstop rules exist.
        """
        base = {"name": "r", "trigger": {"type": "t"}, "action": {"ref": "a"}}
        self.assertEqual(normaliseRule(dict(base, type={"ref": "backstop"}))["type"], {"ref": "backstop", "parameters": {}})
        self.assertRuleError(dict(base, type={"ref": "other"}), 'Rule type "other" is not supported. Valid types: standard, backstop', "type.ref")

    def test_packWithDot(self):
        """
        A pack name with a dot would make the ref ambiguous.
        """
        self.assertRuleError({"name": "r", "pack": "a.b", "trigger": {"type": "t"}, "action": {"ref": "a"}}, 'Pack name "a.b" must not contain "."', "pack")


class RuleFromYamlTests(SynchronousTestCase):
    def test_packFilled(self):
        """
        A pack rule gets its pack and metadata_file.
        """
        doc = ruleFromYaml({k: v for k, v in WEBHOOK_RULE.items() if k != "pack"}, "mypack", "rules/sample.yaml")
        self.assertEqual(doc["ref"], "mypack.sample_rule")
        self.assertEqual(doc["metadata_file"], "rules/sample.yaml")

    def test_packMismatch(self):
        """
        A rule file naming another pack is refused with StackStorm's message.
        """
        with self.assertRaises(RuleError) as caught:
            ruleFromYaml(WEBHOOK_RULE, "mypack", "rules/x.yaml")
        self.assertEqual(str(caught.exception), 'Model is in pack "mypack" but field "pack" is different: examples')
        self.assertEqual(caught.exception.field, "pack")


class TriggerDocumentTests(SynchronousTestCase):
    def test_systemTypes(self):
        """
        The webhook type has StackStorm's schemas; the action trigger type
        has none for parameters (so it gets a shadow trigger).
        """
        webhook = systemType("core.st2.webhook")
        self.assertEqual(webhook["uid"], "trigger_type:core:st2.webhook")
        self.assertEqual(webhook["parameters_schema"]["properties"]["url"], {"type": "string", "required": True})
        action = systemType("core.st2.generic.actiontrigger")
        self.assertEqual(action["parameters_schema"], {})
        self.assertIn("execution_id", action["payload_schema"]["properties"])

    def test_shadowTrigger(self):
        """
        A shadow trigger shares its type's ref and has StackStorm's uid.
        """
        shadow = shadowTrigger(systemType("core.st2.generic.actiontrigger"))
        self.assertEqual(shadow["ref"], "core.st2.generic.actiontrigger")
        self.assertEqual(shadow["type"], "core.st2.generic.actiontrigger")
        self.assertEqual(shadow["uid"], "trigger:core:st2.generic.actiontrigger:99914b932bd37a50b983c5e7c90ae93b")

    def test_parameterisedTriggerDeterministic(self):
        """
        The same type and parameters always give the same trigger ref
        (whatever the key order); other parameters give another.
        """
        a = parameterisedTrigger("core.st2.webhook", "core", {"url": "sample", "x": 1})
        b = parameterisedTrigger("core.st2.webhook", "core", {"x": 1, "url": "sample"})
        c = parameterisedTrigger("core.st2.webhook", "core", {"url": "other"})
        self.assertEqual(a["ref"], b["ref"])
        self.assertNotEqual(a["ref"], c["ref"])
        self.assertRegex(a["ref"], r"^core\.[0-9a-f]{8}-[0-9a-f]{4}-5[0-9a-f]{3}-[0-9a-f]{4}-[0-9a-f]{12}$")
        self.assertEqual(a["uid"], triggerUid("core", a["name"], {"url": "sample", "x": 1}))

    def test_webhookUrl(self):
        """
        Hook names ignore leading and trailing slashes and keep interior
        ones.
        """
        for url in ("/sample", "sample/", "/sample/", "sample"):
            self.assertEqual(webhookUrl({"type": "core.st2.webhook", "parameters": {"url": url}}), "sample")
        self.assertEqual(webhookUrl({"type": "core.st2.webhook", "parameters": {"url": "/with/mixed/slash/"}}), "with/mixed/slash")
        self.assertIsNone(webhookUrl({"type": "core.st2.generic.actiontrigger", "parameters": {}}))


class SchemaTests(SynchronousTestCase):
    def test_webhookParameters(self):
        """
        Webhook triggers need a url and nothing else.
        """
        webhook = systemType("core.st2.webhook")
        validateTriggerParameters(webhook, {"url": "x"})
        with self.assertRaises(TriggerError) as caught:
            validateTriggerParameters(webhook, {})
        self.assertEqual(str(caught.exception), "'url' is a required property")
        with self.assertRaises(TriggerError) as caught:
            validateTriggerParameters(webhook, {"url": "x", "y": 1})
        self.assertEqual(str(caught.exception), "Additional properties are not allowed ('y' was unexpected)")

    def test_bothRequiredStyles(self):
        """
        Draft-3 booleans and draft-4 lists both make a property required.
        """
        self.assertEqual(schemaError({"type": "object", "properties": {"a": {"required": True}}}, {}), "'a' is a required property")
        self.assertEqual(schemaError({"type": "object", "required": ["b"]}, {}), "'b' is a required property")
        self.assertIsNone(schemaError({"type": "object", "properties": {"a": {"required": False}}}, {}))
        self.assertIsNone(schemaError({}, "anything"))

    def test_payloadError(self):
        """
        The generic hook's messages: unknown type, and a payload that does
        not fit the schema, with the payload's repr.
        """
        triggerType = {"ref": "mypack.mytrigger", "payload_schema": {"type": "object", "properties": {"attribute1": {"type": "string"}}}}
        self.assertIsNone(payloadError("mypack.mytrigger", triggerType, {"attribute1": "v"}))
        self.assertEqual(
            payloadError("mypack.mytrigger", triggerType, "invalid"),
            "Trigger payload validation failed and validation is enabled, not dispatching a trigger \"mypack.mytrigger\" ('invalid'): 'invalid' is not of type 'object'",
        )
        self.assertEqual(
            payloadError("nope.x", None, {"a": 1}),
            "Trigger payload validation failed and validation is enabled, not dispatching a trigger \"nope.x\" ({'a': 1}): Trigger type with reference \"nope.x\" doesn't exist in the database",
        )
        self.assertIsNone(payloadError("t", {"payload_schema": {}}, None))


class PackFileTests(SynchronousTestCase):
    def makePack(self, files):
        root = self.mktemp()
        for relative, text in files.items():
            path = os.path.join(root, relative)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "w") as f:
                f.write(text)
        return Pack(name="mypack", path=os.path.abspath(root), meta={})

    def test_loadRules(self):
        """
        Valid rule files load; broken ones are reported with file, field and
        reason, and skipped.
        """
        pack = self.makePack(
            {
                "rules/good.yaml": "name: good\nenabled: true\ntrigger: {type: core.st2.webhook, parameters: {url: sample}}\naction: {ref: core.local}\n",
                "rules/bad.yaml": "name: bad\ntrigger: {type: core.st2.webhook}\naction: {ref: core.local, nope: 1}\n",
                "rules/crit.yaml": "name: crit\ntrigger: {type: t}\naction: {ref: a}\ncriteria: {trigger.a: {type: exists}}\n",
                "rules/broken.yaml": "name: [\n",
                "rules/notes.txt": "ignored",
            }
        )
        rules, problems = loadRules(pack)
        self.assertEqual([doc["ref"] for _, doc in rules], ["mypack.good"])
        self.assertIs(rules[0][1]["enabled"], True)
        self.assertEqual(rules[0][1]["metadata_file"], os.path.join("rules", "good.yaml"))
        byFile = {os.path.basename(p.path): p for p in problems}
        self.assertEqual(sorted(byFile), ["bad.yaml", "broken.yaml", "crit.yaml"])
        self.assertEqual(byFile["bad.yaml"].field, "action")
        self.assertEqual(byFile["bad.yaml"].reason, "Additional properties are not allowed ('nope' was unexpected)")
        self.assertEqual(byFile["crit.yaml"].field, "criteria")
        self.assertEqual(byFile["broken.yaml"].field, "(file)")

    def test_loadTriggerTypes(self):
        """
        Pack trigger types load with pack, ref, uid and metadata_file;
        invalid ones are reported.
        """
        pack = self.makePack(
            {
                "triggers/mytrigger.yaml": "name: mytrigger\ndescription: d\npayload_schema:\n  type: object\n  properties:\n    attribute1: {type: string}\n",
                "triggers/noname.yaml": "description: d\n",
                "triggers/badschema.yaml": "name: x\npayload_schema: {type: 5}\n",
            }
        )
        types, problems = loadTriggerTypes(pack)
        self.assertEqual(len(types), 1)
        self.assertEqual(types[0]["ref"], "mypack.mytrigger")
        self.assertEqual(types[0]["uid"], "trigger_type:mypack:mytrigger")
        self.assertEqual(types[0]["parameters_schema"], {})
        self.assertEqual(types[0]["metadata_file"], os.path.join("triggers", "mytrigger.yaml"))
        self.assertEqual(sorted((os.path.basename(p.path), p.field) for p in problems), [("badschema.yaml", "payload_schema"), ("noname.yaml", "name")])
