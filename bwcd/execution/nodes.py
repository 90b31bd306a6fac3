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

Heartbeats carry the store's time (L{IStore.update}'s C{currentDate}), and
a node's age is its beat compared with this node's beat just written, so
no two hosts' clocks are ever compared.  A node whose own beat failed or
lagged (paused, cut off from the store) may already be taken for dead by
the others: it claims nothing new (L{NodeWatch.healthy}, asked by the
executor) until a beat is written again, and kills nothing for it.
"""

from __future__ import annotations

from datetime import datetime, timezone
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
        #: when (this host's clock) the last beat that was written was sent
        self._lastBeat: Optional[float] = None
        self._healthListeners: List[Callable[[], Any]] = []

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

    def healthy(self) -> bool:
        """
        Whether this node's heartbeat is fresh enough that no other node
        can take it for dead: the last beat written was sent less than half
        the timeout ago (by this host's clock, compared only with itself).
        """
        return self._lastBeat is not None and self._clock.seconds() - self._lastBeat < self.timeout / 2

    def addHealthListener(self, fn: Callable[[], Any]) -> None:
        """
        Call C{fn()} when a beat is written after this node was not
        L{healthy} (or had not beaten yet): claiming may resume.
        """
        self._healthListeners.append(fn)

    def gateClaims(self, executor: Any) -> None:
        """
        Make C{executor} claim only while this node is L{healthy}, and wake
        it when it is again.
        """
        executor.claimGate = self.healthy
        self.addHealthListener(executor.wake)

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
            d.addCallback(lambda now: ensureDeferred(self.reap(now)).addCallback(lambda _: now))
        d.addErrback(lambda f: log.failure("Node heartbeat or reaping failed", f))
        if self._ticks % 2 == 0:
            d.addCallback(lambda now: ensureDeferred(self.takeOver(now)) if isinstance(now, datetime) else None)
            d.addErrback(lambda f: log.failure("Taking over dead nodes' trigger instances failed", f))

    def _cancelExpiryCheck(self) -> None:
        if self._expiryCall is not None and self._expiryCall.active():
            self._expiryCall.cancel()
        self._expiryCall = None

    def _expiryCheck(self) -> None:
        self._expiryCall = None
        ensureDeferred(self.takeOver()).addErrback(lambda f: log.failure("Taking over dead nodes' trigger instances failed", f))

    async def nodes(self, now: Optional[datetime] = None) -> Tuple[List[str], Optional[float]]:
        """
        The nodes (other than this one) whose heartbeat is stale, and in how
        many seconds the first of the others goes stale if it does not beat
        again (None: there are no others).

        @param now: the store's time of this node's latest beat; by default
            a beat is written to read it.
        """
        if now is None:
            now = await self.heartbeat()
        beats = await self._store.find("kv", {"name": {"$gte": PREFIX, "$lt": _PREFIX_END}})
        dead: List[str] = []
        soonest: Optional[float] = None
        for beat in beats:
            node = beat["name"][len(PREFIX):]
            seen = _seen(beat)
            if node == self.nodeId or seen is None:
                continue
            left = self.timeout - (now - seen).total_seconds()
            if left <= 0:
                dead.append(node)
            elif soonest is None or left < soonest:
                soonest = left
        return dead, soonest

    async def takeOver(self, now: Optional[datetime] = None) -> int:
        """
        Hand the dead nodes to the listeners, and check again the moment the
        next live one would go stale.

        @return: the sum of what the listeners returned (how many instances
            they took over).
        """
        dead, soonest = await self.nodes(now)
        if soonest is not None and self.running:
            if self._expiryCall is None or self._expiryCall.getTime() > self._clock.seconds() + soonest:
                self._cancelExpiryCheck()
                self._expiryCall = self._clock.callLater(soonest, self._expiryCheck)
        total = 0
        if dead:
            for fn in self._listeners:
                total += (await fn(dead)) or 0
        return total

    async def heartbeat(self) -> datetime:
        """
        Write this node's beat, dated by the store; fire with that date.
        """
        name = PREFIX + self.nodeId
        sent = self._clock.seconds()
        wasHealthy = self.healthy()
        try:
            beat = await self._store.update("kv", {"name": name}, set={"value.node": self.nodeId}, currentDate=["value.seen"])
            if beat is None:
                try:
                    await self._store.insert("kv", {"name": name, "value": {"node": self.nodeId, "seen": isoformat(utcnow(self._clock))}})
                except DuplicateKey:
                    pass  # another heartbeat of ours got there first
                beat = await self._store.update("kv", {"name": name}, set={"value.node": self.nodeId}, currentDate=["value.seen"])
        except Exception:
            if wasHealthy and not self.healthy():
                log.warn("Node {node}: heartbeat not written; claiming nothing new until it is", node=self.nodeId)
            raise
        seen = _seen(beat)
        if seen is None:
            raise RuntimeError(f"the heartbeat of node {self.nodeId} was not stored")
        self._lastBeat = max(sent, self._lastBeat or sent)
        if not wasHealthy and self.healthy():
            if self._ticks > 1:
                log.info("Node {node}: heartbeat written again; claiming resumes", node=self.nodeId)
            for fn in self._healthListeners:
                fn()
        return seen

    async def reap(self, now: Optional[datetime] = None) -> int:
        """
        Settle the executions of nodes that stopped answering; return how
        many were changed.

        @param now: as for L{nodes}.
        """
        if now is None:
            now = await self.heartbeat()
        claimed = await self._store.find("executions", {"status": {"$in": ["running", "scheduled"]}, "node": {"$ne": self.nodeId}}, limit=1000)
        alive: Dict[str, bool] = {}
        changed = 0
        for doc in claimed:
            node = doc.get("node")
            if not node:
                continue
            if node not in alive:
                seen = _seen(await self._store.findOne("kv", {"name": PREFIX + node}))
                alive[node] = seen is not None and (now - seen).total_seconds() < self.timeout
            if alive[node]:
                continue
            done = await self._executions.settleOrphan(doc, f"bwcd node {node} stopped answering while the action ran")
            if done is not None:
                changed += 1
                log.warn("Execution {execution_id} of dead node {node}: {status}", execution_id=doc["id"], node=node, status=done["status"])
        return changed


def _seen(beat: Optional[dict]) -> Optional[datetime]:
    """
    The store's date of a heartbeat document (a string, or a MongoDB date
    read back), or None.
    """
    seen = ((beat or {}).get("value") or {}).get("seen")
    if isinstance(seen, datetime):
        return seen if seen.tzinfo is not None else seen.replace(tzinfo=timezone.utc)
    try:
        return parseIso(seen)
    except ValueError:
        return None
