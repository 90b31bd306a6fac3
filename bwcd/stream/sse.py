# -*- test-case-name: tests.test_stream -*-
"""
A Server-Sent Events reader, fed bytes as they arrive: what C{bwc execution
tail} (and the tests) read the stream with, following the parsing rules of
the HTML standard's EventSource.
"""

from __future__ import annotations

from typing import List, Optional

import attrs


@attrs.frozen
class SSEMessage:
    """
    One dispatched event: C{event} is C{"message"} when none was named.
    """

    event: str
    data: str
    id: Optional[str]


class SSEParser:
    """
    Turns a byte stream into L{SSEMessage}s; comments and blocks without
    data (keep-alives) dispatch nothing.

    @ivar lastEventId: the last C{id:} seen, what a reconnecting client
        sends as C{Last-Event-ID}.
    """

    def __init__(self) -> None:
        self._buffer = b""
        self._event = ""
        self._data: List[str] = []
        self._sawData = False
        self.lastEventId: Optional[str] = None

    def feed(self, chunk: bytes) -> List[SSEMessage]:
        self._buffer += chunk
        messages: List[SSEMessage] = []
        while True:
            cut = _lineEnd(self._buffer)
            if cut is None:
                return messages
            end, after = cut
            line = self._buffer[:end].decode("utf-8", "replace")
            self._buffer = self._buffer[after:]
            message = self._line(line)
            if message is not None:
                messages.append(message)

    def _line(self, line: str) -> Optional[SSEMessage]:
        if line == "":
            return self._dispatch()
        if line.startswith(":"):
            return None
        field, sep, value = line.partition(":")
        if sep and value.startswith(" "):
            value = value[1:]
        if field == "event":
            self._event = value
        elif field == "data":
            self._data.append(value)
            self._sawData = True
        elif field == "id" and "\0" not in value:
            self.lastEventId = value
        return None

    def _dispatch(self) -> Optional[SSEMessage]:
        event, data, saw = self._event, "\n".join(self._data), self._sawData
        self._event, self._data, self._sawData = "", [], False
        if not saw:
            return None
        return SSEMessage(event or "message", data, self.lastEventId)


def _lineEnd(buffer: bytes):
    """
    (end of the first line, start of the next) in C{buffer}, for CRLF, LF or
    CR endings; C{None} while no whole line is there (a trailing CR may be
    the first half of a CRLF).
    """
    for i, byte in enumerate(buffer):
        if byte == 0x0A:
            return i, i + 1
        if byte == 0x0D:
            if i + 1 == len(buffer):
                return None
            return i, i + 2 if buffer[i + 1] == 0x0A else i + 1
    return None


__all__ = ["SSEMessage", "SSEParser"]
