# -*- test-case-name: tests.test_auth -*-
"""
Timestamps the way StackStorm writes them.

One format everywhere (C{2026-11-28T21:23:04.123456Z}) because stored
timestamps are compared as strings by both storage backends, and because
st2 clients parse exactly this shape.  The current time always comes from an
injected clock so that expiry can be tested with L{twisted.internet.task.Clock}.
"""

from __future__ import annotations

import re
from datetime import datetime, timezone

from twisted.internet.interfaces import IReactorTime

ISO_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"

#: what st2 accepts (st2common/util/isotime.py ISO8601_UTC_REGEX)
ISO8601_UTC_REGEX = r"^\d{4}\-\d{2}\-\d{2}(\s|T)\d{2}:\d{2}:\d{2}(\.\d{3,6})?(Z|\+00|\+0000|\+00:00)$"

_ACCEPTED = re.compile(ISO8601_UTC_REGEX)


def isoformat(dt: datetime) -> str:
    """
    C{dt} as st2's UTC string; a naive C{dt} is taken to be UTC already.
    """
    if dt.tzinfo is not None:
        dt = dt.astimezone(timezone.utc)
    return dt.strftime(ISO_FORMAT)


def parseIso(s: str) -> datetime:
    """
    Parse any UTC timestamp st2 accepts into an aware UTC datetime.

    @raise ValueError: C{s} is not such a timestamp.
    """
    if not isinstance(s, str) or not _ACCEPTED.match(s):
        raise ValueError(f"{s!r} is not a UTC ISO-8601 timestamp")
    body = s.replace(" ", "T", 1)
    for suffix in ("+00:00", "+0000", "+00", "Z"):
        if body.endswith(suffix):
            body = body[: -len(suffix)]
            break
    if "." in body:
        head, frac = body.split(".", 1)
        body = head + "." + frac.ljust(6, "0")
        parsed = datetime.strptime(body, "%Y-%m-%dT%H:%M:%S.%f")
    else:
        parsed = datetime.strptime(body, "%Y-%m-%dT%H:%M:%S")
    return parsed.replace(tzinfo=timezone.utc)


def utcnow(clock: IReactorTime) -> datetime:
    """
    The clock's current time as an aware UTC datetime.
    """
    return datetime.fromtimestamp(clock.seconds(), tz=timezone.utc)


__all__ = ["ISO8601_UTC_REGEX", "ISO_FORMAT", "isoformat", "parseIso", "utcnow"]
