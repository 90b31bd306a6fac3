"""
L{bwcd.stream}: the wire format, the filters, the ring, and the hub on the
in-memory store and a fake clock (every poll and heartbeat a clock step).
"""

from __future__ import annotations

import json
from typing import Any, List

from twisted.internet.defer import Deferred, ensureDeferred
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from bwcd.execution.service import ExecutionService
from bwcd.rules.index import RuleIndex
from bwcd.store.interface import newId
from bwcd.stream.events import (
    DEFAULT_EVENTS,
    HEARTBEAT,
    PREAMBLE,
    StreamFilter,
    formatEvent,
    splitEventId,
)
from bwcd.stream.hub import StreamHub
from bwcd.stream.ring import EventRing
from bwcd.stream.sse import SSEMessage, SSEParser
from bwcd.testing import MemoryStore, startedStore
from tests.test_execution_service import ECHO, T0


class WireTests(SynchronousTestCase):
    def test_format(self) -> None:
        """
        An event is its id, its name and one line of compact JSON (UTF-8,
        not escaped), then a blank line.
        """
        self.assertEqual(
            formatEvent("ab-3", "st2.execution__update", {"id": "x", "status": "running", "msg": "é\nz"}),
            b'id: ab-3\nevent: st2.execution__update\ndata: {"id":"x","status":"running","msg":"\xc3\xa9\\nz"}\n\n',
        )

    def test_keepAlives(self) -> None:
        """
        The body starts with st2's bare newline; the heartbeat is an SSE
        comment; neither dispatches anything to a client.
        """
        self.assertEqual(PREAMBLE, b"\n")
        self.assertTrue(HEARTBEAT.startswith(b":") and HEARTBEAT.endswith(b"\n\n"))
        self.assertEqual(SSEParser().feed(PREAMBLE + HEARTBEAT + HEARTBEAT), [])

    def test_parserRoundTrip(self) -> None:
        """
        The parser reads events back, fed a byte at a time, with CRLF or LF
        line ends, and remembers the last id.
        """
        wire = PREAMBLE + formatEvent("e-1", "a", {"k": 1}) + HEARTBEAT + formatEvent("e-2", "b", [1, "x"])
        parser = SSEParser()
        messages: List[SSEMessage] = []
        for i in range(len(wire)):
            messages.extend(parser.feed(wire[i:i + 1]))
        self.assertEqual(messages, [SSEMessage("a", '{"k":1}', "e-1"), SSEMessage("b", '[1,"x"]', "e-2")])
        self.assertEqual(parser.lastEventId, "e-2")
        crlf = SSEParser().feed(b"event: c\r\ndata: 1\r\ndata:2\r\n\r\n")
        self.assertEqual(crlf, [SSEMessage("c", "1\n2", None)])

    def test_eventIds(self) -> None:
        """
        Only ids shaped C{<epoch>-<seq>} are understood.
        """
        self.assertEqual(splitEventId("abcd-12"), ("abcd", 12))
        for bad in (None, "", "12", "abcd-", "-3", "a-b"):
            self.assertIsNone(splitEventId(bad), bad)


def query(**params: str):
    return StreamFilter.fromQuery(params.get)


EXEC = {"id": "e1", "action": {"ref": "demo.echo"}, "status": "running"}
OUT = {"id": "o1", "execution_id": "e1", "action_ref": "demo.echo", "data": "hi"}


class FilterTests(SynchronousTestCase):
    def test_default(self) -> None:
        """
        Without C{events}, st2's whitelist: executions yes, output, trigger
        instances and rules no.
        """
        f = query()
        self.assertEqual(f.events, DEFAULT_EVENTS)
        self.assertTrue(f.wants("st2.execution__create", EXEC))
        self.assertTrue(f.wants("st2.execution__update", EXEC))
        for name in ("st2.execution.output__create", "st2.trigger_instance__create", "st2.rule__create"):
            self.assertFalse(f.wants(name, {}), name)

    def test_globs(self) -> None:
        """
        C{events} is a comma list of globs; C{*} is everything.
        """
        f = query(events="st2.execution.*, st2.rule__*")
        self.assertTrue(f.wants("st2.execution.output__create", OUT))
        self.assertTrue(f.wants("st2.rule__delete", {}))
        self.assertFalse(f.wants("st2.execution__create", EXEC))
        self.assertTrue(query(events="*").wants("st2.trigger_instance__create", {}))

    def test_actionRefs(self) -> None:
        """
        C{action_refs} keeps the events about those actions and drops the
        ones about none.
        """
        f = query(events="*", action_refs="demo.echo,x.y")
        self.assertTrue(f.wants("st2.execution__update", EXEC))
        self.assertTrue(f.wants("st2.execution.output__create", OUT))
        self.assertFalse(f.wants("st2.execution__update", dict(EXEC, action={"ref": "other.one"})))
        self.assertFalse(f.wants("st2.rule__create", {"action": {"ref": "demo.echo"}}))

    def test_executionIds(self) -> None:
        """
        C{execution_ids} keeps execution events by id and output by
        execution_id.
        """
        f = query(events="*", execution_ids="e1")
        self.assertTrue(f.wants("st2.execution__update", EXEC))
        self.assertTrue(f.wants("st2.execution.output__create", OUT))
        self.assertFalse(f.wants("st2.execution__update", dict(EXEC, id="e2")))
        self.assertFalse(f.wants("st2.trigger_instance__create", {"id": "e1"}))

    def test_ends(self) -> None:
        """
        The stream ends on the named event about that execution once it has
        completed, not before, and not on another execution's.
        """
        f = query(end_event="st2.execution__update", end_execution_id="e1")
        self.assertFalse(f.ends("st2.execution__update", EXEC))
        self.assertTrue(f.ends("st2.execution__update", dict(EXEC, status="succeeded")))
        self.assertFalse(f.ends("st2.execution__update", dict(EXEC, id="e2", status="failed")))
        self.assertFalse(f.ends("st2.execution__create", dict(EXEC, status="failed")))
        self.assertFalse(query(end_event="st2.execution__update").ends("st2.execution__update", dict(EXEC, status="failed")))


class RingTests(SynchronousTestCase):
    def test_after(self) -> None:
        """
        The events after a known id; an empty list after the newest.
        """
        ring = EventRing(10, "ep")
        events = [ring.append("n", {"i": i}) for i in range(4)]
        self.assertEqual(events[0].eventId, "ep-1")
        self.assertEqual(ring.after("ep-2"), events[2:])
        self.assertEqual(ring.after("ep-4"), [])
        self.assertEqual(ring.after("ep-0"), events)

    def test_bounded(self) -> None:
        """
        The ring keeps C{size} events; an id older than them, from another
        epoch, from the future or garbage cannot be resumed from.
        """
        ring = EventRing(3, "ep")
        for i in range(10):
            ring.append("n", {"i": i})
        self.assertEqual(len(ring), 3)
        self.assertEqual([e.seq for e in ring.after("ep-7")], [8, 9, 10])
        self.assertEqual([e.seq for e in ring.after("ep-8")], [9, 10])
        for lost in ("ep-6", "other-9", "ep-11", "junk"):
            self.assertIsNone(ring.after(lost), lost)


class FakeRequest:
    """
    Just what a stream uses of a request: writes, the producer, the end.
    """

    def __init__(self) -> None:
        self.written: List[bytes] = []
        self.producer: Any = None
        self._finish: List[Deferred] = []
        self.aborted = False
        self.transport = self
        self.channel: Any = self

    def write(self, data: bytes) -> None:
        self.written.append(data)

    def registerProducer(self, producer: Any, streaming: bool) -> None:
        self.producer = producer

    def unregisterProducer(self) -> None:
        self.producer = None

    def notifyFinish(self) -> Deferred:
        d: Deferred = Deferred()
        self._finish.append(d)
        return d

    def abortConnection(self) -> None:
        self.aborted = True
        self.disconnect()

    def disconnect(self) -> None:
        self.channel = None
        for d in self._finish:
            d.errback(Failure(ConnectionError("gone")))
        self._finish = []

    def messages(self) -> List[SSEMessage]:
        return SSEParser().feed(b"".join(self.written))

    def events(self) -> List[tuple]:
        return [(m.event, json.loads(m.data)) for m in self.messages()]


class HubTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(T0)
        self.store = startedStore({"actions": [ECHO]})
        self.executions = ExecutionService(self.store, self.clock, "https://bwcd.example/")
        self.index = RuleIndex(self.store, self.clock)
        self.successResultOf(ensureDeferred(self.index.reload()))
        self.hub = StreamHub(self.store, self.clock, self.executions, self.index, ringSize=50, epoch="ep")
        self.hub.startService()
        self.addCleanup(self.hub.stopService)

    def open(self, **params: str) -> FakeRequest:
        request = FakeRequest()
        self.hub.connect(request, query(**params), params.get("last"))
        return request

    def create(self, executions: Any = None) -> dict:
        return self.successResultOf(ensureDeferred((executions or self.executions).create("demo.echo", {"message": "hi"}, None, "alice")))

    def other(self) -> ExecutionService:
        """
        Another process's execution service on the same database.
        """
        store = MemoryStore(self.store.database)
        self.successResultOf(store.start())
        return ExecutionService(store, self.clock, "https://bwcd.example/")

    def test_localEvents(self) -> None:
        """
        This process's creates, updates and output reach an open stream at
        once, with st2's names and the API's shapes; the poll does not
        repeat them.
        """
        request = self.open(events="*")
        self.assertEqual(request.written[0], PREAMBLE)
        doc = self.create()
        self.successResultOf(ensureDeferred(self.executions.transition(doc["id"], ["requested"], "running")))
        row = self.successResultOf(self.store.insert("execution_output", {
            "execution_id": doc["id"], "seq": 1, "action_ref": "demo.echo", "runner_ref": "local-shell-cmd",
            "timestamp": self.executions.now(), "output_type": "stdout", "data": "hello\n",
        }))
        self.executions.outputStored(row)
        events = request.events()
        self.assertEqual([name for name, _ in events], ["st2.execution__create", "st2.execution__update", "st2.execution.output__create"])
        self.assertEqual(events[0][1]["status"], "requested")
        self.assertNotIn("_updated_at", events[0][1])
        self.assertEqual(events[1][1]["status"], "running")
        self.assertEqual(events[2][1], {
            "id": row["id"], "execution_id": doc["id"], "action_ref": "demo.echo", "runner_ref": "local-shell-cmd",
            "timestamp": row["timestamp"], "output_type": "stdout", "data": "hello\n",
        })
        self.clock.advance(1)
        self.assertEqual(len(request.events()), 3)

    def test_remoteEvents(self) -> None:
        """
        Another process's executions, output and trigger instances arrive
        by the next poll, each once however many polls see it.
        """
        request = self.open(events="*")
        other = self.other()
        doc = self.create(other)
        self.successResultOf(other._store.insert("triggerinstances", {
            "id": newId(), "trigger": "core.st2.webhook", "payload": {"a": 1}, "occurrence_time": other.now(), "status": "pending",
        }))
        self.assertEqual(request.events(), [])
        self.clock.advance(1)
        self.assertEqual([n for n, _ in request.events()], ["st2.trigger_instance__create", "st2.execution__create"])
        self.successResultOf(ensureDeferred(other.transition(doc["id"], ["requested"], "running")))
        self.successResultOf(other._store.insert("execution_output", {
            "id": newId(), "execution_id": doc["id"], "seq": 1, "action_ref": "demo.echo", "timestamp": other.now(),
            "output_type": "stdout", "data": "x",
        }))
        self.clock.advance(1)
        self.clock.advance(1)
        self.clock.advance(1)
        names = [n for n, _ in request.events()]
        self.assertEqual(names, [
            "st2.trigger_instance__create", "st2.execution__create", "st2.execution__update", "st2.execution.output__create",
        ])
        self.assertEqual(request.events()[2][1]["status"], "running")

    def test_remoteFastExecution(self) -> None:
        """
        A remote execution created and completed between two polls is
        announced as created, then updated with its final state, so an
        C{end_event} stream ends on it.
        """
        request = self.open(events="st2.execution__*")
        other = self.other()
        doc = self.create(other)
        self.successResultOf(ensureDeferred(other.transition(doc["id"], ["requested"], "succeeded")))
        self.clock.advance(1)
        self.assertEqual([(n, d["status"]) for n, d in request.events()], [
            ("st2.execution__create", "succeeded"), ("st2.execution__update", "succeeded"),
        ])

    def test_endEvent(self) -> None:
        """
        A stream with C{end_event} ends after the completing update of its
        execution (which it still sends), and is gone from the hub.
        """
        doc = self.create()
        request = FakeRequest()
        client = self.hub.connect(request, query(events="st2.execution__update", end_event="st2.execution__update", end_execution_id=doc["id"]))
        self.successResultOf(ensureDeferred(self.executions.transition(doc["id"], ["requested"], "running")))
        self.assertNoResult(client.done)
        self.successResultOf(ensureDeferred(self.executions.transition(doc["id"], ["running"], "failed")))
        self.successResultOf(client.done)
        self.assertEqual([d["status"] for _, d in request.events()], ["running", "failed"])
        self.assertIsNone(request.producer)
        self.assertEqual(self.hub.clients, set())

    def test_heartbeat(self) -> None:
        """
        Every 15 s each open stream gets a keep-alive comment.
        """
        request = self.open()
        self.clock.advance(14)
        self.assertNotIn(HEARTBEAT, request.written)
        self.clock.advance(1)
        self.assertEqual(request.written.count(HEARTBEAT), 1)
        self.clock.advance(15)
        self.assertEqual(request.written.count(HEARTBEAT), 2)

    def test_resume(self) -> None:
        """
        A client reconnecting with the last id it saw gets what it missed,
        then the new events; an unknown id gets only new events.
        """
        first = self.open()
        self.create()
        last = first.messages()[-1].id
        first.disconnect()
        self.assertEqual(self.hub.clients, set())
        missed = self.create()
        resumed = self.open(last=last)
        self.assertEqual([d["id"] for _, d in resumed.events()], [missed["id"]])
        stranger = self.open(last="someone-else-4")
        self.assertEqual(stranger.events(), [])
        new = self.create()
        self.assertEqual([d["id"] for _, d in resumed.events()], [missed["id"], new["id"]])

    def test_idle(self) -> None:
        """
        With nobody watching for longer than the grace period nothing is
        kept nor polled; a new stream starts from now.
        """
        request = self.open()
        request.disconnect()
        self.clock.advance(61)
        before = len(self.hub.ring)
        self.create()
        self.assertEqual(len(self.hub.ring), before)
        self.clock.advance(1)
        request = self.open()
        doc = self.create()
        self.clock.advance(1)
        self.assertEqual([d["id"] for _, d in request.events()], [doc["id"]])

    def test_slowConsumer(self) -> None:
        """
        A client whose transport asked to pause is disconnected once more
        than the bound waits for it; one that resumes in time keeps going.
        """
        request = FakeRequest()
        client = self.hub.connect(request, query(events="*"))
        self.hub.connect(FakeRequest(), query())
        self.create()
        size = len(request.written[-1])
        client.maxPending = size + size // 2
        request.producer.pauseProducing()
        self.create()
        request.producer.resumeProducing()
        request.producer.pauseProducing()
        self.assertFalse(request.aborted)
        self.create()
        self.assertFalse(request.aborted)
        self.create()
        self.assertTrue(request.aborted)
        self.assertTrue(client.dropped)
        self.assertNotIn(client, self.hub.clients)
        self.assertEqual(len(self.hub.clients), 1)

    def test_ruleEvents(self) -> None:
        """
        Rules added, changed and removed (here as the index sees them
        after a reload) are published at the next poll.
        """
        request = self.open(events="st2.rule__*")
        rule = {"id": newId(), "ref": "demo.r", "name": "r", "pack": "demo", "enabled": True,
                "trigger": {"type": "core.st2.webhook", "ref": "core.x", "parameters": {}}, "criteria": {},
                "action": {"ref": "demo.echo", "parameters": {}}, "_internal": 1}
        self.successResultOf(self.store.insert("rules", rule))
        self.successResultOf(ensureDeferred(self.index.reload()))
        self.clock.advance(1)
        self.successResultOf(self.store.replace("rules", dict(rule, enabled=False)))
        self.successResultOf(ensureDeferred(self.index.reload()))
        self.clock.advance(1)
        self.clock.advance(1)
        self.successResultOf(self.store.deleteOne("rules", rule["id"]))
        self.successResultOf(ensureDeferred(self.index.reload()))
        self.clock.advance(1)
        events = request.events()
        self.assertEqual([n for n, _ in events], ["st2.rule__create", "st2.rule__update", "st2.rule__delete"])
        self.assertEqual([d["enabled"] for _, d in events], [True, False, False])
        self.assertNotIn("_internal", events[0][1])

    def test_stopEndsStreams(self) -> None:
        """
        Stopping the hub ends every open stream.
        """
        request = FakeRequest()
        client = self.hub.connect(request, query())
        self.hub.stopService()
        self.successResultOf(client.done)
        self.hub.startService()


class ExecutionChangeTests(SynchronousTestCase):
    """
    What the stream relies on in L{ExecutionService}: every write stamps
    C{_updated_at} and is told to the change listeners.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(T0)
        self.store = startedStore({"actions": [ECHO]})
        self.executions = ExecutionService(self.store, self.clock, "https://bwcd.example/")
        self.changes: List[tuple] = []
        self.executions.addChangeListener(
            lambda change, doc: change != "output" and self.changes.append((change, doc["status"], doc["_updated_at"]))
        )

    def stamp(self, execId: str) -> str:
        return self.successResultOf(self.store.get("executions", execId))["_updated_at"]

    def test_everyWriteStamped(self) -> None:
        """
        Create, transitions, a delayed release and an orphan's requeue each
        set C{_updated_at} to the time of the write and notify.
        """
        doc = self.successResultOf(ensureDeferred(self.executions.create("demo.echo", {"message": "x"}, None, "u", delay=1000)))
        t0 = self.executions.now()
        self.assertEqual(self.stamp(doc["id"]), t0)
        self.clock.advance(2)
        self.successResultOf(ensureDeferred(self.executions.releaseDelayed()))
        t1 = self.executions.now()
        self.clock.advance(1)
        claimed = self.successResultOf(self.store.update("executions", {"id": doc["id"]}, set={"status": "scheduled", "node": "n1"}))
        self.successResultOf(ensureDeferred(self.executions.settleOrphan(claimed, "gone")))
        t2 = self.executions.now()
        self.clock.advance(1)
        self.successResultOf(ensureDeferred(self.executions.transition(doc["id"], ["requested"], "running")))
        t3 = self.executions.now()
        self.assertEqual(self.stamp(doc["id"]), t3)
        self.assertEqual(self.changes, [
            ("create", "delayed", t0), ("update", "requested", t1), ("update", "requested", t2), ("update", "running", t3),
        ])

    def test_refusedTransitionSilent(self) -> None:
        """
        A transition that does not apply writes nothing and tells nobody.
        """
        doc = self.successResultOf(ensureDeferred(self.executions.create("demo.echo", {"message": "x"}, None, "u")))
        del self.changes[:]
        self.assertIsNone(self.successResultOf(ensureDeferred(self.executions.transition(doc["id"], ["running"], "succeeded"))))
        self.assertEqual(self.changes, [])

    def test_outputStored(self) -> None:
        """
        outputStored passes the row on to the listeners and returns it.
        """
        seen: List[tuple] = []
        self.executions.addChangeListener(lambda change, doc: seen.append((change, doc)))
        row = {"id": "r1", "execution_id": "e1", "data": "x"}
        self.assertIs(self.executions.outputStored(row), row)
        self.assertEqual(seen, [("output", row)])
