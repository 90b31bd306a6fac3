# -*- test-case-name: tests.test_retention -*-
"""
Retention: deleting old trigger instances, rule enforcements, executions and
their output, so that a busy hook does not fill the disk.

The model is st2's garbage collector (C{[garbagecollector]
action_executions_ttl}, C{action_executions_output_ttl},
C{trigger_instances_ttl}, in days, each disabled unless set): nothing is
deleted unless the operator configured a TTL.  What is never deleted, at any
age:

  - an execution that has not completed (C{requested}, C{scheduled},
    C{running}, ...), nor the output rows of one: its record is still being
    written, and for a running one a process still exists;
  - a trigger instance still C{pending} or C{processing}: it was accepted
    (a 202) and has not been processed yet, so deleting it would lose the
    event.

Executions are aged by C{end_timestamp} (a long-running one is kept for its
TTL after it ended), output rows, instances and enforcements by the time
they were written.  Deleting an execution deletes its output rows first, so
that an interruption never leaves output without its execution.

Work is done in bounded batches: find at most C{batchSize} ids older than
the cutoff (an indexed range query), delete them by id, then give the
reactor back for C{pause} seconds.  No batch is a long transaction, so
webhooks keep being stored between (and, on MongoDB, during) batches.

Processes sharing one store purge one at a time: a purge first claims a
lease, a C{kv} document C{retention.lease} holding the holder's id and an
expiry, with one conditional update (free or expired -> mine), and renews it
before every batch; a process that finds the lease held skips its run.  The
expiry is written from this host's clock, so hosts whose clocks disagree by
more than L{LEASE_SECONDS} could purge at once; that costs repeated work,
never data, because every deletion is of documents already past their TTL.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence

import attrs
from twisted.application.service import Service
from twisted.internet.defer import Deferred, ensureDeferred, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall, deferLater
from twisted.logger import Logger

from bwcd.execution.service import COMPLETED
from bwcd.rules.enforcement import PROCESSED, PROCESSING_FAILED
from bwcd.store.interface import DuplicateKey, IStore, StoreError, newId
from bwcd.timeutil import isoformat, utcnow

log = Logger(namespace="bwcd.retention")

#: the kv document that says which process is purging
LEASE_NAME = "retention.lease"
#: how long a claim lasts without renewal (it is renewed before every batch)
LEASE_SECONDS = 300.0

#: the kinds of documents retention knows, by their config key
EXECUTIONS = "executions"
EXECUTION_OUTPUT = "execution_output"
TRIGGER_INSTANCES = "trigger_instances"
RULE_ENFORCEMENTS = "rule_enforcements"
KINDS = (EXECUTIONS, EXECUTION_OUTPUT, TRIGGER_INSTANCES, RULE_ENFORCEMENTS)

_DONE_INSTANCES = sorted({PROCESSED, PROCESSING_FAILED})
_COMPLETED = sorted(COMPLETED)


@attrs.frozen
class Target:
    """
    One collection's purge: which documents are old enough and deletable.

    @ivar skipUnfinished: rows whose execution has not completed are kept
        (and stepped over, so that each run still ends).
    """

    collection: str
    field: str
    extra: Mapping[str, Any] = attrs.field(factory=dict)
    skipUnfinished: bool = False

    def filter(self, cutoff: str) -> Dict[str, Any]:
        return {self.field: {"$lt": cutoff}, **self.extra}


TARGETS: Mapping[str, Target] = {
    EXECUTIONS: Target("executions", "end_timestamp", {"status": {"$in": _COMPLETED}}),
    EXECUTION_OUTPUT: Target("execution_output", "timestamp", skipUnfinished=True),
    TRIGGER_INSTANCES: Target("triggerinstances", "occurrence_time", {"status": {"$in": _DONE_INSTANCES}}),
    RULE_ENFORCEMENTS: Target("ruleenforcements", "enforced_at"),
}


class Stopped(Exception):
    """
    The purge stopped early: the service is stopping, or the lease was lost.
    """


def cutoffs(ttls: Mapping[str, int], now: datetime) -> Dict[str, str]:
    """
    The cutoff timestamp of each kind whose TTL (days) is set; a TTL of 0
    (the default) means keep forever and gives no cutoff.
    """
    return {kind: isoformat(now - timedelta(days=days)) for kind, days in ttls.items() if days > 0}


class Purger:
    """
    Deletes documents older than given cutoffs, in batches, under the lease.

    @param store: the store.
    @param clock: time for the lease and the pause between batches.
    @param batchSize: most documents found and deleted per store call.
    @param pause: seconds to give the reactor between batches.
    @ivar deleted: per kind, how many documents the last run deleted (output
        rows deleted with their executions count under C{execution_output}).
    """

    def __init__(self, store: IStore, clock: IReactorTime, batchSize: int = 100, pause: float = 0.1) -> None:
        self._store = store
        self._clock = clock
        self.batchSize = batchSize
        self.pause = pause
        self.holder = newId()
        self.deleted: Dict[str, int] = {}
        self._stopping = False

    def stop(self) -> None:
        """
        Ask a running purge to end after its current batch.
        """
        self._stopping = True

    # -- the lease --------------------------------------------------------

    def _leaseValue(self) -> dict:
        return {"holder": self.holder, "until": isoformat(utcnow(self._clock) + timedelta(seconds=LEASE_SECONDS))}

    async def claim(self) -> bool:
        """
        Take the lease if it is free, expired or already ours; whether we
        hold it now.
        """
        now = isoformat(utcnow(self._clock))
        for condition in ({"value.holder": self.holder}, {"value.until": {"$lt": now}}):
            if await self._store.update("kv", {"name": LEASE_NAME, **condition}, set={"value": self._leaseValue()}) is not None:
                return True
        try:
            await self._store.insert("kv", {"id": newId(), "name": LEASE_NAME, "value": self._leaseValue()})
        except DuplicateKey:
            return False
        return True

    async def _renew(self) -> None:
        if self._stopping:
            raise Stopped("stopping")
        renewed = await self._store.update("kv", {"name": LEASE_NAME, "value.holder": self.holder}, set={"value": self._leaseValue()})
        if renewed is None:
            raise Stopped("the retention lease was taken over")

    async def release(self) -> None:
        """
        Give the lease up (expire it now) if we hold it.
        """
        await self._store.update("kv", {"name": LEASE_NAME, "value.holder": self.holder}, set={"value": {"holder": "", "until": ""}})

    # -- purging -----------------------------------------------------------

    async def run(self, cuts: Mapping[str, str]) -> Optional[Dict[str, int]]:
        """
        Purge each kind in C{cuts} (kind -> cutoff timestamp) under the
        lease; fire with the counts deleted, or C{None} when another process
        holds the lease.  A stop or a lost lease ends the run early with the
        counts so far.
        """
        self.deleted = {kind: 0 for kind in cuts}
        if EXECUTIONS in cuts:
            self.deleted.setdefault(EXECUTION_OUTPUT, 0)
        if not cuts:
            return self.deleted
        if not await self.claim():
            return None
        try:
            # output before executions, instances before enforcements: an
            # interruption leaves nothing pointing at a deleted document
            for kind in (EXECUTION_OUTPUT, EXECUTIONS, TRIGGER_INSTANCES, RULE_ENFORCEMENTS):
                if kind in cuts:
                    await self._purge(kind, cuts[kind])
        except Stopped as e:
            log.info("Retention purge stopped early: {reason}", reason=str(e))
        finally:
            try:
                await self.release()
            except StoreError as e:
                log.warn("Could not release the retention lease: {error}", error=str(e))
        return self.deleted

    async def _purge(self, kind: str, cutoff: str) -> None:
        target = TARGETS[kind]
        skipped = 0
        while True:
            await self._renew()
            docs = await self._store.find(
                target.collection, target.filter(cutoff), sort=[(target.field, 1), ("id", 1)], limit=self.batchSize, offset=skipped
            )
            if not docs:
                return
            if target.skipUnfinished:
                keep = await self._unfinished({d.get("execution_id") for d in docs})
                doomed = [d["id"] for d in docs if d.get("execution_id") not in keep]
                # kept rows stay first in this order (nothing older arrives),
                # so the next batch starts after them
                skipped += len(docs) - len(doomed)
            else:
                doomed = [d["id"] for d in docs]
            if kind == EXECUTIONS:
                await self._purgeOutputOf(doomed)
            if doomed:
                self.deleted[kind] += await self._store.delete(target.collection, {"id": {"$in": doomed}})
            if len(docs) < self.batchSize:
                return
            await self._yield()

    async def _unfinished(self, executionIds: Iterable[Any]) -> set:
        """
        Which of these executions exist and have not completed.
        """
        ids = sorted(i for i in executionIds if isinstance(i, str))
        if not ids:
            return set()
        docs = await self._store.find("executions", {"id": {"$in": ids}})
        return {d["id"] for d in docs if d.get("status") not in COMPLETED}

    async def _purgeOutputOf(self, executionIds: Sequence[str]) -> None:
        """
        Delete the output rows of these (completed) executions, a batch at a
        time: one execution may have written thousands.
        """
        if not executionIds:
            return
        while True:
            rows = await self._store.find("execution_output", {"execution_id": {"$in": list(executionIds)}}, limit=self.batchSize)
            if not rows:
                return
            self.deleted[EXECUTION_OUTPUT] += await self._store.delete("execution_output", {"id": {"$in": [r["id"] for r in rows]}})
            if len(rows) < self.batchSize:
                return
            await self._yield()
            await self._renew()

    async def _yield(self) -> None:
        await deferLater(self._clock, self.pause, lambda: None)


class RetentionService(Service):
    """
    Purges every C{interval} seconds (the first time at start) what is older
    than the configured TTLs; does nothing when none is set.

    @param ttls: days per kind of L{KINDS} (0: keep forever).
    """

    def __init__(
        self,
        store: IStore,
        clock: IReactorTime,
        ttls: Mapping[str, int],
        interval: float = 600.0,
        batchSize: int = 100,
        pause: float = 0.1,
    ) -> None:
        self._clock = clock
        self.ttls = {kind: days for kind, days in ttls.items() if days > 0}
        self.interval = interval
        self.purger = Purger(store, clock, batchSize, pause)
        self._loop: Optional[LoopingCall] = None
        self._current: Optional[Deferred] = None

    def startService(self) -> None:
        super().startService()
        if not self.ttls:
            return
        self.purger._stopping = False
        self._loop = LoopingCall(self.purgeOnce)
        self._loop.clock = self._clock
        self._loop.start(self.interval, now=True).addErrback(lambda f: log.failure("Retention loop failed", f))

    def stopService(self) -> Deferred:  # type: ignore[override]
        super().stopService()
        self.purger.stop()
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        current = self._current
        return current if current is not None else succeed(None)

    def purgeOnce(self) -> Deferred:
        """
        One purge with cutoffs from now; failures are logged, never raised
        (the next interval tries again).
        """
        d = ensureDeferred(self._purge())
        self._current = d
        d.addBoth(self._finished, d)
        return d

    def _finished(self, result: Any, d: Deferred) -> None:
        if self._current is d:
            self._current = None

    async def _purge(self) -> None:
        cuts = cutoffs(self.ttls, utcnow(self._clock))
        log.info("Retention purge started", cutoffs=cuts)
        try:
            counts = await self.purger.run(cuts)
        except StoreError as e:
            log.warn("Retention purge failed (next try in {interval}s): {error}", interval=self.interval, error=str(e))
            return
        except Exception:
            log.failure("Retention purge failed")
            return
        if counts is None:
            log.info("Retention purge skipped: another process holds the lease")
        else:
            log.info("Retention purge done: {deleted}", deleted=" ".join(f"{k}={v}" for k, v in sorted(counts.items())), counts=counts)


__all__ = [
    "EXECUTIONS",
    "EXECUTION_OUTPUT",
    "KINDS",
    "LEASE_NAME",
    "LEASE_SECONDS",
    "Purger",
    "RULE_ENFORCEMENTS",
    "RetentionService",
    "TARGETS",
    "TRIGGER_INSTANCES",
    "cutoffs",
]
