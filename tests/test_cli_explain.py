"""
C{bwc rule test} and C{bwc trigger-instance explain}: the real C{bwc}
executable against a real daemon, on instances of the README's sample
hook.
"""

from __future__ import annotations

import json
import os

from twisted.trial.unittest import TestCase

from tests.test_cli_integration import CLITestMixin

SAMPLE_RULE = """\
name: sample_rule
pack: examples
enabled: true
trigger:
  type: core.st2.webhook
  parameters: {url: sample}
criteria:
  trigger.body.key1: {type: equals, pattern: value1}
action:
  ref: core.local
  parameters:
    cmd: "echo {{ trigger.body.key1 | shell_quote }}"
"""


class ExplainCommandTests(CLITestMixin, TestCase):
    timeout = 120

    async def setUp(self) -> None:
        await self.startDaemon()
        self.envKey = self.env(ST2_API_KEY=self.daemon.apiKey)
        self.ruleFile = self.write("sample_rule.yaml", SAMPLE_RULE)
        code, out, err = await self.bwc("rule", "create", self.ruleFile, env=self.envKey)
        self.assertEqual(code, 0, out + err)
        self.matching = await self.hook({"key1": "value1"})
        self.other = await self.hook({"key1": "value2"})

    def write(self, name: str, text: str) -> str:
        path = os.path.join(self.home, name)
        with open(path, "w") as f:
            f.write(text)
        return path

    async def hook(self, body: dict) -> str:
        response, answer = await self.daemon.post("/v1/webhooks/sample", body)
        self.assertEqual(response.code, 202, answer)
        return response.headers.getRawHeaders("X-BWC-Trigger-Instance")[0]

    async def test_ruleTestExitCodes(self) -> None:
        """
        C{rule test} exits 0 for an instance the saved rule matches and 1
        for one it does not, showing each criterion's verdict and the
        command it would run.
        """
        code, out, err = await self.bwc("rule", "test", "--rule-ref", "examples.sample_rule", "--trigger-instance-id", self.matching, env=self.envKey)
        self.assertEqual(code, 0, out + err)
        self.assertIn("Rule examples.sample_rule: MATCHES and fires\n", out)
        self.assertIn('  [holds] trigger.body.key1: value "value1" equals "value1"\n', out)
        self.assertIn('    cmd: "echo value1"\n', out)
        self.assertTrue(out.endswith("=== RULE MATCHES ===\n"), out)

        code, out, err = await self.bwc("rule", "test", "--rule-ref", "examples.sample_rule", "--trigger-instance-id", self.other, env=self.envKey)
        self.assertEqual(code, 1, out + err)
        self.assertIn("Rule examples.sample_rule: DOES NOT MATCH\n", out)
        self.assertIn('  [fails] trigger.body.key1: value "value2" equals "value1"\n', out)
        self.assertTrue(out.endswith("=== RULE DOES NOT MATCH ===\n"), out)

    async def test_ruleTestFiles(self) -> None:
        """
        A rule file not yet saved is tested against a trigger instance
        file (st2-rule-tester's options); -j prints the explanation as
        JSON with the same exit code; nothing is created.
        """
        unsaved = self.write("value2_rule.yaml", SAMPLE_RULE.replace("sample_rule", "value2_rule").replace("pattern: value1", "pattern: value2"))
        _, instance = await self.daemon.get(f"/v1/triggerinstances/{self.other}")
        instanceFile = self.write("instance.json", json.dumps({"trigger": instance["trigger"], "payload": instance["payload"]}))
        code, out, err = await self.bwc("rule", "test", "--rule", unsaved, "--trigger-instance-file", instanceFile, env=self.envKey)
        self.assertEqual(code, 0, out + err)
        self.assertIn("Rule examples.value2_rule (not saved): MATCHES and fires\n", out)

        code, out, err = await self.bwc("rule", "test", "-j", "--rule", unsaved, "--trigger-instance-id", self.matching, env=self.envKey)
        self.assertEqual(code, 1, out + err)
        [rule] = json.loads(out)["rules"]
        self.assertEqual((rule["ref"], rule["saved"], rule["matched"]), ("examples.value2_rule", False, False))
        self.assertEqual(rule["criteria"][0]["value"], "value1")
        _, rules = await self.daemon.get("/v1/rules")
        self.assertEqual([r["ref"] for r in rules], ["examples.sample_rule"])

    async def test_triggerInstanceExplain(self) -> None:
        """
        C{trigger-instance explain} shows every rule of the instance's
        trigger with its verdict (exit 0); an unknown instance is one
        ERROR line and exit 2.
        """
        code, out, err = await self.bwc("trigger-instance", "explain", self.other, env=self.envKey)
        self.assertEqual(code, 0, out + err)
        self.assertTrue(out.startswith(f"Trigger instance {self.other} of trigger core."), out)
        self.assertIn("Rule examples.sample_rule: DOES NOT MATCH\n", out)
        self.assertIn('  Criterion "trigger.body.key1" (equals) does not hold.\n', out)

        code, out, err = await self.bwc("trigger-instance", "explain", "-j", self.matching, env=self.envKey)
        self.assertEqual(code, 0, out + err)
        doc = json.loads(out)
        self.assertEqual((doc["trigger_instance"], doc["matched"], doc["rules"][0]["fires"]), (self.matching, True, True))

        code, out, err = await self.bwc("trigger-instance", "explain", "0123456789abcdef01234567", env=self.envKey)
        self.assertEqual(code, 2, out + err)
        line = self.assertOneErrorLine(out, err)
        self.assertIn("0123456789abcdef01234567", line)
