# -*- test-case-name: tests.test_stream_e2e -*-
"""
C{GET /v1/stream} (and C{/stream} on the stream listener): the live event
stream as Server-Sent Events, st2stream's route (st2-api-more.md section
13).  Credentials are checked as on every route, query ones included (an
EventSource cannot send headers); a refusal is an ordinary JSON answer
before anything is streamed.
"""

from __future__ import annotations

from typing import Optional, Sequence

from bwcd.api.framework import Api, Principal, Reply
from bwcd.stream.events import StreamFilter
from bwcd.stream.hub import StreamHub

#: the paths on the API listener; the stream listener adds st2stream's /stream
API_PATHS = ("/v1/stream",)
STREAM_PATHS = ("/stream", "/v1/stream")


def lastArg(request, name: str) -> Optional[str]:
    """
    The last value of query parameter C{name} (st2's router keeps the
    last of repeated keys), decoded, or C{None}.
    """
    values = request.args.get(name.encode("utf-8"))
    if not values:
        return None
    return values[-1].decode("utf-8", "replace")


def installStreamRoutes(api: Api, hub: StreamHub, paths: Sequence[str] = API_PATHS) -> None:
    """
    Add the stream route to C{api} under C{paths}.
    """

    @api.route(list(paths), ["GET"])
    async def stream(request, principal: Principal):
        filter = StreamFilter.fromQuery(lambda name: lastArg(request, name))
        lastEventId = request.getHeader(b"last-event-id")
        request.setResponseCode(200)
        request.setHeader(b"Content-Type", b"text/event-stream; charset=UTF-8")
        request.setHeader(b"Cache-Control", b"no-cache")
        request.setHeader(b"X-Accel-Buffering", b"no")
        client = hub.connect(request, filter, lastEventId.decode("utf-8", "replace") if lastEventId else None)
        await client.done
        # the body is written; the framework only finishes the response
        return Reply()


__all__ = ["API_PATHS", "STREAM_PATHS", "installStreamRoutes", "lastArg"]
