"""
Tests for L{bwcd.errors} and the one place that answers them,
L{bwcd.api.framework}: each kind's status, C{faultstring}, C{extra} and
C{headers}; store errors; and the one JSON body reader (strict parsing,
Content-Type rule).

Everything runs in memory (L{treq.testing.StubTreq}); no handler here waits
on anything, so every answer is there at once.
"""

from __future__ import annotations

import json
from typing import Any, Dict, Optional, Tuple

from treq.testing import StubTreq
from twisted.trial.unittest import SynchronousTestCase

from bwcd import errors
from bwcd.api.framework import STATUS, Api, ApiError, Principal, isJsonContentType, statusFor
from bwcd.store.interface import DuplicateKey, StoreUnavailable

KINDS = {
    errors.Invalid: 400,
    errors.Unauthenticated: 401,
    errors.Refused: 403,
    errors.NotFound: 404,
    errors.Conflict: 409,
    errors.TooLarge: 413,
    errors.UnsupportedMediaType: 415,
    errors.TooMany: 429,
    errors.Unavailable: 503,
}


async def anyone(request: Any) -> Principal:
    return Principal("tester", "apikey")


class Client:
    """
    Requests to an L{Api} in memory.
    """

    def __init__(self, testCase: SynchronousTestCase, api: Api) -> None:
        self.testCase = testCase
        self.stub = StubTreq(api.resource())

    def request(self, method: str, path: str, data: Optional[bytes] = None, headers: Optional[Dict[str, str]] = None) -> Tuple[int, Any, Any]:
        d = self.stub.request(method, "http://bwcd.test" + path, data=data, headers=headers or {})
        self.stub.flush()
        response = self.testCase.successResultOf(d)
        raw = self.testCase.successResultOf(response.content())
        return response.code, response.headers, json.loads(raw) if raw else None


class DomainErrorTests(SynchronousTestCase):
    """
    The kinds themselves.
    """

    def test_carriesWhatTheClientSees(self) -> None:
        """
        A domain error keeps its faultstring, extra fields and headers, and
        its C{str} is the faultstring.
        """
        e = errors.Unavailable("busy", extra={"n": 1}, headers={"Retry-After": "2"})
        self.assertEqual((e.faultstring, e.extra, e.headers, str(e)), ("busy", {"n": 1}, {"Retry-After": "2"}, "busy"))
        self.assertEqual((errors.NotFound("x").extra, errors.NotFound("x").headers), ({}, {}))

    def test_duplicateConflict(self) -> None:
        """
        A unique-key clash is worded as StackStorm words it and names the
        stored document.
        """
        e = errors.duplicateConflict("rules", "abc")
        self.assertIsInstance(e, errors.Conflict)
        self.assertEqual((e.faultstring, e.extra), ("Tried to save duplicate unique keys (rules)", {"conflict-id": "abc"}))


class StatusTests(SynchronousTestCase):
    """
    L{statusFor}: the one table from kind to status.
    """

    def test_everyKind(self) -> None:
        """
        Every kind has its status, and the table covers every kind
        L{bwcd.errors} defines.
        """
        for kind, code in KINDS.items():
            self.assertEqual(statusFor(kind("x")), code, kind)
        defined = {getattr(errors, n) for n in errors.__all__ if isinstance(getattr(errors, n), type) and getattr(errors, n) is not errors.DomainError}
        self.assertEqual(set(STATUS), defined)

    def test_subclassesAndApiError(self) -> None:
        """
        A domain module's subclass of a kind answers as the kind; an
        L{ApiError} keeps its own code; a bare L{errors.DomainError} is a 500.
        """

        class QueueFull(errors.Unavailable):
            pass

        self.assertEqual(statusFor(QueueFull("full")), 503)
        self.assertEqual(statusFor(ApiError(418, "teapot")), 418)
        self.assertEqual(statusFor(errors.DomainError("?")), 500)


class AnswerTests(SynchronousTestCase):
    """
    How the route wrapper answers what a handler raises.
    """

    def setUp(self) -> None:
        self.api = Api(anyone)
        self.api.ready = True
        self.raised: Any = None

        @self.api.route("/v1/raise", ["GET"])
        async def raiser(request, principal):
            raise self.raised

        self.client = Client(self, self.api)

    def answer(self, error: BaseException) -> Tuple[int, Any, Any]:
        self.raised = error
        return self.client.request("GET", "/v1/raise")

    def test_eachKind(self) -> None:
        """
        Each kind is answered with its status and C{{"faultstring": ...}}
        plus its extra fields and headers.
        """
        for kind, code in KINDS.items():
            status, headers, body = self.answer(kind(f"text {code}", extra={"k": code}, headers={"X-Why": str(code)}))
            self.assertEqual((status, body), (code, {"faultstring": f"text {code}", "k": code}), kind)
            self.assertEqual(headers.getRawHeaders("X-Why"), [str(code)])
            self.assertEqual(headers.getRawHeaders("Content-Type"), ["application/json"])

    def test_storeErrors(self) -> None:
        """
        A store's duplicate key is a 409 naming the stored document; a store
        that does not answer is a 503 with Retry-After.
        """
        status, _, body = self.answer(DuplicateKey("rules", "abc", "pack, name"))
        self.assertEqual((status, body), (409, {"faultstring": "Tried to save duplicate unique keys (pack, name)", "conflict-id": "abc"}))
        status, headers, body = self.answer(StoreUnavailable("disk"))
        self.assertEqual((status, body), (503, {"faultstring": "Storage is unavailable; try again shortly."}))
        self.assertEqual(headers.getRawHeaders("Retry-After"), ["2"])
        self.flushLoggedErrors(StoreUnavailable)

    def test_unknownIsA500WithoutDetail(self) -> None:
        """
        Anything else, a bare domain error included, is a logged 500 that
        shows nothing of the error.
        """
        for error in (RuntimeError("secret detail"), errors.DomainError("secret detail")):
            status, _, body = self.answer(error)
            self.assertEqual((status, body), (500, {"faultstring": "Internal Server Error"}))
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError, errors.DomainError)), 2)

    def test_notReady(self) -> None:
        """
        Until the store is open, routes answer 503 with Retry-After.
        """
        self.api.ready = False
        status, headers, body = self.answer(errors.Invalid("never"))
        self.assertEqual((status, body), (503, {"faultstring": "bwcd is starting; try again shortly."}))
        self.assertEqual(headers.getRawHeaders("Retry-After"), ["1"])


class JsonBodyTests(SynchronousTestCase):
    """
    L{Api.readJson}: the one reader for JSON bodies.
    """

    def makeClient(self, requireJsonContentType: bool = False) -> Client:
        api = Api(anyone, requireJsonContentType=requireJsonContentType)
        api.ready = True

        @api.route("/v1/echo", ["POST"])
        async def echo(request, principal):
            return {"body": api.readJson(request)}

        @api.route("/v1/maybe", ["POST"])
        async def maybe(request, principal):
            return {"body": api.readJson(request, required=False)}

        @api.route("/v1/login", ["POST"], auth=False)
        async def login(request, principal):
            return {"body": api.readJson(request, required=False, anyTypeWhenEmpty=True)}

        return Client(self, api)

    def test_parses(self) -> None:
        """
        A JSON body is parsed; an empty one is an error when required and
        C{None} when not.
        """
        client = self.makeClient()
        self.assertEqual(client.request("POST", "/v1/echo", b'{"a": [1, 2.5, "\\u00e9"]}')[2], {"body": {"a": [1, 2.5, "\u00e9"]}})
        self.assertEqual(client.request("POST", "/v1/echo", b" \n")[:3:2], (400, {"faultstring": "Request body is required"}))
        self.assertEqual(client.request("POST", "/v1/maybe", b"")[:3:2], (200, {"body": None}))

    def test_hostileJsonIs400(self) -> None:
        """
        Deep nesting, NaN, Infinity, numbers out of range, lone surrogates,
        invalid UTF-8 and broken JSON are each a 400 with the parse-failure
        prefix, never a 500.
        """
        client = self.makeClient()
        for raw in (
            b"[" * 100000 + b"]" * 100000,
            b"[" * 65 + b"]" * 65,
            b'{"a": NaN}',
            b'{"a": Infinity}',
            b'{"a": -Infinity}',
            b'{"a": 1e309}',
            b'{"a": 99999999999999999999999}',
            b'{"a": "\\ud800"}',
            b'{"\\udfff": 1}',
            b'{"a": "\xff\xfe"}',
            b"\xef\xbb\xbf{}",
            b"{",
            b"{} []",
        ):
            status, _, body = client.request("POST", "/v1/echo", raw)
            self.assertEqual(status, 400, raw[:40])
            self.assertTrue(body["faultstring"].startswith("Failed to parse request body: "), body)
        self.assertEqual(self.flushLoggedErrors(), [])

    def test_contentTypeRequiredWhenAsked(self) -> None:
        """
        With C{requireJsonContentType} (auth disabled), a body not labelled
        JSON is a 415, empty or not; C{application/json} with parameters and
        C{+json} types pass; a route may take an empty body of any type.
        """
        strict = self.makeClient(requireJsonContentType=True)
        for headers in ({}, {"Content-Type": "text/plain"}, {"Content-Type": "application/x-www-form-urlencoded"}):
            for path, raw in (("/v1/echo", b"{}"), ("/v1/maybe", b"")):
                status, _, body = strict.request("POST", path, raw, headers)
                self.assertEqual(status, 415, (path, headers))
                self.assertIn("this route takes JSON (application/json)", body["faultstring"])
        for contentType in ("application/json", "Application/JSON; charset=utf-8", "application/merge-patch+json"):
            self.assertEqual(strict.request("POST", "/v1/echo", b"{}", {"Content-Type": contentType})[:3:2], (200, {"body": {}}))
        self.assertEqual(strict.request("POST", "/v1/login", b"", {"Content-Type": "text/plain"})[:3:2], (200, {"body": None}))
        self.assertEqual(strict.request("POST", "/v1/login", b"{}", {"Content-Type": "text/plain"})[0], 415)
        lax = self.makeClient()
        self.assertEqual(lax.request("POST", "/v1/echo", b"{}", {"Content-Type": "text/plain"})[:3:2], (200, {"body": {}}))

    def test_isJsonContentType(self) -> None:
        """
        JSON media types are recognised; others, and lookalikes, are not.
        """
        for yes in (b"application/json", b"APPLICATION/JSON ; charset=utf-8", b"application/vnd.api+json", b"text/x+json"):
            self.assertTrue(isJsonContentType(yes), yes)
        for no in (None, b"", b"text/plain", b"application/jsonx", b"+json", b"application/+json", b"json", b"application/json-seq"):
            self.assertFalse(isJsonContentType(no), no)
