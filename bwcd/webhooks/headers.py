# -*- test-case-name: tests.test_webhook_body -*-
"""
The request headers a webhook payload carries.

StackStorm hands rules the WSGI view of the headers, so names arrive in
WSGI title-case (C{X-Github-Event}, not C{X-GitHub-Event}) and repeated
headers are joined with commas; rules written against StackStorm index
C{trigger.headers} with those exact names, so the same spelling is produced
here.  Credentials are removed before the payload is stored anywhere: st2's
three (C{St2-Api-Key}, C{X-Auth-Token}, C{Cookie}) and also, unlike st2,
C{Authorization} and C{Proxy-Authorization}, whose Basic or Bearer secrets
would otherwise sit in every stored trigger instance.
"""

from __future__ import annotations

import random
import uuid
from typing import Dict, Iterable, Optional, Sequence, Tuple

import attrs

__all__ = ["PayloadHeaders", "payloadHeaders", "wsgiName", "REMOVED", "TRACE_TAG"]

#: removed from the payload (exact names after title-casing, as st2 does;
#: the last two are bwcd's own addition)
REMOVED = ("St2-Api-Key", "X-Auth-Token", "Cookie", "Authorization", "Proxy-Authorization")
#: popped from the payload; its value tags the trace
TRACE_TAG = "St2-Trace-Tag"
REQUEST_ID = "X-Request-Id"


@attrs.frozen
class PayloadHeaders:
    """
    @ivar headers: title-cased names, credentials removed.
    @ivar lower: the same with lower-case names.
    @ivar traceTag: the popped C{St2-Trace-Tag}, if sent.
    """

    headers: Dict[str, str]
    lower: Dict[str, str]
    traceTag: Optional[str]


def _requestId() -> str:
    # A uuid4-shaped id without a urandom() system call per request: it
    # names a request in logs and payloads and guards nothing.
    return str(uuid.UUID(int=random.getrandbits(128), version=4))


def wsgiName(name: str) -> str:
    """
    The name a WSGI application sees: the server stores C{HTTP_X_FOO_BAR}
    and WebOb turns it back into C{X-Foo-Bar}, so underscores become dashes
    and every word is capitalised (C{str.title}).
    """
    return name.replace("_", "-").title()


def _text(value: bytes) -> str:
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        return value.decode("latin-1")


def payloadHeaders(
    rawHeaders: Iterable[Tuple[bytes, Sequence[bytes]]],
    newRequestId: Optional[str] = None,
) -> PayloadHeaders:
    """
    Build the C{headers} and C{headers_lower} of a webhook payload.

    @param rawHeaders: C{(name, [values])} pairs, as Twisted's
        C{Headers.getAllRawHeaders()} gives them.
    @param newRequestId: the C{X-Request-Id} to add when the request has
        none (StackStorm's RequestID middleware always adds one); a random
        uuid when omitted.
    """
    headers: Dict[str, str] = {}
    for rawName, values in rawHeaders:
        name = wsgiName(rawName.decode("latin-1"))
        value = ",".join(_text(v) for v in values)
        if name in headers:
            headers[name] = headers[name] + "," + value
        else:
            headers[name] = value
    for name in REMOVED:
        headers.pop(name, None)
    traceTag = headers.pop(TRACE_TAG, None)
    if REQUEST_ID not in headers:
        headers[REQUEST_ID] = newRequestId or _requestId()
    return PayloadHeaders(headers=headers, lower={k.lower(): v for k, v in headers.items()}, traceTag=traceTag)
