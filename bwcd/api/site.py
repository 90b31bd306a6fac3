# -*- test-case-name: tests.test_api_basics -*-
"""
The HTTP edge: a L{Site} whose requests enforce the body limit while the body
is still arriving, answer CORS preflights, believe forwarded headers only from
trusted proxies, and log one structured event per request with credentials
removed from the logged path.

These concerns sit below Klein because they must hold for every path,
including ones no route matches, and because a body over the limit has to be
refused before Twisted buffers it.
"""

from __future__ import annotations

import json
import time
from typing import Callable, Iterable, Optional
from urllib.parse import parse_qsl, urlencode

from twisted.logger import Logger
from twisted.web.server import Request, Site

log = Logger(namespace="bwcd.http")

#: query parameters that carry secrets and never reach a log line
SECRET_QUERY_NAMES = frozenset({b"st2-api-key", b"x-auth-token"})

CORS_HEADERS = (
    (b"Access-Control-Allow-Origin", b"*"),
    (b"Access-Control-Allow-Methods", b"GET,POST,PUT,DELETE,OPTIONS"),
    (b"Access-Control-Allow-Headers", b"Content-Type,Authorization,X-Auth-Token,St2-Api-Key,X-Request-ID"),
    (b"Access-Control-Expose-Headers", b"Content-Type,X-Limit,X-Total-Count,X-Request-ID"),
    (b"Access-Control-Allow-Credentials", b"true"),
)


def redactedURI(uri: bytes) -> str:
    """
    The request URI as it may be logged: secret query values replaced.
    """
    path, sep, query = uri.partition(b"?")
    text = path.decode("utf-8", "replace")
    # GET/PUT/DELETE /v1/apikeys/<key> may carry a plaintext key in the path
    head, marker, rest = text.partition("/apikeys/")
    if marker and rest:
        text = head + marker + "********"
    if not sep:
        return text
    pairs = parse_qsl(query.decode("utf-8", "replace"), keep_blank_values=True)
    cleaned = [(k, "********" if k.lower().encode() in SECRET_QUERY_NAMES else v) for k, v in pairs]
    return text + "?" + urlencode(cleaned)


def errorBody(faultstring: str) -> bytes:
    return json.dumps({"faultstring": faultstring}).encode("utf-8")


class BwcdRequest(Request):
    """
    A request that refuses an oversized body without keeping it in memory.
    """

    bodyTooLarge = False
    _received = 0
    _started = 0.0

    def gotLength(self, length: Optional[int]) -> None:
        self._started = time.monotonic()
        limit = self.channel.site.maxBodyBytes if self.channel and self.channel.site else None
        if length is not None and limit is not None and length > limit:
            self.bodyTooLarge = True
            length = 0
        super().gotLength(length)

    def handleContentChunk(self, data: bytes) -> None:
        if self.bodyTooLarge:
            return
        self._received += len(data)
        limit = self.channel.site.maxBodyBytes
        if self._received > limit:
            self.bodyTooLarge = True
            self.content.seek(0)
            self.content.truncate()
            return
        super().handleContentChunk(data)

    def forwardedFor(self) -> str:
        """
        The client's address: the first X-Forwarded-For hop when the peer is a
        trusted proxy, else the peer itself.
        """
        peer = getattr(self.getClientAddress(), "host", "") or ""
        if peer in self.site.trustedProxies:
            forwarded = self.getHeader(b"x-forwarded-for")
            if forwarded:
                return forwarded.split(b",")[0].strip().decode("latin-1")
        return peer

    def process(self) -> None:
        self.site = self.channel.site
        for name, value in CORS_HEADERS:
            self.setHeader(name, value)
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
            limit = self.channel.site.maxBodyBytes
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


class BwcdSite(Site):
    """
    The site for both listeners.

    @ivar onRequestDone: called with (method, route_hint, status, seconds)
        for metrics.
    """

    requestFactory = BwcdRequest

    def __init__(
        self,
        resource,
        maxBodyBytes: int,
        trustedProxies: Iterable[str] = (),
        onRequestDone: Optional[Callable[[BwcdRequest, float], None]] = None,
        reactor=None,
    ) -> None:
        # Bodies are parsed by the routes that take them (bwcd.webhooks.body);
        # Twisted's own form parsing would cost an email-header parse per
        # POST and mix form fields into request.args, where credentials are
        # looked up as query parameters.
        super().__init__(resource, reactor=reactor, parsePOSTFormSubmission=False)
        self.maxBodyBytes = maxBodyBytes
        self.trustedProxies = frozenset(trustedProxies)
        self.onRequestDone = onRequestDone
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
