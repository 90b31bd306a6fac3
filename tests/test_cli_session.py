"""
Tests for L{bwcd.cli.session}: automatic login, the token cache in use,
credential headers and API error mapping, against a scripted HTTP server.
"""

from __future__ import annotations

import base64
import io
import json
import os
from typing import Callable, Dict, List, Tuple

from twisted.internet import reactor
from twisted.trial.unittest import TestCase
from twisted.web.resource import Resource
from twisted.web.server import Site

from bwcd.cli.config import cachedTokenPath, resolveSettings, writeCachedToken
from bwcd.cli.errors import CLIError
from bwcd.cli.http import CLIHTTPClient, ConnectionFailed, HTTPError
from bwcd.cli.session import LoginFailed, Session

Handler = Callable[[object, bytes], Tuple[int, object]]


class Scripted(Resource):
    """
    Answers (method, path) with a scripted handler and records every request;
    a handler returning bytes answers text/plain.
    """

    isLeaf = True

    def __init__(self, routes: Dict[Tuple[str, str], Handler]) -> None:
        super().__init__()
        self.routes = routes
        self.requests: List[dict] = []

    def render(self, request):
        body = request.content.read()
        method, path = request.method.decode(), request.path.decode()
        headers = {k.decode().lower(): v[0].decode() for k, v in request.requestHeaders.getAllRawHeaders()}
        self.requests.append({"method": method, "uri": request.uri.decode(), "path": path, "headers": headers, "body": body})
        handler = self.routes.get((method, path))
        if handler is None:
            code, doc = 404, {"faultstring": "The resource could not be found."}
        else:
            code, doc = handler(request, body)
        request.setResponseCode(code)
        if isinstance(doc, bytes):
            request.setHeader(b"content-type", b"text/plain")
            return doc
        request.setHeader(b"content-type", b"application/json")
        return json.dumps(doc).encode()


def tokenDoc(user: str, token: str, expiry: str = "2099-01-01T00:00:00.000000Z") -> dict:
    return {"user": user, "token": token, "expiry": expiry, "id": "1", "metadata": {}}


def basicAuth(request) -> Tuple[str, str]:
    header = (request.getHeader(b"authorization") or b"").decode()
    user, _, password = base64.b64decode(header.split(" ", 1)[1]).decode().partition(":")
    return user, password


class ServerMixin:
    def serve(self, routes) -> Scripted:
        resource = Scripted(routes)
        port = reactor.listenTCP(0, Site(resource), interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        self.base = f"http://127.0.0.1:{port.getHost().port}"
        return resource

    def session(self, config: str = "", now: float = 1000.0, debug: bool = False, **flags) -> Session:
        self.home = getattr(self, "home", None) or os.path.abspath(self.mktemp())
        os.makedirs(os.path.join(self.home, ".st2"), exist_ok=True)
        if config:
            with open(os.path.join(self.home, ".st2", "config"), "w") as f:
                f.write(config)
        environ = {"HOME": self.home, "ST2_API_URL": self.base + "/v1", "ST2_AUTH_URL": self.base}
        settings = resolveSettings(dict(flags, debug=debug), environ)
        self.out, self.err = io.StringIO(), io.StringIO()
        http = CLIHTTPClient(reactor, self.out, debug=debug)
        self.addCleanup(http.close)
        return Session(reactor, settings, http, self.out, self.err, clock=lambda: now)


class AuthenticateTests(ServerMixin, TestCase):
    def setUp(self) -> None:
        self.logins = 0

        def tokens(request, body):
            self.logins += 1
            user, password = basicAuth(request)
            if password != "right":
                return 401, {"faultstring": "Invalid or missing credentials"}
            return 201, tokenDoc(user, f"token{self.logins}")

        self.server = self.serve({("POST", "/tokens"): tokens, ("GET", "/v1/actions"): lambda r, b: (200, [])})

    async def test_loginWithConfiguredPassword(self) -> None:
        """
        [credentials] username/password log in, and the token is cached (0600) and used.
        """
        session = self.session("[credentials]\nusername = bob\npassword = right\n")
        await session.authenticate()
        self.assertEqual(session.token, "token1")
        request = self.server.requests[0]
        self.assertEqual((request["method"], request["path"], request["body"]), ("POST", "/tokens", b"{}"))
        self.assertEqual(request["headers"]["content-type"], "application/json")
        path = cachedTokenPath(session.settings.configDir, "bob")
        with open(path) as f:
            self.assertEqual(json.load(f), {"token": "token1", "expire_timestamp": 4070908800})
        await session.api("GET", "/actions")
        self.assertEqual(self.server.requests[-1]["headers"]["x-auth-token"], "token1")

    async def test_cachedTokenReused(self) -> None:
        """
        A valid cached token is used without calling the auth service, noted under --debug.
        """
        session = self.session("[credentials]\nusername = bob\npassword = right\n", debug=True)
        path = writeCachedToken(session.settings.configDir, "bob", "cached", 2000)
        await session.authenticate()
        self.assertEqual((session.token, self.logins), ("cached", 0))
        self.assertEqual(self.out.getvalue(), f'Using cached token from file "{path}"\n')

    async def test_expiredTokenRenewed(self) -> None:
        """
        A token within 15 s of expiry is replaced by a new login.
        """
        session = self.session("[credentials]\nusername = bob\npassword = right\n", now=1990)
        writeCachedToken(session.settings.configDir, "bob", "old", 2000)
        await session.authenticate()
        self.assertEqual((session.token, self.logins), ("token1", 1))

    async def test_cacheDisabled(self) -> None:
        """
        [cli] cache_token = False ignores and does not write the cache.
        """
        session = self.session("[credentials]\nusername = bob\npassword = right\n[cli]\ncache_token = False\n")
        path = writeCachedToken(session.settings.configDir, "bob", "cached", 5000)
        await session.authenticate()
        self.assertEqual(session.token, "token1")
        with open(path) as f:
            self.assertEqual(json.load(f)["token"], "cached")

    async def test_givenCredentialsSkipLogin(self) -> None:
        """
        A token or API key from a flag skips automatic login; both headers can be sent.
        """
        session = self.session("[credentials]\nusername = bob\npassword = right\n", token="t", api_key="k")
        await session.authenticate()
        self.assertEqual(self.logins, 0)
        await session.api("GET", "/actions")
        headers = self.server.requests[-1]["headers"]
        self.assertEqual((headers["x-auth-token"], headers["st2-api-key"]), ("t", "k"))

    async def test_wrongConfiguredPassword(self) -> None:
        """
        A refused configured password is one line naming the config file.
        """
        session = self.session("[credentials]\nusername = bob\npassword = wrong\n")
        with self.assertRaises(CLIError) as caught:
            await session.authenticate()
        message = str(caught.exception)
        self.assertNotIn("\n", message)
        self.assertIn("Failed to authenticate as bob with the credentials in", message)
        self.assertIn("Invalid or missing credentials (401 Client Error: Unauthorized for url:", message)

    async def test_noPasswordNoCache(self) -> None:
        """
        A username without password or cached token says to log in again.
        """
        session = self.session("[credentials]\nusername = bob\n")
        with self.assertRaises(CLIError) as caught:
            await session.authenticate()
        self.assertIn('run "bwc login bob" again', str(caught.exception))

    async def test_authServerDown(self) -> None:
        """
        An unreachable auth service during automatic login is the one error reported.
        """
        session = self.session("[credentials]\nusername = bob\npassword = right\n", auth_url="http://127.0.0.1:1")
        with self.assertRaises(ConnectionFailed) as caught:
            await session.authenticate()
        self.assertIn("http://127.0.0.1:1/tokens (connection refused)", str(caught.exception))
        self.assertIn("--auth-url", str(caught.exception))

    async def test_createTokenTTL(self) -> None:
        """
        login -l sends {"ttl": n}; a refusal is a LoginFailed with the faultstring.
        """
        session = self.session()
        doc = await session.createToken("bob", "right", ttl=60)
        self.assertEqual(doc["token"], "token1")
        self.assertEqual(json.loads(self.server.requests[-1]["body"]), {"ttl": 60})
        with self.assertRaises(LoginFailed) as caught:
            await session.createToken("bob", "nope")
        self.assertEqual(caught.exception.fault, "Invalid or missing credentials")


class ApiTests(ServerMixin, TestCase):
    def setUp(self) -> None:
        self.server = self.serve(
            {
                ("GET", "/v1/rules/missing"): lambda r, b: (404, {"faultstring": 'Resource with a reference or id "missing" not found'}),
                ("POST", "/v1/rules"): lambda r, b: (409, {"faultstring": "Tried to save duplicate unique keys", "conflict-id": "1"}),
                ("GET", "/v1/runnertypes/"): lambda r, b: (200, [{"name": "x"}]),
            }
        )

    async def test_errorMapping(self) -> None:
        """
        Statuses of 400 and more raise HTTPError with st2's text, unless allowed.
        """
        session = self.session()
        with self.assertRaises(HTTPError) as caught:
            await session.api("POST", "/rules", data={"name": "r"})
        self.assertEqual(str(caught.exception), f"409 Client Error: Conflict\nMESSAGE: Tried to save duplicate unique keys for url: {self.base}/v1/rules")
        self.assertIsNone(await session.getOrNone("/rules/missing"))

    async def test_queryAndBody(self) -> None:
        """
        Query parameters are encoded after the path; bodies are json.dumps with a content-type.
        """
        session = self.session()
        self.assertEqual(await session.getJSON("/runnertypes/", params={"name": "local-shell-cmd", "skip": None}), [{"name": "x"}])
        self.assertEqual(self.server.requests[-1]["uri"], "/v1/runnertypes/?name=local-shell-cmd")
        with self.assertRaises(HTTPError):
            await session.api("POST", "/rules", data={"a": [1, "b"]})
        request = self.server.requests[-1]
        self.assertEqual((request["body"], request["headers"]["content-type"]), (b'{"a": [1, "b"]}', "application/json"))
