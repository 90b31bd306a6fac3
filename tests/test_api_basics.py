"""
The HTTP edge shared by every route: error bodies, unknown routes and
methods, CORS preflight, credential redaction and paging rules.
"""

import json

import treq
from treq.testing import StubTreq
from twisted.internet import reactor
from twisted.internet.defer import Deferred, ensureDeferred
from twisted.trial.unittest import SynchronousTestCase, TestCase

from bwcd.api.framework import Api, ApiError, Principal, Reply
from bwcd.api.query import paging
from bwcd.api.site import BwcdSite, redactedURI
from tests.daemon import startDaemon  # noqa: F401 (makes treq's pool one-shot)


async def noAuth(request):
    raise ApiError(401, "Unauthorized - One of Token or API key required.")


class EdgeTests(TestCase):
    def setUp(self):
        api = Api(noAuth)
        api.ready = True

        @api.route("/v1/things", ["GET"], auth=False)
        async def things(request, principal):
            return [1, 2]

        @api.route("/v1/boom", ["GET"], auth=False)
        async def boom(request, principal):
            raise RuntimeError("secret detail")

        @api.route("/v1/made", ["POST"], auth=False)
        async def made(request, principal):
            return Reply({"ok": True}, 201, {"X-Thing": "1"})

        @api.route("/v1/private", ["GET"])
        async def private(request, principal):
            return {}

        self.gate = Deferred()
        self.finished = []
        self.started: Deferred = Deferred()
        self.gone: Deferred = Deferred()
        self.done: Deferred = Deferred()

        @api.route("/v1/slow", ["POST"], auth=False)
        async def slow(request, principal):
            request.notifyFinish().addBoth(lambda _: self.gone.callback(None))
            self.started.callback(None)
            await self.gate
            self.finished.append(True)
            self.done.callback(None)
            return {}

        port = reactor.listenTCP(0, BwcdSite(api.resource(), 100, allowOrigins=["https://ui.example.org"]), interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        self.url = f"http://127.0.0.1:{port.getHost().port}"

    async def fetch(self, method, path, **kw):
        response = await treq.request(method, self.url + path, **kw)
        return response, await response.json() if response.code != 200 or method != "OPTIONS" else None

    async def test_routes(self):
        """
        Routes answer JSON; one trailing slash is accepted; unknown paths and
        methods give 404 with st2's faultstring; an exception is a JSON 500
        without details.
        """
        for path in ("/v1/things", "/v1/things/"):
            response, body = await self.fetch("GET", path)
            self.assertEqual((response.code, body), (200, [1, 2]))
        for method, path in (("GET", "/v1/nothing"), ("DELETE", "/v1/things")):
            response, body = await self.fetch(method, path)
            self.assertEqual((response.code, body), (404, {"faultstring": "The resource could not be found."}))
        response, body = await self.fetch("GET", "/v1/boom")
        self.assertEqual((response.code, body), (500, {"faultstring": "Internal Server Error"}))
        self.flushLoggedErrors(RuntimeError)
        response, body = await self.fetch("POST", "/v1/made")
        self.assertEqual((response.code, body, response.headers.getRawHeaders("X-Thing")), (201, {"ok": True}, ["1"]))
        response, body = await self.fetch("GET", "/v1/private")
        self.assertEqual(response.code, 401)

    async def test_corsAndLimits(self):
        """
        OPTIONS from a configured origin is answered before authentication
        with st2's CORS headers; a body over the limit is 413 JSON.
        """
        response = await treq.request("OPTIONS", self.url + "/v1/private", headers={"Origin": "https://ui.example.org"})
        await response.content()
        self.assertEqual(response.code, 200)
        self.assertEqual(response.headers.getRawHeaders("Access-Control-Allow-Methods"), ["GET,POST,PUT,DELETE,OPTIONS"])
        self.assertIn("St2-Api-Key", response.headers.getRawHeaders("Access-Control-Allow-Headers")[0])
        response, body = await self.fetch("POST", "/v1/made", data=b"x" * 101)
        self.assertEqual((response.code, body), (413, {"faultstring": "Request body is larger than the limit of 100 bytes."}))


    async def test_clientGoneWorkGoesOn(self):
        """
        A client that disconnects while its request is being handled does not
        cut the handler short: its work runs to the end.
        """
        from twisted.internet.protocol import ClientCreator, Protocol

        port = int(self.url.rsplit(":", 1)[1])
        client = await ClientCreator(reactor, Protocol).connectTCP("127.0.0.1", port)
        client.transport.write(b"POST /v1/slow HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n")
        await self.started
        client.transport.loseConnection()
        await self.gone  # the server has seen the client go (Klein cancels here)
        self.assertEqual(self.finished, [])
        self.gate.callback(None)
        await self.done
        self.assertEqual(self.finished, [True])


class PureTests(SynchronousTestCase):
    def test_redaction(self):
        """
        Query credentials and API keys in paths never reach a log line.
        """
        self.assertEqual(redactedURI(b"/v1/x?st2-api-key=SECRET&a=1"), "/v1/x?st2-api-key=%2A%2A%2A%2A%2A%2A%2A%2A&a=1")
        self.assertNotIn("TOK", redactedURI(b"/v1/x?x-auth-token=TOK"))
        self.assertEqual(redactedURI(b"/v1/apikeys/SECRETKEY"), "/v1/apikeys/********")
        self.assertEqual(redactedURI(b"/v1/apikeys"), "/v1/apikeys")

    def test_paging(self):
        """
        limit and offset follow st2's rules and messages.
        """

        class R:
            def __init__(self, **args):
                self.args = {k.encode(): [str(v).encode()] for k, v in args.items()}

        self.assertEqual(paging(R()), (100, 0))
        self.assertEqual(paging(R(limit=-1, offset=5)), (None, 5))
        for args, message in (
            ({"limit": 0}, 'Limit, "0" specified, must be a positive number or -1 for full result set.'),
            ({"limit": -22}, 'Limit, "-22" specified, must be a positive number.'),
            ({"limit": "x"}, 'Parameter "limit" is not of type integer'),
            ({"offset": 2 ** 31}, f'Offset "{2 ** 31}" specified is more than 32-bit int'),
        ):
            with self.assertRaises(ApiError) as cm:
                paging(R(**args))
            self.assertEqual((cm.exception.code, cm.exception.faultstring), (400, message))


class ExecutionRouteTests(SynchronousTestCase):
    """
    C{/v1/executions} over an in-memory store: who an execution runs as,
    and that no body, however hostile or misshapen, is a 500.
    """

    def setUp(self):
        from twisted.internet.task import Clock

        from bwcd.api.execution_routes import installExecutionRoutes
        from bwcd.execution.service import ExecutionService
        from bwcd.packs.registrar import registerActions, registerRunnerTypes
        from bwcd.testing import MemoryStore

        self.store = MemoryStore()
        self.successResultOf(self.store.start())
        self.successResultOf(ensureDeferred(registerRunnerTypes(self.store)))
        self.successResultOf(ensureDeferred(registerActions(self.store, [])))
        self.executions = ExecutionService(self.store, Clock(), "http://127.0.0.1:9101")
        self.principal = Principal("alice", "token")
        self.canceled = []

        class Executor:
            def cancelLocal(executor, execId):
                self.canceled.append(execId)

        async def authenticate(request):
            return self.principal

        self.makeApi = lambda strict=False: self._api(authenticate, installExecutionRoutes, Executor(), strict)
        self.stub = self.makeApi()

    def _api(self, authenticate, install, executor, strict):
        api = Api(authenticate, requireJsonContentType=strict)
        api.ready = True
        install(api, self.store, self.executions, executor)
        return StubTreq(api.resource())

    def call(self, method, path, raw=None, headers=None, stub=None):
        stub = stub or self.stub
        allHeaders = {"Content-Type": "application/json"}
        allHeaders.update(headers or {})
        d = stub.request(method, "http://bwcd.test" + path, data=raw, headers={k: v for k, v in allHeaders.items() if v is not None})
        stub.flush()
        response = self.successResultOf(d)
        content = self.successResultOf(response.content())
        return response.code, json.loads(content) if content else None

    def post(self, body, headers=None, path="/v1/executions"):
        return self.call("POST", path, json.dumps(body).encode(), headers)

    def test_contextUserIsTheCaller(self):
        """
        The St2-Context header and C{context} in the body may add context
        keys but never change C{context.user}: it is the authenticated
        caller, on create and on re-run.
        """
        run = {"action": "core.local", "parameters": {"cmd": "true"}}
        for body, headers in (
            (dict(run, context={"user": "mallory", "note": "kept"}), None),
            (run, {"St2-Context": json.dumps({"user": "mallory", "note": "kept"})}),
            (dict(run, context={"user": "eve"}), {"St2-Context": json.dumps({"user": "mallory", "note": "kept"})}),
        ):
            code, doc = self.post(body, headers)
            self.assertEqual(code, 201, doc)
            self.assertEqual((doc["context"]["user"], doc["context"]["note"]), ("alice", "kept"))
            stored = self.successResultOf(self.store.get("executions", doc["id"]))
            self.assertEqual(stored["context"]["user"], "alice")
        code, again = self.call("POST", f"/v1/executions/{doc['id']}/re_run", b'{"context": {"user": "mallory"}}')
        self.assertEqual((code, again["context"]["user"]), (201, "alice"))

    def test_userNamedByAdminsOnly(self):
        """
        C{user} in the body is st2's admin-only way to run as someone else:
        a full-access caller may use it; any other caller naming someone
        else is refused with st2's message (naming itself is fine).
        """
        code, doc = self.post({"action": "core.local", "parameters": {"cmd": "true"}, "user": "bob"})
        self.assertEqual((code, doc["context"]["user"]), (201, "bob"))
        self.principal = Principal("carol", "apikey", admin=False)
        refused = (403, {"faultstring": '"user" attribute can only be provided by admins when RBAC is enabled'})
        self.assertEqual(self.post({"action": "core.local", "parameters": {"cmd": "true"}, "user": "bob"}), refused)
        self.assertEqual(self.call("POST", f"/v1/executions/{doc['id']}/re_run", b'{"user": "bob"}'), refused)
        code, mine = self.post({"action": "core.local", "parameters": {"cmd": "true"}, "user": "carol"})
        self.assertEqual((code, mine["context"]["user"]), (201, "carol"))

    def test_hostileJsonIs400(self):
        """
        Deep, NaN, Infinity, 1e309, lone-surrogate and invalid UTF-8 bodies
        (and St2-Context headers) are 400s on create and re-run.
        """
        code, doc = self.post({"action": "core.local", "parameters": {"cmd": "true"}})
        self.assertEqual(code, 201)
        hostile = (
            b'{"action": "core.local", "parameters": {"cmd": ' + b"[" * 5000 + b"]" * 5000 + b"}}",
            b'{"action": "core.local", "parameters": {"cmd": "x", "timeout": NaN}}',
            b'{"action": "core.local", "parameters": {"cmd": "x", "timeout": Infinity}}',
            b'{"action": "core.local", "parameters": {"cmd": "x", "timeout": 1e309}}',
            b'{"action": "core.local", "parameters": {"cmd": "\\ud800"}}',
            b'{"action": "core.local", "parameters": {"cmd": "\xff"}}',
        )
        for path in ("/v1/executions", f"/v1/executions/{doc['id']}/re_run"):
            for raw in hostile:
                code, body = self.call("POST", path, raw)
                self.assertEqual(code, 400, (path, raw[:60]))
                self.assertTrue(body["faultstring"].startswith("Failed to parse request body: "), body)
        for header in ("NaN", '{"a": 1e309}', '{"a": "\\udc00"}', "[" * 100 + "]" * 100, "[]"):
            code, body = self.post({"action": "core.local", "parameters": {"cmd": "x"}}, {"St2-Context": header})
            self.assertEqual(code, 400, header)
            self.assertTrue(body["faultstring"].startswith("Unable to convert st2-context from the headers into JSON"))
        self.assertEqual(self.successResultOf(self.store.count("executions", {})), 1)

    def test_wrongShapesAre400(self):
        """
        A JSON value of the wrong shape anywhere in the body is a 400, never
        a 500.
        """
        ok = {"action": "core.local", "parameters": {"cmd": "true"}}
        code, doc = self.post(ok)
        shapes = ("s", [], 1, True, 1.5, [{"a": 1}], {"a": []})
        bodies = [[], "x", 1, None, True]
        for field in ("action", "parameters", "context", "delay", "user", "trace_tag", "notify"):
            bodies.extend(dict(ok, **{field: v}) for v in shapes)
        for name in ("cmd", "timeout", "env", "cwd", "sudo", "nope"):
            bodies.extend({"action": "core.local", "parameters": {"cmd": "x", name: v}} for v in shapes)
        for body in bodies:
            code, answer = self.post(body)
            self.assertIn(code, (201, 400), (body, answer))
        for body in ([], "x", {"parameters": []}, {"parameters": "s"}, {"parameters": {"cmd": []}}, {"user": []}, {"user": {"a": 1}}):
            code, answer = self.call("POST", f"/v1/executions/{doc['id']}/re_run", json.dumps(body).encode())
            self.assertEqual(code, 400, (body, answer))
        self.assertEqual(self.post(dict(ok, parameters=[])), (400, {"faultstring": "[] is not of type 'object'"}))
        self.assertEqual(self.flushLoggedErrors(), [])

    def test_jsonContentTypeWhenAuthDisabled(self):
        """
        With auth disabled, starting or re-running an execution needs a JSON
        Content-Type (a cross-site text/plain POST is a 415), even with an
        empty body; with auth enabled the type is not checked.
        """
        code, doc = self.post({"action": "core.local", "parameters": {"cmd": "true"}})
        strict = self.makeApi(strict=True)
        body = json.dumps({"action": "core.local", "parameters": {"cmd": "true"}}).encode()
        for headers in ({"Content-Type": "text/plain"}, {"Content-Type": None}, {"Content-Type": "application/x-www-form-urlencoded"}):
            self.assertEqual(self.call("POST", "/v1/executions", body, headers, stub=strict)[0], 415)
            self.assertEqual(self.call("POST", f"/v1/executions/{doc['id']}/re_run", b"", headers, stub=strict)[0], 415)
        self.assertEqual(self.call("POST", "/v1/executions", body, stub=strict)[0], 201)
        self.assertEqual(self.call("POST", "/v1/executions", body, {"Content-Type": "text/plain"})[0], 201)
