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
from typing import Any, Awaitable, Callable, Dict, List, Mapping, Optional, Sequence, Tuple
from urllib.parse import unquote

import attrs
from klein import Klein
from twisted.internet.defer import Deferred, ensureDeferred
from twisted.logger import Logger
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET
from werkzeug.exceptions import MethodNotAllowed, NotFound
from werkzeug.routing import BaseConverter

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
        self._prefixRoutes: Dict[bytes, List[Tuple[bytes, Callable[..., Deferred], str]]] = {}

    def resource(self):
        return _Dispatch(self.app.resource(), self._prefixRoutes)

    def _notFound(self, request, failure) -> bytes:
        return renderError(request, ApiError(404, "The resource could not be found."))

    def _endpoint(self, handler: Handler, auth: bool, needsStore: bool) -> Callable[..., Deferred]:
        """
        Wrap C{handler}: readiness, authentication, JSON and error bodies.
        The result is a Deferred of the response body bytes.
        """

        async def run(request, **kwargs):
            if needsStore and not self.ready:
                raise ApiError(503, "bwcd is starting; try again shortly.", headers={"Retry-After": "1"})
            principal = await self._authenticate(request) if auth else None
            return await handler(request, principal, **kwargs)

        def endpoint(request, **kwargs):
            work = ensureDeferred(run(request, **kwargs))
            work.addCallbacks(lambda result: self._render(request, result), lambda f: self._fail(request, f))
            # Klein cancels a route's Deferred when the client goes away.  The
            # work must not stop half-way (an event stored but never queued),
            # so a cancel only drops the answer; the work runs to its end.
            answer: Deferred = Deferred()
            work.chainDeferred(answer)
            return answer

        return endpoint

    def _addToKlein(self, handler: Handler, endpoint: Callable[..., Deferred], paths: Sequence[str], methods: Sequence[str]) -> None:
        for i, path in enumerate(paths):
            name = f"{handler.__module__}.{handler.__qualname__}:{i}"
            self.app.route(path, methods=list(methods), strict_slashes=False, endpoint=name)(endpoint)

    def route(self, paths: str | Sequence[str], methods: Sequence[str], auth: bool = True, needsStore: bool = True) -> Callable[[Handler], Handler]:
        """
        Declare C{handler} for C{paths} (werkzeug rule syntax, one trailing
        slash tolerated) and C{methods}.
        """
        if isinstance(paths, str):
            paths = [paths]

        def decorate(handler: Handler) -> Handler:
            self._addToKlein(handler, self._endpoint(handler, auth, needsStore), paths, methods)
            return handler

        return decorate

    def prefixRoute(self, prefixes: Sequence[str], method: str, argument: str, auth: bool = True) -> Callable[[Handler], Handler]:
        """
        Declare C{handler} for every path under one of C{prefixes} (each
        ending in C{/}), the rest of the path (URL-decoded, slashes kept)
        passed as C{argument}.

        The route is added to Klein as usual, and also dispatched before
        Klein: the webhook receiver is the one route under load, and
        skipping Werkzeug's URL matching there raised the events one process
        accepts by about a fifth (bench/).  Behaviour is the same either way.
        """
        if "bwcdrest" not in self.app.url_map.converters:
            self.app.url_map.converters["bwcdrest"] = RestOfPath

        def decorate(handler: Handler) -> Handler:
            endpoint = self._endpoint(handler, auth, True)
            self._addToKlein(handler, endpoint, [p + f"<bwcdrest:{argument}>" for p in prefixes], [method])
            for prefix in prefixes:
                self._prefixRoutes.setdefault(method.encode("ascii"), []).append((prefix.encode("utf-8"), endpoint, argument))
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


class RestOfPath(BaseConverter):
    """
    The rest of the path, empty segments and slashes included, so that
    C{/v1/webhooks//sample/} reaches the handler instead of being
    redirected or refused by Werkzeug.
    """

    regex = ".*"
    part_isolating = False
    weight = 200


class _Dispatch(Resource):
    """
    The API's root resource: prefix routes first, Klein for the rest.
    """

    isLeaf = True

    def __init__(self, klein: Resource, prefixRoutes: Dict[bytes, List[Tuple[bytes, Callable[..., Deferred], str]]]) -> None:
        super().__init__()
        self._klein = klein
        self._prefixRoutes = prefixRoutes

    def render(self, request):
        for prefix, endpoint, argument in self._prefixRoutes.get(request.method, ()):
            if request.path.startswith(prefix):
                rest = unquote(request.path[len(prefix):].decode("utf-8", "replace"))
                d = endpoint(request, **{argument: rest})
                d.addCallback(self._write, request)
                d.addErrback(lambda f: log.failure("Writing a response failed", f))
                return NOT_DONE_YET
        return self._klein.render(request)

    @staticmethod
    def _write(body: bytes, request) -> None:
        if request.finished or request._disconnected:
            return
        if body:
            request.write(body)
        request.finish()
