"""
Webhooks end to end, the way BWC's webhooks guide drives them: a real
C{twistd bwcd} process, real HTTP (curl-shaped requests), real child
processes, on SQLite and on MongoDB (SecantusDB or
C{$BWCD_TEST_MONGODB_URL}).
"""

from __future__ import annotations

import json
import os
import sqlite3

import treq
from twisted.internet import reactor
from twisted.internet.defer import ensureDeferred, gatherResults
from twisted.internet.task import deferLater
from twisted.trial.unittest import TestCase

from tests.daemon import startDaemon


#: the rule of the guide's custom webhook example, as `st2 rule create` sends it
SAMPLE_RULE = {
    "name": "sample_rule",
    "pack": "examples",
    "description": "Sample rule dumping webhook payload to a file.",
    "enabled": True,
    "trigger": {"type": "core.st2.webhook", "parameters": {"url": "sample"}},
    "criteria": {"trigger.body.key1": {"type": "equals", "pattern": "value1"}},
    "action": {"ref": "core.local", "parameters": {"cmd": "echo \"{{ trigger.body.key1 }} {{ trigger.headers['Content-Type'] }}\""}},
}


def writePack(root: str, files: dict) -> str:
    for relative, text in files.items():
        path = os.path.join(root, relative)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as f:
            f.write(text)
    return root


def genericPack(testCase: TestCase) -> str:
    """
    The guide's generic example: trigger type mypack.mytrigger and a rule on
    trigger.attribute1.
    """
    return writePack(
        os.path.abspath(testCase.mktemp()),
        {
            "mypack/pack.yaml": "name: mypack\nversion: 0.1.0\n",
            "mypack/triggers/mytrigger.yaml": "name: mytrigger\ndescription: Custom trigger\npayload_schema:\n  type: object\n  properties:\n    attribute1:\n      type: string\n",
            "mypack/rules/myrule.yaml": (
                "name: myrule\nenabled: true\ntrigger:\n  type: mypack.mytrigger\ncriteria:\n  trigger.attribute1:\n    type: equals\n    pattern: value1\n"
                "action:\n  ref: core.local\n  parameters:\n    cmd: echo generic {{ trigger.attribute1 }}\n"
            ),
        },
    )


class WebhooksEndToEndMixin:
    storage = "sqlite"
    timeout = 120

    async def daemon(self, **kw):
        return await startDaemon(self, storage=self.storage, **kw)

    async def executionsOf(self, d, instanceId: str, expect: int):
        """
        The instance, its enforcements and the executions started for it,
        once C{expect} executions were started and completed (woken by the
        daemon's log lines for each) and the instance is processed.
        """
        docs = [await d.waitFor(i) for i in await d.ruleExecutions(instanceId, expect)]
        # Justified poll: after logging a match the engine writes the
        # enforcement, then the instance's "processed"; no event marks those
        # writes (the daemon would need GET /v1/triggerinstances/<id>?wait=N).
        # They were in flight before the execution ended, so this rarely loops.
        while True:
            _, instance = await d.get(f"/v1/triggerinstances/{instanceId}")
            _, enforcements = await d.get(f"/v1/ruleenforcements?trigger_instance={instanceId}")
            if instance.get("status") == "processed" and len([e for e in enforcements if e.get("execution_id")]) >= expect:
                return instance, enforcements, docs
            await deferLater(reactor, 0.05, lambda: None)

    async def postAndWait(self, d, path: str, body):
        """
        POST a webhook asking (?wait=) for the answer once its rules were
        processed and the executions they started completed: how a test
        learns that an event started nothing.
        """
        response, answer = await d.post(path + "?wait=30", body)
        self.assertEqual(response.code, 200, answer)
        self.assertEqual(answer["trigger_instance"]["status"], "processed")
        return response, answer

    async def test_guideCustomWebhook(self):
        """
        The guide's custom webhook: a rule on url "sample" with
        trigger.body.key1 equals value1; a JSON post and a form post of
        key1=value1 each run the action with parameters from the body, a
        non-matching body starts nothing.
        """
        d = await self.daemon()
        response, rule = await d.post("/v1/rules", SAMPLE_RULE)
        self.assertEqual(response.code, 201, rule)
        _, hooks = await d.get("/v1/webhooks")
        self.assertEqual([h["parameters"]["url"] for h in hooks], ["sample"])

        response, body = await d.post("/v1/webhooks/sample", {"key1": "value1"})
        self.assertEqual((response.code, body), (202, {"key1": "value1"}))
        jsonInstance = response.headers.getRawHeaders("X-BWC-Trigger-Instance")[0]
        self.assertEqual(response.headers.getRawHeaders("Location"), [f"/v1/triggerinstances/{jsonInstance}"])

        response, body = await d.post(
            "/v1/webhooks/sample", data=b"key1=value1", headers=dict(d.headers, **{"Content-Type": "application/x-www-form-urlencoded"})
        )
        self.assertEqual((response.code, body), (202, {"key1": "value1"}))
        formInstance = response.headers.getRawHeaders("X-BWC-Trigger-Instance")[0]

        response, other = await self.postAndWait(d, "/v1/webhooks/sample", {"key1": "value2"})
        self.assertEqual((other["enforcements"], other["executions"]), ([], []))
        otherInstance = response.headers.getRawHeaders("X-BWC-Trigger-Instance")[0]

        _, _, [viaJson] = await self.executionsOf(d, jsonInstance, 1)
        self.assertEqual(viaJson["status"], "succeeded", viaJson)
        self.assertEqual(viaJson["result"]["stdout"], "value1 application/json")
        self.assertEqual(viaJson["context"]["user"], "stanley")
        self.assertEqual(viaJson["rule"]["ref"], "examples.sample_rule")
        _, _, [viaForm] = await self.executionsOf(d, formInstance, 1)
        self.assertEqual(viaForm["result"]["stdout"], "value1 application/x-www-form-urlencoded")
        instance, enforcements, docs = await self.executionsOf(d, otherInstance, 0)
        self.assertEqual((enforcements, docs), ([], []))
        _, listed = await d.get("/v1/executions")
        self.assertEqual(len(listed), 2)

    async def test_guideGenericWebhook(self):
        """
        The guide's generic example: POST /v1/webhooks/st2 with
        {"trigger": "mypack.mytrigger", "payload": {"attribute1": "value1"}}
        runs the pack rule's action.
        """
        d = await self.daemon(packs=[genericPack(self)])
        body = {"trigger": "mypack.mytrigger", "payload": {"attribute1": "value1"}}
        response, echoed = await d.post("/v1/webhooks/st2", body)
        self.assertEqual((response.code, echoed), (202, body))
        instanceId = response.headers.getRawHeaders("X-BWC-Trigger-Instance")[0]
        _, _, [execution] = await self.executionsOf(d, instanceId, 1)
        self.assertEqual(execution["result"]["stdout"], "generic value1")
        response, other = await self.postAndWait(d, "/v1/webhooks/st2", {"trigger": "mypack.mytrigger", "payload": {"attribute1": "nope"}})
        self.assertEqual(other["executions"], [])
        _, enforcements, docs = await self.executionsOf(d, response.headers.getRawHeaders("X-BWC-Trigger-Instance")[0], 0)
        self.assertEqual((enforcements, docs), ([], []))
        response, error = await d.post("/v1/webhooks/st2", {"trigger": "mypack.mytrigger", "payload": {"attribute1": 1}})
        self.assertEqual(response.code, 400, error)

    async def test_preferWait(self):
        """
        Prefer: wait=10 on a webhook whose rule runs `echo hi` answers 200
        with the execution's stdout.
        """
        d = await self.daemon()
        rule = dict(SAMPLE_RULE, criteria={}, action={"ref": "core.local", "parameters": {"cmd": "echo hi"}})
        response, _ = await d.post("/v1/rules", rule)
        self.assertEqual(response.code, 201)
        response, body = await d.post("/v1/webhooks/sample", {"any": "thing"}, headers=dict(d.headers, **{"Content-Type": "application/json", "Prefer": "wait=10"}))
        self.assertEqual(response.code, 200, body)
        [execution] = body["executions"]
        self.assertEqual(execution["status"], "succeeded")
        self.assertEqual(execution["result"]["stdout"], "hi")
        self.assertEqual(body["trigger_instance"]["status"], "processed")


class SQLiteWebhooksEndToEndTests(WebhooksEndToEndMixin, TestCase):
    async def test_crashBetweenAcceptanceAndExecution(self):
        """
        SIGKILL right after a burst of webhooks is accepted: after a
        restart every accepted webhook has run its action exactly once.
        """
        d = await self.daemon(config={"runner": {"max_concurrent": 2, "kill_grace": 1.0}})
        marks = os.path.abspath(self.mktemp())
        os.makedirs(marks)
        rule = dict(SAMPLE_RULE, criteria={}, action={"ref": "core.local", "parameters": {"cmd": f"touch {marks}/{{{{ trigger.body.n }}}}-$$"}})
        response, _ = await d.post("/v1/rules", rule)
        self.assertEqual(response.code, 201)

        async def send(n):
            response = await treq.post(
                d.apiURL + "/v1/webhooks/sample", data=json.dumps({"n": n}).encode(), headers=dict(d.headers, **{"Content-Type": "application/json"})
            )
            await response.content()
            return response.code, response.headers.getRawHeaders("X-BWC-Trigger-Instance")[0]

        accepted = await gatherResults([ensureDeferred(send(n)) for n in range(60)])
        await d.kill()
        self.assertEqual({code for code, _ in accepted}, {202})

        # What the kill interrupted: instances not processed yet, or
        # executions not run yet.
        db = sqlite3.connect(os.path.join(d.stateDir, "bwcd.sqlite"))
        try:
            unprocessed = db.execute("SELECT count(*) FROM triggerinstances WHERE json_extract(doc, '$.status') IN ('pending', 'processing')").fetchone()[0]
            notRun = db.execute("SELECT count(*) FROM executions WHERE json_extract(doc, '$.status') IN ('requested', 'scheduled')").fetchone()[0]
        finally:
            db.close()
        self.assertGreater(unprocessed + notRun, 0, "the kill came after everything had run; nothing was tested")

        await d.start()
        for code, instanceId in accepted:
            _, enforcements, docs = await self.executionsOf(d, instanceId, 1)
            self.assertEqual(len(enforcements), 1, instanceId)
        _, executions = await d.get("/v1/executions?limit=-1")
        self.assertEqual(len(executions), 60)
        perInstance = {}
        for execution in executions:
            perInstance.setdefault(execution["context"]["trigger_instance"]["id"], []).append(execution["id"])
        self.assertEqual(sorted(perInstance), sorted(i for _, i in accepted))
        self.assertEqual({len(v) for v in perInstance.values()}, {1})
        # Each action ran at most once (one marker file per n), and every
        # one that succeeded left its marker.
        seen = {}
        for name in os.listdir(marks):
            n = name.split("-")[0]
            seen[n] = seen.get(n, 0) + 1
        self.assertEqual(set(seen.values()) or {1}, {1})
        succeeded = [e for e in executions if e["status"] == "succeeded"]
        self.assertGreaterEqual(len(seen), len(succeeded))


class MongoWebhooksEndToEndTests(WebhooksEndToEndMixin, TestCase):
    storage = "mongodb"

    async def test_twoProcessesShareRules(self):
        """
        Two bwcd processes on one MongoDB: a rule created, changed or
        deleted through one takes effect on the other (which logs each
        reload of its rule index; how often it looks is tested with a clock
        in the rule index's own tests).
        """
        a = await self.daemon()
        b = await startDaemon(self, storage=a.configData["storage"]["url"])
        since = b.linesLogged
        response, rule = await a.post("/v1/rules", SAMPLE_RULE)
        self.assertEqual(response.code, 201)

        await b.logged(r"\bRule index loaded: 1 rules, 1 webhooks", since)
        response, _ = await b.post("/v1/webhooks/sample", {"key1": "value1"})
        self.assertEqual(response.code, 202)
        instanceId = response.headers.getRawHeaders("X-BWC-Trigger-Instance")[0]
        _, _, [execution] = await self.executionsOf(b, instanceId, 1)
        self.assertEqual(execution["result"]["stdout"], "value1 application/json")

        changed = dict(SAMPLE_RULE, criteria={"trigger.body.key1": {"type": "equals", "pattern": "value2"}})
        since = b.linesLogged
        response, _ = await self._put(a, f"/v1/rules/{rule['id']}", changed)
        self.assertEqual(response.code, 200)
        await b.logged(r"\bRule index loaded: 1 rules, 1 webhooks", since)
        _, answer = await self.postAndWait(b, "/v1/webhooks/sample", {"key1": "value2"})
        self.assertEqual(len(answer["enforcements"]), 1, answer)

        since = b.linesLogged
        response = await treq.delete(a.apiURL + f"/v1/rules/{rule['id']}", headers=a.headers)
        self.assertEqual(response.code, 204)
        await b.logged(r"\bRule index loaded: 0 rules, 0 webhooks", since)
        response, _ = await b.post("/v1/webhooks/sample", {"key1": "value1"})
        self.assertEqual(response.code, 404)

    async def _put(self, d, path, body):
        response = await treq.put(d.apiURL + path, data=json.dumps(body).encode(), headers=dict(d.headers, **{"Content-Type": "application/json"}))
        return response, json.loads(await response.content())
