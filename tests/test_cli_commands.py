"""
Tests for L{bwcd.cli.commands}: each command's requests and output, run
in-process against a scripted HTTP server (the real daemon is exercised in
L{tests.test_cli_integration}).
"""

from __future__ import annotations

import io
import json
import os
from typing import List

from twisted.internet import reactor
from twisted.trial.unittest import SynchronousTestCase, TestCase

from bwcd.cli.commands.action import actionHelp
from bwcd.cli.main import buildParser, runCommand
from tests.test_cli_session import Scripted

ACTION = {
    "id": "a1",
    "ref": "core.local",
    "name": "local",
    "pack": "core",
    "description": "Action that executes an arbitrary Linux command on the localhost.",
    "runner_type": "local-shell-cmd",
    "parameters": {"cmd": {"type": "string", "required": True, "description": "Arbitrary Linux command."}, "sudo": {"immutable": True}},
}
RUNNER = {
    "name": "local-shell-cmd",
    "runner_parameters": {
        "cmd": {"type": "string"},
        "env": {"type": "object", "description": "Environment variables."},
        "sudo": {"type": "boolean", "default": False},
        "timeout": {"type": "integer", "default": 60, "description": "Timeout in seconds."},
        "cwd": {"type": "string", "position": 0},
    },
}


def execution(status: str, **extra) -> dict:
    doc = {
        "id": "e1",
        "action": {"ref": "core.local", "runner_type": "local-shell-cmd"},
        "context": {"user": "bob"},
        "parameters": {"cmd": "echo hi"},
        "status": status,
        "start_timestamp": "2017-03-31T08:21:19.000000Z",
    }
    if status in ("succeeded", "failed", "timeout"):
        doc["end_timestamp"] = "2017-03-31T08:21:20.000000Z"
        doc["result"] = {"stdout": "hi", "stderr": "", "return_code": 0 if status == "succeeded" else 1, "failed": status != "succeeded", "succeeded": status == "succeeded"}
    doc.update(extra)
    return doc


class CommandTestCase(TestCase):
    def serve(self, routes) -> Scripted:
        self.server = Scripted(routes)
        from twisted.web.server import Site

        port = reactor.listenTCP(0, Site(self.server), interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        self.base = f"http://127.0.0.1:{port.getHost().port}"
        self.home = os.path.abspath(self.mktemp())
        os.makedirs(self.home)
        return self.server

    async def bwc(self, *argv: str) -> int:
        args = buildParser("bwc").parse_args(list(argv))
        args.prog = "bwc"
        self.out, self.err = io.StringIO(), io.StringIO()
        environ = {"HOME": self.home, "ST2_API_URL": self.base + "/v1", "ST2_AUTH_URL": self.base, "ST2_API_KEY": "key", "COLUMNS": "120"}
        return await runCommand(reactor, args, self.out, self.err, environ)

    def requests(self, method: str, path: str) -> List[dict]:
        return [r for r in self.server.requests if r["method"] == method and r["path"] == path]


class RunTests(CommandTestCase):
    def setUp(self) -> None:
        self.polls: List[str] = ["running", "succeeded"]

        def poll(request, body):
            return 200, execution(self.polls.pop(0) if len(self.polls) > 1 else self.polls[0])

        self.serve(
            {
                ("GET", "/v1/actions/core.local"): lambda r, b: (200, ACTION),
                ("GET", "/v1/runnertypes/"): lambda r, b: (200, [RUNNER]),
                ("POST", "/v1/executions"): lambda r, b: (201, execution("requested")),
                ("GET", "/v1/executions/e1"): poll,
            }
        )

    async def test_callSequenceAndBody(self) -> None:
        """
        GET action, GET runnertypes/?name=, POST executions with typed parameters, then polls.
        """
        code = await self.bwc("run", "core.local", "timeout=5", "echo hi", "--trace-tag", "tag1", "-u", "alice")
        self.assertEqual(code, 0, self.out.getvalue())
        sequence = [(r["method"], r["uri"]) for r in self.server.requests]
        self.assertEqual(
            sequence,
            [
                ("GET", "/v1/actions/core.local"),
                ("GET", "/v1/runnertypes/?name=local-shell-cmd"),
                ("POST", "/v1/executions"),
                ("GET", "/v1/executions/e1"),
                ("GET", "/v1/executions/e1"),
            ],
        )
        body = json.loads(self.requests("POST", "/v1/executions")[0]["body"])
        self.assertEqual(
            body,
            {"action": "core.local", "user": "alice", "parameters": {"timeout": 5, "cmd": "echo hi"}, "context": {"trace_context": {"trace_tag": "tag1"}}},
        )
        self.assertTrue(all(r["headers"]["st2-api-key"] == "key" for r in self.server.requests))

    async def test_progressAndView(self) -> None:
        """
        One dot per poll, a newline, then the execution view.
        """
        await self.bwc("run", "core.local", "echo hi")
        text = self.out.getvalue()
        self.assertTrue(text.startswith("..\nid: e1\naction.ref: core.local\ncontext.user: bob\nparameters: \n  cmd: echo hi\nstatus: succeeded (1s elapsed)\n"), text)
        self.assertTrue(text.endswith("result: \n  failed: false\n  return_code: 0\n  stderr: ''\n  stdout: hi\n  succeeded: true\n"), text)

    async def test_defaultUserIsNull(self) -> None:
        """
        Without -u the body says user null, as st2's CLI sends.
        """
        await self.bwc("run", "core.local", "date")
        self.assertEqual(json.loads(self.requests("POST", "/v1/executions")[0]["body"]), {"action": "core.local", "user": None, "parameters": {"cmd": "date"}})

    async def test_inheritEnv(self) -> None:
        """
        -e sends the CLI's environment (minus session variables) as env.
        """
        await self.bwc("run", "-e", "core.local", "env")
        env = json.loads(self.requests("POST", "/v1/executions")[0]["body"])["parameters"]["env"]
        self.assertIsInstance(env, dict)
        self.assertNotIn("PATH", env)
        self.assertNotIn("HOME", env)

    async def test_failedExits1(self) -> None:
        """
        Exit 1 only for failed; timeout exits 0.
        """
        self.polls = ["failed"]
        self.assertEqual(await self.bwc("run", "core.local", "false"), 1)
        self.assertIn("status: failed (1s elapsed)", self.out.getvalue())
        self.polls = ["timeout"]
        self.assertEqual(await self.bwc("run", "core.local", "sleep 100"), 0)

    async def test_jsonNoDots(self) -> None:
        """
        -j prints only JSON (no progress dots) with the run attributes.
        """
        await self.bwc("run", "-j", "core.local", "echo hi")
        doc = json.loads(self.out.getvalue())
        self.assertEqual(sorted(doc), ["action", "context", "end_timestamp", "id", "parameters", "result", "start_timestamp", "status"])
        self.assertEqual(doc["status"], "succeeded")

    async def test_keyAndDetail(self) -> None:
        """
        -k prints one result key; -d prints a property table.
        """
        await self.bwc("run", "-k", "stdout", "core.local", "echo hi")
        self.assertEqual(self.out.getvalue(), "..\nhi\n")
        self.polls = ["succeeded"]
        await self.bwc("run", "-d", "core.local", "echo hi")
        self.assertIn("| status          | succeeded (1s elapsed)", self.out.getvalue())

    async def test_async(self) -> None:
        """
        -a returns after the POST with st2's hint.
        """
        self.assertEqual(await self.bwc("run", "-a", "core.local", "date"), 0)
        self.assertEqual(self.out.getvalue(), "To get the results, execute:\n bwc execution get e1\n\nTo view output in real-time, execute:\n bwc execution tail e1\n")
        self.assertEqual(self.requests("GET", "/v1/executions/e1"), [])

    async def test_debug(self) -> None:
        """
        --debug prints a block per request and no dots.
        """
        await self.bwc("--debug", "run", "core.local", "echo hi")
        text = self.out.getvalue()
        self.assertEqual(text.count(" request ----------\ncurl -X "), 5)
        self.assertNotIn(".#", text)
        self.assertIn("--data-binary '{\"action\": \"core.local\", \"user\": null, \"parameters\": {\"cmd\": \"echo hi\"}}'", text)

    async def test_unknownAction(self) -> None:
        """
        An unknown action is one error line, exit 1, and nothing is posted.
        """
        self.assertEqual(await self.bwc("run", "nope.x", "date"), 1)
        self.assertEqual(self.out.getvalue(), 'ERROR: Action "nope.x" cannot be found.\n')
        self.assertEqual(self.requests("POST", "/v1/executions"), [])

    async def test_badArgument(self) -> None:
        """
        A bad typed value is reported before anything is posted.
        """
        self.assertEqual(await self.bwc("run", "core.local", "timeout=soon", "date"), 1)
        self.assertIn("Invalid value for integer parameter", self.out.getvalue())
        self.assertEqual(self.requests("POST", "/v1/executions"), [])

    async def test_actionHelp(self) -> None:
        """
        run REF -h lists required then optional parameters, hiding immutable ones.
        """
        self.assertEqual(await self.bwc("run", "core.local", "-h"), 0)
        text = self.out.getvalue()
        self.assertIn("Required Parameters:\n    cmd\n        Arbitrary Linux command.\n        Type: string\n", text)
        self.assertIn("Optional Parameters:\n    cwd\n", text)
        self.assertLess(text.index("    cwd"), text.index("    env"))
        self.assertIn("        Default: 60\n", text)
        self.assertNotIn("sudo", text)


class ActionHelpTests(SynchronousTestCase):
    def test_positionOrder(self) -> None:
        """
        Parameters with a position come first, in position order, then by name.
        """
        text = actionHelp({"description": "d", "parameters": {"b": {"position": 1}, "a": {"position": 0}, "z": {}, "c": {}}}, {"runner_parameters": {}})
        order = [line.strip() for line in text.splitlines() if line.startswith("    ") and not line.startswith("        ")]
        self.assertEqual(order, ["a", "b", "c", "z"])


class ResourceTests(CommandTestCase):
    def setUp(self) -> None:
        self.rule = {
            "id": "r1",
            "ref": "examples.hook",
            "uid": "rule:examples:hook",
            "name": "hook",
            "pack": "examples",
            "description": "A rule.",
            "enabled": True,
            "trigger": {"type": "core.st2.webhook", "parameters": {"url": "sample"}, "ref": "core.abc"},
            "criteria": {},
            "action": {"ref": "core.local", "parameters": {"cmd": "date"}},
        }
        self.outputs = [b"line1\n", b"line1\nline2\nli", b"line1\nline2\nline3\n"]
        # the first status answers the existence check, then one per tail poll
        self.statuses = ["running", "running", "running", "succeeded"]

        def output(request, body):
            return 200, self.outputs.pop(0) if len(self.outputs) > 1 else self.outputs[0]

        def tailPoll(request, body):
            return 200, execution(self.statuses.pop(0) if len(self.statuses) > 1 else self.statuses[0], id="e9")

        self.serve(
            {
                ("GET", "/v1/webhooks"): lambda r, b: (
                    200,
                    [
                        {"type": "core.st2.webhook", "parameters": {"url": "zeta"}, "description": "z"},
                        {"type": "core.st2.webhook", "parameters": {"url": "alpha/beta"}, "description": "a"},
                    ],
                ),
                ("GET", "/v1/webhooks/missing"): lambda r, b: (404, {"faultstring": "Unhandled exception"}),
                ("GET", "/v1/rules/examples.hook"): lambda r, b: (200, self.rule),
                ("PUT", "/v1/rules/r1"): lambda r, b: (200, dict(self.rule, **json.loads(b))),
                ("DELETE", "/v1/rules/r1"): lambda r, b: (204, {}),
                ("POST", "/v1/rules"): lambda r, b: (409, {"faultstring": "Tried to save duplicate unique keys", "conflict-id": "r1"})
                if self.server.requests[:-1] and any(x["method"] == "POST" for x in self.server.requests[:-1])
                else (201, dict(json.loads(b), id="r2")),
                ("GET", "/v1/rules/"): lambda r, b: (200, [self.rule]),
                ("GET", "/v1/executions"): lambda r, b: (200, [execution("succeeded", id="new"), execution("running", id="old")]),
                ("DELETE", "/v1/executions/e1"): lambda r, b: (200, execution("canceled", result={"message": "Action canceled by user."})),
                ("DELETE", "/v1/executions/e2"): lambda r, b: (200, {"faultstring": "Action cannot be canceled. State = succeeded."}),
                ("GET", "/v1/executions/e9"): tailPoll,
                ("GET", "/v1/executions/e9/output"): output,
                ("GET", "/v1/apikeys/k1"): lambda r, b: (200, {"id": "k1", "user": "bob", "key_hash": "********", "metadata": {}, "enabled": True, "uid": "********"}),
                ("PUT", "/v1/apikeys/k1"): lambda r, b: (200, dict(json.loads(b))),
                ("POST", "/v1/triggerinstances/t1/re_emit"): lambda r, b: (200, {"message": "Trigger instance t1 succesfully re-sent.", "trigger_instance": {}}),
            }
        )

    async def test_webhookList(self) -> None:
        """
        Columns url, type, verification, description; url from parameters.url, sorted.
        """
        self.assertEqual(await self.bwc("webhook", "list"), 0)
        lines = self.out.getvalue().splitlines()
        self.assertEqual([c.strip() for c in lines[1].split("|")[1:-1]], ["url", "type", "verification", "description"])
        self.assertEqual([line.split("|")[1].strip() for line in lines[3:5]], ["alpha/beta", "zeta"])

    async def test_webhookGetMissing(self) -> None:
        """
        An unknown webhook is 'not found' and exit 2.
        """
        self.assertEqual(await self.bwc("webhook", "get", "missing"), 2)
        self.assertEqual(self.out.getvalue(), 'Webhook "missing" is not found.\n\n')

    async def test_ruleEnableDisable(self) -> None:
        """
        disable: GET by ref, PUT by id with the whole rule minus ref and enabled false.
        """
        self.assertEqual(await self.bwc("rule", "disable", "examples.hook", "-j"), 0)
        sent = json.loads(self.requests("PUT", "/v1/rules/r1")[0]["body"])
        expected = dict(self.rule, enabled=False)
        del expected["ref"]
        self.assertEqual(sent, expected)
        self.assertIs(json.loads(self.out.getvalue())["enabled"], False)

    async def test_ruleCreate(self) -> None:
        """
        create POSTs the YAML file's content and prints the rule; a conflict is ERROR and exit 2.
        """
        path = os.path.join(self.home, "rule.yaml")
        with open(path, "w") as f:
            f.write("name: hook\npack: examples\ntrigger:\n  type: core.st2.webhook\n  parameters:\n    url: sample\naction:\n  ref: core.local\n")
        self.assertEqual(await self.bwc("rule", "create", path), 0)
        self.assertEqual(
            json.loads(self.requests("POST", "/v1/rules")[0]["body"]),
            {"name": "hook", "pack": "examples", "trigger": {"type": "core.st2.webhook", "parameters": {"url": "sample"}}, "action": {"ref": "core.local"}},
        )
        self.assertIn("| id       | r2 ", self.out.getvalue())
        self.assertEqual(await self.bwc("rule", "create", path), 2)
        self.assertEqual(
            self.out.getvalue(), f"ERROR: 409 Client Error: Conflict\nMESSAGE: Tried to save duplicate unique keys for url: {self.base}/v1/rules\n"
        )

    async def test_ruleCreateBadFile(self) -> None:
        """
        A missing or unsupported file is ERROR and exit 2, nothing sent.
        """
        self.assertEqual(await self.bwc("rule", "create", os.path.join(self.home, "none.yaml")), 2)
        self.assertIn("does not exist", self.out.getvalue())
        txt = os.path.join(self.home, "rule.txt")
        open(txt, "w").close()
        self.assertEqual(await self.bwc("rule", "create", txt), 2)
        self.assertIn("Unsupported meta type .txt", self.out.getvalue())
        self.assertEqual(self.requests("POST", "/v1/rules"), [])

    async def test_ruleDelete(self) -> None:
        """
        delete looks the rule up by ref and deletes it by id.
        """
        self.assertEqual(await self.bwc("rule", "delete", "examples.hook"), 0)
        self.assertEqual(len(self.requests("DELETE", "/v1/rules/r1")), 1)
        self.assertEqual(self.out.getvalue(), 'Resource with id "examples.hook" has been successfully deleted.\n')

    async def test_ruleListQuery(self) -> None:
        """
        list sends the limit and filters, and --iftt switches the columns.
        """
        await self.bwc("rule", "list", "-p", "examples", "--enabled", "--iftt")
        self.assertEqual(self.server.requests[-1]["uri"], "/v1/rules/?limit=50&pack=examples&enabled=true")
        self.assertEqual([c.strip() for c in self.out.getvalue().splitlines()[1].split("|")[1:-1]], ["ref", "trigger.ref", "action.ref", "enabled"])

    async def test_executionList(self) -> None:
        """
        Newest last, parent=null by default, statuses with elapsed time.
        """
        self.assertEqual(await self.bwc("execution", "list", "-n", "2", "--status", "succeeded"), 0)
        self.assertEqual(self.server.requests[-1]["uri"], "/v1/executions?limit=2&parent=null&status=succeeded")
        rows = [line for line in self.out.getvalue().splitlines() if line.startswith("| ") and not line.startswith("| id")]
        self.assertEqual([r.split("|")[1].strip() for r in rows if r.split("|")[1].strip()], ["old", "new"])
        self.assertIn("succeeded (1s elapsed)", self.out.getvalue())

    async def test_cancel(self) -> None:
        """
        cancel prints st2's message, or the server's faultstring when it cannot cancel.
        """
        await self.bwc("execution", "cancel", "e1", "e2")
        self.assertEqual(self.out.getvalue(), "action execution with id e1 canceled.\nAction cannot be canceled. State = succeeded.\n")

    async def test_tail(self) -> None:
        """
        tail prints only the new part of the output each time, then the completion line.
        """
        self.assertEqual(await self.bwc("execution", "tail", "e9"), 0)
        self.assertEqual(self.out.getvalue(), "line1\nline2\nline3\nExecution e9 has completed (status=succeeded).\n")

    async def test_apikeyDisable(self) -> None:
        """
        disable PUTs only id, user, metadata and enabled (never the masked hash).
        """
        self.assertEqual(await self.bwc("apikey", "disable", "k1"), 0)
        self.assertEqual(json.loads(self.requests("PUT", "/v1/apikeys/k1")[0]["body"]), {"id": "k1", "user": "bob", "metadata": {}, "enabled": False})

    async def test_reEmit(self) -> None:
        """
        re-emit prints the server's message.
        """
        self.assertEqual(await self.bwc("trigger-instance", "re-emit", "t1"), 0)
        self.assertEqual(self.out.getvalue(), "Trigger instance t1 succesfully re-sent.\n")


