"""
Hostile input against a running daemon, byte by byte over raw TCP: broken
HTTP framing, oversized and malformed headers, Content-Length and chunked
abuse, slowloris-style partial requests, non-UTF-8 and NUL bytes, and JSON
bodies that Python's parser accepts but bwcd cannot store or answer with.

Every case must end in a 4xx or a closed connection, never a 5xx; the
daemon must log no unhandled error and stay up.  (The schemathesis run in
tests/test_fuzz.py covers what the OpenAPI description allows; these are
the inputs no schema can describe.)
"""

from __future__ import annotations

import json
import re
from typing import Any, Iterable, List, Optional, Sequence, Tuple

import attrs
from twisted.internet import reactor
from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.protocol import Protocol
from twisted.internet.task import deferLater
from twisted.trial.unittest import TestCase

from tests.daemon import startDaemon

#: how long a case may take before the exchange is cut (seconds)
CASE_TIMEOUT = 5.0

_STATUS = re.compile(rb"^HTTP/1\.[01] (\d{3})")
_LENGTH = re.compile(rb"\r\ncontent-length:\s*(\d+)\r\n", re.IGNORECASE)


@attrs.frozen
class Exchange:
    """
    What came back for one raw request: the bytes, whether the server
    closed the connection, and whether the exchange was cut by the client
    after its timeout.
    """

    received: bytes
    closed: bool
    timedOut: bool

    @property
    def status(self) -> Optional[int]:
        match = _STATUS.match(self.received)
        return int(match.group(1)) if match else None

    def describe(self) -> str:
        return f"status={self.status} closed={self.closed} timedOut={self.timedOut} head={self.received[:160]!r}"

    def header(self, name: bytes) -> Optional[bytes]:
        head = self.received.partition(b"\r\n\r\n")[0]
        for line in head.split(b"\r\n")[1:]:
            key, _, value = line.partition(b":")
            if key.strip().lower() == name.lower():
                return value.strip()
        return None

    @property
    def body(self) -> bytes:
        """
        The response body, chunked framing removed.
        """
        raw = self.received.partition(b"\r\n\r\n")[2]
        if b"chunked" not in (self.header(b"transfer-encoding") or b"").lower():
            return raw
        body = b""
        while raw:
            size, _, rest = raw.partition(b"\r\n")
            length = int(size.split(b";")[0], 16)
            if length == 0:
                break
            body, raw = body + rest[:length], rest[length + 2 :]
        return body

    def faultstring(self) -> Any:
        """
        The C{faultstring} of a JSON error answer, or None when the answer
        is not one.
        """
        if not (self.header(b"content-type") or b"").startswith(b"application/json"):
            return None
        try:
            return json.loads(self.body).get("faultstring")
        except (ValueError, AttributeError):
            return None


def responseComplete(data: bytes) -> bool:
    """
    Whether C{data} holds one whole HTTP response (headers, and a body by
    Content-Length or chunked framing), so that a kept-alive connection
    need not be waited out.
    """
    head, sep, body = data.partition(b"\r\n\r\n")
    if not sep or not _STATUS.match(head):
        return False
    length = _LENGTH.search(head + b"\r\n")
    if length is not None:
        return len(body) >= int(length.group(1))
    if b"transfer-encoding: chunked" in head.lower():
        return body.endswith(b"0\r\n\r\n")
    return False


class _Raw(Protocol):
    def __init__(self, chunks: Sequence[bytes], pause: float) -> None:
        self.chunks = list(chunks)
        self.pause = pause
        self.received = b""
        self.done: Deferred = Deferred()
        self.timedOut = False
        self._closed = False

    def connectionMade(self) -> None:
        self._sendNext()

    def _sendNext(self) -> None:
        if self._closed or not self.chunks:
            return
        self.transport.write(self.chunks.pop(0))
        if self.chunks:
            reactor.callLater(self.pause, self._sendNext)

    def dataReceived(self, data: bytes) -> None:
        self.received += data
        if responseComplete(self.received):
            self.transport.loseConnection()

    def connectionLost(self, reason) -> None:
        self._closed = True
        if not self.done.called:
            self.done.callback(None)


async def exchange(port: int, chunks: bytes | Sequence[bytes], timeout: float = CASE_TIMEOUT, pause: float = 0.05) -> Exchange:
    """
    Send C{chunks} (with C{pause} seconds between them) on a fresh
    connection and collect the answer until the server closes, a whole
    response has arrived, or C{timeout} passes (then the connection is
    aborted).
    """
    if isinstance(chunks, bytes):
        chunks = [chunks]
    proto = _Raw(chunks, pause)
    await connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", port), proto)
    def cut() -> None:
        proto.timedOut = True
        proto.transport.abortConnection()

    timer = reactor.callLater(timeout, cut)
    await proto.done
    if timer.active():
        timer.cancel()
    return Exchange(proto.received, not proto.timedOut, proto.timedOut)


def request(method: bytes, path: bytes, headers: Iterable[Tuple[bytes, bytes]] = (), body: Optional[bytes] = None) -> bytes:
    lines = [method + b" " + path + b" HTTP/1.1", b"Host: 127.0.0.1", b"Connection: close"]
    lines += [name + b": " + value for name, value in headers]
    if body is not None:
        lines.append(b"Content-Length: %d" % len(body))
    return b"\r\n".join(lines) + b"\r\n\r\n" + (body or b"")


class HostileTestCase(TestCase):
    timeout = 120

    async def setUp(self) -> None:
        self.daemon = await startDaemon(self)
        self.port = self.daemon.apiPort
        self.key = self.daemon.apiKey.encode("ascii")
        self.problems: List[str] = []

    def auth(self, *more: Tuple[bytes, bytes]) -> List[Tuple[bytes, bytes]]:
        return [(b"St2-Api-Key", self.key), *more]

    async def expectRefused(self, name: str, data: bytes | Sequence[bytes], statuses: Optional[Sequence[int]] = None) -> Exchange:
        """
        Record a problem unless the answer is a 4xx (one of C{statuses}
        when given) or the server closed without answering.
        """
        result = await exchange(self.port, data)
        status = result.status
        if status is None:
            ok = result.closed and statuses is None
        elif statuses is not None:
            ok = status in statuses
        else:
            ok = 400 <= status < 500
        if not ok:
            self.problems.append(f"{name}: {result.describe()}")
        return result

    async def expectNoServerError(self, name: str, data: bytes | Sequence[bytes]) -> Exchange:
        """
        For requests that are odd but legal HTTP: any answer but a 5xx.
        """
        result = await exchange(self.port, data)
        if result.status is not None and result.status >= 500:
            self.problems.append(f"{name}: {result.describe()}")
        return result

    async def assertDaemonFine(self) -> None:
        """
        No case failed, the daemon answers its health check and logged no
        unhandled error or 5xx.
        """
        health = await exchange(self.port, request(b"GET", b"/v1/health"))
        self.assertEqual(health.status, 200, health.describe())
        self.assertTrue(self.daemon.running)
        log = self.daemon.readLog()
        serverErrors = re.findall(r"^.*\[bwcd\.http#\w+\] .* 5\d\d [\d.]+ms$", log, re.MULTILINE)
        failures = errorEvents(log)
        if self.problems or serverErrors or failures:
            self.fail(
                "\n".join(["cases not refused as expected:", *self.problems, "5xx in the access log:", *serverErrors, "errors logged:", *failures])
            )


def errorEvents(log: str) -> List[str]:
    """
    The daemon's log events at level error or critical, each with the
    indented lines (a traceback) that follow it.
    """
    events: List[str] = []
    current: Optional[List[str]] = None
    for line in log.splitlines():
        if line.startswith(("\t", " ")) and current is not None:
            current.append(line)
            continue
        if current is not None:
            events.append("\n".join(current))
            current = None
        if re.search(r"\[[\w.]+#(error|critical)\]", line):
            current = [line]
    if current is not None:
        events.append("\n".join(current))
    return events


class MalformedHttpTests(HostileTestCase):
    async def test_brokenRequestLines(self) -> None:
        """
        Garbage, binary (a TLS hello), a request line with too many parts,
        an unknown version, HTTP/0.9 and control bytes in the method are
        refused with a 400 or a close.
        """
        cases = {
            "garbage": b"GARBAGE\r\n\r\n",
            "tls-hello": b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(range(32)) + b"\r\n\r\n",
            "binary": b"\x00\xff\xfe\xfd\r\n\r\n",
            "too-many-parts": b"GET /v1/health HTTP/1.1 extra\r\nHost: a\r\n\r\n",
            "unknown-version": b"GET /v1/health HTTP/9.9\r\nHost: a\r\n\r\n",
            "http-0.9": b"GET /v1/health\r\n\r\n",
            "control-in-method": b"G\x01T /v1/health HTTP/1.1\r\nHost: a\r\n\r\n",
            "empty-method": b" /v1/health HTTP/1.1\r\nHost: a\r\n\r\n",
        }
        for name, data in cases.items():
            await self.expectRefused(name, data)
        await self.assertDaemonFine()

    async def test_hugeAndMalformedHeaders(self) -> None:
        """
        A 100 kB header line, a 100 kB URL, a thousand headers, a header
        without a colon or with a space before it, and NUL or non-Latin-1
        bytes in header names and values are refused; an obsolete folded
        header (legal to accept) gets no 5xx.
        """
        await self.expectRefused("huge-header", b"GET /v1/health HTTP/1.1\r\nHost: a\r\nX-Big: " + b"a" * 100_000 + b"\r\n\r\n")
        await self.expectRefused("huge-url", b"GET /v1/actions/" + b"a" * 100_000 + b" HTTP/1.1\r\nHost: a\r\n\r\n")
        await self.expectRefused("many-headers", b"GET /v1/health HTTP/1.1\r\nHost: a\r\n" + b"".join(b"X-%d: 1\r\n" % i for i in range(1000)) + b"\r\n")
        await self.expectRefused("no-colon", b"GET /v1/health HTTP/1.1\r\nHost: a\r\nNoColonHere\r\n\r\n")
        await self.expectRefused("space-before-colon", b"GET /v1/health HTTP/1.1\r\nHost: a\r\nX-A : 1\r\n\r\n")
        await self.expectRefused("nul-in-header-name", b"GET /v1/actions HTTP/1.1\r\nHost: a\r\nX\x00Y: 1\r\n\r\n")
        await self.expectRefused("nul-in-api-key", request(b"GET", b"/v1/actions", [(b"St2-Api-Key", b"a\x00b")]))
        await self.expectRefused("nul-in-token", request(b"GET", b"/v1/actions", [(b"X-Auth-Token", b"\x00")]))
        await self.expectRefused("non-latin1-token", request(b"GET", b"/v1/actions", [(b"X-Auth-Token", b"\xff\xfe\x80")]))
        await self.expectRefused("non-utf8-basic", request(b"POST", b"/auth/v1/tokens", [(b"Authorization", b"Basic \xff\xff\x00")], b""))
        await self.expectRefused("bad-st2-context", request(b"POST", b"/v1/executions", self.auth((b"St2-Context", b"\xff{"), (b"Content-Type", b"application/json")), b'{"action":"core.noop"}'))
        await self.expectRefused("bad-prefer", request(b"POST", b"/v1/webhooks/st2?wait=nan", self.auth((b"Content-Type", b"application/json")), b"{}"))
        await self.expectNoServerError("obs-fold", b"GET /v1/health HTTP/1.1\r\nHost: a\r\nX-A: 1\r\n  folded\r\nConnection: close\r\n\r\n")
        await self.expectNoServerError("absolute-uri", b"GET http://elsewhere/v1/health HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        await self.expectNoServerError("connect", b"CONNECT 127.0.0.1:22 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        await self.expectNoServerError("options-star", b"OPTIONS * HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        await self.expectNoServerError("unknown-method", b"BREW /v1/health HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        await self.assertDaemonFine()

    async def test_contentLengthAbuse(self) -> None:
        """
        A Content-Length that is not a number, negative, given twice with
        two values, or sent with Transfer-Encoding (request smuggling) is
        refused; a body over api.max_body_bytes gets a 413.
        """
        hook = b"POST /v1/webhooks/st2 HTTP/1.1\r\nHost: a\r\nSt2-Api-Key: " + self.key + b"\r\n"
        await self.expectRefused("cl-not-a-number", hook + b"Content-Length: abc\r\n\r\n{}")
        await self.expectRefused("cl-negative", hook + b"Content-Length: -1\r\n\r\n{}")
        await self.expectRefused("cl-plus-sign", hook + b"Content-Length: +2\r\n\r\n{}")
        await self.expectRefused("cl-two-values", hook + b"Content-Length: 2\r\nContent-Length: 5\r\n\r\n{}")
        await self.expectRefused("cl-list", hook + b"Content-Length: 2, 5\r\n\r\n{}")
        await self.expectRefused("cl-and-chunked", hook + b"Content-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n")
        await self.expectRefused("over-limit", hook + b"Content-Type: application/json\r\nContent-Length: 2000000\r\nConnection: close\r\n\r\n" + b" " * 2_000_000, statuses=[413])
        await self.assertDaemonFine()

    async def test_everyRefusalIsJson(self) -> None:
        """
        Requests that Klein, Werkzeug or Twisted's HTTP parser used to
        answer themselves (a plain-text or HTML 400, an HTML 308 redirect,
        a bare 400 or a silent close) get a 4xx JSON faultstring: invalid
        UTF-8 after percent-decoding in the path or Host, C{//} inside a
        path, unknown methods, a request line over 16 kB, garbage.  None
        of them logs a traceback; each logs at most its access line.
        """
        cases = {
            "pct-ff-action": request(b"GET", b"/v1/actions/%ff", self.auth()),
            "pct-ff-hook-post": request(b"POST", b"/v1/webhooks/%ff%fe", self.auth((b"Content-Type", b"application/json")), b"{}"),
            "pct-ff-hook-get": request(b"GET", b"/v1/webhooks/%ff%fe", self.auth()),
            "pct-surrogate-execution": request(b"GET", b"/v1/executions/%ed%a0%80", self.auth()),
            "pct-ff-unrouted": request(b"GET", b"/nowhere/%c0%af", self.auth()),
            "pct-ff-auth": request(b"GET", b"/auth/v1/%ff"),
            "non-utf8-host": b"GET /v1/health HTTP/1.1\r\nHost: \xff\xfe\r\nConnection: close\r\n\r\n",
            "double-slash-inside": request(b"GET", b"/v1//actions", self.auth()),
            "double-slash-end": request(b"GET", b"/v1/actions//core.local", self.auth()),
            "unknown-method": request(b"BREW", b"/v1/actions", self.auth()),
            "wrong-method": request(b"PUT", b"/v1/health", self.auth(), b""),
            "long-path": request(b"GET", b"/v1/actions/" + b"a" * 15_000, self.auth()),
            "request-line-over-16k": request(b"GET", b"/v1/actions/" + b"a" * 20_000, self.auth()),
            "garbage": b"GARBAGE\r\n\r\n",
        }
        since = self.daemon.linesLogged
        for name, data in cases.items():
            result = await exchange(self.port, data)
            status = result.status
            if status is None or not 400 <= status < 500 or not isinstance(result.faultstring(), str):
                self.problems.append(f"{name}: not a 4xx JSON faultstring: {result.describe()} body={result.body[:200]!r}")
        logged = self.daemon.lines[since:]
        noisy = [line for line in logged if line.startswith(("\t", " ")) or "Traceback" in line or "Invalid encoding" in line]
        self.assertEqual(noisy, [])
        self.assertLessEqual(len(logged), len(cases), "\n".join(logged))
        await self.assertDaemonFine()

    async def test_oversizedBodyRefusedFromHeaders(self) -> None:
        """
        A Content-Length over api.max_body_bytes is answered 413 (JSON) from
        the headers alone and the connection closed: the body is never
        waited for.  No body is sent at all, so a server that waited would
        only answer at trial's timeout; the same holds with
        C{Expect: 100-continue}, which gets no 100 inviting the body.
        """
        hook = b"POST /v1/webhooks/st2 HTTP/1.1\r\nHost: a\r\nSt2-Api-Key: " + self.key + b"\r\nContent-Type: application/json\r\n"
        for name, data in {
            "content-length-10mb": hook + b"Content-Length: 10000000\r\n\r\n",
            "expect-continue": hook + b"Expect: 100-continue\r\nContent-Length: 10000000\r\n\r\n",
            "keep-alive": hook + b"Connection: keep-alive\r\nContent-Length: 10000000\r\n\r\n",
        }.items():
            result = await exchange(self.port, data, timeout=self.timeout * 2)
            self.assertEqual(result.status, 413, f"{name}: {result.describe()}")
            self.assertTrue(result.received.startswith(b"HTTP/1.1 413 "), f"{name}: {result.describe()}")
            self.assertIn("larger than the limit", result.faultstring(), name)
            self.assertEqual(result.header(b"connection"), b"close", name)
        await self.assertDaemonFine()

    async def test_oversizedChunkedBodyRefusedAtTheLimit(self) -> None:
        """
        A chunked body is refused (413, JSON, connection closed) as soon as
        its chunks pass api.max_body_bytes, without waiting for the rest:
        the last chunk is never sent.
        """
        chunked = b"POST /v1/webhooks/st2 HTTP/1.1\r\nHost: a\r\nSt2-Api-Key: " + self.key + b"\r\nTransfer-Encoding: chunked\r\n\r\n"
        unfinished = chunked + (b"100000\r\n" + b"a" * 0x100000 + b"\r\n") * 2
        result = await exchange(self.port, unfinished, timeout=self.timeout * 2)
        self.assertEqual(result.status, 413, result.describe())
        self.assertIn("larger than the limit", result.faultstring())
        await self.assertDaemonFine()

    async def test_chunkedAbuse(self) -> None:
        """
        Bad chunk sizes, a missing CRLF after a chunk, a 100 kB chunk
        extension, unknown transfer codings, and chunks adding up to more
        than api.max_body_bytes are refused.
        """
        hook = b"POST /v1/webhooks/st2 HTTP/1.1\r\nHost: a\r\nSt2-Api-Key: " + self.key + b"\r\n"
        chunked = hook + b"Transfer-Encoding: chunked\r\n\r\n"
        await self.expectRefused("chunk-size-not-hex", chunked + b"zz\r\n{}\r\n0\r\n\r\n")
        await self.expectRefused("chunk-size-negative", chunked + b"-2\r\n{}\r\n0\r\n\r\n")
        await self.expectRefused("chunk-missing-crlf", chunked + b"2\r\n{}XX0\r\n\r\n")
        await self.expectRefused("chunk-huge-extension", chunked + b"2;" + b"x" * 100_000 + b"\r\n{}\r\n0\r\n\r\n")
        await self.expectRefused("te-gzip", hook + b"Transfer-Encoding: gzip\r\n\r\n{}")
        await self.expectRefused("te-gzip-chunked", hook + b"Transfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n")
        await self.expectRefused("te-chunked-twice", hook + b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n")
        big = (b"100000\r\n" + b"a" * 0x100000 + b"\r\n") * 2 + b"0\r\n\r\n"
        await self.expectRefused("chunks-over-limit", chunked.replace(b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n") + big, statuses=[413])
        await self.assertDaemonFine()

    async def test_nonUtf8AndNulInPathsAndQueries(self) -> None:
        """
        Raw and percent-encoded invalid UTF-8 and NUL bytes in paths, route
        arguments, query names and values (credentials included) get a 4xx.
        """
        cases = {
            "raw-non-utf8-path": request(b"GET", b"/v1/actions/\xff\xfe", self.auth()),
            "pct-non-utf8-path": request(b"GET", b"/v1/actions/%ff%fe", self.auth()),
            "pct-non-utf8-rule": request(b"GET", b"/v1/rules/%c0%af", self.auth()),
            "pct-non-utf8-execution": request(b"GET", b"/v1/executions/%ed%a0%80/output", self.auth()),
            "pct-non-utf8-apikey": request(b"DELETE", b"/v1/apikeys/%ff", self.auth()),
            "pct-non-utf8-hook": request(b"POST", b"/v1/webhooks/%ff%00/x", self.auth(), b"{}"),
            "pct-non-utf8-hook-get": request(b"GET", b"/v1/webhooks/%80", self.auth()),
            "pct-non-utf8-query": request(b"GET", b"/v1/actions?pack=%ff&limit=%fe", self.auth()),
            "pct-non-utf8-instances": request(b"GET", b"/v1/triggerinstances?timestamp_lt=%ff%00", self.auth()),
            "pct-non-utf8-api-key": request(b"GET", b"/v1/actions?st2-api-key=%ff%00"),
            "pct-non-utf8-token": request(b"GET", b"/v1/actions?x-auth-token=%c3%28"),
            "raw-nul-path": b"GET /v1/actions/a\x00b HTTP/1.1\r\nHost: a\r\n\r\n",
            "pct-nul-path": request(b"GET", b"/v1/actions/a%00b", self.auth()),
            "pct-nul-limit": request(b"GET", b"/v1/rules?limit=1%00", self.auth()),
            "huge-limit": request(b"GET", b"/v1/rules?limit=99999999999999999999999999&offset=99999999999999999999", self.auth()),
        }
        for name, data in cases.items():
            await self.expectRefused(name, data)
        # filter values are data: one that matches nothing may be answered
        # with an empty page, but never with a 5xx
        data = {
            "pct-non-utf8-filter": request(b"GET", b"/v1/executions?action=%ff&timestamp_gt=%ff&id=%ff,%00", self.auth()),
            "pct-nul-filter": request(b"GET", b"/v1/rules?name=%00&pack=a%00&trigger=%ed%a0%80", self.auth()),
            "pct-non-utf8-enforcements": request(b"GET", b"/v1/ruleenforcements?rule_ref=%ff&execution=%00", self.auth()),
            "pct-non-utf8-apikey-user": request(b"GET", b"/v1/apikeys?user=%ff%00", self.auth()),
        }
        for name, raw in data.items():
            await self.expectNoServerError(name, raw)
        await self.assertDaemonFine()

    async def test_slowlorisPartialRequests(self) -> None:
        """
        Connections left mid-request (headers unfinished, a body shorter
        than its Content-Length, a chunk never completed, a huge declared
        body, bare-LF line ends) get no 5xx, and while they hang the daemon
        still answers other clients promptly.
        """
        hook = b"POST /v1/webhooks/st2 HTTP/1.1\r\nHost: a\r\nSt2-Api-Key: " + self.key + b"\r\n"
        partial = {
            "unfinished-headers": [b"GET /v1/health HTTP/1.1\r\nHost: a\r\n", b"X-A: 1\r\n", b"X-B: 2\r\n"],
            "byte-by-byte": [bytes([c]) for c in b"GET /v1/health HTTP/1.1\r\nHo"],
            "short-body": [hook + b"Content-Length: 100\r\n\r\n", b'{"a"', b": 1"],
            "huge-declared-body": [hook + b"Content-Length: 99999999999999999999999\r\n\r\n{}"],
            "unfinished-chunk": [hook + b"Transfer-Encoding: chunked\r\n\r\n", b"10\r\n", b"abc"],
            "huge-chunk-size": [hook + b"Transfer-Encoding: chunked\r\n\r\nffffffffffffffffffff\r\n{}"],
            "bare-lf": [b"GET /v1/health HTTP/1.1\nHost: a\n\n"],
        }
        hanging = []
        for name, chunks in partial.items():
            for _ in range(5):
                hanging.append((name, exchange(self.port, chunks, timeout=6.0, pause=0.2)))
        d = gatherResults([ensure(e) for _, e in hanging])
        # justified: gives the 35 partial requests time to connect and
        # send their first bytes (nothing reports "request half-sent")
        await deferLater(reactor, 0.5, lambda: None)
        for _ in range(5):
            started = reactor.seconds()
            health = await exchange(self.port, request(b"GET", b"/v1/health"), timeout=3.0)
            self.assertEqual(health.status, 200, health.describe())
            self.assertLess(reactor.seconds() - started, 2.0)
        results = await d
        for (name, _), result in zip(hanging, results):
            if result.status is not None and result.status >= 500:
                self.problems.append(f"{name}: {result.describe()}")
        await self.assertDaemonFine()


def ensure(coro) -> Deferred:
    from twisted.internet.defer import ensureDeferred

    return ensureDeferred(coro)


#: JSON texts that Python's json module accepts (or chokes on) but that bwcd
#: must refuse with a 400 before anything is stored
BAD_JSON = {
    "deep-65": b'{"a":' * 65 + b"1" + b"}" * 65,
    "deep-arrays-100000": b"[" * 100_000 + b"]" * 100_000,
    "deep-objects-20000": b'{"a":' * 20_000 + b"1" + b"}" * 20_000,
    "nan": b'{"action": "core.noop", "parameters": {"a": NaN}}',
    "infinity": b'{"action": "core.noop", "parameters": {"a": Infinity}}',
    "minus-infinity": b'{"a": -Infinity}',
    "1e309": b'{"action": "core.noop", "parameters": {"a": 1e309}}',
    "int-over-64-bits": b'{"a": 123456789012345678901234567890}',
    "lone-high-surrogate": b'{"action": "core.noop", "parameters": {"a": "\\ud800"}}',
    "lone-low-surrogate": b'{"a": "\\udfff"}',
    "surrogate-key": b'{"\\ud83d": 1}',
    "invalid-utf8": b'{"a": "\xff\xfe"}',
    "overlong-utf8": b'{"a": "\xc0\xaf"}',
    "encoded-surrogate-utf8": b'{"a": "\xed\xa0\x80"}',
    "truncated-utf8": b'{"a": "\xe2\x82"}',
    "utf16-body": '{"a": 1}'.encode("utf-16"),
    "nul-byte": b'{"a": 1}\x00',
    "trailing-garbage": b'{"a": 1} {"b": 2}',
}


class JsonBodyTests(HostileTestCase):
    timeout = 180

    async def setUp(self) -> None:
        await super().setUp()
        # a registered hook, so that its body is parsed and would be stored
        rule = {
            "name": "hostile",
            "pack": "default",
            "enabled": True,
            "trigger": {"type": "core.st2.webhook", "parameters": {"url": "some/hook"}},
            "action": {"ref": "core.noop"},
        }
        response, body = await self.daemon.post("/v1/rules", rule)
        self.assertEqual(response.code, 201, body)

    async def test_badJsonOnEveryJsonRoute(self) -> None:
        """
        Each bad JSON text, sent as application/json to every route that
        reads a JSON body, is answered 400 (no 500 from a RecursionError, an
        unserialisable float, a surrogate or a decoding error).
        """
        routes = [
            (b"POST", b"/v1/executions"),
            (b"POST", b"/v1/executions/5f0000000000000000000000/re_run"),
            (b"POST", b"/v1/rules"),
            (b"PUT", b"/v1/rules/default.nothing"),
            (b"POST", b"/v1/apikeys"),
            (b"PUT", b"/v1/apikeys/5f0000000000000000000000"),
            (b"POST", b"/v1/webhooks/st2"),
            (b"POST", b"/v1/webhooks/some/hook"),
            (b"POST", b"/auth/v1/tokens/validate"),
        ]
        for method, path in routes:
            for name, body in BAD_JSON.items():
                data = request(method, path, self.auth((b"Content-Type", b"application/json")), body)
                await self.expectRefused(f"{method.decode()} {path.decode()} {name}", data, statuses=[400])
        await self.assertDaemonFine()

    async def test_badJsonOnLogin(self) -> None:
        """
        The login route (basic auth, on the auth listener) refuses each bad
        JSON text with a 400 as well.
        """
        import base64

        basic = b"Basic " + base64.b64encode(f"{self.daemon.user}:{self.daemon.password}".encode())
        self.port = self.daemon.authPort
        for path in (b"/auth/v1/tokens", b"/v1/tokens", b"/tokens"):
            for name, body in BAD_JSON.items():
                data = request(b"POST", path, [(b"Authorization", basic), (b"Content-Type", b"application/json")], body)
                await self.expectRefused(f"POST {path.decode()} {name}", data, statuses=[400])
        self.port = self.daemon.apiPort
        await self.assertDaemonFine()
