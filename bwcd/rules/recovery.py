# -*- test-case-name: tests.test_nodes -*-
"""
Processing trigger instances that no running engine holds: an earlier run's
leftovers at start-up (L{Recovery.recover}), and those of a node that died
for good (L{Recovery.takeOver}).  A mixin of L{bwcd.rules.engine.RulesEngine}.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, Optional, Sequence

from twisted.internet.defer import Deferred, DeferredList, gatherResults
from twisted.logger import Logger

from bwcd.rules.acceptance import Discards
from bwcd.rules.enforcement import PENDING, PROCESSING
from bwcd.store.interface import IStore
from bwcd.timeutil import isoformat, utcnow

log = Logger(namespace="bwcd.rules.engine")


class Recovery:
    """
    What L{bwcd.rules.engine.RulesEngine} gives these methods.
    """

    _store: IStore
    _clock: Any
    _nodeId: Optional[Callable[[], str]]
    _running: bool
    _stopping: bool
    discards: Discards
    enqueue: Callable[..., Deferred]

    async def recover(self, pageSize: int = 200) -> int:
        """
        Process instances left C{pending} or C{processing} by an earlier
        run, oldest first, a page at a time (so that a long backlog does not
        fill the queue new webhooks need).  Their criteria are evaluated
        again: what they matched was not kept.  With a node name, only this
        node's instances (and those of no node) are recovered: other nodes'
        are theirs, or L{takeOver}'s once they are dead.

        @return: how many were processed.
        """
        before = isoformat(utcnow(self._clock))
        query: Dict[str, Any] = {"status": {"$in": [PENDING, PROCESSING]}, "occurrence_time": {"$lte": before}}
        if self._nodeId is not None:
            query["node"] = {"$in": [self._nodeId(), None]}
        attempted: set = set()
        total = 0
        while self._running and not self._stopping:
            page = await self._store.find("triggerinstances", query, sort=[("occurrence_time", 1), ("id", 1)], limit=pageSize)
            fresh = [doc for doc in page if doc["id"] not in attempted and doc["id"] not in self.discards]
            if not fresh:
                break
            if total == 0:
                log.info("Recovering trigger instances left unprocessed by an earlier run")
            attempted.update(doc["id"] for doc in fresh)
            waits = [self.enqueue(doc, reserved=False, recovered=True) for doc in fresh]
            results = await DeferredList(waits, consumeErrors=True)
            total += sum(1 for ok, outcome in results if ok and outcome is not None)
        if total:
            log.info("Recovered {count} trigger instances", count=total)
        return total

    async def takeOver(self, deadNodes: Sequence[str], pageSize: int = 200) -> int:
        """
        Take the C{pending} and C{processing} instances of nodes that died
        and process them (criteria evaluated again), a page at a time.  Each
        is claimed with one conditional update of its C{node} from the dead
        node to this one, so when several live nodes try at once, one gets it.

        @return: how many were taken over and processed.
        """
        if self._nodeId is None:
            return 0
        me = self._nodeId()
        dead = sorted(set(deadNodes) - {me})
        attempted: set = set()
        total = 0
        while dead and self._running and not self._stopping:
            page = await self._store.find(
                "triggerinstances",
                {"status": {"$in": [PENDING, PROCESSING]}, "node": {"$in": dead}},
                sort=[("occurrence_time", 1), ("id", 1)],
                limit=pageSize,
            )
            fresh = [doc for doc in page if doc["id"] not in attempted]
            if not fresh:
                break
            attempted.update(doc["id"] for doc in fresh)
            claims = await gatherResults([
                self._store.update(
                    "triggerinstances",
                    {"id": doc["id"], "node": doc["node"], "status": {"$in": [PENDING, PROCESSING]}},
                    set={"node": me},
                )
                for doc in fresh
            ], consumeErrors=True)
            waits = []
            for doc, claimed in zip(fresh, claims):
                if claimed is not None:
                    log.info("Taking over trigger instance {id} of dead node {node}", id=doc["id"], node=doc["node"])
                    waits.append(self.enqueue(claimed, reserved=False, recovered=True))
            results = await DeferredList(waits, consumeErrors=True)
            total += sum(1 for ok, outcome in results if ok and outcome is not None)
        if total:
            log.info("Took over {count} trigger instances of dead nodes {nodes}", count=total, nodes=", ".join(dead))
        return total
