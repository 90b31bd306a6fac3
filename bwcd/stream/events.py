# -*- test-case-name: tests.test_stream -*-
"""
What travels on the event stream, as pure values: the events, their wire
form (Server-Sent Events, as st2stream writes them), and the filters a
client asks for with C{events}, C{action_refs}, C{execution_ids},
C{end_event} and C{end_execution_id} (st2-api-more.md section 13).
"""

from __future__ import annotations

import json
from fnmatch import fnmatchcase
from typing import Any, Callable, Mapping, Optional, Tuple

import attrs

EXECUTION_CREATE = "st2.execution__create"
EXECUTION_UPDATE = "st2.execution__update"
EXECUTION_DELETE = "st2.execution__delete"
OUTPUT_CREATE = "st2.execution.output__create"
TRIGGER_INSTANCE_CREATE = "st2.trigger_instance__create"
RULE_CREATE = "st2.rule__create"
RULE_UPDATE = "st2.rule__update"
RULE_DELETE = "st2.rule__delete"

#: what a client gets without C{events=}: st2stream's whitelist (output,
#: trigger instance and rule events must be asked for; C{events=*} is all)
DEFAULT_EVENTS: Tuple[str, ...] = (
    "st2.announcement__*",
    "st2.execution__create",
    "st2.execution__update",
    "st2.execution__delete",
    "st2.liveaction__create",
    "st2.liveaction__update",
    "st2.liveaction__delete",
)

#: the statuses that end an execution (and a stream's C{end_event})
COMPLETED = frozenset(("succeeded", "failed", "timeout", "canceled", "abandoned"))

#: st2's own keep-alive: the body starts with a bare newline
PREAMBLE = b"\n"
#: written every heartbeat interval; a comment line, ignored by every SSE
#: client (EventSource, sseclient-py), which keeps proxies from timing out
HEARTBEAT = b": heartbeat\n\n"

_encode = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


class StreamEvent:
    """
    One event of the stream.  Its wire form is encoded once, when first
    written, and shared by every client.

    @ivar eventId: the SSE C{id:} (C{<epoch>-<seq>}), what a client sends
        back as C{Last-Event-ID}.
    @ivar seq: its place in this process's stream.
    @ivar name: the event name (C{st2.execution__update}).
    @ivar data: the payload (the document as the API shows it).
    """

    __slots__ = ("eventId", "seq", "name", "data", "_wire")

    def __init__(self, eventId: str, seq: int, name: str, data: Mapping[str, Any]) -> None:
        self.eventId = eventId
        self.seq = seq
        self.name = name
        self.data = data
        self._wire: Optional[bytes] = None

    @property
    def wire(self) -> bytes:
        if self._wire is None:
            self._wire = formatEvent(self.eventId, self.name, self.data)
        return self._wire

    def __repr__(self) -> str:
        return f"<StreamEvent {self.eventId} {self.name}>"


def formatEvent(eventId: Optional[str], name: str, data: Any) -> bytes:
    """
    The SSE form of one event: C{id:} (for C{Last-Event-ID} resume; st2
    sends none), C{event:} and one C{data:} line of compact JSON, then a
    blank line.  Compact JSON never holds a raw line break, so one C{data:}
    line always suffices.
    """
    head = f"id: {eventId}\n" if eventId is not None else ""
    return f"{head}event: {name}\ndata: {_encode(data)}\n\n".encode("utf-8")


def _split(value: Optional[str]) -> Tuple[str, ...]:
    if value is None:
        return ()
    return tuple(v.strip() for v in value.split(",") if v.strip())


def actionRefOf(name: str, data: Mapping[str, Any]) -> Optional[str]:
    """
    The action ref an event is about, as st2's C{action_refs} filter reads
    it: an execution's C{action.ref}, an output chunk's C{action_ref}.
    """
    if name.startswith("st2.execution__"):
        action = data.get("action")
        return action.get("ref") if isinstance(action, Mapping) else None
    if name == OUTPUT_CREATE:
        return data.get("action_ref")
    return None


def executionIdOf(name: str, data: Mapping[str, Any]) -> Optional[str]:
    """
    The execution an event is about: an execution's C{id}, an output
    chunk's C{execution_id}.
    """
    if name.startswith("st2.execution__"):
        return data.get("id")
    if name == OUTPUT_CREATE:
        return data.get("execution_id")
    return None


@attrs.frozen
class StreamFilter:
    """
    What one client asked to see, and when its stream ends.

    @ivar events: event-name globs (fnmatch, case-sensitive).
    @ivar actionRefs: when not empty, only events about these actions.
    @ivar executionIds: when not empty, only events about these executions.
    @ivar endEvent: with C{endExecutionId}: end the stream after this
        event about that execution once it has completed.
    """

    events: Tuple[str, ...] = DEFAULT_EVENTS
    actionRefs: frozenset = frozenset()
    executionIds: frozenset = frozenset()
    endEvent: Optional[str] = None
    endExecutionId: Optional[str] = None

    @classmethod
    def fromQuery(cls, get: Callable[[str], Optional[str]]) -> "StreamFilter":
        """
        Read the filter from query parameters; C{get(name)} is the last
        value given for C{name} (st2's router keeps the last), or C{None}.
        """
        events = _split(get("events"))
        return cls(
            events=events or DEFAULT_EVENTS,
            actionRefs=frozenset(_split(get("action_refs"))),
            executionIds=frozenset(_split(get("execution_ids"))),
            endEvent=get("end_event") or None,
            endExecutionId=get("end_execution_id") or None,
        )

    def wants(self, name: str, data: Mapping[str, Any]) -> bool:
        """
        Whether an event passes the filters.
        """
        if not any(fnmatchcase(name, pattern) for pattern in self.events):
            return False
        if self.actionRefs and actionRefOf(name, data) not in self.actionRefs:
            return False
        if self.executionIds and executionIdOf(name, data) not in self.executionIds:
            return False
        return True

    def ends(self, name: str, data: Mapping[str, Any]) -> bool:
        """
        Whether the stream ends after this event (sent or not).
        """
        return (
            self.endEvent is not None
            and self.endExecutionId is not None
            and name == self.endEvent
            and data.get("id") == self.endExecutionId
            and data.get("status") in COMPLETED
        )


def splitEventId(value: Optional[str]) -> Optional[Tuple[str, int]]:
    """
    C{(epoch, seq)} of an event id this code wrote, or C{None} for anything
    else (absent, another server's, garbage).
    """
    if not value:
        return None
    epoch, sep, seq = value.strip().rpartition("-")
    if not sep or not epoch or not seq.isdigit():
        return None
    return epoch, int(seq)


__all__ = [
    "COMPLETED",
    "DEFAULT_EVENTS",
    "EXECUTION_CREATE",
    "EXECUTION_DELETE",
    "EXECUTION_UPDATE",
    "HEARTBEAT",
    "OUTPUT_CREATE",
    "PREAMBLE",
    "RULE_CREATE",
    "RULE_DELETE",
    "RULE_UPDATE",
    "StreamEvent",
    "StreamFilter",
    "TRIGGER_INSTANCE_CREATE",
    "actionRefOf",
    "executionIdOf",
    "formatEvent",
    "splitEventId",
]
