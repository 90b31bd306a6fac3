"""
The HTTP edge shared by every route: error bodies, unknown routes and
methods, CORS preflight, credential redaction and paging rules.
"""

import treq
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.task import deferLater
from twisted.trial.unittest import SynchronousTestCase, TestCase

from bwcd.api.framework import Api, ApiError, Reply
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

        @api.route("/v1/slow", ["POST"], auth=False)
        async def slow(request, principal):
            await self.gate
            self.finished.append(True)
            return {}

        port = reactor.listenTCP(0, BwcdSite(api.resource(), 100), interface="127.0.0.1")
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
        OPTIONS is answered before authentication with st2's CORS headers; a
        body over the limit is 413 JSON.
        """
        response = await treq.request("OPTIONS", self.url + "/v1/private")
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
        await deferLater(reactor, 0.2, lambda: None)
        client.transport.loseConnection()
        await deferLater(reactor, 0.2, lambda: None)
        self.assertEqual(self.finished, [])
        self.gate.callback(None)
        await deferLater(reactor, 0.1, lambda: None)
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
