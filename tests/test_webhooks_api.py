"""
Tests for L{bwcd.api.webhook_routes}: receiving webhooks over the API (in
memory, through L{treq.testing.StubTreq}) with a real SQLite store, rules
engine and execution service.

L{ApiClient} and L{apiHarness} are shared with the other API tests.
"""

from __future__ import annotations

import json
import os
from typing import Any, Dict, Optional, Tuple

from treq.testing import StubTreq
from twisted.internet import reactor
from twisted.trial.unittest import TestCase

from bwcd.api.framework import Api, ApiError, Principal
from bwcd.api.rule_routes import installRuleRoutes
from bwcd.api.trigger_routes import installTriggerRoutes
from bwcd.api.webhook_routes import installWebhookRoutes, preferredWait
from bwcd.store.interface import StoreUnavailable
from tests.daemon import PumpWhenFinished
from tests.test_rules_engine import FlakyStore, Harness, webhookRule
from tests.test_webhook_body import multipartBody

API_KEY = "test-api-key"


async def authenticate(request) -> Principal:
    if request.getHeader(b"st2-api-key") != API_KEY.encode():
        raise ApiError(401, "Unauthorized - One of Token or API key required.")
    return Principal("tester", "apikey")


class ApiClient:
    """
    Requests against an L{Api} in memory while the real reactor runs the
    store and the engine.
    """

    def __init__(self, api: Api) -> None:
        self.stub = PumpWhenFinished(api.resource()).stub

    async def request(self, method: str, path: str, body: Any = None, data: Optional[bytes] = None, headers: Optional[Dict[str, str]] = None, auth: bool = True) -> Tuple[Any, Any]:
        allHeaders = {"St2-Api-Key": API_KEY} if auth else {}
        if body is not None:
            data = json.dumps(body).encode()
            allHeaders["Content-Type"] = "application/json"
        allHeaders.update(headers or {})
        response = await self.stub.request(method, "http://bwcd.test" + path, data=data, headers=allHeaders)
        raw = await response.content()
        try:
            parsed = json.loads(raw) if raw else None
        except ValueError:
            parsed = raw
        return response, parsed

    def get(self, path: str, **kw: Any):
        return self.request("GET", path, **kw)

    def post(self, path: str, body: Any = None, **kw: Any):
        return self.request("POST", path, body=body, **kw)

    def put(self, path: str, body: Any = None, **kw: Any):
        return self.request("PUT", path, body=body, **kw)

    def delete(self, path: str, **kw: Any):
        return self.request("DELETE", path, **kw)


def header(response, name: str) -> Optional[str]:
    values = response.headers.getRawHeaders(name)
    return values[0] if values else None


async def apiHarness(testCase: TestCase, **kwargs: Any) -> Tuple[Harness, ApiClient]:
    h = await Harness.create(testCase, **kwargs)
    api = Api(authenticate)
    api.ready = True
    installWebhookRoutes(api, h.index, h.engine, h.executions, h.store, reactor)
    installRuleRoutes(api, h.store, h.index)
    installTriggerRoutes(api, h.store, h.index, h.engine)
    return h, ApiClient(api)


def examplePack(testCase: TestCase) -> str:
    """
    A packs folder with BWC's generic-webhook example: trigger type
    C{mypack.mytrigger} and a rule on C{trigger.attribute1}.
    """
    root = os.path.abspath(testCase.mktemp())
    files = {
        "mypack/pack.yaml": "name: mypack\nversion: 0.1.0\n",
        "mypack/triggers/mytrigger.yaml": (
            "name: mytrigger\ndescription: A generic trigger\npayload_schema:\n  type: object\n"
            "  properties:\n    attribute1:\n      type: string\n"
        ),
        "mypack/rules/generic.yaml": (
            "name: generic_rule\nenabled: true\ntrigger:\n  type: mypack.mytrigger\n"
            "criteria:\n  trigger.attribute1:\n    type: equals\n    pattern: value1\n"
            "action:\n  ref: core.local\n  parameters:\n    cmd: echo {{ trigger.attribute1 }}\n"
        ),
    }
    for relative, text in files.items():
        path = os.path.join(root, relative)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as f:
            f.write(text)
    return root


class CustomHookTests(TestCase):
    async def setUpHarness(self, **kwargs: Any):
        self.h, self.client = await apiHarness(self, **kwargs)
        self.rule = await self.h.addRule(webhookRule())

    async def executions(self):
        await self.h.engine.whenIdle()
        return await self.h.store.find("executions", {})

    async def test_guideExampleJson(self):
        """
        BWC's custom webhook example: a JSON body matching the rule is
        accepted with 202 (echoing the body, pointing at the stored
        instance) and runs the action with parameters rendered from it.
        """
        await self.setUpHarness()
        response, body = await self.client.post("/v1/webhooks/sample", {"key1": "value1"})
        self.assertEqual(response.code, 202)
        self.assertEqual(body, {"key1": "value1"})
        instanceId = header(response, "X-BWC-Trigger-Instance")
        self.assertEqual(header(response, "Location"), f"/v1/triggerinstances/{instanceId}")
        instance = await self.h.store.get("triggerinstances", instanceId)
        self.assertEqual(instance["trigger"], self.rule["trigger"]["ref"])
        self.assertEqual(instance["payload"]["body"], {"key1": "value1"})
        [execution] = await self.executions()
        self.assertEqual(execution["parameters"]["cmd"], "echo value1")
        self.assertEqual(execution["context"]["trigger_instance"]["id"], instanceId)

    async def test_guideExampleForm(self):
        """
        The same example with form data (curl -d key1=value1) matches too,
        because a field sent once is a string.
        """
        await self.setUpHarness()
        response, body = await self.client.post("/v1/webhooks/sample", data=b"key1=value1", headers={"Content-Type": "application/x-www-form-urlencoded"})
        self.assertEqual(response.code, 202)
        self.assertEqual(body, {"key1": "value1"})
        [execution] = await self.executions()
        self.assertEqual(execution["parameters"]["cmd"], "echo value1")

    async def test_multipart(self):
        """
        multipart/form-data bodies (curl -F key1=value1) match as well.
        """
        await self.setUpHarness()
        raw = multipartBody("------bwcd", [("key1", "value1", None, None)])
        response, body = await self.client.post("/v1/webhooks/sample", data=raw, headers={"Content-Type": "multipart/form-data; boundary=------bwcd"})
        self.assertEqual(response.code, 202)
        self.assertEqual(body, {"key1": "value1"})
        self.assertEqual(len(await self.executions()), 1)

    async def test_noMatchStartsNothing(self):
        """
        A body the rule does not match is accepted but starts nothing.
        """
        await self.setUpHarness()
        response, _ = await self.client.post("/v1/webhooks/sample", {"key1": "other"})
        self.assertEqual(response.code, 202)
        self.assertEqual(await self.executions(), [])
        instance = await self.h.store.get("triggerinstances", header(response, "X-BWC-Trigger-Instance"))
        self.assertEqual(instance["status"], "processed")

    async def test_slashesIgnored(self):
        """
        Leading and trailing slashes of the request path do not matter, the
        API prefix through nginx works too, and interior slashes are kept.
        """
        await self.setUpHarness()
        await self.h.addRule(webhookRule(name="deep", url="/with/mixed/slash/"))
        for path in ("/v1/webhooks/sample", "/v1/webhooks/sample/", "/v1/webhooks//sample", "/v1/webhooks//sample/", "/api/v1/webhooks/sample", "/v1/webhooks/with/mixed/slash"):
            response, _ = await self.client.post(path, {"key1": "value1"})
            self.assertEqual(response.code, 202, path)
        response, body = await self.client.post("/v1/webhooks/with/mixed", {})
        self.assertEqual(response.code, 404)

    async def test_unknownHook(self):
        """
        An unknown hook is 404 with StackStorm's message.
        """
        await self.setUpHarness()
        response, body = await self.client.post("/v1/webhooks/nope", {"a": 1})
        self.assertEqual(response.code, 404)
        self.assertEqual(body, {"faultstring": "Webhook nope not registered with st2"})

    async def test_badBodies(self):
        """
        Invalid JSON and unsupported types are 400, checked before the hook
        is looked up (as in StackStorm), and nothing is stored.
        """
        await self.setUpHarness()
        response, body = await self.client.post("/v1/webhooks/nope", data=b"{x", headers={"Content-Type": "application/json"})
        self.assertEqual(response.code, 400)
        self.assertTrue(body["faultstring"].startswith("Failed to parse request body: "))
        response, body = await self.client.post("/v1/webhooks/sample", data=b"<a/>", headers={"Content-Type": "application/xml"})
        self.assertEqual(response.code, 400)
        self.assertEqual(body, {"faultstring": 'Failed to parse request body: Unsupported Content-Type: "application/xml"'})
        response, body = await self.client.post("/v1/webhooks/sample", data=b"5")
        self.assertEqual(body, {"faultstring": "5 is not of type 'object', 'array'"})
        self.assertEqual(await self.h.store.count("triggerinstances", {}), 0)

    async def test_payloadHeadersAndCredentials(self):
        """
        The payload carries WSGI-cased headers and headers_lower; API keys,
        tokens and cookies (also query-string ones) are stored nowhere.
        """
        await self.setUpHarness()
        response, _ = await self.client.post(
            "/v1/webhooks/sample?st2-api-key=query-secret&x-auth-token=query-token",
            {"key1": "value1"},
            headers={"X-GitHub-Event": "push", "Cookie": "session=cookie-secret", "X-Auth-Token": "token-secret"},
        )
        self.assertEqual(response.code, 202)
        instance = await self.h.store.get("triggerinstances", header(response, "X-BWC-Trigger-Instance"))
        headers = instance["payload"]["headers"]
        self.assertEqual(headers["X-Github-Event"], "push")
        self.assertEqual(headers["Content-Type"], "application/json")
        self.assertEqual(instance["payload"]["headers_lower"]["x-github-event"], "push")
        for name in ("St2-Api-Key", "X-Auth-Token", "Cookie"):
            self.assertNotIn(name, headers)
        await self.h.engine.whenIdle()
        for collection in ("triggerinstances", "executions", "ruleenforcements"):
            text = json.dumps(await self.h.store.find(collection, {}))
            for secret in (API_KEY, "query-secret", "query-token", "cookie-secret", "token-secret"):
                self.assertNotIn(secret, text, collection)

    async def test_headersInCriteria(self):
        """
        Rules can match on trigger.headers with the documented bracket
        syntax.
        """
        await self.setUpHarness()
        await self.h.addRule(webhookRule(name="gh", url="gh", criteria={"trigger.headers['X-Github-Event']": {"type": "equals", "pattern": "push"}}, action={"ref": "core.noop"}))
        await self.client.post("/v1/webhooks/gh", {}, headers={"X-GitHub-Event": "push"})
        await self.client.post("/v1/webhooks/gh", {}, headers={"X-GitHub-Event": "issues"})
        executions = await self.executions()
        self.assertEqual(len(executions), 1)
        self.assertEqual(executions[0]["action"]["ref"], "core.noop")

    async def test_storeUnavailable(self):
        """
        When the instance cannot be stored the answer is 503 with
        Retry-After and nothing is dispatched.
        """
        await self.setUpHarness(wrapStore=FlakyStore, engineArgs={"insertDelay": 0.01})
        self.h.store.failing["insert"] = 3
        response, body = await self.client.post("/v1/webhooks/sample", {"key1": "value1"})
        self.assertEqual(response.code, 503)
        self.assertIsNotNone(header(response, "Retry-After"))
        await self.h.engine.discards.whenSettled()
        self.assertEqual(await self.h.store.count("triggerinstances", {"status": {"$ne": "processing_failed"}}), 0)
        self.assertEqual(await self.executions(), [])
        self.assertEqual(self.h.engine.load, 0)
        self.flushLoggedErrors(StoreUnavailable)

    async def test_overloaded(self):
        """
        With the processing queue full the answer is 503 with Retry-After,
        before anything is stored.
        """
        await self.setUpHarness(engineArgs={"maxQueued": 1})
        self.h.engine.reserve(1)
        response, body = await self.client.post("/v1/webhooks/sample", {"key1": "value1"})
        self.assertEqual(response.code, 503)
        self.assertEqual(header(response, "Retry-After"), "1")
        self.assertEqual(await self.h.store.count("triggerinstances", {}), 0)
        self.h.engine.release(1)
        response, _ = await self.client.post("/v1/webhooks/sample", {"key1": "value1"})
        self.assertEqual(response.code, 202)

    async def test_listAndShow(self):
        """
        GET /v1/webhooks lists the webhook triggers; GET /v1/webhooks/<url>
        shows one; an unknown one is StackStorm's bare 404.
        """
        await self.setUpHarness()
        response, body = await self.client.get("/v1/webhooks")
        self.assertEqual(response.code, 200)
        self.assertEqual([t["parameters"] for t in body], [{"url": "sample"}])
        self.assertEqual(body[0]["type"], "core.st2.webhook")
        self.assertEqual(body[0]["ref"], self.rule["trigger"]["ref"])
        response, body = await self.client.get("/v1/webhooks/sample")
        self.assertEqual(body["ref"], self.rule["trigger"]["ref"])
        response, body = await self.client.get("/v1/webhooks/nope")
        self.assertEqual((response.code, body), (404, {"faultstring": "Unhandled exception"}))

    async def test_authenticationRequired(self):
        """
        Every webhook route goes through authentication.
        """
        await self.setUpHarness()
        for method, path in (("POST", "/v1/webhooks/sample"), ("GET", "/v1/webhooks"), ("GET", "/v1/webhooks/sample")):
            response, _ = await self.client.request(method, path, body={}, auth=False)
            self.assertEqual(response.code, 401, path)
        self.assertEqual(await self.h.store.count("triggerinstances", {}), 0)


class GenericHookTests(TestCase):
    async def setUp(self):
        self.h, self.client = await apiHarness(self, packs=[examplePack(self)])

    async def test_guideExample(self):
        """
        BWC's generic example: POST /v1/webhooks/st2 with {trigger, payload}
        is accepted (echoing the body) and the pack rule runs the action.
        """
        body = {"trigger": "mypack.mytrigger", "payload": {"attribute1": "value1"}}
        response, echoed = await self.client.post("/v1/webhooks/st2", body)
        self.assertEqual(response.code, 202)
        self.assertEqual(echoed, body)
        instance = await self.h.store.get("triggerinstances", header(response, "X-BWC-Trigger-Instance"))
        self.assertEqual(instance["trigger"], "mypack.mytrigger")
        self.assertEqual(instance["payload"], {"attribute1": "value1"})
        await self.h.engine.whenIdle()
        [execution] = await self.h.store.find("executions", {})
        self.assertEqual(execution["parameters"]["cmd"], "echo value1")
        self.assertEqual(execution["rule"]["ref"], "mypack.generic_rule")

    async def test_noMatch(self):
        """
        A payload the pack rule does not match starts nothing.
        """
        response, _ = await self.client.post("/v1/webhooks/st2/", {"trigger": "mypack.mytrigger", "payload": {"attribute1": "other"}})
        self.assertEqual(response.code, 202)
        await self.h.engine.whenIdle()
        self.assertEqual(await self.h.store.count("executions", {}), 0)

    async def test_errors(self):
        """
        StackStorm's 400s: a body that is not an object, a missing trigger,
        an unknown trigger type and an invalid payload.
        """
        cases = [
            ([1], "Webhook body needs to be an object, got: array"),
            ({"payload": {}}, "Trigger not specified."),
            (
                {"trigger": "nope.nothing", "payload": {"a": 1}},
                "Trigger payload validation failed and validation is enabled, not dispatching a trigger \"nope.nothing\" ({'a': 1}): Trigger type with reference \"nope.nothing\" doesn't exist in the database",
            ),
            (
                {"trigger": "mypack.mytrigger", "payload": "invalid"},
                "Trigger payload validation failed and validation is enabled, not dispatching a trigger \"mypack.mytrigger\" ('invalid'): 'invalid' is not of type 'object'",
            ),
            (
                {"trigger": "mypack.mytrigger", "payload": {"attribute1": 5}},
                "Trigger payload validation failed and validation is enabled, not dispatching a trigger \"mypack.mytrigger\" ({'attribute1': 5}): 5 is not of type 'string'",
            ),
        ]
        for body, message in cases:
            response, answer = await self.client.post("/v1/webhooks/st2", body)
            self.assertEqual((response.code, answer), (400, {"faultstring": message}))
        self.assertEqual(await self.h.store.count("triggerinstances", {}), 0)

    async def test_builtinType(self):
        """
        Built-in parameterless types (with shadow triggers) can be sent
        through the generic hook too.
        """
        response, _ = await self.client.post("/v1/webhooks/st2", {"trigger": "core.st2.generic.inquiry", "payload": {"id": "x", "route": "r"}})
        self.assertEqual(response.code, 202)


class WaitTests(TestCase):
    async def setUp(self):
        self.h, self.client = await apiHarness(self, runActions=True)

    def test_preferParsing(self):
        """
        The wait preference is found among other preferences and
        parameters.
        """
        self.assertEqual(preferredWait(["respond-async, wait=10"]), 10)
        self.assertEqual(preferredWait(["handling=lenient", 'wait="2.5"; x=y']), 2.5)
        self.assertIsNone(preferredWait(["respond-async", "wait=abc"]))

    async def test_waitReturnsOutput(self):
        """
        Prefer: wait=10 on a hook whose rule runs echo hi answers 200 with
        the instance, the enforcement and the execution's stdout.
        """
        await self.h.addRule(webhookRule(criteria={}, action={"ref": "core.local", "parameters": {"cmd": "echo hi"}}))
        response, body = await self.client.post("/v1/webhooks/sample", {"a": 1}, headers={"Prefer": "wait=10"})
        self.assertEqual(response.code, 200)
        self.assertEqual(header(response, "Preference-Applied"), "wait=10")
        self.assertEqual(body["trigger_instance"]["id"], header(response, "X-BWC-Trigger-Instance"))
        self.assertEqual(body["trigger_instance"]["status"], "processed")
        [enforcement] = body["enforcements"]
        [execution] = body["executions"]
        self.assertEqual(enforcement["execution_id"], execution["id"])
        self.assertEqual(execution["action"], "core.local")
        self.assertEqual(execution["status"], "succeeded")
        self.assertEqual(execution["result"]["stdout"], "hi")

    async def test_waitQueryParameter(self):
        """
        ?wait=N works like the header; with no matching rule the answer is
        200 with no executions.
        """
        await self.h.addRule(webhookRule(action={"ref": "core.local", "parameters": {"cmd": "echo {{ trigger.body.key1 }}"}}))
        response, body = await self.client.post("/v1/webhooks/sample?wait=5", {"key1": "value1"})
        self.assertEqual(response.code, 200)
        self.assertIsNone(header(response, "Preference-Applied"))
        self.assertEqual(body["executions"][0]["result"]["stdout"], "value1")
        response, body = await self.client.post("/v1/webhooks/sample?wait=5", {"key1": "nope"})
        self.assertEqual(response.code, 200)
        self.assertEqual((body["enforcements"], body["executions"]), ([], []))
        response, body = await self.client.post("/v1/webhooks/sample?wait=soon", {"key1": "nope"})
        self.assertEqual((response.code, body), (400, {"faultstring": 'Parameter "wait" is not of type number'}))

    async def test_waitRunsOut(self):
        """
        When the wait runs out first the answer is 202 with the ids and the
        statuses so far; the action still completes.  (The action waits on
        a FIFO until the test has the answer: it cannot end first.)
        """
        gate = os.path.abspath(self.mktemp())
        os.mkfifo(gate)
        # read-write: opening never blocks, and the line stays readable
        gateFd = os.open(gate, os.O_RDWR | os.O_NONBLOCK)
        self.addCleanup(os.close, gateFd)
        await self.h.addRule(webhookRule(criteria={}, action={"ref": "core.local", "parameters": {"cmd": f"read x < {gate}"}}))
        response, body = await self.client.post("/v1/webhooks/sample", {}, headers={"Prefer": "respond-async, wait=0.3"})
        self.assertEqual(response.code, 202)
        [execution] = body["executions"]
        self.assertIn(execution["status"], ("requested", "scheduled", "running"))
        os.write(gateFd, b"go\n")
        done = await self.h.waitForExecution(execution["id"])
        self.assertEqual(done["status"], "succeeded")
