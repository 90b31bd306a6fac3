# -*- test-case-name: tests.test_api_basics -*-
"""
How a route is declared: every handler is wrapped once, here, so that
readiness, authentication, JSON encoding and StackStorm's error bodies are the
same on every route and no handler can leak a traceback.

A handler is C{async def handler(request, principal, **urlArgs)} and returns a
JSON-able value (200), a L{Reply} (any status, headers) or raises L{ApiError}.
"""

from __future__ import annotations

import json
from typing import Any, Awaitable, Callable, Mapping, Optional, Sequence

import attrs
from klein import Klein
from twisted.internet.defer import ensureDeferred
from twisted.logger import Logger
from werkzeug.exceptions import MethodNotAllowed, NotFound

from bwcd.store.interface import DuplicateKey, StoreUnavailable

log = Logger(namespace="bwcd.api")


class ApiError(Exception):
    """
    An error answered as C{{"faultstring": ...}} with a status code.
    """

    def __init__(self, code: int, faultstring: str, extra: Optional[Mapping[str, Any]] = None, headers: Optional[Mapping[str, str]] = None) -> None:
        super().__init__(code, faultstring)
        self.code = code
        self.faultstring = faultstring
        self.extra = dict(extra or {})
        self.headers = dict(headers or {})


@attrs.frozen
class Reply:
    """
    A JSON answer with a chosen status and headers (C{body=None}: empty).
    """

    body: Any = None
    code: int = 200
    headers: Mapping[str, str] = attrs.Factory(dict)
    contentType: str = "application/json"
    raw: Optional[bytes] = None


@attrs.frozen
class Principal:
    """
    Who is calling: the user name and how they proved it.
    """

    user: str
    method: str  # "token", "apikey" or "none"
    credentialId: Optional[str] = None


def encodeJson(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def _write(request, code: int, body: Optional[bytes], contentType: str, headers: Mapping[str, str]) -> bytes:
    request.setResponseCode(code)
    for name, value in headers.items():
        request.setHeader(name.encode("latin-1"), str(value).encode("latin-1"))
    if body is None:
        return b""
    request.setHeader(b"Content-Type", contentType.encode("latin-1"))
    return body


def renderError(request, error: ApiError) -> bytes:
    payload = {"faultstring": error.faultstring}
    payload.update(error.extra)
    return _write(request, error.code, encodeJson(payload), "application/json", error.headers)


Handler = Callable[..., Awaitable[Any]]
Authenticate = Callable[[Any], Awaitable[Principal]]


class Api:
    """
    The Klein application with bwcd's route wrapper.

    @ivar ready: routes answer 503 until the daemon has opened its store.
    """

    def __init__(self, authenticate: Authenticate) -> None:
        self.app = Klein()
        self.ready = False
        self._authenticate = authenticate
        self.app.handle_errors(NotFound, MethodNotAllowed)(self._notFound)

    def resource(self):
        return self.app.resource()

    def _notFound(self, request, failure) -> bytes:
        return renderError(request, ApiError(404, "The resource could not be found."))

    def route(self, paths: str | Sequence[str], methods: Sequence[str], auth: bool = True, needsStore: bool = True) -> Callable[[Handler], Handler]:
        """
        Declare C{handler} for C{paths} (werkzeug rule syntax, one trailing
        slash tolerated) and C{methods}.
        """
        if isinstance(paths, str):
            paths = [paths]

        def decorate(handler: Handler) -> Handler:
            async def run(request, **kwargs):
                if needsStore and not self.ready:
                    raise ApiError(503, "bwcd is starting; try again shortly.", headers={"Retry-After": "1"})
                principal = await self._authenticate(request) if auth else None
                return await handler(request, principal, **kwargs)

            def endpoint(request, **kwargs):
                d = ensureDeferred(run(request, **kwargs))
                d.addCallbacks(lambda result: self._render(request, result), lambda f: self._fail(request, f))
                return d

            for i, path in enumerate(paths):
                self.app.route(path, methods=list(methods), strict_slashes=False, endpoint=f"{handler.__module__}.{handler.__qualname__}:{i}")(endpoint)
            return handler

        return decorate

    def _render(self, request, result: Any) -> bytes:
        if isinstance(result, Reply):
            body = result.raw if result.raw is not None else (None if result.body is None else encodeJson(result.body))
            return _write(request, result.code, body, result.contentType, result.headers)
        return _write(request, 200, encodeJson(result), "application/json", {})

    def _fail(self, request, failure) -> bytes:
        if failure.check(ApiError):
            return renderError(request, failure.value)
        if failure.check(DuplicateKey):
            dup = failure.value
            detail = dup.detail or dup.collection
            return renderError(request, ApiError(409, f"Tried to save duplicate unique keys ({detail})", extra={"conflict-id": dup.conflictId}))
        if failure.check(StoreUnavailable):
            log.failure("Storage unavailable", failure)
            return renderError(request, ApiError(503, "Storage is unavailable; try again shortly.", headers={"Retry-After": "2"}))
        log.failure("Unhandled error in {method} {path}", failure, method=request.method.decode("latin-1"), path=request.path.decode("utf-8", "replace"))
        return renderError(request, ApiError(500, "Internal Server Error"))
