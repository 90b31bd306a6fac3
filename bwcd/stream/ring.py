# -*- test-case-name: tests.test_stream -*-
"""
The recent events, kept so that a client reconnecting with
C{Last-Event-ID} gets what it missed.
"""

from __future__ import annotations

from collections import deque
from typing import Any, Deque, List, Mapping, Optional

from bwcd.stream.events import StreamEvent, splitEventId


class EventRing:
    """
    The last C{size} events of this process's stream, oldest first.

    @ivar epoch: names this process's sequence, so that an id another
        process (or an earlier run) wrote is never taken for one of ours.
    """

    def __init__(self, size: int, epoch: str) -> None:
        if size < 1:
            raise ValueError("the ring keeps at least one event")
        self.epoch = epoch
        self._events: Deque[StreamEvent] = deque(maxlen=size)
        self._seq = 0

    def append(self, name: str, data: Mapping[str, Any]) -> StreamEvent:
        """
        Number a new event and keep it (dropping the oldest when full).
        """
        self._seq += 1
        event = StreamEvent(f"{self.epoch}-{self._seq}", self._seq, name, data)
        self._events.append(event)
        return event

    def __len__(self) -> int:
        return len(self._events)

    def after(self, lastEventId: Optional[str]) -> Optional[List[StreamEvent]]:
        """
        The kept events that came after C{lastEventId}; C{None} when that
        id is not ours or is older than everything kept (a gap we cannot
        fill: the client starts from now).
        """
        parsed = splitEventId(lastEventId)
        if parsed is None or parsed[0] != self.epoch:
            return None
        seq = parsed[1]
        if seq > self._seq:
            return None
        if not self._events:
            return [] if seq == self._seq else None
        first = self._events[0].seq
        if seq < first - 1:
            return None
        return [e for e in self._events if e.seq > seq]


__all__ = ["EventRing"]
