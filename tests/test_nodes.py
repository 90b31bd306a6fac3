"""
Unit tests for L{bwcd.execution.nodes}: heartbeats and the settling of dead
nodes' executions, on the in-memory store with a fake clock.
"""

from __future__ import annotations

from typing import Any, Dict, List

from twisted.internet.defer import ensureDeferred
from twisted.trial.unittest import SynchronousTestCase

from bwcd.execution.nodes import PREFIX, NodeWatch
from bwcd.timeutil import isoformat, utcnow
from tests.test_executor import executionWorld

TIMEOUT = 6.0


class NodeWatchTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock, self.store, self.executions = executionWorld(self)
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
