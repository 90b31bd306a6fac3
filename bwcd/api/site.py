# -*- test-case-name: tests.test_api_basics -*-
"""
The HTTP edge: a L{Site} whose requests enforce the body limit while the body
is still arriving, send CORS headers to configured origins only, answer
preflights, believe forwarded headers only from trusted proxies, and log one
structured event per request with credentials removed from the logged path.

These concerns sit below Klein because they must hold for every path,
including ones no route matches, and because a body over the limit has to be
refused before Twisted buffers it.
"""

from __future__ import annotations

import json
import time
from typing import Callable, Iterable, Optional, Tuple
from urllib.parse import unquote_to_bytes, urlencode

from twisted.logger import Logger
from twisted.web.http import HTTPChannel, _GenericHTTPChannelProtocol
from twisted.web.server import Request, Site

log = Logger(namespace="bwcd.http")

#: query parameters that carry secrets and never reach a log line
SECRET_QUERY_NAMES = frozenset({b"st2-api-key", b"x-auth-token"})
#: any query name holding one of these is redacted too: a log line loses
#: nothing by hiding a value that is not a secret after all
_SECRET_NAME_PARTS = (b"api-key", b"apikey", b"token", b"password", b"passwd", b"secret")

REDACTED = "********"

#: sent, after Access-Control-Allow-Origin, to an allowed origin only
CORS_HEADERS = (
    (b"Access-Control-Allow-Methods", b"GET,POST,PUT,DELETE,OPTIONS"),
    (b"Access-Control-Allow-Headers", b"Content-Type,Authorization,X-Auth-Token,St2-Api-Key,X-Request-ID"),
    (b"Access-Control-Expose-Headers", b"Content-Type,X-Limit,X-Total-Count,X-Request-ID"),
    (b"Access-Control-Allow-Credentials", b"true"),
)


def _isSecretName(rawName: bytes) -> bool:
    # The name as Twisted's parse_qs decodes it ("+" is a space, then
    # %-escapes), compared loosely: case, spacing and "_" for "-" do not
    # let a secret through.
    name = unquote_to_bytes(rawName.replace(b"+", b" ")).strip().lower().replace(b"_", b"-")
    return name in SECRET_QUERY_NAMES or any(part in name for part in _SECRET_NAME_PARTS)


def redactedURI(uri: bytes) -> str:
    """
    The request URI as it may be logged: secret query values replaced.

    The query is split exactly as L{twisted.web.http.parse_qs} splits it for
    C{request.args} (on C{&} and on C{;}), so every name Twisted could hand
    to the credential check is seen here too.
    """
    path, sep, query = uri.partition(b"?")
    text = path.decode("utf-8", "replace")
    # GET/PUT/DELETE /v1/apikeys/<key> may carry a plaintext key in the path
    head, marker, rest = text.partition("/apikeys/")
    if marker and rest:
        text = head + marker + REDACTED
    if not sep:
        return text
    cleaned = []
    for item in (piece for chunk in query.split(b"&") for piece in chunk.split(b";")):
        if not item:
            continue
        rawName, _, rawValue = item.partition(b"=")
        name = unquote_to_bytes(rawName.replace(b"+", b" ")).decode("utf-8", "replace")
        if _isSecretName(rawName):
            cleaned.append((name, REDACTED))
        else:
            cleaned.append((name, unquote_to_bytes(rawValue.replace(b"+", b" ")).decode("utf-8", "replace")))
    return text + "?" + urlencode(cleaned)


def errorBody(faultstring: str) -> bytes:
    return json.dumps({"faultstring": faultstring}).encode("utf-8")



def clientAddress(request: Request) -> str:
    """
    The address a request came from, for logs and per-client limits.

    Behind nginx every peer is 127.0.0.1, so with the peer in
    the site's C{trustedProxies} the X-Forwarded-For list is read from the right and
    the first address that is not a trusted proxy wins.  The leftmost hop is
    never trusted blindly: a client can send any X-Forwarded-For, and nginx
    only appends to it.
    """
    peer = getattr(request.getClientAddress(), "host", "") or ""
    trusted = getattr(getattr(request, "site", None), "trustedProxies", frozenset())
    if peer not in trusted:
        return peer
    forwarded = request.getHeader(b"x-forwarded-for")
    if not forwarded:
        return peer
    hops = [h.strip().decode("latin-1") for h in forwarded.split(b",") if h.strip()]
    for hop in reversed(hops):
        if hop not in trusted:
            return hop
    return hops[0] if hops else peer

class BwcdRequest(Request):
    """
    A request that refuses an oversized body without keeping it in memory.
    """

    bodyTooLarge = False
    _received = 0
    #: (hook, max_body_bytes) when a webhook policy limits this request's body
    hookLimit: Optional[Tuple[str, int]] = None
    bwcdWebhookRefusal: Optional[Tuple[str, str]] = None
    _started = 0.0

    def gotLength(self, length: Optional[int]) -> None:
        self._started = time.monotonic()
        limit = self._bodyLimit()
        if length is not None and limit is not None and length > limit:
            self.bodyTooLarge = True
            super().gotLength(0)
            # Answer as soon as the headers say the body is too large, not
            # once it has arrived: no 100 Continue inviting it, and the
            # channel is told the body is empty (HTTPChannel.lineReceived
            # then hands the request over at once); the connection closes
            # after the 413, so the body is never read.
            self.requestHeaders.removeHeader(b"expect")
            self.channel.persistent = False
            self.channel.length = 0
            return
        super().gotLength(length)

    def handleContentChunk(self, data: bytes) -> None:
        if self.bodyTooLarge:
            return
        self._received += len(data)
        limit = self._bodyLimit()
        if self._received > limit:
            self.bodyTooLarge = True
            self.content.seek(0)
            self.content.truncate()
            self._refuseChunkedBody()
            return
        super().handleContentChunk(data)

    def _refuseChunkedBody(self) -> None:
        """
        A chunked body has passed the limit: answer 413 now and close,
        instead of reading the rest of it.

        We are inside the channel's chunked decoder, which goes on parsing
        the data it holds after we return: its callbacks are made no-ops
        before the channel is told the body is complete (which hands the
        request to L{process} and stops feeding the decoder).
        """
        channel = self.channel
        decoder = getattr(channel, "_transferDecoder", None)
        if decoder is None or not hasattr(decoder, "finishCallback"):
            return  # not Twisted's HTTP/1.1 channel: the body is discarded as it comes
        decoder.dataCallback = lambda data: None
        decoder.finishCallback = lambda rest: None
        channel.persistent = False
        channel.allContentReceived()

    def _bodyLimit(self) -> Optional[int]:
        # The site's limit, or a webhook policy's smaller one: the hook is
        # known from the request line before the body arrives.
        site = self.channel.site if self.channel else None
        if site is None:
            return None
        limit = site.maxBodyBytes
        if self.hookLimit is None and site.hookBodyLimit is not None and self._received == 0:
            self.hookLimit = site.hookBodyLimit(getattr(self.channel, "_command", None), getattr(self.channel, "_path", None))
        if self.hookLimit is not None and (limit is None or self.hookLimit[1] < limit):
            return self.hookLimit[1]
        return limit

    def __repr__(self) -> str:
        # Twisted puts a request's repr in some of its own log lines (a HEAD
        # answered with a body, a producer left registered): with the URI
        # as logged everywhere else, credentials removed.
        return "<{} at 0x{:x} method={} uri={} clientproto={}>".format(
            type(self).__name__, id(self), self.method.decode("latin-1"), redactedURI(self.uri), self.clientproto.decode("latin-1")
        )

    def forwardedFor(self) -> str:
        """
        The client's address: when the peer is a trusted proxy, the nearest
        X-Forwarded-For hop that is not itself a trusted proxy (hops further
        left were written by the client and may be made up), else the peer.
        """
        return clientAddress(self)

    def _cors(self) -> None:
        # Only an origin the configuration names may read answers from a
        # browser: with auth disabled, "*" would let any web page start
        # executions on a developer's daemon.
        allowed = self.site.allowOrigins
        if not allowed:
            return
        self.setHeader(b"Vary", b"Origin")
        origin = self.getHeader(b"origin")
        if origin is None:
            return
        if "*" in allowed:
            self.setHeader(b"Access-Control-Allow-Origin", b"*")
            for name, value in CORS_HEADERS:
                if name != b"Access-Control-Allow-Credentials":
                    self.setHeader(name, value)
            return
        if origin.decode("latin-1").rstrip("/").lower() not in allowed:
            return
        self.setHeader(b"Access-Control-Allow-Origin", origin)
        for name, value in CORS_HEADERS:
            self.setHeader(name, value)

    def process(self) -> None:
        self.site = self.channel.site
        self._cors()
        requestId = self.getHeader(b"x-request-id")
        if requestId:
            self.setHeader(b"X-Request-ID", requestId[:200])
        if self.method == b"OPTIONS":
            self.setResponseCode(200)
            self.setHeader(b"Content-Length", b"0")
            self.finish()
            return
        if self.bodyTooLarge:
            self.setResponseCode(413)
            self.setHeader(b"Content-Type", b"application/json")
            self.setHeader(b"Connection", b"close")
            limit = self._bodyLimit()
            if self.hookLimit is not None and limit == self.hookLimit[1]:
                self.bwcdWebhookRefusal = (self.hookLimit[0], "body_too_large")
                self.write(errorBody(f"Request body is larger than the limit of {limit} bytes for webhook {self.hookLimit[0]}."))
            else:
                self.write(errorBody(f"Request body is larger than the limit of {limit} bytes."))
            self.finish()
            return
        super().process()

    def processingFailed(self, reason):  # type: ignore[override]
        """
        Never show a traceback: log it and answer a JSON 500.
        """
        log.failure("Unhandled error processing {method} {path}", reason, method=self.method.decode("latin-1"), path=redactedURI(self.uri))
        if self.finished or self._disconnected:
            return
        body = errorBody("Internal Server Error")
        self.setResponseCode(500)
        self.setHeader(b"Content-Type", b"application/json")
        self.setHeader(b"Content-Length", str(len(body)).encode())
        self.write(body)
        self.finish()
        return reason


class BwcdChannel(HTTPChannel):
    """
    Twisted's HTTP/1.1 channel, whose own refusals (a malformed request
    line, header or body framing; a line over 16 kB) are JSON faultstrings
    like every other answer, instead of a bare 400 or a silent close.
    """

    def _respondToBadRequestAndDisconnect(self) -> None:
        body = errorBody("Bad Request: the request is not valid HTTP/1.1, or a line of it is too long.")
        self.transport.write(
            b"HTTP/1.1 400 Bad Request\r\nContent-Type: application/json\r\nContent-Length: %d\r\nConnection: close\r\n\r\n" % len(body) + body
        )
        self.loseConnection()

    def lineLengthExceeded(self, line: bytes) -> None:
        self._respondToBadRequestAndDisconnect()


def _channel(factory: Site) -> _GenericHTTPChannelProtocol:
    # as Site's default protocol factory, with bwcd's channel inside
    return _GenericHTTPChannelProtocol(BwcdChannel())


class BwcdSite(Site):
    """
    The site for both listeners.

    @ivar onRequestDone: called with (request, seconds) for metrics.
    @ivar allowOrigins: origins (lower-case, no trailing C{/}) that get CORS
        headers; C{"*"} allows any; empty sends no CORS headers at all.
    """

    requestFactory = BwcdRequest
    protocol = _channel
    #: (method, raw URI) -> (hook, max_body_bytes) of a webhook policy, or None
    hookBodyLimit: Optional[Callable[[Optional[bytes], Optional[bytes]], Optional[Tuple[str, int]]]] = None

    def __init__(
        self,
        resource,
        maxBodyBytes: int,
        trustedProxies: Iterable[str] = (),
        onRequestDone: Optional[Callable[[BwcdRequest, float], None]] = None,
        reactor=None,
        allowOrigins: Iterable[str] = (),
    ) -> None:
        # Bodies are parsed by the routes that take them (bwcd.webhooks.body);
        # Twisted's own form parsing would cost an email-header parse per
        # POST and mix form fields into request.args, where credentials are
        # looked up as query parameters.
        super().__init__(resource, reactor=reactor, parsePOSTFormSubmission=False)
        self.maxBodyBytes = maxBodyBytes
        self.trustedProxies = frozenset(trustedProxies)
        self.onRequestDone = onRequestDone
        self.allowOrigins = frozenset(o.rstrip("/").lower() for o in allowOrigins)
        self.displayTracebacks = False

    def log(self, request: BwcdRequest) -> None:  # type: ignore[override]
        duration = time.monotonic() - request._started if request._started else 0.0
        if self.onRequestDone is not None:
            self.onRequestDone(request, duration)
        log.info(
            "{method} {path} {status} {duration_ms:.1f}ms",
            method=request.method.decode("latin-1"),
            path=redactedURI(request.uri),
            status=request.code,
            duration_ms=duration * 1000,
            client=request.forwardedFor(),
        )
