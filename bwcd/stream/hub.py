# -*- test-case-name: tests.test_stream -*-
"""
The stream's hub: gathers the events of this process and of every other
process sharing the store, numbers them, keeps the recent ones in a ring and
hands each to the open streams.

Where the events come from
--------------------------
  - Executions: every write goes through L{ExecutionService}, which stamps
    the document with C{_updated_at} and tells its change listeners; the hub
    publishes this process's creates and updates at once.
  - Output: the executor tells the execution service of each stored chunk
    (C{execution_output} rows carry a C{timestamp}); published at once.
  - Trigger instances (C{occurrence_time}) and everything other processes
    write: found by polling the store every C{pollInterval} seconds for
    documents stamped within the last C{overlap} seconds of this process's
    clock.  The overlap covers a write stamped just before it committed and
    clocks that disagree by less than it; what the window returns twice is
    dropped by remembering, per document, the stamp last published
    (executions: id -> C{_updated_at}; output rows and trigger instances are
    written once: their id).  Local pushes record their stamps too, so the
    poll never repeats them.  A remote execution first seen by the poll is
    published as a create when it was created within the window (followed
    by an update when it has moved on since), otherwise as an update.
  - Rules: the rule index already follows every process's changes (its own
    marker poll); the hub compares the index's rules with the ones it saw
    last and publishes creates, updates and deletes.

Nothing is written to the store for the stream, and nothing is read while
nobody watches: the hub is I{active} while a stream is open and for
C{idleGrace} seconds after the last one closed (so a client reconnecting
with C{Last-Event-ID} finds what it missed); when idle it publishes
nothing and does not poll, and on becoming active it starts from "now".

Ordering: this process's events are in the order they happened here;
another process's reach the ring up to C{pollInterval} later, in stamp
order, and only the states seen at poll time (an execution that went
through several statuses between two polls is published once, with its
latest state).
"""

from __future__ import annotations

import os
from datetime import timedelta
from typing import Any, Dict, List, Mapping, Optional, Set, Tuple

from twisted.application.service import Service
from twisted.internet.defer import Deferred, ensureDeferred
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from bwcd.execution.service import publicDocument
from bwcd.rules.model import publicRule
from bwcd.store.interface import IStore, StoreError
from bwcd.stream.client import MAX_PENDING, StreamClient
from bwcd.stream.events import (
    EXECUTION_CREATE,
    EXECUTION_UPDATE,
    HEARTBEAT,
    OUTPUT_CREATE,
    RULE_CREATE,
    RULE_DELETE,
    RULE_UPDATE,
    TRIGGER_INSTANCE_CREATE,
    StreamEvent,
)
from bwcd.stream.ring import EventRing
from bwcd.timeutil import isoformat, utcnow

log = Logger(namespace="bwcd.stream")

#: documents read per query when polling (more pages follow at once)
PAGE = 500

#: an execution's first status: seen first by the poll in it, it is new
_FIRST_STATUSES = frozenset(("requested", "delayed"))


def outputDocument(row: Mapping[str, Any]) -> Dict[str, Any]:
    """
    An output chunk as st2's C{st2.execution.output__create} carries it.
    """
    keys = ("id", "execution_id", "action_ref", "runner_ref", "timestamp", "output_type", "data")
    return {k: row.get(k) for k in keys}


def instanceDocument(doc: Mapping[str, Any]) -> Dict[str, Any]:
    return {k: v for k, v in doc.items() if not k.startswith("_")}


class _Window:
    """
    What one collection's poll has published: C{key -> stamp}, forgetting
    what falls out of the window.
    """

    def __init__(self) -> None:
        self.seen: Dict[str, str] = {}

    def prune(self, lower: str) -> None:
        self.seen = {k: v for k, v in self.seen.items() if v >= lower}


class StreamHub(Service):
    """
    @param executions: the L{ExecutionService} whose changes are pushed.
    @param index: the L{bwcd.rules.index.RuleIndex}, whose rules are
        compared at every poll (or C{None}: no rule events).
    @param ringSize: how many events are kept for C{Last-Event-ID}.
    @param heartbeat: seconds between keep-alive comments.
    """

    def __init__(
        self,
        store: IStore,
        clock: IReactorTime,
        executions: Any,
        index: Optional[Any] = None,
        ringSize: int = 1000,
        heartbeat: float = 15.0,
        pollInterval: float = 1.0,
        overlap: float = 5.0,
        idleGrace: float = 60.0,
        maxPending: int = MAX_PENDING,
        epoch: Optional[str] = None,
    ) -> None:
        self._store = store
        self._clock = clock
        self._executions = executions
        self._index = index
        self.ring = EventRing(ringSize, epoch or os.urandom(4).hex())
        self._heartbeatInterval = heartbeat
        self._pollInterval = pollInterval
        self._overlap = overlap
        self._idleGrace = idleGrace
        self._maxPending = maxPending
        self.clients: Set[StreamClient] = set()
        self._lastLeft: Optional[float] = None
        self._active = False
        self._floor = ""
        self._executionsSeen = _Window()
        self._outputSeen = _Window()
        self._instancesSeen = _Window()
        self._rules: Dict[str, Any] = {}
        self._polling = False
        self._loops: List[LoopingCall] = []

    # -- lifecycle ---------------------------------------------------------

    def startService(self) -> None:
        super().startService()
        self._executions.addChangeListener(self._localChange)
        for interval, fn in ((self._pollInterval, self.poll), (self._heartbeatInterval, self.heartbeat)):
            loop = LoopingCall(fn)
            loop.clock = self._clock
            loop.start(interval, now=False).addErrback(lambda f: log.failure("Stream loop died", f))
            self._loops.append(loop)

    def stopService(self) -> None:
        super().stopService()
        self._executions.removeChangeListener(self._localChange)
        for loop in self._loops:
            if loop.running:
                loop.stop()
        self._loops = []
        for client in list(self.clients):
            client.end()

    # -- clients -----------------------------------------------------------

    @property
    def active(self) -> bool:
        """
        Whether events are being gathered (someone watches, or did lately).
        """
        if self.clients:
            return True
        return self._lastLeft is not None and self._clock.seconds() - self._lastLeft < self._idleGrace

    def _wake(self) -> None:
        """
        Start gathering (again) from now, if idle.
        """
        if self._active:
            return
        self._active = True
        self._floor = isoformat(utcnow(self._clock))
        self._executionsSeen = _Window()
        self._outputSeen = _Window()
        self._instancesSeen = _Window()
        self._rules = self._currentRules()

    def connect(self, request: Any, filter: Any, lastEventId: Optional[str] = None) -> StreamClient:
        """
        Open a stream on C{request}: the events after C{lastEventId} that
        the ring still holds, then every new one the filter wants.
        """
        self._wake()
        client = StreamClient(request, filter, self._maxPending)
        self.clients.add(client)
        client.done.addCallback(lambda _: self._left(client))
        replay = self.ring.after(lastEventId) if lastEventId else None
        if lastEventId and replay is None:
            log.info("Stream resumed from {last_event_id}, which this process no longer holds: no replay", last_event_id=lastEventId)
        client.open(replay or ())
        return client

    def _left(self, client: StreamClient) -> None:
        self.clients.discard(client)
        if not self.clients:
            self._lastLeft = self._clock.seconds()

    def heartbeat(self) -> None:
        for client in list(self.clients):
            client.write(HEARTBEAT)

    # -- publishing ----------------------------------------------------------

    def publish(self, name: str, data: Mapping[str, Any]) -> Optional[StreamEvent]:
        """
        Number an event, keep it and offer it to every open stream; nothing
        while idle.
        """
        if not self.active:
            self._active = False
            return None
        event = self.ring.append(name, data)
        for client in list(self.clients):
            try:
                client.offer(event)
            except Exception:
                log.failure("Writing {event} to a stream failed", event=event.eventId)
                client.end()
        return event

    def _localChange(self, change: str, doc: dict) -> None:
        if not self.active:
            self._active = False
            return
        if change == "output":
            self._outputSeen.seen[doc["id"]] = doc.get("timestamp") or ""
            self.publish(OUTPUT_CREATE, outputDocument(doc))
            return
        stamp = doc.get("_updated_at") or ""
        previous = self._executionsSeen.seen.get(doc["id"])
        if previous is not None and previous > stamp:
            return  # the poll already published a later state
        # two local writes may share a stamp: each is published
        self._executionsSeen.seen[doc["id"]] = stamp
        self.publish(EXECUTION_CREATE if change == "create" else EXECUTION_UPDATE, publicDocument(doc))

    # -- polling -------------------------------------------------------------

    def poll(self) -> Optional[Deferred]:
        """
        Publish what other processes changed since the last poll (one poll
        at a time; nothing while idle).
        """
        if not self.active:
            self._active = False
            return None
        if self._polling:
            return None
        self._polling = True
        d = ensureDeferred(self._poll())

        def failed(f):
            if f.check(StoreError):
                log.warn("Stream poll failed: {error}", error=f.getErrorMessage())
            else:
                log.failure("Stream poll failed", f)

        def done(_):
            self._polling = False

        d.addErrback(failed)
        d.addBoth(done)
        return d

    def _lower(self) -> str:
        lower = isoformat(utcnow(self._clock) - timedelta(seconds=self._overlap))
        return max(lower, self._floor)

    async def _window(self, collection: str, field: str, lower: str, sort: Tuple[Tuple[str, int], ...]) -> List[dict]:
        docs: List[dict] = []
        bound = lower
        for _ in range(20):
            page = await self._store.find(collection, {field: {"$gte": bound}}, sort=list(sort), limit=PAGE)
            docs.extend(page)
            if len(page) < PAGE:
                break
            bound = page[-1].get(field) or bound
        return docs

    async def _poll(self) -> None:
        lower = self._lower()
        self._publishRules()
        for doc in await self._window("triggerinstances", "occurrence_time", lower, (("occurrence_time", 1),)):
            if self._instancesSeen.seen.get(doc["id"]) is None:
                self._instancesSeen.seen[doc["id"]] = doc.get("occurrence_time") or ""
                self.publish(TRIGGER_INSTANCE_CREATE, instanceDocument(doc))
        for doc in await self._window("executions", "_updated_at", lower, (("_updated_at", 1),)):
            self._polledExecution(doc, lower)
        rows = await self._window("execution_output", "timestamp", lower, (("timestamp", 1), ("seq", 1)))
        for row in rows:
            if self._outputSeen.seen.get(row["id"]) is None:
                self._outputSeen.seen[row["id"]] = row.get("timestamp") or ""
                self.publish(OUTPUT_CREATE, outputDocument(row))
        for window in (self._instancesSeen, self._executionsSeen, self._outputSeen):
            window.prune(lower)

    def _polledExecution(self, doc: dict, lower: str) -> None:
        stamp = doc.get("_updated_at") or ""
        seen = self._executionsSeen.seen
        previous = seen.get(doc["id"])
        if previous is not None and previous >= stamp:
            return
        seen[doc["id"]] = stamp
        public = publicDocument(doc)
        if previous is None and (doc.get("start_timestamp") or "") >= lower:
            self.publish(EXECUTION_CREATE, public)
            if doc.get("status") not in _FIRST_STATUSES or len(doc.get("log") or ()) > 1:
                self.publish(EXECUTION_UPDATE, public)
            return
        self.publish(EXECUTION_UPDATE, public)

    # -- rules -----------------------------------------------------------------

    def _currentRules(self) -> Dict[str, Any]:
        if self._index is None:
            return {}
        # the index keeps one snapshot, replaced whole on reload and changed
        # in place by this process's API; its rules are immutable values
        return dict(self._index._snapshot.rules)

    def _publishRules(self) -> None:
        if self._index is None:
            return
        current = self._currentRules()
        before = self._rules
        self._rules = current
        for ruleId, rule in current.items():
            old = before.get(ruleId)
            if old is None:
                self.publish(RULE_CREATE, publicRule(rule.doc))
            elif old is not rule and old.raw != rule.raw:
                self.publish(RULE_UPDATE, publicRule(rule.doc))
        for ruleId, old in before.items():
            if ruleId not in current:
                self.publish(RULE_DELETE, publicRule(old.doc))


__all__ = ["StreamHub", "instanceDocument", "outputDocument"]
