# -*- test-case-name: tests.test_runner_http -*-
"""
The C{core.http} response: decoding, st2's C{{status_code, body, parsed,
headers}} result and its success rule, and reading a body up to a cap.
"""

from __future__ import annotations

import json
from typing import Any, Dict, List, Optional, Tuple

from twisted.internet.defer import Deferred
from twisted.internet.protocol import Protocol
from twisted.python.failure import Failure
from twisted.web.client import ResponseDone
from twisted.web.http import PotentialDataLoss

from bwcd.execution.runners.httprequest import SUCCESS_STATUS_CODES, origin
from bwcd.execution.runners.result import FAILED, SUCCEEDED




def _mediaType(contentType: Optional[str]) -> Tuple[str, Dict[str, str]]:
    if not contentType:
        return "", {}
    media, *rest = contentType.split(";")
    options: Dict[str, str] = {}
    for item in rest:
        key, _, value = item.partition("=")
        options[key.strip().lower()] = value.strip().strip("'\"")
    return media, options


def decodeBody(data: bytes, contentType: Optional[str]) -> str:
    """
    The response body as text, as requests' C{resp.text} decodes it: the
    Content-Type's charset, else ISO-8859-1 for C{text/*} and UTF-8 for
    anything else (requests guesses there); undecodable bytes become
    U+FFFD.
    """
    media, options = _mediaType(contentType)
    charset = options.get("charset") or ("iso-8859-1" if media.strip().lower().startswith("text/") else "utf-8")
    try:
        return data.decode(charset, errors="replace")
    except LookupError:
        return data.decode("utf-8", errors="replace")


def _rejectConstant(name: str) -> Any:
    raise ValueError(name)


def parseBody(text: str, contentType: Optional[str]) -> Tuple[Any, bool]:
    """
    st2's C{_parse_response_body}: JSON-decoded, and C{parsed} true, only
    when the media type (before any C{;}) is exactly C{application/json}
    and the text is JSON; anything else stays text.
    """
    media, _ = _mediaType(contentType)
    if media != "application/json":
        return text, False
    try:
        return json.loads(text, parse_constant=_rejectConstant), True
    except ValueError:
        return text, False


def statusFor(statusCode: int) -> str:
    """
    st2's rule: succeeded for 200 to 206, failed for anything else.
    """
    return SUCCEEDED if statusCode in SUCCESS_STATUS_CODES else FAILED


def buildResult(statusCode: int, headers: Dict[str, str], data: bytes, truncated: bool) -> Dict[str, Any]:
    """
    The result document: C{{status_code, body, parsed, headers}}, plus
    C{body_truncated} when the body was cut at the cap.
    """
    contentType = next((v for k, v in headers.items() if k.lower() == "content-type"), None)
    text = decodeBody(data, contentType)
    if truncated:
        body, parsed = text, False
    else:
        body, parsed = parseBody(text, contentType)
    result: Dict[str, Any] = {"status_code": statusCode, "body": body, "parsed": parsed, "headers": headers}
    if truncated:
        result["body_truncated"] = True
    return result


def responseHeaders(response: Any) -> Dict[str, str]:
    """
    The response's headers by name, repeated ones joined with C{", "} as
    requests joins them.
    """
    return {
        name.decode("latin-1"): ", ".join(v.decode("latin-1") for v in values)
        for name, values in response.headers.getAllRawHeaders()
    }


class _CappedBody(Protocol):
    """
    Collects a response body up to C{cap} bytes, then closes the
    connection rather than reading the rest.  Cancelling C{done} closes it
    too (a timeout).
    """

    def __init__(self, cap: int) -> None:
        self._cap = cap
        self._chunks: List[bytes] = []
        self._size = 0
        self.truncated = False
        self.done: Deferred = Deferred(lambda _: self._stop())

    @property
    def data(self) -> bytes:
        return b"".join(self._chunks)

    def _stop(self) -> None:
        if self.transport is not None:
            self.transport.stopProducing()

    def dataReceived(self, data: bytes) -> None:
        if self.done.called:
            return
        room = self._cap - self._size
        if len(data) > room:
            self._chunks.append(data[:room])
            self._size = self._cap
            self.truncated = True
            self.done.callback(None)
            self._stop()
            return
        self._chunks.append(data)
        self._size += len(data)

    def connectionLost(self, reason: Failure) -> None:  # type: ignore[override]
        if self.done.called:
            return
        if reason.check(ResponseDone, PotentialDataLoss):
            self.done.callback(None)
        else:
            self.done.errback(reason)


def _errorText(failure: Failure) -> str:
    """
    A readable error: Twisted's response failures wrap the real reasons in
    a list.
    """
    reasons = getattr(failure.value, "reasons", None)
    if reasons:
        return "; ".join(r.getErrorMessage() for r in reasons)
    return failure.getErrorMessage() or failure.type.__name__


def timeoutText(url: str, timeout: float) -> str:
    """
    The C{error} of a timed-out request, in the words of the requests
    exception st2 reports.
    """
    scheme, host, port = origin(url)
    pool = "HTTPSConnectionPool" if scheme == "https" else "HTTPConnectionPool"
    return f"{pool}(host={host!r}, port={port}): Read timed out. (read timeout={timeout})"
