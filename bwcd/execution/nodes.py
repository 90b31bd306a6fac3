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

A dead node's trigger instances that were accepted but not processed yet
are handed to the dead-node listeners (the rules engine's C{takeOver}),
which claim each for this node with a conditional update.  Nodes are found
by their heartbeats, and a check is made the moment the freshest heartbeat
of another node goes stale, so they are taken over within the timeout of
the node's death.
"""

from __future__ import annotations

from typing import Any, Awaitable, Callable, Dict, List, Optional, Tuple

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
#: the first name after every PREFIX name ("/" follows ".")
_PREFIX_END = PREFIX[:-1] + "/"


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
        self._listeners: List[Callable[[List[str]], Awaitable[Any]]] = []
        self._expiryCall: Any = None

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
        self._cancelExpiryCheck()

    def addDeadNodeListener(self, fn: Callable[[List[str]], Awaitable[Any]]) -> None:
        """
        Call C{fn(names)} with the names of the dead nodes (other than this
        one) at every check; it takes over their trigger instances.
        """
        self._listeners.append(fn)

    def _tick(self) -> None:
        self._ticks += 1
        d = ensureDeferred(self.heartbeat())
        if self._ticks % 2 == 0:
            d.addCallback(lambda _: ensureDeferred(self.reap()))
        d.addErrback(lambda f: log.failure("Node heartbeat or reaping failed", f))
        if self._ticks % 2 == 0:
            d.addCallback(lambda _: ensureDeferred(self.takeOver()))
            d.addErrback(lambda f: log.failure("Taking over dead nodes' trigger instances failed", f))

    def _cancelExpiryCheck(self) -> None:
        if self._expiryCall is not None and self._expiryCall.active():
            self._expiryCall.cancel()
        self._expiryCall = None

    def _expiryCheck(self) -> None:
        self._expiryCall = None
        ensureDeferred(self.takeOver()).addErrback(lambda f: log.failure("Taking over dead nodes' trigger instances failed", f))

    async def nodes(self) -> Tuple[List[str], Optional[float]]:
        """
        The nodes (other than this one) whose heartbeat is stale, and in how
        many seconds the first of the others goes stale if it does not beat
        again (None: there are no others).
        """
        beats = await self._store.find("kv", {"name": {"$gte": PREFIX, "$lt": _PREFIX_END}})
        now = utcnow(self._clock)
        dead: List[str] = []
        soonest: Optional[float] = None
        for beat in beats:
            node = beat["name"][len(PREFIX):]
            seen = (beat.get("value") or {}).get("seen")
            if node == self.nodeId or not isinstance(seen, str):
                continue
            left = self.timeout - (now - parseIso(seen)).total_seconds()
            if left <= 0:
                dead.append(node)
            elif soonest is None or left < soonest:
                soonest = left
        return dead, soonest

    async def takeOver(self) -> int:
        """
        Hand the dead nodes to the listeners, and check again the moment the
        next live one would go stale.

        @return: the sum of what the listeners returned (how many instances
            they took over).
        """
        dead, soonest = await self.nodes()
        if soonest is not None and self.running:
            if self._expiryCall is None or self._expiryCall.getTime() > self._clock.seconds() + soonest:
                self._cancelExpiryCheck()
                self._expiryCall = self._clock.callLater(soonest, self._expiryCheck)
        total = 0
        if dead:
            for fn in self._listeners:
                total += (await fn(dead)) or 0
        return total

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
