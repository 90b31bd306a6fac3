# -*- test-case-name: tests.test_api_basics -*-
"""
How a route is declared: every handler is wrapped once, here, so that
readiness, authentication, JSON encoding and StackStorm's error bodies are the
same on every route and no handler can leak a traceback.

A handler is C{async def handler(request, principal, **urlArgs)} and returns a
JSON-able value (200), a L{Reply} (any status, headers) or raises a
L{bwcd.errors.DomainError} kind, which L{statusFor} turns into its status
code: this module is the one place where a domain error becomes HTTP.

It is also the one place where scoped API keys are held to their scopes: a
scoped caller reaches only routes declared with C{scopedAccess="webhooks"}
(the webhook receiver), and there only the hooks its scopes match; every
other authenticated route answers it 403 ("API key is limited to ...")
before its handler runs, so a new route is closed to scoped keys without
declaring anything.
"""

from __future__ import annotations

import json
from typing import Any, Awaitable, Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Type
from urllib.parse import unquote

import attrs
from klein import Klein
from twisted.internet.defer import Deferred, ensureDeferred
from twisted.logger import Logger
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET
from werkzeug.exceptions import HTTPException, MethodNotAllowed
from werkzeug.exceptions import NotFound as NoSuchRoute
from werkzeug.routing import BaseConverter

from bwcd.auth.principal import Principal
from bwcd.errors import (
    Conflict,
    DomainError,
    Invalid,
    NotFound,
    Refused,
    TooLarge,
    TooMany,
    Unauthenticated,
    Unavailable,
    UnsupportedMediaType,
    duplicateConflict,
)
from bwcd.api.site import redactedURI
from bwcd.jsontext import JsonError, loadJson
from bwcd.store.interface import DuplicateKey, StoreUnavailable

log = Logger(namespace="bwcd.api")

#: each kind of domain error and the status it is answered with
STATUS: Mapping[Type[DomainError], int] = {
    Invalid: 400,
    Unauthenticated: 401,
    Refused: 403,
    NotFound: 404,
    Conflict: 409,
    TooLarge: 413,
    UnsupportedMediaType: 415,
    TooMany: 429,
    Unavailable: 503,
}

MSG_BODY_REQUIRED = "Request body is required"
MSG_BAD_BODY = "Failed to parse request body: {reason}"


class ApiError(DomainError):
    """
    An answer whose status only HTTP knows (a route not found, a 500);
    domain code raises the L{bwcd.errors} kinds instead.
    """

    def __init__(self, code: int, faultstring: str, extra: Optional[Mapping[str, Any]] = None, headers: Optional[Mapping[str, str]] = None) -> None:
        super().__init__(faultstring, extra, headers)
        self.args = (code, faultstring)
        self.code = code


def statusFor(error: DomainError) -> int:
    """
    The HTTP status of C{error}: an L{ApiError}'s own code, else that of
    the nearest kind in its class hierarchy (so a domain module may subclass
    a kind), else 500.
    """
    if isinstance(error, ApiError):
        return error.code
    for kind in type(error).__mro__:
        code = STATUS.get(kind)
        if code is not None:
            return code
    return 500


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


def renderError(request, error: DomainError) -> bytes:
    """
    Answer C{error} as C{{"faultstring": ..., **extra}} with its status and
    headers.
    """
    payload = {"faultstring": error.faultstring}
    payload.update(error.extra)
    return _write(request, statusFor(error), encodeJson(payload), "application/json", error.headers)


def isJsonContentType(value: Optional[bytes]) -> bool:
    """
    Whether a Content-Type header names JSON: C{application/json} or any
    C{type/subtype+json}, parameters and case ignored.
    """
    if not value:
        return False
    mediaType = value.split(b";", 1)[0].strip().lower()
    if mediaType == b"application/json":
        return True
    kind, slash, subtype = mediaType.partition(b"/")
    return bool(kind) and bool(slash) and subtype.endswith(b"+json") and len(subtype) > len(b"+json")


def _rawBody(request) -> bytes:
    content = request.content
    if content is None:
        return b""
    try:
        content.seek(0)
    except (AttributeError, OSError, ValueError):
        pass
    return content.read()


def readJsonBody(request, required: bool = True, requireJsonType: bool = False, anyTypeWhenEmpty: bool = False) -> Any:
    """
    The request body parsed by the one strict parser (L{loadJson}).

    @param required: an empty (or blank) body is an error; else it is
        C{None}.
    @param requireJsonType: the Content-Type must name JSON.
    @param anyTypeWhenEmpty: with C{requireJsonType}, an empty body may come
        with any Content-Type (st2 clients send an empty C{text/plain} body
        to C{/tokens}).
    @raise Invalid: empty when required, or not acceptable JSON: deep,
        C{NaN}, out-of-range numbers, lone surrogates, invalid UTF-8.
    @raise UnsupportedMediaType: C{requireJsonType} and the body is not
        labelled JSON.
    """
    raw = _rawBody(request)
    empty = not raw.strip()
    if requireJsonType and not (anyTypeWhenEmpty and empty):
        contentType = request.getHeader(b"content-type") or b""
        if not isJsonContentType(contentType):
            shown = contentType.decode("latin-1")[:100]
            raise UnsupportedMediaType(
                f'Content-Type "{shown}" is not supported: this route takes JSON (application/json).'
                if shown
                else "Content-Type is missing: this route takes JSON (application/json)."
            )
    if empty:
        if required:
            raise Invalid(MSG_BODY_REQUIRED)
        return None
    try:
        return loadJson(raw)
    except JsonError as e:
        raise Invalid(MSG_BAD_BODY.format(reason=e)) from None


Handler = Callable[..., Awaitable[Any]]
Authenticate = Callable[[Any], Awaitable[Principal]]


class Api:
    """
    The Klein application with bwcd's route wrapper.

    @ivar ready: routes answer 503 until the daemon has opened its store.
    @ivar requireJsonContentType: JSON routes refuse (415) a body not
        labelled JSON.  Set when authentication is disabled: a web page can
        then send a "simple" cross-site C{text/plain} POST without a CORS
        preflight, and must not be able to start anything.
    """

    def __init__(self, authenticate: Authenticate, requireJsonContentType: bool = False) -> None:
        self.app = Klein()
        self.ready = False
        self.requireJsonContentType = requireJsonContentType
        self._authenticate = authenticate
        self.app.handle_errors(NoSuchRoute, MethodNotAllowed)(self._notFound)
        # Whatever else Werkzeug raises while matching is answered as JSON
        # too; and "/v1//actions" is not found rather than redirected (an
        # HTML 308 whose Location is built from the client's Host header).
        self.app.handle_errors(HTTPException)(self._httpError)
        self.app.url_map.merge_slashes = False
        self._prefixRoutes: Dict[bytes, List[Tuple[bytes, Callable[..., Deferred], str]]] = {}

    def resource(self):
        return _Dispatch(self.app.resource(), self._prefixRoutes)

    def _notFound(self, request, failure) -> bytes:
        return renderError(request, ApiError(404, "The resource could not be found."))

    def _httpError(self, request, failure) -> bytes:
        error = failure.value
        code = error.code if isinstance(error.code, int) and 300 <= error.code < 600 else 400
        location = getattr(error, "new_url", None)
        return renderError(request, ApiError(code, f"{error.name}.", headers={"Location": location} if location else None))

    def readJson(self, request, required: bool = True, anyTypeWhenEmpty: bool = False) -> Any:
        """
        The body of a request to a JSON route: L{readJsonBody} with this
        API's Content-Type rule.  Every route that reads JSON calls this.
        """
        return readJsonBody(request, required, self.requireJsonContentType, anyTypeWhenEmpty)

    def _endpoint(
        self, handler: Handler, auth: bool, needsStore: bool, scopedAccess: Optional[str] = None, hookArgument: Optional[str] = None
    ) -> Callable[..., Deferred]:
        """
        Wrap C{handler}: readiness, authentication, scopes, JSON and error
        bodies.  The result is a Deferred of the response body bytes.

        @param scopedAccess: C{"webhooks"} lets scoped API keys through to
            this route; C{None} (every other route) refuses them.
        @param hookArgument: the URL argument holding the hook url, checked
            here against the caller's scopes when C{scopedAccess} is set.
        """
        if scopedAccess is not None and scopedAccess not in SCOPED_ACCESS:
            raise ValueError(f"unknown scopedAccess {scopedAccess!r}; known: {sorted(SCOPED_ACCESS)}")

        async def run(request, **kwargs):
            if needsStore and not self.ready:
                raise Unavailable("bwcd is starting; try again shortly.", headers={"Retry-After": "1"})
            principal = await self._authenticate(request) if auth else None
            if principal is not None and getattr(principal, "scopes", None):
                checkScopes(principal, scopedAccess, kwargs.get(hookArgument) if hookArgument else None)
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

    def route(
        self,
        paths: str | Sequence[str],
        methods: Sequence[str],
        auth: bool = True,
        needsStore: bool = True,
        scopedAccess: Optional[str] = None,
    ) -> Callable[[Handler], Handler]:
        """
        Declare C{handler} for C{paths} (werkzeug rule syntax, one trailing
        slash tolerated) and C{methods}.

        @param scopedAccess: C{"webhooks"} for a route scoped API keys may
            reach; its handler must then check
            C{principal.allowsHook(url)} itself.
        """
        if isinstance(paths, str):
            paths = [paths]

        def decorate(handler: Handler) -> Handler:
            self._addToKlein(handler, self._endpoint(handler, auth, needsStore, scopedAccess), paths, methods)
            return handler

        return decorate

    def prefixRoute(
        self, prefixes: Sequence[str], method: str, argument: str, auth: bool = True, scopedAccess: Optional[str] = None
    ) -> Callable[[Handler], Handler]:
        """
        Declare C{handler} for every path under one of C{prefixes} (each
        ending in C{/}), the rest of the path (URL-decoded, slashes kept)
        passed as C{argument}.

        The route is added to Klein as usual, and also dispatched before
        Klein: the webhook receiver is the one route under load, and
        skipping Werkzeug's URL matching there raised the events one process
        accepts by about a fifth (bench/).  Behaviour is the same either way.

        With C{scopedAccess="webhooks"}, scoped API keys may call it for the
        hooks (the C{argument}) their scopes match; that is checked here,
        before the handler runs.
        """
        if "bwcdrest" not in self.app.url_map.converters:
            self.app.url_map.converters["bwcdrest"] = RestOfPath

        def decorate(handler: Handler) -> Handler:
            endpoint = self._endpoint(handler, auth, True, scopedAccess, argument if scopedAccess else None)
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
        error = failure.value
        if isinstance(error, DuplicateKey):
            error = duplicateConflict(error.detail or error.collection, error.conflictId)
        elif isinstance(error, StoreUnavailable):
            # one line, not a traceback: during an outage every request ends here
            log.warn("Storage unavailable for {uri}: {reason}", uri=redactedURI(request.uri), reason=str(error))
            error = Unavailable("Storage is unavailable; try again shortly.", headers={"Retry-After": "2"})
        if isinstance(error, DomainError) and (statusFor(error) != 500 or isinstance(error, ApiError)):
            return renderError(request, error)
        log.failure("Unhandled error in {method} {uri}", failure, method=request.method.decode("latin-1"), uri=redactedURI(request.uri))
        return renderError(request, ApiError(500, "Internal Server Error"))


#: the kinds of access a route may grant to scoped API keys
SCOPED_ACCESS = frozenset({"webhooks"})


def checkScopes(principal: Principal, scopedAccess: Optional[str], hook: Optional[str]) -> None:
    """
    Hold a scoped caller to its scopes: it may reach only a route flagged
    C{scopedAccess="webhooks"}, and, when the route names the hook, only a
    hook one of its scopes matches.

    @raise Refused: with "API key is limited to <every scope>".
    """
    if not principal.scopes:
        return
    if scopedAccess not in SCOPED_ACCESS:
        raise principal.refusal()
    if hook is not None and not principal.allowsHook(hook):
        raise principal.refusal()


class RestOfPath(BaseConverter):
    """
    The rest of the path, empty segments and slashes included, so that
    C{/v1/webhooks//sample/} reaches the handler instead of being
    redirected or refused by Werkzeug.
    """

    regex = ".*"
    part_isolating = False
    weight = 200


MSG_BAD_URL_ENCODING = "The request path, method or Host header is not valid UTF-8 (after percent-decoding)."


def _decodable(request) -> bool:
    """
    Whether what Klein decodes as UTF-8 (the percent-decoded path segments,
    the method, the Host name) decodes.
    """
    try:
        b"/".join(request.prepath + request.postpath).decode("utf-8")
        request.method.decode("utf-8")
        request.getRequestHostname().decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


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
        if not _decodable(request):
            # Klein would answer text/html and log a traceback per request.
            # Written here, not returned: Twisted logs a HEAD request whose
            # render returns a body with its raw URI (credentials included).
            request.setResponseCode(400)
            self._write(encodeJson({"faultstring": MSG_BAD_URL_ENCODING}), request, b"application/json")
            return NOT_DONE_YET
        for prefix, endpoint, argument in self._prefixRoutes.get(request.method, ()):
            if request.path.startswith(prefix):
                rest = unquote(request.path[len(prefix):].decode("utf-8", "replace"))
                d = endpoint(request, **{argument: rest})
                d.addCallback(self._write, request)
                d.addErrback(lambda f: log.failure("Writing a response failed", f))
                return NOT_DONE_YET
        return self._klein.render(request)

    @staticmethod
    def _write(body: bytes, request, contentType: Optional[bytes] = None) -> None:
        if request.finished or request._disconnected:
            return
        if contentType is not None:
            request.setHeader(b"Content-Type", contentType)
        if body:
            request.write(body)
        request.finish()


__all__ = [
    "Api",
    "ApiError",
    "MSG_BAD_BODY",
    "MSG_BAD_URL_ENCODING",
    "MSG_BODY_REQUIRED",
    "Principal",
    "Reply",
    "RestOfPath",
    "SCOPED_ACCESS",
    "STATUS",
    "checkScopes",
    "encodeJson",
    "isJsonContentType",
    "readJsonBody",
    "renderError",
    "statusFor",
]
