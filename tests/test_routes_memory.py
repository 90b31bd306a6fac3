"""
The HTTP API driven as a client drives it, through treq's C{StubTreq}, over
the real route installers wired as L{bwcd.service} wires them, on the
in-memory store and a fake clock: whole requests and answers, with no
sockets, files or threads, each test synchronous.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any, Dict, List, Optional

from treq.testing import StubTreq
from twisted.internet.defer import ensureDeferred
from twisted.internet.testing import MemoryReactorClock
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from bwcd.api.action_routes import installActionRoutes
from bwcd.api.auth_routes import installApiKeyRoutes
from bwcd.api.execution_routes import installExecutionRoutes
from bwcd.api.framework import Api
from bwcd.auth.apikeys import ApiKeys
from bwcd.auth.credentials import Authenticator
from bwcd.auth.tokens import Tokens
from bwcd.execution.executor import Executor
from bwcd.execution.runners.local import LocalRunner
from bwcd.execution.service import ExecutionService
from bwcd.packs.registrar import registerActions, registerRunnerTypes
from bwcd.testing import MemoryStore, startedStore

BASE = "http://bwcd.test"
T0 = datetime(2026, 11, 28, 21, 20, tzinfo=timezone.utc).timestamp()

_registered: Dict[str, List[dict]] = {}


def registered() -> Dict[str, List[dict]]:
    """
    The runner types and core pack actions as the daemon registers them at
    start, read from the pack folder once per test run.
    """
    if not _registered:
        store = MemoryStore()
        done: List[Any] = []
        store.start()
        ensureDeferred(registerRunnerTypes(store)).addBoth(done.append)
        ensureDeferred(registerActions(store, [])).addBoth(done.append)
        for result in done:
            if isinstance(result, Failure):
                result.raiseException()
        for collection in ("runnertypes", "actions"):
            _registered[collection] = list(store.database.collections[collection].values())
    return _registered


class RoutesTestsMixin:
    """
    The API of one daemon on a memory store holding the core pack, with an
    API key for C{alice}; C{request} sends it one request and returns the
    response and its decoded JSON body.
    """

    authEnabled = True
    maxQueued = 10000

    def setUp(self) -> None:
        self.clock = MemoryReactorClock()
        self.clock.advance(T0)
        self.store = startedStore(registered())
        tokens = Tokens(self.store, self.clock)
        self.apikeys = ApiKeys(self.store, self.clock)
        self.tokens = tokens
        authenticator = Authenticator(tokens, self.apikeys, self.authEnabled, "stanley")
        self.executions = ExecutionService(self.store, self.clock, "https://bwcd.example", maxQueued=self.maxQueued)
        # Never started: nothing is claimed or spawned, so executions stay
        # as the API left them.
        executor = Executor(
            self.store, self.executions, LocalRunner(self.clock), self.clock, 2, "https://bwcd.example",
            nodeId=lambda: "node-1", resolveScript=self.noScripts,
        )
        self.api = Api(authenticator.authenticate)
        installApiKeyRoutes(self.api, self.apikeys)
        installActionRoutes(self.api, self.store)
        installExecutionRoutes(self.api, self.store, self.executions, executor)
        self.api.ready = True
        self.http = StubTreq(self.api.resource())
        _doc, self.key = self.successResultOf(ensureDeferred(self.apikeys.create("alice")))
        self.auth = {"St2-Api-Key": self.key}

    def noScripts(self, pack: str, entryPoint: str) -> str:
        raise AssertionError("nothing runs in these tests")

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        raw: Optional[bytes] = None,
        headers: Optional[Dict[str, str]] = None,
        auth: bool = True,
    ):
        """
        Send one request and return C{(response, body)}: the body decoded
        from JSON when the answer says it is JSON, else the raw bytes.
        """
        sent = dict(self.auth if auth else {})
        sent.update(headers or {})
        if body is not None:
            raw = json.dumps(body).encode("utf-8")
            sent.setdefault("Content-Type", "application/json")
        d = self.http.request(method, BASE + path, headers=sent, data=raw)
        self.http.flush()
        response = self.successResultOf(d)
        content = self.successResultOf(self.http.content(response))
        contentType = (response.headers.getRawHeaders("Content-Type") or [""])[0]
        if "json" in contentType and content:
            return response, json.loads(content)
        return response, content

    def header(self, response, name: str) -> Optional[str]:
        values = response.headers.getRawHeaders(name)
        return values[0] if values else None

    def startExecution(self, parameters: Optional[dict] = None, action: str = "core.local", **body: Any) -> dict:
        body = dict(body, action=action, parameters=parameters if parameters is not None else {"cmd": "date"})
        response, doc = self.request("POST", "/v1/executions", body)
        self.assertEqual(response.code, 201, doc)
        return doc


class ExecutionRouteTests(RoutesTestsMixin, SynchronousTestCase):
    """
    C{/v1/executions}.
    """

    def test_create(self):
        """
        POST /v1/executions answers 201 with the new execution as st2 shows
        it: requested, for the caller, with its parameters, action and
        runner, and no internal fields.
        """
        response, doc = self.request("POST", "/v1/executions", {"action": "core.local", "parameters": {"cmd": "date"}})
        self.assertEqual(response.code, 201)
        self.assertRegex(doc["id"], "^[0-9a-f]{24}$")
        self.assertEqual(doc["status"], "requested")
        self.assertEqual(doc["action"]["ref"], "core.local")
        self.assertEqual(doc["runner"]["name"], "local-shell-cmd")
        self.assertEqual(doc["parameters"], {"cmd": "date"})
        self.assertEqual(doc["context"], {"user": "alice", "pack": "core"})
        self.assertEqual(doc["start_timestamp"], "2026-11-28T21:20:00.000000Z")
        self.assertEqual(doc["web_url"], f"https://bwcd.example/#/history/{doc['id']}/general")
        self.assertEqual([k for k in doc if k.startswith("_") or k == "node"], [])
        stored = self.successResultOf(self.store.get("executions", doc["id"]))
        self.assertEqual(stored["status"], "requested")

    def test_templateDefault(self):
        """
        core.echo's command is rendered from the message.
        """
        doc = self.startExecution({"message": "hello"}, action="core.echo")
        self.assertEqual(doc["parameters"]["message"], "hello")
        self.assertIn("hello", doc["parameters"]["cmd"])

    def test_createRefused(self):
        """
        Requests that cannot become executions answer 400 with st2's
        faultstrings and store nothing.
        """
        cases = [
            ({"action": "core.nothing"}, 'Action "core.nothing" cannot be found.'),
            ({"parameters": {}}, "'action' is a required property"),
            ({"action": "core.local", "parameters": {}}, "'cmd' is a required property"),
            ({"action": "core.local", "parameters": {"cmd": "x"}, "bogus": 1},
             "Additional properties are not allowed ('bogus' was unexpected)"),
            ({"action": "core.local", "parameters": {"cmd": "x"}, "delay": -1}, "-1 is less than the minimum of 0"),
            ([1], "[1] is not of type 'object'"),
        ]
        for body, faultstring in cases:
            response, answer = self.request("POST", "/v1/executions", body)
            self.assertEqual((response.code, answer), (400, {"faultstring": faultstring}), body)
        self.assertEqual(self.successResultOf(self.store.count("executions", {})), 0)

    def test_badJson(self):
        """
        A body that is not JSON answers 400 saying so.
        """
        response, answer = self.request("POST", "/v1/executions", raw=b'{"action": ', headers={"Content-Type": "application/json"})
        self.assertEqual(response.code, 400)
        self.assertTrue(answer["faultstring"].startswith("Failed to parse request body"), answer)

    def test_emptyBody(self):
        """
        A POST without a body answers 400.
        """
        response, answer = self.request("POST", "/v1/executions", raw=b"")
        self.assertEqual((response.code, answer), (400, {"faultstring": "Request body is required"}))

    def test_list(self):
        """
        GET /v1/executions lists newest first with X-Total-Count and
        X-Limit, pages with limit and offset, and filters.
        """
        ids = []
        for i in range(3):
            ids.append(self.startExecution({"cmd": f"echo {i}"})["id"])
            self.clock.advance(1)
        self.startExecution({"message": "m"}, action="core.echo")
        response, docs = self.request("GET", "/v1/executions")
        self.assertEqual(response.code, 200)
        self.assertEqual(self.header(response, "X-Total-Count"), "4")
        self.assertEqual(self.header(response, "X-Limit"), "100")
        self.assertEqual([d["id"] for d in docs[1:]], ids[::-1])
        response, docs = self.request("GET", "/v1/executions?action=core.local&limit=2&offset=1")
        self.assertEqual(self.header(response, "X-Total-Count"), "3")
        self.assertEqual(self.header(response, "X-Limit"), "2")
        self.assertEqual([d["id"] for d in docs], [ids[1], ids[0]])
        response, docs = self.request("GET", "/v1/executions?sort_asc=true&limit=1")
        self.assertEqual([d["id"] for d in docs], [ids[0]])
        response, docs = self.request("GET", "/v1/executions?status=succeeded")
        self.assertEqual((self.header(response, "X-Total-Count"), docs), ("0", []))

    def test_listBadLimit(self):
        """
        A limit of 0 answers 400 with st2's message.
        """
        response, answer = self.request("GET", "/v1/executions?limit=0")
        self.assertEqual(response.code, 400)
        self.assertEqual(
            answer["faultstring"], 'Limit, "0" specified, must be a positive number or -1 for full result set.'
        )

    def test_show(self):
        """
        GET /v1/executions/<id> shows one execution; "last" the newest.
        """
        first = self.startExecution()
        self.clock.advance(1)
        second = self.startExecution()
        response, doc = self.request("GET", f"/v1/executions/{first['id']}")
        self.assertEqual((response.code, doc), (200, first))
        response, doc = self.request("GET", "/v1/executions/last")
        self.assertEqual(doc["id"], second["id"])

    def test_notFound(self):
        """
        An unknown execution answers 404 with st2's faultstring.
        """
        for method, path in [("GET", "/v1/executions/nosuch"), ("DELETE", "/v1/executions/nosuch"),
                             ("GET", "/v1/executions/nosuch/output")]:
            response, answer = self.request(method, path)
            self.assertEqual(
                (response.code, answer), (404, {"faultstring": 'Unable to identify resource with id "nosuch".'}), path
            )

    def test_cancel(self):
        """
        DELETE /v1/executions/<id> cancels a queued execution for the
        caller; a finished one is not cancelable.
        """
        doc = self.startExecution()
        response, canceled = self.request("DELETE", f"/v1/executions/{doc['id']}")
        self.assertEqual(response.code, 200)
        self.assertEqual(canceled["status"], "canceled")
        self.assertEqual(canceled["result"], {"message": "Action canceled by user.", "user": "alice"})
        self.assertEqual(self.successResultOf(self.store.get("executions", doc["id"]))["status"], "canceled")
        response, again = self.request("DELETE", f"/v1/executions/{doc['id']}")
        self.assertEqual(again["status"], "canceled")
        done = self.startExecution()
        self.successResultOf(ensureDeferred(self.executions.transition(done["id"], ["requested"], "succeeded")))
        response, answer = self.request("DELETE", f"/v1/executions/{done['id']}")
        self.assertEqual(answer, {"faultstring": "Action cannot be canceled. State = succeeded."})

    def test_reRun(self):
        """
        POST /v1/executions/<id>/re_run starts a new execution with the
        original parameters and the overrides.
        """
        doc = self.startExecution({"message": "one"}, action="core.echo")
        response, again = self.request("POST", f"/v1/executions/{doc['id']}/re_run", {"parameters": {"message": "two"}})
        self.assertEqual(response.code, 201)
        self.assertNotEqual(again["id"], doc["id"])
        self.assertEqual(again["parameters"]["message"], "two")
        self.assertEqual(again["context"]["re-run"], {"ref": doc["id"]})

    def test_delayed(self):
        """
        A delay is accepted and shown.
        """
        doc = self.startExecution(delay=2000)
        self.assertEqual((doc["status"], doc["delay"]), ("delayed", 2000))

    def test_queueFull(self):
        """
        When the queue is at its bound a new execution answers 503 with
        Retry-After, and nothing is stored.
        """
        self.executions.maxQueued = 1
        self.startExecution()
        response, answer = self.request("POST", "/v1/executions", {"action": "core.local", "parameters": {"cmd": "x"}})
        self.assertEqual(response.code, 503)
        self.assertEqual(self.header(response, "Retry-After"), "2")
        self.assertEqual(
            answer["faultstring"],
            "1 executions are waiting to run (runner.max_queued is 1); try again shortly.",
        )
        self.assertEqual(self.successResultOf(self.store.count("executions", {})), 1)

    def test_storeUnavailable(self):
        """
        When the store cannot be reached, requests answer 503 with
        Retry-After instead of an error page.
        """
        self.store.breakDown()
        response, answer = self.request("GET", "/v1/executions")
        self.assertEqual(response.code, 503)
        self.assertEqual(answer, {"faultstring": "Storage is unavailable; try again shortly."})
        self.assertEqual(self.header(response, "Retry-After"), "2")
        self.assertEqual(self.flushLoggedErrors(), [], "a 503 is one warning line, not a traceback")

    def test_notReady(self):
        """
        Until the daemon is ready, routes answer 503.
        """
        self.api.ready = False
        response, answer = self.request("GET", "/v1/executions")
        self.assertEqual(response.code, 503)
        self.assertEqual(answer, {"faultstring": "bwcd is starting; try again shortly."})
        self.assertEqual(self.header(response, "Retry-After"), "1")

    def test_pendingWrite(self):
        """
        The answer waits for the store's write: no 201 before the execution
        is stored.
        """
        self.store.hold()
        d = self.http.post(BASE + "/v1/executions", json={"action": "core.local", "parameters": {"cmd": "x"}},
                           headers=self.auth)
        self.http.flush()
        while self.store.held[:1] != ["insert"]:
            self.assertIsNotNone(self.store.step(), "the execution is never inserted")
            self.http.flush()
        self.assertNoResult(d)
        self.assertEqual(self.store.step(), "insert")
        self.store.release()
        self.http.flush()
        response = self.successResultOf(d)
        self.assertEqual(response.code, 201)
        self.assertEqual(self.successResultOf(self.store.count("executions", {})), 1)

    def test_unknownRoute(self):
        """
        An unknown path answers 404 in st2's shape.
        """
        response, answer = self.request("GET", "/v1/nothing-here")
        self.assertEqual((response.code, answer), (404, {"faultstring": "The resource could not be found."}))


class AuthenticationTests(RoutesTestsMixin, SynchronousTestCase):
    """
    Credentials on the API routes.
    """

    def test_missing(self):
        """
        Without credentials every route answers 401 with st2's message, and
        nothing is done.
        """
        for method, path in [("GET", "/v1/executions"), ("POST", "/v1/executions"), ("GET", "/v1/actions"),
                             ("GET", "/v1/apikeys")]:
            response, answer = self.request(method, path, {"action": "core.local"} if method == "POST" else None,
                                            auth=False)
            self.assertEqual(
                (response.code, answer), (401, {"faultstring": "Unauthorized - One of Token or API key required."}),
                path,
            )
        self.assertEqual(self.successResultOf(self.store.count("executions", {})), 0)

    def test_unknownKey(self):
        """
        An API key that does not exist answers 401 naming its hash.
        """
        response, answer = self.request("GET", "/v1/executions", headers={"St2-Api-Key": "nope"}, auth=False)
        self.assertEqual(response.code, 401)
        self.assertTrue(answer["faultstring"].startswith("Unauthorized - ApiKey with key_hash="), answer)

    def test_token(self):
        """
        A token works in the header and in the query; once expired it
        answers 401.
        """
        token = self.successResultOf(ensureDeferred(self.tokens.issue("bob", ttl=60)))["token"]
        response, doc = self.request("POST", "/v1/executions", {"action": "core.local", "parameters": {"cmd": "x"}},
                                     headers={"X-Auth-Token": token}, auth=False)
        self.assertEqual((response.code, doc["context"]["user"]), (201, "bob"))
        response, _ = self.request("GET", f"/v1/executions?x-auth-token={token}", auth=False)
        self.assertEqual(response.code, 200)
        self.clock.advance(61)
        response, answer = self.request("GET", "/v1/executions", headers={"X-Auth-Token": token}, auth=False)
        self.assertEqual((response.code, answer), (401, {"faultstring": "Unauthorized - Token has expired."}))

    def test_newApiKey(self):
        """
        A key created through the API authenticates its user; the list
        counts it; after deletion it no longer works.
        """
        response, created = self.request("POST", "/v1/apikeys", {"user": "carol"})
        self.assertEqual(response.code, 201)
        self.assertEqual(created["user"], "carol")
        response, keys = self.request("GET", "/v1/apikeys")
        self.assertEqual(self.header(response, "X-Total-Count"), "2")
        self.assertEqual(sorted(k["user"] for k in keys), ["alice", "carol"])
        response, doc = self.request("POST", "/v1/executions", {"action": "core.local", "parameters": {"cmd": "x"}},
                                     headers={"St2-Api-Key": created["key"]}, auth=False)
        self.assertEqual(doc["context"]["user"], "carol")
        response, _ = self.request("DELETE", f"/v1/apikeys/{created['id']}")
        self.assertEqual(response.code, 204)
        self.clock.advance(5)  # past the validation cache
        response, _ = self.request("GET", "/v1/executions", headers={"St2-Api-Key": created["key"]}, auth=False)
        self.assertEqual(response.code, 401)

    def test_apiKeyNotFound(self):
        """
        An unknown API key id answers 404.
        """
        response, answer = self.request("GET", "/v1/apikeys/" + "0" * 24)
        self.assertEqual(response.code, 404)
        self.assertIn("faultstring", answer)


class DisabledAuthenticationTests(RoutesTestsMixin, SynchronousTestCase):
    """
    With auth.enable false every caller acts as the system user.
    """

    authEnabled = False

    def test_systemUser(self):
        """
        A request without credentials is served as the system user.
        """
        response, doc = self.request("POST", "/v1/executions", {"action": "core.local", "parameters": {"cmd": "x"}},
                                     auth=False)
        self.assertEqual((response.code, doc["context"]["user"]), (201, "stanley"))


class ActionRouteTests(RoutesTestsMixin, SynchronousTestCase):
    """
    C{/v1/actions} and C{/v1/runnertypes}.
    """

    def test_listActions(self):
        """
        The core pack's actions are listed by pack and name, with a total.
        """
        response, actions = self.request("GET", "/v1/actions")
        self.assertEqual(response.code, 200)
        refs = [a["ref"] for a in actions]
        self.assertEqual(refs, sorted(refs))
        self.assertIn("core.local", refs)
        self.assertEqual(self.header(response, "X-Total-Count"), str(len(refs)))

    def test_showAction(self):
        """
        An action is found by ref or id; an unknown one answers 404.
        """
        response, action = self.request("GET", "/v1/actions/core.local")
        self.assertEqual((response.code, action["ref"]), (200, "core.local"))
        response, byId = self.request("GET", f"/v1/actions/{action['id']}")
        self.assertEqual(byId, action)
        response, answer = self.request("GET", "/v1/actions/core.nothing")
        self.assertEqual(
            (response.code, answer),
            (404, {"faultstring": 'Resource with a reference or id "core.nothing" not found'}),
        )

    def test_runnerTypes(self):
        """
        The runner types are listed and shown by name.
        """
        response, runners = self.request("GET", "/v1/runnertypes")
        self.assertEqual([r["name"] for r in runners], ["http-request", "local-shell-cmd", "local-shell-script"])
        response, runner = self.request("GET", "/v1/runnertypes/local-shell-cmd")
        self.assertEqual(runner["runner_parameters"]["timeout"]["default"], 60)
