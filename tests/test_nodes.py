"""
Unit tests for L{bwcd.execution.nodes}: heartbeats, the settling of dead
nodes' executions and the take-over of their trigger instances
(L{bwcd.rules.recovery}), on the in-memory store with a fake clock.
"""

from __future__ import annotations

from typing import Any, Dict, List

from twisted.internet.defer import ensureDeferred, fail
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from bwcd.execution.nodes import PREFIX, NodeWatch
from bwcd.testing import MemoryDatabase
from bwcd.timeutil import isoformat, utcnow
from tests.test_acceptance import World
from bwcd.store.interface import StoreUnavailable
from tests import test_executor
from tests.test_executor import NODE, executionWorld

TIMEOUT = 6.0


class NodeWatchTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock, self.store, self.executions = executionWorld(self)
        # the store's own clock (update's currentDate), here the fake one
        self.store.database.clock = self.clock
        self.queued: List[None] = []
        self.executions.addQueueListener(lambda: self.queued.append(None))
        self.watch = NodeWatch(self.store, self.executions, self.clock, TIMEOUT, nodeId=lambda: "me")

    def start(self) -> None:
        self.watch.startService()
        self.addCleanup(lambda: self.watch.running and self.watch.stopService())

    def claimedBy(self, node: str, status: str) -> Dict[str, Any]:
        doc = self.successResultOf(ensureDeferred(self.executions.create("core.local", {"cmd": "true"}, {}, "tester")))
        return self.successResultOf(self.store.update("executions", {"id": doc["id"]}, set={"status": status, "node": node}))

    def beat(self, node: str, secondsAgo: float) -> None:
        value = {"seen": isoformat(utcnow(_At(self.clock.seconds() - secondsAgo)))}
        self.successResultOf(self.store.insert("kv", {"name": PREFIX + node, "value": value}))

    def status(self, doc: Dict[str, Any]) -> Dict[str, Any]:
        return self.successResultOf(self.store.get("executions", doc["id"]))

    def test_heartbeatWrittenSixTimesPerTimeout(self) -> None:
        """
        Starting writes this node's heartbeat at once, and it is refreshed
        every sixth of the timeout.
        """
        self.start()
        beat = self.successResultOf(self.store.findOne("kv", {"name": PREFIX + "me"}))
        self.assertEqual(beat["value"]["seen"], isoformat(utcnow(self.clock)))
        self.clock.advance(TIMEOUT / 6)
        beat = self.successResultOf(self.store.findOne("kv", {"name": PREFIX + "me"}))
        self.assertEqual(beat["value"]["seen"], isoformat(utcnow(self.clock)))
        self.assertEqual(self.successResultOf(self.store.count("kv", {"name": PREFIX + "me"})), 1)

    def test_deadNodesWorkIsSettled(self) -> None:
        """
        A node whose heartbeat is older than the timeout is dead: its
        running executions end abandoned, its claimed ones go back to the
        queue (and the executor is told).
        """
        self.beat("gone", secondsAgo=TIMEOUT + 1)
        running = self.claimedBy("gone", "running")
        claimed = self.claimedBy("gone", "scheduled")
        self.queued.clear()
        self.start()
        self.clock.advance(TIMEOUT / 6)
        abandoned = self.status(running)
        self.assertEqual(abandoned["status"], "abandoned")
        self.assertEqual(abandoned["result"]["error"], "bwcd node gone stopped answering while the action ran")
        requeued = self.status(claimed)
        self.assertEqual((requeued["status"], requeued["node"]), ("requested", None))
        self.assertEqual(len(self.queued), 1)

    def test_liveNodesWorkIsLeftAlone(self) -> None:
        """
        Executions of a node whose heartbeat is fresh, and this node's own,
        are not touched.
        """
        self.beat("alive", secondsAgo=1)
        theirs = self.claimedBy("alive", "running")
        mine = self.claimedBy("me", "running")
        self.start()
        self.clock.advance(TIMEOUT / 6)
        self.assertEqual(self.status(theirs)["status"], "running")
        self.assertEqual(self.status(mine)["status"], "running")

    def test_nodeWithoutHeartbeatIsDead(self) -> None:
        """
        A node that never wrote a heartbeat is dead.
        """
        running = self.claimedBy("never", "running")
        self.assertEqual(self.successResultOf(ensureDeferred(self.watch.reap())), 1)
        self.assertEqual(self.status(running)["status"], "abandoned")

    def test_stopLeavesNoTimer(self) -> None:
        """
        Stopping the service stops its loop.
        """
        self.start()
        self.watch.stopService()
        self.assertEqual(self.clock.getDelayedCalls(), [])


class _At:
    """
    A clock stopped at C{seconds}, to date a heartbeat in the past.
    """

    def __init__(self, seconds: float) -> None:
        self._seconds = seconds

    def seconds(self) -> float:
        return self._seconds


class TakeOverTests(SynchronousTestCase):
    """
    Two or three nodes (engine and node watch each) on one in-memory
    database and one clock: the trigger instances a dead node accepted are
    taken over by a live one within the timeout, and run once.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(1_800_000_000)
        self.database = MemoryDatabase()
        self.database.clock = self.clock
        self.a = self.node("a", rule=True)
        self.b = self.node("b")

    def node(self, name: str, rule: bool = False) -> Any:
        world = World(self, self.clock, self.database, node=name, rule=rule)
        world.watch = NodeWatch(world.store, world.executions, self.clock, TIMEOUT, nodeId=lambda: name)
        world.watch.addDeadNodeListener(world.engine.takeOver)
        world.watch.startService()
        self.addCleanup(lambda: world.watch.running and world.watch.stopService())
        if not rule:
            self.successResultOf(ensureDeferred(world.index.reload()))
            world.rule = self.a.rule
        return world

    def acceptAndDie(self, count: int) -> List[str]:
        """
        Node a accepts C{count} instances, then dies before processing any:
        no more heartbeats, its queue dropped.
        """
        instances = [self.a.instance() for _ in range(count)]
        self.successResultOf(ensureDeferred(self.a.engine.accept(instances)))
        self.a.watch.stopService()
        self.successResultOf(ensureDeferred(self.a.engine.stop()))
        self.assertEqual({i["status"] for i in self.a.stored("triggerinstances")}, {"pending"})
        return [i["id"] for i in instances]

    def advance(self, seconds: float, step: float = 0.1) -> None:
        end = self.clock.seconds() + seconds
        while self.clock.seconds() < end - 1e-9:
            self.clock.advance(min(step, end - self.clock.seconds()))

    def executionsPerInstance(self) -> Dict[str, int]:
        counts: Dict[str, int] = {}
        for execution in self.database.collections["executions"].values():
            instanceId = execution["context"]["trigger_instance"]["id"]
            counts[instanceId] = counts.get(instanceId, 0) + 1
        return counts

    def test_deadNodesInstancesTakenOverWithinTimeout(self) -> None:
        """
        Node a accepts instances and dies; node b takes them over within
        the timeout of a's last heartbeat, and each runs once, now b's.
        """
        lastBeat = self.clock.seconds()
        ids = self.acceptAndDie(3)
        self.advance(TIMEOUT - 0.5)
        self.assertEqual(self.executionsPerInstance(), {})
        self.advance(0.5)
        self.assertEqual(self.clock.seconds() - lastBeat, TIMEOUT)
        self.assertEqual(self.executionsPerInstance(), {i: 1 for i in ids})
        for instanceId in ids:
            doc = self.database.collections["triggerinstances"][instanceId]
            self.assertEqual((doc["status"], doc["node"]), ("processed", "b"))
        self.advance(3 * TIMEOUT)
        self.assertEqual(self.executionsPerInstance(), {i: 1 for i in ids})
        self.assertEqual(len(self.database.collections["ruleenforcements"]), 3)

    def test_twoLiveNodesTakeEachOnce(self) -> None:
        """
        With two live nodes checking at the same moments, each instance of
        the dead node is claimed by one of them and runs once.
        """
        self.node("c")
        ids = self.acceptAndDie(4)
        self.advance(TIMEOUT + 1)
        self.assertEqual(self.executionsPerInstance(), {i: 1 for i in ids})
        owners = {self.database.collections["triggerinstances"][i]["node"] for i in ids}
        self.assertLessEqual(owners, {"b", "c"})

    def test_concurrentClaimsOneWinner(self) -> None:
        """
        Two nodes taking over at once, with their reads done before either
        claims: the conditional claim gives each instance to one of them.
        """
        c = self.node("c")
        ids = self.acceptAndDie(2)
        self.b.raw.hold()
        c.raw.hold()
        db = ensureDeferred(self.b.engine.takeOver(["a"]))
        dc = ensureDeferred(c.engine.takeOver(["a"]))
        while self.b.raw.held or c.raw.held:
            self.b.raw.step()
            c.raw.step()
            self.clock.advance(0)
        self.b.raw.release()
        c.raw.release()
        self.clock.advance(0)
        self.assertEqual(self.successResultOf(db) + self.successResultOf(dc), 2)
        self.assertEqual(self.executionsPerInstance(), {i: 1 for i in ids})

    def test_pausedNodeFindsItsInstanceGone(self) -> None:
        """
        A node taken for dead that resumes (its store calls were held, as
        if paused) cannot claim the instance another node took over: one
        execution.
        """
        [instance] = [self.a.instance()]
        self.successResultOf(ensureDeferred(self.a.engine.accept([instance])))
        self.a.watch.stopService()
        self.a.raw.hold()
        self.advance(TIMEOUT + 1)
        self.assertEqual(self.database.collections["triggerinstances"][instance["id"]]["node"], "b")
        self.a.raw.release()
        self.advance(1)
        self.assertEqual(self.executionsPerInstance(), {instance["id"]: 1})
        self.assertEqual(self.a.engine.load, 0)

    def test_liveNodesInstancesLeftAlone(self) -> None:
        """
        While a node beats, its pending instances are not taken over, and
        a restarting node recovers only its own (and those of no node).
        """
        instances = [self.a.instance() for _ in range(2)]
        self.successResultOf(ensureDeferred(self.a.engine.accept(instances)))
        self.successResultOf(ensureDeferred(self.a.engine.stop()))
        loose = dict(self.a.instance(), id="f" * 24)
        del loose["node"]
        self.successResultOf(self.a.raw.insert("triggerinstances", loose))
        self.advance(3 * TIMEOUT)
        self.assertEqual(self.executionsPerInstance(), {})
        self.successResultOf(ensureDeferred(self.b.engine.stop()))
        recovery = self.b.engine.start(recover=True)
        self.clock.advance(0)
        self.assertEqual(self.successResultOf(recovery), 1)
        self.assertEqual(self.executionsPerInstance(), {loose["id"]: 1})
        self.assertEqual({self.database.collections["triggerinstances"][i["id"]]["status"] for i in instances}, {"pending"})

    def test_stopLeavesNoExpiryCheck(self) -> None:
        """
        The check scheduled for when a live node would go stale is
        cancelled when the watch stops.
        """
        self.advance(TIMEOUT / 3)
        self.a.watch.stopService()
        self.b.watch.stopService()
        self.successResultOf(ensureDeferred(self.a.engine.stop()))
        self.successResultOf(ensureDeferred(self.b.engine.stop()))
        self.assertEqual(self.clock.getDelayedCalls(), [])


class HealthTests(SynchronousTestCase):
    """
    A node whose heartbeat fails or lags claims nothing new until a beat
    is written again; liveness is judged by the store's clock only.
    """

    setUp = test_executor.ExecutorTests.setUp
    resolveScript = test_executor.ExecutorTests.resolveScript
    executor = test_executor.ExecutorTests.executor
    request = test_executor.ExecutorTests.request
    stored = test_executor.ExecutorTests.stored

    def watched(self) -> Any:
        self.store.database.clock = self.clock
        watch = NodeWatch(self.store, self.executions, self.clock, TIMEOUT, nodeId=lambda: NODE)
        executor = self.executor()
        watch.gateClaims(executor)
        return watch, executor

    def test_noClaimsBeforeFirstBeatThenAtOnce(self) -> None:
        """
        Until this node has written a heartbeat it claims nothing; the
        first beat wakes the executor, which claims at once.
        """
        watch, executor = self.watched()
        doc = self.request("echo hi")
        self.clock.advance(0)
        self.assertEqual((self.runner.started, self.stored(doc["id"])["status"]), ([], "requested"))
        watch.startService()
        self.addCleanup(lambda: watch.running and watch.stopService())
        self.clock.advance(0)
        self.assertEqual(len(self.runner.started), 1)
        self.assertEqual(self.stored(doc["id"])["status"], "running")

    def test_failedBeatsStopClaimsAndKillNothing(self) -> None:
        """
        While heartbeats fail (the store refuses their writes) for half the
        timeout, new requests are not claimed and the running child is not
        killed; once a beat is written, claiming resumes.
        """
        watch, executor = self.watched()
        watch.startService()
        self.addCleanup(lambda: watch.running and watch.stopService())
        first = self.request("echo one")
        self.clock.advance(0)
        self.assertEqual(len(self.runner.started), 1)
        realUpdate = self.store.update
        failing = [True]

        def update(collection, *args, **kwargs):
            if collection == "kv" and failing[0]:
                return fail(StoreUnavailable("heartbeat write refused"))
            return realUpdate(collection, *args, **kwargs)

        self.store.update = update  # type: ignore[method-assign]
        self.clock.pump([TIMEOUT / 6] * 3)
        self.assertFalse(watch.healthy())
        second = self.request("echo two")
        self.clock.pump([0.5] * 4)
        self.assertEqual(self.stored(second["id"])["status"], "requested")
        self.assertEqual(len(self.runner.started), 1)
        self.assertEqual(self.stored(first["id"])["status"], "running")
        self.assertIsNone(self.runner.started[0].killedWith)
        self.assertTrue(self.flushLoggedErrors(StoreUnavailable))
        failing[0] = False
        self.clock.advance(TIMEOUT / 6)
        self.assertTrue(watch.healthy())
        self.assertEqual(len(self.runner.started), 2)
        self.assertEqual(self.stored(second["id"])["status"], "running")

    def test_livenessByStoreClockNotHostClock(self) -> None:
        """
        A node whose host clock is an hour ahead of the store's still sees
        a node that beat a second ago (by the store's clock) as alive, and
        one that beat longer than the timeout ago as dead.
        """
        self.store.database.clock = self.clock
        ahead = Clock()
        ahead.advance(self.clock.seconds() + 3600)
        watch = NodeWatch(self.store, self.executions, ahead, TIMEOUT, nodeId=lambda: "me")
        alive = NodeWatch(self.store, self.executions, Clock(), TIMEOUT, nodeId=lambda: "alive")
        self.successResultOf(ensureDeferred(alive.heartbeat()))
        self.successResultOf(ensureDeferred(NodeWatch(self.store, self.executions, Clock(), TIMEOUT, nodeId=lambda: "gone").heartbeat()))
        theirs = self.successResultOf(self.store.update("executions", {"id": self.request()["id"]}, set={"status": "running", "node": "alive"}))
        self.clock.advance(TIMEOUT - 1)
        self.successResultOf(ensureDeferred(alive.heartbeat()))
        self.clock.advance(1.5)
        dead, soonest = self.successResultOf(ensureDeferred(watch.nodes()))
        self.assertEqual((dead, soonest), (["gone"], TIMEOUT - 1.5))
        self.assertEqual(self.successResultOf(ensureDeferred(watch.reap())), 0)
        self.assertEqual(self.stored(theirs["id"])["status"], "running")
