# -*- test-case-name: tests.test_nodes -*-
"""
Which bwcd processes sharing a store are alive, and what happens to the work
of one that died.

A process recovers its own executions when it starts again, but a node that
dies for good (a lost host) never does.  So every node writes a heartbeat,
and every node looks for executions claimed by a node whose heartbeat has
gone stale: running ones end C{abandoned} (their child died with the node),
claimed but unstarted ones go back to the queue.  Both are conditional
updates, so several nodes reaping at once still change each execution once.
"""

from __future__ import annotations

from typing import Callable, Dict, Optional

from twisted.application.service import Service
from twisted.internet.defer import ensureDeferred
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from bwcd.execution.service import ExecutionService
from bwcd.store.interface import DuplicateKey, IStore
from bwcd.timeutil import isoformat, parseIso, utcnow

log = Logger(namespace="bwcd.execution.nodes")

PREFIX = "__bwcd.node."


class NodeWatch(Service):
    """
    Heartbeat for this node, and reaping of dead nodes' executions, while
    the service runs.

    @param nodeId: this node's name (a callable, since it is read from the
        state folder once the daemon starts).
    @param timeout: seconds without a heartbeat after which a node is dead.
        Heartbeats are written six times per timeout, and other nodes are
        checked every second heartbeat.
    """

    def __init__(self, store: IStore, executions: ExecutionService, clock: IReactorTime, timeout: float, nodeId: Callable[[], str]) -> None:
        self._store = store
        self._executions = executions
        self._clock = clock
        self.timeout = timeout
        self._nodeId = nodeId
        self._loop: Optional[LoopingCall] = None
        self._ticks = 0

    @property
    def nodeId(self) -> str:
        return self._nodeId()

    def startService(self) -> None:
        super().startService()
        self._loop = LoopingCall(self._tick)
        self._loop.clock = self._clock
        self._loop.start(self.timeout / 6, now=True).addErrback(lambda f: log.failure("Node watch loop died", f))

    def stopService(self) -> None:
        super().stopService()
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        self._loop = None

    def _tick(self) -> None:
        self._ticks += 1
        d = ensureDeferred(self.heartbeat())
        if self._ticks % 2 == 0:
            d.addCallback(lambda _: ensureDeferred(self.reap()))
        d.addErrback(lambda f: log.failure("Node heartbeat or reaping failed", f))

    async def heartbeat(self) -> None:
        name = PREFIX + self.nodeId
        value = {"seen": isoformat(utcnow(self._clock))}
        if await self._store.update("kv", {"name": name}, set={"value": value}) is None:
            try:
                await self._store.insert("kv", {"name": name, "value": value})
            except DuplicateKey:
                pass  # another heartbeat of ours got there first

    async def reap(self) -> int:
        """
        Settle the executions of nodes that stopped answering; return how
        many were changed.
        """
        claimed = await self._store.find("executions", {"status": {"$in": ["running", "scheduled"]}, "node": {"$ne": self.nodeId}}, limit=1000)
        alive: Dict[str, bool] = {}
        now = utcnow(self._clock)
        changed = 0
        for doc in claimed:
            node = doc.get("node")
            if not node:
                continue
            if node not in alive:
                beat = await self._store.findOne("kv", {"name": PREFIX + node})
                seen = (beat or {}).get("value", {}).get("seen")
                alive[node] = seen is not None and (now - parseIso(seen)).total_seconds() < self.timeout
            if alive[node]:
                continue
            done = await self._executions.settleOrphan(doc, f"bwcd node {node} stopped answering while the action ran")
            if done is not None:
                changed += 1
                log.warn("Execution {execution_id} of dead node {node}: {status}", execution_id=doc["id"], node=node, status=done["status"])
        return changed
