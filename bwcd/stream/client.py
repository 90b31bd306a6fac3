# -*- test-case-name: tests.test_stream -*-
"""
One open stream: the events its filter wants, written to the HTTP request
as they come, with a bound on what may wait for a slow reader.
"""

from __future__ import annotations

from typing import Any, Iterable, Optional

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IPushProducer
from twisted.logger import Logger
from zope.interface import implementer

from bwcd.stream.events import PREAMBLE, StreamEvent, StreamFilter

log = Logger(namespace="bwcd.stream")

#: bytes that may be written to a connection whose transport has asked us to
#: pause (its kernel and user-space buffers are full) before it is dropped
MAX_PENDING = 1 << 20


@implementer(IPushProducer)
class StreamClient:
    """
    A stream being served.  Registered as the request's streaming producer,
    so the transport tells it when its buffer is full: nothing is queued
    here; while paused, writes still go to the transport's buffer, and a
    client that lets more than C{maxPending} bytes pile up is disconnected
    (an EventSource reconnects with C{Last-Event-ID} and is replayed what it
    missed, while the ring still holds it).

    @ivar done: fires (with C{None}) once the stream is over: the client
        went away, its C{end_event} came, or the server is stopping.
    """

    def __init__(self, request: Any, filter: StreamFilter, maxPending: int = MAX_PENDING) -> None:
        self.request = request
        self.filter = filter
        self.maxPending = maxPending
        self.done: Deferred = Deferred()
        self.paused = False
        self._pending = 0
        self.closed = False
        self.dropped = False

    def open(self, replay: Iterable[StreamEvent] = ()) -> None:
        """
        Start the body (st2's leading newline), replay what a resuming
        client missed, and watch the connection.
        """
        self.request.notifyFinish().addBoth(self._gone)
        self.request.registerProducer(self, True)
        self.write(PREAMBLE)
        for event in replay:
            if self.closed:
                return
            self.offer(event)

    def offer(self, event: StreamEvent) -> None:
        """
        Send C{event} if the filter wants it; end after C{end_event}.
        """
        if self.closed:
            return
        if self.filter.wants(event.name, event.data):
            self.write(event.wire)
        if self.filter.ends(event.name, event.data):
            self.end()

    def write(self, data: bytes) -> None:
        if self.closed:
            return
        if self.paused:
            self._pending += len(data)
            if self._pending > self.maxPending:
                self.drop()
                return
        self.request.write(data)

    def drop(self) -> None:
        """
        Disconnect a reader too slow to keep up; the stream is over once
        the connection is (L{done} fires then).
        """
        log.warn("Dropping a stream client that does not read ({pending} bytes waiting)", pending=self._pending)
        self.dropped = True
        self.closed = True
        self._unregister()
        transport = getattr(self.request, "transport", None)
        if transport is not None:
            transport.abortConnection()

    def end(self) -> None:
        """
        End the stream normally: L{done} fires and the route finishes the
        response (the producer is unregistered first, as a finished
        request requires).
        """
        if self.closed:
            return
        self.closed = True
        self._unregister()
        self._finish()

    def _unregister(self) -> None:
        if getattr(self.request, "channel", None) is not None and getattr(self.request, "producer", None) is not None:
            self.request.unregisterProducer()

    def _finish(self) -> None:
        if not self.done.called:
            self.done.callback(None)

    def _gone(self, _: Optional[Any]) -> None:
        # the connection is lost (or the response finished): nothing to unregister
        self.closed = True
        self._finish()

    # -- IPushProducer ---------------------------------------------------

    def pauseProducing(self) -> None:
        self.paused = True
        self._pending = 0

    def resumeProducing(self) -> None:
        self.paused = False
        self._pending = 0

    def stopProducing(self) -> None:
        self.closed = True


__all__ = ["MAX_PENDING", "StreamClient"]
