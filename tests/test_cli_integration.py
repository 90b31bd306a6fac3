"""
End-to-end tests of the real C{bwc} executable against a real daemon
(C{twistd -n bwcd}, started by L{tests.daemon.startDaemon}).
"""

from __future__ import annotations

import json
import os
import re
import socket
import stat
import sys
from typing import Dict, List, Optional, Tuple

from twisted.internet.utils import getProcessOutputAndValue
from twisted.trial.unittest import TestCase

from tests.daemon import REPO, startDaemon

BIN = os.path.dirname(sys.executable)

#: the webhook rule from st2's docs (docs/source/webhooks.rst), writing to a test file
SAMPLE_RULE = """\
---
name: "sample_rule_with_webhook"
pack: "examples"
description: "Sample rule dumping webhook payload to a file."
enabled: true

trigger:
  type: "core.st2.webhook"
  parameters:
    url: "sample"

criteria:
  trigger.body.name:
    pattern: "st2"
    type: "equals"

action:
  ref: "core.local"
  parameters:
    cmd: "echo \\"{{trigger.body}}\\" >> %(out)s ; sync"
"""

_BLOCK = re.compile(
    r"# -------- begin (\d+) request ----------\n(curl [^\n]*)\n# -------- begin \1 response ----------\n(.*?)\n# -------- end \1 response ------------\n",
    re.S,
)


def bwcArgv() -> List[str]:
    script = os.path.join(BIN, "bwc")
    if os.path.exists(script):
        return [script]
    return [sys.executable, "-m", "bwcd.cli.main"]


def closedPort() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def debugBlocks(output: str) -> List[Tuple[str, str]]:
    """
    (curl line, raw response) for every --debug block, in order.
    """
    return [(m.group(2), m.group(3)) for m in _BLOCK.finditer(output)]


def curlTarget(line: str) -> Tuple[str, str]:
    """
    (method, url) of a printed curl line.
    """
    import shlex

    words = shlex.split(line)
    return words[words.index("-X") + 1], words[-1]


class CLITestMixin:
    async def startDaemon(self) -> None:
        self.daemon = await startDaemon(self)
        self.home = os.path.abspath(self.mktemp())
        os.makedirs(self.home)

    def env(self, **extra: str) -> Dict[str, str]:
        env = {
            "HOME": self.home,
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "PYTHONPATH": REPO,
            "COLUMNS": "200",
            "ST2_API_URL": self.daemon.apiURL + "/v1",
            "ST2_AUTH_URL": self.daemon.authURL,
        }
        env.update(extra)
        return {k: v for k, v in env.items() if v is not None}

    async def bwc(self, *args: str, env: Optional[Dict[str, str]] = None) -> Tuple[int, str, str]:
        argv = bwcArgv() + list(args)
        out, err, code = await getProcessOutputAndValue(argv[0], argv[1:], env=env or self.env(), path=self.home)
        return code, out.decode("utf-8", "replace"), err.decode("utf-8", "replace")

    async def shell(self, line: str) -> Tuple[int, str, str]:
        out, err, code = await getProcessOutputAndValue("/bin/sh", ["-c", line], env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")})
        return code, out.decode("utf-8", "replace"), err.decode("utf-8", "replace")

    async def login(self) -> None:
        code, out, err = await self.bwc("login", self.daemon.user, "-p", self.daemon.password)
        self.assertEqual(code, 0, out + err)

    def assertOneErrorLine(self, out: str, err: str) -> str:
        text = out + err
        self.assertNotIn("Traceback", text)
        lines = [line for line in text.splitlines() if line.strip()]
        self.assertEqual(len(lines), 1, text)
        self.assertTrue(lines[0].startswith("ERROR: "), text)
        return lines[0]


class RunTests(CLITestMixin, TestCase):
    timeout = 120

    async def setUp(self) -> None:
        await self.startDaemon()

    async def test_loginThenRun(self) -> None:
        """
        login caches a 0600 token and records the user; run then prints succeeded and the output.
        """
        code, out, err = await self.bwc("login", self.daemon.user, "-p", self.daemon.password)
        self.assertEqual(code, 0, out + err)
        self.assertTrue(out.startswith(f"Logged in as {self.daemon.user}\n"), out)
        tokenPath = os.path.join(self.home, ".st2", f"token-{self.daemon.user}")
        self.assertEqual(stat.S_IMODE(os.stat(tokenPath).st_mode), 0o600)
        with open(tokenPath) as f:
            cached = json.load(f)
        self.assertEqual(sorted(cached), ["expire_timestamp", "token"])
        with open(os.path.join(self.home, ".st2", "config")) as f:
            self.assertIn(f"username = {self.daemon.user}", f.read())

        code, out, err = await self.bwc("run", "core.local", "echo hi")
        self.assertEqual(code, 0, out + err)
        self.assertIn("\nstatus: succeeded (", out)
        self.assertIn("\n  stdout: hi\n", out)
        self.assertIn("\naction.ref: core.local\n", out)
        self.assertIn(f"\ncontext.user: {self.daemon.user}\n", out)
        self.assertRegex(out, r"\nstart_timestamp: \w{3}, \d{2} \w{3} \d{4} \d{2}:\d{2}:\d{2} UTC\n")

    async def test_debugCurlLinesReproduce(self) -> None:
        """
        --debug prints the cached-token note, then GET action, GET runnertypes, POST
        executions and GET execution as curl lines; each line run by a shell gets the
        same response (a POST creates a like execution).
        """
        await self.login()
        code, out, err = await self.bwc("--debug", "run", "core.local", "echo hi")
        self.assertEqual(code, 0, out + err)
        tokenPath = os.path.join(self.home, ".st2", f"token-{self.daemon.user}")
        self.assertTrue(out.startswith(f'Using cached token from file "{tokenPath}"\n'), out[:300])
        blocks = debugBlocks(out)
        targets = [curlTarget(line) for line, _ in blocks]
        api = self.daemon.apiURL + "/v1"
        self.assertEqual(targets[:3], [("GET", api + "/actions/core.local"), ("GET", api + "/runnertypes/?name=local-shell-cmd"), ("POST", api + "/executions")])
        executionId = json.loads(blocks[2][1])["id"]
        self.assertGreaterEqual(len(targets), 4)
        self.assertEqual(set(targets[3:]), {("GET", f"{api}/executions/{executionId}")})
        self.assertIn("status: succeeded", out)

        for line, response in blocks[:2] + blocks[-1:]:
            code, shellOut, shellErr = await self.shell(line)
            self.assertEqual(code, 0, shellErr)
            self.assertEqual(json.loads(shellOut), json.loads(response), line)

        code, shellOut, shellErr = await self.shell(blocks[2][0])
        self.assertEqual(code, 0, shellErr)
        again, first = json.loads(shellOut), json.loads(blocks[2][1])
        self.assertNotEqual(again["id"], first["id"])
        for key in ("action", "parameters", "status", "context"):
            self.assertEqual(again[key], first[key], key)

    async def test_failedCommandExits1(self) -> None:
        """
        An execution that ends failed makes run exit 1 (and print it); succeeded exits 0.
        """
        code, out, err = await self.bwc("run", "--api-key", self.daemon.apiKey, "core.local", "echo oops >&2; exit 3")
        self.assertEqual(code, 1, out + err)
        self.assertIn("\nstatus: failed (", out)
        self.assertIn("\n  return_code: 3\n", out)
        self.assertIn("\n  stderr: oops\n", out)
        self.assertNotIn("Traceback", out + err)

    async def test_jsonAndExecutionCommands(self) -> None:
        """
        run -j prints the execution as JSON; execution list/get/-k/re-run work on it.
        """
        env = self.env(ST2_API_KEY=self.daemon.apiKey)
        code, out, err = await self.bwc("run", "-j", "core.local", "cmd=echo hi", "timeout=30", env=env)
        self.assertEqual(code, 0, out + err)
        doc = json.loads(out)
        self.assertEqual((doc["status"], doc["result"]["stdout"], doc["action"]["ref"]), ("succeeded", "hi", "core.local"))
        self.assertEqual(doc["parameters"], {"cmd": "echo hi", "timeout": 30})
        executionId = doc["id"]

        code, out, err = await self.bwc("execution", "list", "-j", env=env)
        self.assertEqual(code, 0, out + err)
        self.assertIn(executionId, [e["id"] for e in json.loads(out)])
        code, out, err = await self.bwc("execution", "list", env=env)
        self.assertIn(executionId, out)
        self.assertIn("| id ", out.splitlines()[1])

        code, out, err = await self.bwc("execution", "get", executionId, "-k", "stdout", env=env)
        self.assertEqual((code, out), (0, "hi\n"), err)
        code, out, err = await self.bwc("execution", "get", executionId, env=env)
        self.assertIn("\nlog: - status: requested\n", out)

        code, out, err = await self.bwc("execution", "re-run", executionId, "cmd=echo again", env=env)
        self.assertEqual(code, 0, out + err)
        self.assertIn("\n  stdout: again\n", out)

        code, out, err = await self.bwc("execution", "get", "0123456789abcdef01234567", env=env)
        self.assertEqual(code, 2, out + err)
        self.assertEqual(out, 'Execution "0123456789abcdef01234567" is not found.\n\n')

    async def test_asyncTailAndCancel(self) -> None:
        """
        -a returns at once with the follow-up commands; --tail streams lines as they come;
        cancel reports the cancellation.
        """
        env = self.env(ST2_API_KEY=self.daemon.apiKey)
        code, out, err = await self.bwc("run", "-a", "core.local", "sleep 30", env=env)
        self.assertEqual(code, 0, out + err)
        executionId = re.search(r"bwc execution get (\w+)", out).group(1)
        self.assertIn(f"bwc execution tail {executionId}", out)
        code, out, err = await self.bwc("execution", "cancel", executionId, env=env)
        self.assertEqual(code, 0, out + err)
        self.assertIn(executionId, out)
        self.assertRegex(out, "cancel")

        # the action's own pauses (not the test's): --tail must follow output arriving over time
        code, out, err = await self.bwc("run", "--tail", "core.local", "for i in 1 2 3; do echo line$i; sleep 0.3; done", env=env)
        self.assertEqual(code, 0, out + err)
        self.assertRegex(out, r"line1\nline2\nline3\n")
        self.assertRegex(out, r"Execution \w+ has completed \(status=succeeded\)\.")
        self.assertIn("\nstatus: succeeded (", out)

    async def test_errors(self) -> None:
        """
        Wrong password, unknown action, bad API key: one clear message, no traceback.
        """
        code, out, err = await self.bwc("login", self.daemon.user, "-p", "wrong-password")
        self.assertEqual(code, 1)
        line = self.assertOneErrorLine(out, err)
        self.assertIn(f"Failed to log in as {self.daemon.user}: Invalid or missing credentials", line)
        self.assertFalse(os.path.exists(os.path.join(self.home, ".st2", f"token-{self.daemon.user}")))

        os.makedirs(os.path.join(self.home, ".st2"), exist_ok=True)
        with open(os.path.join(self.home, ".st2", "config"), "w") as f:
            f.write(f"[credentials]\nusername = {self.daemon.user}\npassword = wrong\n")
        code, out, err = await self.bwc("action", "list")
        self.assertEqual(code, 1)
        self.assertIn("Invalid or missing credentials", self.assertOneErrorLine(out, err))

        env = self.env(ST2_API_KEY=self.daemon.apiKey)
        code, out, err = await self.bwc("run", "nope.nothing", "x=1", env=env)
        self.assertEqual(code, 1)
        self.assertEqual(self.assertOneErrorLine(out, err), 'ERROR: Action "nope.nothing" cannot be found.')

        code, out, err = await self.bwc("action", "list", "--api-key", "not-a-key")
        self.assertEqual(code, 1)
        self.assertNotIn("Traceback", out + err)
        lines = out.splitlines()
        self.assertEqual(lines[0], "ERROR: 401 Client Error: Unauthorized")
        self.assertTrue(lines[1].startswith("MESSAGE: Unauthorized - ApiKey with key_hash="), out)
        self.assertTrue(lines[1].endswith(f" for url: {self.daemon.apiURL}/v1/actions"), out)

    async def test_apikeyCommands(self) -> None:
        """
        apikey create -k prints a key that works; list/get/disable/enable/delete manage it.
        """
        env = self.env(ST2_API_KEY=self.daemon.apiKey)
        code, out, err = await self.bwc("apikey", "create", "-k", "-m", '{"used_by": "tests"}', env=env)
        self.assertEqual(code, 0, out + err)
        newKey = out.strip()
        code, out, err = await self.bwc("action", "list", "-j", env=self.env(ST2_API_KEY=newKey))
        self.assertEqual(code, 0, out + err)
        self.assertIn("core.local", [a["ref"] for a in json.loads(out)])

        code, out, err = await self.bwc("apikey", "list", "-j", env=env)
        keys = json.loads(out)
        mine = [k for k in keys if k.get("metadata") == {"used_by": "tests"}]
        self.assertEqual(len(mine), 1, keys)
        keyId = mine[0]["id"]
        code, out, err = await self.bwc("apikey", "list", env=env)
        self.assertIn(keyId, out)

        code, out, err = await self.bwc("apikey", "disable", keyId, "-j", env=env)
        self.assertEqual((code, json.loads(out)["enabled"]), (0, False), out + err)
        code, out, err = await self.bwc("action", "list", env=self.env(ST2_API_KEY=newKey))
        self.assertEqual(code, 1)
        self.assertIn("API key is disabled", out)
        code, out, err = await self.bwc("apikey", "enable", keyId, "-y", env=env)
        self.assertEqual(code, 0, out + err)
        self.assertIn("enabled: true", out)
        code, out, err = await self.bwc("apikey", "delete", keyId, env=env)
        self.assertEqual((code, out), (0, f'Resource with id "{keyId}" has been successfully deleted.\n'), err)
        code, out, err = await self.bwc("apikey", "get", keyId, env=env)
        self.assertEqual(code, 2, out + err)


class UnreachableTests(CLITestMixin, TestCase):
    """
    No daemon at all.
    """

    def setUp(self) -> None:
        self.home = os.path.abspath(self.mktemp())
        os.makedirs(self.home)

    async def test_unreachable(self) -> None:
        """
        A server that does not answer: one line naming the URL and how to configure it.
        """
        port = closedPort()
        env = {
            "HOME": self.home,
            "PATH": os.environ.get("PATH", ""),
            "PYTHONPATH": REPO,
            "ST2_API_URL": f"http://127.0.0.1:{port}/v1",
            "ST2_AUTH_URL": f"http://127.0.0.1:{port}",
            "ST2_API_KEY": "k",
        }
        code, out, err = await self.bwc("run", "core.local", "date", env=env)
        self.assertEqual(code, 1)
        line = self.assertOneErrorLine(out, err)
        self.assertIn(f"http://127.0.0.1:{port}/v1/actions/core.local", line)
        self.assertIn("--api-url", line)
        self.assertIn("ST2_API_URL", line)
        code, out, err = await self.bwc("login", "someone", "-p", "x", env=env)
        self.assertEqual(code, 1)
        line = self.assertOneErrorLine(out, err)
        self.assertIn(f"http://127.0.0.1:{port}/tokens", line)
        self.assertIn("--auth-url", line)

        os.makedirs(os.path.join(self.home, ".st2"), exist_ok=True)
        with open(os.path.join(self.home, ".st2", "config"), "w") as f:
            f.write(f"[credentials]\nusername = someone\npassword = x\n[api]\nurl = http://127.0.0.1:{port}/v1\n[auth]\nurl = http://127.0.0.1:{port}\n")
        code, out, err = await self.bwc("rule", "list", env={"HOME": self.home, "PATH": os.environ.get("PATH", ""), "PYTHONPATH": REPO})
        self.assertEqual(code, 1)
        self.assertIn(f"Unable to connect to http://127.0.0.1:{port}/tokens", self.assertOneErrorLine(out, err))


class RuleWebhookTests(CLITestMixin, TestCase):
    """
    Needs the daemon's rules, webhooks and trigger-instance APIs.
    """

    timeout = 120

    async def setUp(self) -> None:
        await self.startDaemon()
        self.env_ = self.env(ST2_API_KEY=self.daemon.apiKey)
        self.outFile = os.path.join(self.home, "st2.webhook_sample.out")
        self.ruleFile = os.path.join(self.home, "sample_rule_with_webhook.yaml")
        with open(self.ruleFile, "w") as f:
            f.write(SAMPLE_RULE % {"out": self.outFile})

    async def test_ruleCreateWebhookExecution(self) -> None:
        """
        rule create on the docs' example rule; webhook list shows its url; a curl to
        the webhook shows up in execution list and trigger-instance list.
        """
        code, out, err = await self.bwc("rule", "create", self.ruleFile, env=self.env_)
        self.assertEqual(code, 0, out + err)
        self.assertIn("| ref ", out)
        self.assertIn("examples.sample_rule_with_webhook", out)

        code, out, err = await self.bwc("webhook", "list", env=self.env_)
        self.assertEqual(code, 0, out + err)
        self.assertEqual(out.splitlines()[1].split("|")[1].strip(), "url")
        self.assertIn("| sample ", out)
        self.assertIn("core.st2.webhook", out)
        code, out, err = await self.bwc("webhook", "get", "sample", "-j", env=self.env_)
        self.assertEqual((code, json.loads(out)["parameters"]), (0, {"url": "sample"}), out + err)

        since = self.daemon.linesLogged
        code, out, err = await self.shell(
            f"curl -sS -X POST {self.daemon.apiURL}/v1/webhooks/sample -H 'St2-Api-Key: {self.daemon.apiKey}' "
            """-H "Content-Type: application/json" --data '{"name": "st2"}'"""
        )
        self.assertEqual(code, 0, err)
        self.assertEqual(json.loads(out), {"name": "st2"})

        # the daemon's log says which execution the rule started, then that it ended
        started = await self.daemon.logged(r"\bRule examples\.sample_rule_with_webhook matched trigger instance \w+: execution (\w+)", since)
        await self.daemon.waitFor(started.group(1))
        code, out, err = await self.bwc("execution", "list", "-j", "-a", "all", env=self.env_)
        executions = [e for e in json.loads(out) if e.get("rule", {}).get("ref") == "examples.sample_rule_with_webhook" and e["status"] == "succeeded"]
        self.assertEqual([e["id"] for e in executions], [started.group(1)])
        self.assertEqual(executions[0]["action"]["ref"], "core.local")
        code, out, err = await self.bwc("execution", "list", env=self.env_)
        self.assertIn(executions[0]["id"], out)
        with open(self.outFile) as f:
            self.assertEqual(f.read(), "{'name': 'st2'}\n")

        code, out, err = await self.bwc("rule", "get", "examples.sample_rule_with_webhook", "-j", env=self.env_)
        triggerRef = json.loads(out)["trigger"]["ref"]
        code, out, err = await self.bwc("trigger-instance", "list", "--trigger", triggerRef, "-j", env=self.env_)
        self.assertEqual(code, 0, out + err)
        instances = json.loads(out)
        self.assertEqual([i["trigger"] for i in instances], [triggerRef])
        code, out, err = await self.bwc("trigger-instance", "list", env=self.env_)
        self.assertIn(instances[0]["id"], out)
        code, out, err = await self.bwc("trigger-instance", "get", instances[0]["id"], "-j", env=self.env_)
        self.assertEqual(json.loads(out)["payload"]["body"], {"name": "st2"})
        code, out, err = await self.bwc("trigger-instance", "re-emit", instances[0]["id"], env=self.env_)
        self.assertEqual(code, 0, out + err)

    async def test_ruleLifecycle(self) -> None:
        """
        get, list, disable, enable, update, delete; a duplicate create prints ERROR and exits 2;
        an unknown rule is 'not found' with exit 2.
        """
        code, out, err = await self.bwc("rule", "create", self.ruleFile, "-j", env=self.env_)
        self.assertEqual(code, 0, out + err)
        rule = json.loads(out)
        self.assertEqual((rule["ref"], rule["enabled"], rule["trigger"]["type"]), ("examples.sample_rule_with_webhook", True, "core.st2.webhook"))

        code, out, err = await self.bwc("rule", "create", self.ruleFile, env=self.env_)
        self.assertEqual(code, 2, out + err)
        self.assertTrue(out.startswith("ERROR: 409 Client Error: Conflict\nMESSAGE: "), out)

        code, out, err = await self.bwc("rule", "list", env=self.env_)
        self.assertEqual(code, 0, out + err)
        self.assertEqual([c.strip() for c in out.splitlines()[1].split("|")[1:-1]], ["ref", "pack", "description", "enabled"])
        self.assertIn("examples.sample_rule_with_webhook", out)

        code, out, err = await self.bwc("rule", "disable", "examples.sample_rule_with_webhook", "-j", env=self.env_)
        self.assertEqual((code, json.loads(out)["enabled"]), (0, False), out + err)
        code, out, err = await self.bwc("rule", "list", "--disabled", "-j", env=self.env_)
        self.assertEqual([r["ref"] for r in json.loads(out)], ["examples.sample_rule_with_webhook"])
        code, out, err = await self.bwc("rule", "enable", "examples.sample_rule_with_webhook", "-j", env=self.env_)
        self.assertEqual((code, json.loads(out)["enabled"]), (0, True), out + err)

        with open(self.ruleFile, "a") as f:
            f.write("\n")
        with open(self.ruleFile) as f:
            text = f.read().replace("Sample rule dumping webhook payload to a file.", "Updated description.")
        with open(self.ruleFile, "w") as f:
            f.write(text)
        code, out, err = await self.bwc("rule", "update", "examples.sample_rule_with_webhook", self.ruleFile, "-j", env=self.env_)
        self.assertEqual((code, json.loads(out)["description"]), (0, "Updated description."), out + err)

        code, out, err = await self.bwc("rule", "get", "examples.sample_rule_with_webhook", env=self.env_)
        self.assertIn("Updated description.", out)
        code, out, err = await self.bwc("rule", "delete", "examples.sample_rule_with_webhook", env=self.env_)
        self.assertEqual((code, out), (0, 'Resource with id "examples.sample_rule_with_webhook" has been successfully deleted.\n'), err)
        code, out, err = await self.bwc("rule", "get", "examples.sample_rule_with_webhook", env=self.env_)
        self.assertEqual((code, out), (2, 'Rule "examples.sample_rule_with_webhook" is not found.\n\n'), err)
        code, out, err = await self.bwc("webhook", "list", "-j", env=self.env_)
        self.assertEqual(json.loads(out), [])
