"""
Unit tests for L{bwcd.execution.runners.http}: the request st2's core.http
makes, the result document and status, timeout, redirects and the body cap,
against in-memory resources through C{treq.testing.StubTreq} and a fake
clock (real sockets and a real daemon are L{tests.test_http_e2e}).
"""

from __future__ import annotations

import base64
import json
from typing import Any, Callable, Dict, List, Optional, Tuple

from treq.testing import StubTreq
from twisted.internet.defer import ensureDeferred
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request

from bwcd.execution.runners.http import HttpRunner
from bwcd.execution.runners.httprequest import USER_AGENT, HttpError, buildRequest, checkURL, redirected
from bwcd.execution.runners.httpresponse import buildResult, parseBody, statusFor
from bwcd.execution.runners.interface import RunResult

Handler = Callable[[Request], Any]


class Site(Resource):
    """
    A resource answering each path with a handler, recording every request
    it saw as C{(method, uri, headers, body)}.
    """

    isLeaf = True

    def __init__(self, handlers: Dict[bytes, Handler]) -> None:
        super().__init__()
        self.handlers = handlers
        self.seen: List[Tuple[bytes, bytes, Dict[str, str], bytes]] = []

    def render(self, request: Request) -> Any:
        headers = {k.decode().lower(): b", ".join(v).decode() for k, v in request.requestHeaders.getAllRawHeaders()}
        self.seen.append((request.method, request.uri, headers, request.content.read()))
        return self.handlers[request.path](request)


def answer(code: int = 200, body: bytes = b"", contentType: Optional[str] = None, **headers: str) -> Handler:
    def handler(request: Request) -> bytes:
        request.setResponseCode(code)
        if contentType is not None:
            request.setHeader("Content-Type", contentType)
        for name, value in headers.items():
            request.setHeader(name.replace("_", "-"), value)
        return body

    return handler


def redirect(location: str, code: int = 302) -> Handler:
    return answer(code, b"moved", "text/plain", Location=location)


class RunnerTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.clients: List[tuple] = []

    def runner(self, site: Site, cap: int = 4096) -> HttpRunner:
        stub = StubTreq(site)

        def clients(verify: bool, httpProxy: Optional[str], httpsProxy: Optional[str]) -> StubTreq:
            self.clients.append((verify, httpProxy, httpsProxy))
            return stub

        return HttpRunner(self.clock, clients, cap)

    def start(self, site: Site, cap: int = 4096, **params: Any):
        runner = self.runner(site, cap)
        doc = {"id": "e1", "action": {"name": "http", "ref": "core.http"}, "_parameters": dict({"timeout": 60}, **params)}
        prepared = self.successResultOf(ensureDeferred(runner.prepare(doc)))
        return runner.start(doc, prepared, None)

    def exchange(self, site: Site, cap: int = 4096, **params: Any) -> RunResult:
        running = self.start(site, cap, **params)
        outcome = self.successResultOf(running.result)
        self.assertEqual(self.clock.getDelayedCalls(), [], "the timeout timer outlived the request")
        return outcome

    def test_get(self) -> None:
        """
        A GET (the default without a body) with query parameters gives
        st2's four-key result; a 200 succeeds; st2's User-Agent and
        X-Stanley-Action are sent, and the JSON answer arrives decoded.
        """
        site = Site({b"/items": answer(200, b'{"count": 2, "items": ["a", "b"]}', "application/json; charset=utf-8")})
        outcome = self.exchange(site, url="http://example.com/items", params={"page": 2, "tag": ["x", "y"]})
        self.assertEqual(outcome.status, "succeeded")
        self.assertEqual(sorted(outcome.result), ["body", "headers", "parsed", "status_code"])
        self.assertEqual(outcome.result["status_code"], 200)
        self.assertEqual(outcome.result["body"], {"count": 2, "items": ["a", "b"]})
        self.assertIs(outcome.result["parsed"], True)
        self.assertEqual(outcome.result["headers"]["Content-Type"], "application/json; charset=utf-8")
        [(method, uri, headers, body)] = site.seen
        self.assertEqual((method, uri, body), (b"GET", b"/items?page=2&tag=x&tag=y", b""))
        self.assertEqual(headers["user-agent"], USER_AGENT)
        self.assertTrue(USER_AGENT.startswith("st2/v"))
        self.assertEqual(headers["x-stanley-action"], "http")
        self.assertEqual(self.clients, [(True, None, None)])

    def test_postJson(self) -> None:
        """
        A body with Content-Type exactly application/json is parsed (JSON,
        or a Python literal as st2 allows) and sent as compact JSON; the
        method defaults to POST with a body.
        """
        site = Site({b"/hook": answer(201, b'{"ok":true}', "application/json")})
        outcome = self.exchange(
            site, url="http://example.com/hook", headers={"Content-Type": "application/json"}, body="{'text': 'héllo', 'n': 1}"
        )
        self.assertEqual((outcome.status, outcome.result["status_code"], outcome.result["body"]), ("succeeded", 201, {"ok": True}))
        [(method, _, headers, body)] = site.seen
        self.assertEqual(method, b"POST")
        self.assertEqual(body, '{"text":"héllo","n":1}'.encode())
        self.assertEqual(headers["content-length"], str(len(body)))

    def test_otherContentTypeSentAsIs(self) -> None:
        """
        With any other Content-Type (even application/json with a charset)
        the body is sent exactly as given, and an explicit method wins.
        """
        site = Site({b"/x": answer(204)})
        outcome = self.exchange(
            site, url="http://example.com/x", method="PUT",
            headers={"content-type": "application/json; charset=utf-8"}, body="{'not': json}",
        )
        self.assertEqual((outcome.status, outcome.result["status_code"], outcome.result["body"]), ("succeeded", 204, ""))
        [(method, _, _, body)] = site.seen
        self.assertEqual((method, body), (b"PUT", b"{'not': json}"))

    def test_headersAndAuth(self) -> None:
        """
        Caller headers are sent, st2's own headers are set over them,
        username/password become Basic auth and the auth string its header.
        """
        site = Site({b"/": answer(200, b"ok", "text/plain")})
        self.exchange(
            site, url="http://example.com/", headers={"X-Trace": "abc", "user-agent": "mine", "X-Count": 3},
            username="bob", password="pa:ss", auth="X-Auth-Token=XYZ",
        )
        [(_, _, headers, _)] = site.seen
        self.assertEqual(headers["x-trace"], "abc")
        self.assertEqual(headers["x-count"], "3")
        self.assertEqual(headers["user-agent"], USER_AGENT)
        self.assertEqual(headers["authorization"], "Basic " + base64.b64encode(b"bob:pa:ss").decode())
        self.assertEqual(headers["x-auth-token"], "XYZ")

    def test_cookies(self) -> None:
        """
        The cookies parameter is sent as a Cookie header.
        """
        site = Site({b"/": answer(200)})
        self.exchange(site, url="http://example.com/", cookies={"session": "s1"})
        [(_, _, headers, _)] = site.seen
        self.assertEqual(headers["cookie"], "session=s1")

    def test_serverErrorFails(self) -> None:
        """
        A 500 answer fails the execution with the full result document;
        so does any code outside 200..206.
        """
        site = Site({b"/": answer(500, b"boom", "text/plain")})
        outcome = self.exchange(site, url="http://example.com/")
        self.assertEqual(outcome.status, "failed")
        self.assertEqual(
            {k: outcome.result[k] for k in ("status_code", "body", "parsed")}, {"status_code": 500, "body": "boom", "parsed": False}
        )
        self.assertEqual([statusFor(c) for c in (199, 200, 206, 207, 302, 404)], ["failed", "succeeded", "succeeded", "failed", "failed", "failed"])

    def test_nonJsonBody(self) -> None:
        """
        Bodies of other media types stay text (decoded with their charset,
        ISO-8859-1 for text/* without one), and so does an application/json
        body that is not JSON, without an error.
        """
        site = Site({
            b"/html": answer(200, "<p>café</p>".encode("latin-1"), "text/html"),
            b"/bad": answer(200, b"{nope", "application/json"),
            b"/api": answer(200, b'{"a": 1}', "application/vnd.api+json"),
        })
        html = self.exchange(site, url="http://example.com/html").result
        self.assertEqual((html["body"], html["parsed"]), ("<p>café</p>", False))
        bad = self.exchange(site, url="http://example.com/bad")
        self.assertEqual((bad.status, bad.result["body"], bad.result["parsed"]), ("succeeded", "{nope", False))
        api = self.exchange(site, url="http://example.com/api").result
        self.assertEqual((api["body"], api["parsed"]), ('{"a": 1}', False))

    def test_timeout(self) -> None:
        """
        A server that does not answer within the timeout ends the execution
        with status timeout and st2's error-only result.
        """
        site = Site({b"/slow": lambda request: NOT_DONE_YET})
        running = self.start(site, url="http://example.com/slow", timeout=2.5)
        self.assertNoResult(running.result)
        self.clock.advance(2.4)
        self.assertNoResult(running.result)
        self.clock.advance(0.1)
        outcome = self.successResultOf(running.result)
        self.assertEqual(outcome.status, "timeout")
        self.assertEqual(outcome.result, {"error": "HTTPConnectionPool(host='example.com', port=80): Read timed out. (read timeout=2.5)"})

    def test_cancel(self) -> None:
        """
        Killing a running request (cancel, shutdown) ends it at once with
        the reason as its status.
        """
        site = Site({b"/slow": lambda request: NOT_DONE_YET})
        running = self.start(site, url="http://example.com/slow")
        running.kill("abandoned")
        outcome = self.successResultOf(running.result)
        self.assertEqual((outcome.status, outcome.ended_by), ("abandoned", "abandoned"))
        self.assertEqual(self.clock.getDelayedCalls(), [])
        running.kill("canceled")

    def test_redirectFollowed(self) -> None:
        """
        With allow_redirects a 302 is followed (a POST becomes a GET without
        its body, as requests does) and the result is the final answer's.
        """
        site = Site({b"/old": redirect("/new?x=1"), b"/new": answer(200, b'"here"', "application/json")})
        outcome = self.exchange(site, url="http://example.com/old", method="POST", body="data", allow_redirects=True)
        self.assertEqual((outcome.status, outcome.result["body"]), ("succeeded", "here"))
        self.assertEqual([(m, u, b) for m, u, _, b in site.seen], [(b"POST", b"/old", b"data"), (b"GET", b"/new?x=1", b"")])

    def test_redirectNotFollowedByDefault(self) -> None:
        """
        Without allow_redirects (st2's default) the 302 is the result, and
        fails.
        """
        site = Site({b"/old": redirect("/new")})
        outcome = self.exchange(site, url="http://example.com/old")
        self.assertEqual((outcome.status, outcome.result["status_code"]), ("failed", 302))
        self.assertEqual(outcome.result["headers"]["Location"], "/new")

    def test_redirectToOtherSchemeRefused(self) -> None:
        """
        A redirect to anything but http or https fails the execution
        without following it.
        """
        site = Site({b"/old": redirect("file:///etc/passwd")})
        outcome = self.exchange(site, url="http://example.com/old", allow_redirects=True)
        self.assertEqual(outcome.status, "failed")
        self.assertEqual(
            outcome.result["error"], 'Refused to follow the redirect to "file:///etc/passwd": only http:// and https:// URLs are followed'
        )
        self.assertEqual(len(site.seen), 1)

    def test_redirectLoopEnds(self) -> None:
        """
        A redirect loop fails after 30 redirects, as requests does.
        """
        site = Site({b"/loop": redirect("/loop")})
        outcome = self.exchange(site, url="http://example.com/loop", allow_redirects=True)
        self.assertEqual((outcome.status, outcome.result["error"]), ("failed", "Exceeded 30 redirects."))
        self.assertEqual(len(site.seen), 31)

    def test_bodyCapped(self) -> None:
        """
        A body over the cap is cut at the cap, left unparsed, and the result
        says so; a body within the cap has no such key.
        """
        big = json.dumps({"data": "x" * 100}).encode()
        site = Site({b"/big": answer(200, big, "application/json"), b"/small": answer(200, b"[1]", "application/json")})
        outcome = self.exchange(site, cap=16, url="http://example.com/big")
        self.assertEqual(outcome.status, "succeeded")
        self.assertEqual(outcome.result["body"], big[:16].decode())
        self.assertIs(outcome.result["parsed"], False)
        self.assertIs(outcome.result["body_truncated"], True)
        small = self.exchange(site, cap=16, url="http://example.com/small")
        self.assertNotIn("body_truncated", small.result)
        self.assertEqual(small.result["body"], [1])

    def test_hostLists(self) -> None:
        """
        st2's host lists: a blacklisted host or one missing from the
        whitelist fails before any request; both lists at once are refused.
        """
        site = Site({b"/": answer(200)})
        black = self.exchange(site, url="http://example.com:8080/", url_hosts_blacklist=["example.com"])
        self.assertEqual((black.status, black.result["error"]), ("failed", 'URL "http://example.com:8080/" is blacklisted'))
        white = self.exchange(site, url="http://[::1]/", url_hosts_whitelist=["example.com"])
        self.assertEqual(white.result["error"], 'URL "http://[::1]/" is not whitelisted')
        self.assertEqual(site.seen, [])
        with self.assertRaises(HttpError):
            buildRequest("http", {"url": "http://a/", "url_hosts_blacklist": ["a"], "url_hosts_whitelist": ["b"]})

    def test_proxiesAndVerification(self) -> None:
        """
        verify_ssl_cert and the proxies choose the client the runner asks
        for.
        """
        site = Site({b"/": answer(200)})
        self.exchange(site, url="http://example.com/", verify_ssl_cert=False, http_proxy="http://proxy:3128")
        self.assertEqual(self.clients, [(False, "http://proxy:3128", None)])

    def test_realClientsRefuseHttpsProxy(self) -> None:
        """
        The real client factory cannot tunnel HTTPS: an https request with
        https_proxy fails with the reason instead of going direct, and a
        proxy URL without a host fails the execution too.
        """
        from bwcd.execution.runners.http import TreqClients

        clients = TreqClients(Clock())
        runner = HttpRunner(self.clock, clients, 4096)
        for params, error in [
            ({"url": "https://example.com/", "https_proxy": "http://proxy:3128"}, "https_proxy (http://proxy:3128) is not supported"),
            ({"url": "http://example.com/", "http_proxy": "http://:3128"}, "http_proxy must be a URL"),
        ]:
            doc = {"id": "e1", "action": {"name": "http"}, "_parameters": params}
            prepared = self.successResultOf(ensureDeferred(runner.prepare(doc)))
            outcome = self.successResultOf(runner.start(doc, prepared, None).result)
            self.assertEqual(outcome.status, "failed")
            self.assertTrue(outcome.result["error"].startswith(error), outcome.result)


class RequestTests(SynchronousTestCase):
    """
    The pure parts: building the request, redirects, parsing answers.
    """

    def test_badParameters(self) -> None:
        """
        Unusable parameters are refused with a reason before any request.
        """
        for params, message in [
            ({}, "URL must be specified."),
            ({"url": "ftp://example.com/"}, 'Invalid URL "ftp://example.com/": only http:// and https:// URLs are supported'),
            ({"url": "http://a/", "headers": {"Content-Type": "application/json"}, "body": "{nope"}, "Request body ({nope) can't be parsed as JSON"),
            ({"url": "http://a/", "timeout": 0}, "timeout must be greater than 0, got 0"),
            ({"url": "http://a/", "auth": "token"}, "auth must look like"),
            ({"url": "http://a/", "headers": {"X": {"a": 1}}}, "Header 'X' must be a string"),
        ]:
            with self.assertRaises(HttpError) as caught:
                buildRequest("http", params)
            self.assertTrue(str(caught.exception).startswith(message), (params, str(caught.exception)))

    def test_fileUpload(self) -> None:
        """
        file_name and file_content make a multipart/form-data POST with one
        file part.
        """
        request = buildRequest("http", {"url": "http://a/", "file_name": "x.txt", "file_content": "hello", "file_content_type": "text/plain"})
        self.assertEqual(request.method, "POST")
        contentType = dict((k.lower(), v) for k, v in request.headers)["content-type"]
        self.assertTrue(contentType.startswith("multipart/form-data; boundary="))
        boundary = contentType.split("=", 1)[1]
        self.assertEqual(
            request.body,
            f'--{boundary}\r\nContent-Disposition: form-data; name="x.txt"; filename="x.txt"\r\nContent-Type: text/plain\r\n\r\nhello\r\n--{boundary}--\r\n'.encode(),
        )

    def test_redirectRules(self) -> None:
        """
        requests' redirect rules: 303 becomes GET, 307 keeps method and
        body, credentials are dropped when the host changes but kept on an
        upgrade to https.
        """
        request = buildRequest("http", {"url": "http://a/", "username": "u", "password": "p", "auth": "x-token=1", "body": "b"})
        method, url, headers, body = redirected(request, "POST", "http://a/x", request.headers, b"b", 307, "/y")
        self.assertEqual((method, url, body), ("POST", "http://a/y", b"b"))
        self.assertIn("Authorization", dict(headers))
        method, url, headers, body = redirected(request, "POST", "http://a/x", request.headers, b"b", 303, "http://b/z")
        self.assertEqual((method, url, body), ("GET", "http://b/z", None))
        self.assertNotIn("Authorization", dict(headers))
        self.assertNotIn("x-token", dict(headers))
        _, _, headers, _ = redirected(request, "GET", "http://a/x", request.headers, None, 301, "https://a/x")
        self.assertIn("Authorization", dict(headers))
        with self.assertRaises(HttpError):
            redirected(request, "GET", "http://a/x", request.headers, None, 302, "javascript:alert(1)")

    def test_checkURL(self) -> None:
        """
        Only http and https URLs pass.
        """
        request = buildRequest("http", {"url": "http://a/"})
        checkURL("https://a/", request)
        with self.assertRaises(HttpError):
            checkURL("gopher://a/", request)

    def test_parseBody(self) -> None:
        """
        Only exactly application/json (parameters ignored) is decoded;
        NaN is not JSON.
        """
        self.assertEqual(parseBody('{"a": 1}', "application/json;charset=utf-8"), ({"a": 1}, True))
        self.assertEqual(parseBody('{"a": 1}', "text/json"), ('{"a": 1}', False))
        self.assertEqual(parseBody("NaN", "application/json"), ("NaN", False))
        self.assertEqual(parseBody("", None), ("", False))
        self.assertEqual(buildResult(200, {"content-type": "application/json"}, b"", False)["body"], "")
