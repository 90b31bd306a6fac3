# -*- test-case-name: tests.test_execution_service -*-
"""
The bound on executions waiting for a runner slot (C{runner.max_queued}).

Beyond it, new requests and webhooks get 503 with Retry-After instead of
growing a queue nobody will reach.  The count of waiting executions comes
from the store (other processes share it), corrected between counts by what
this process queued and claimed, so the check costs no store read.
"""

from __future__ import annotations

from bwcd.errors import Unavailable
from bwcd.store.interface import IStore

__all__ = ["QueueBound", "QueueFull"]


class QueueFull(Unavailable):
    """
    Too many executions are waiting for a runner slot to take more work.
    """

    def __init__(self, queued: int = 0, maxQueued: int = 0) -> None:
        super().__init__(
            f"{queued} executions are waiting to run (runner.max_queued is {maxQueued}); try again shortly.",
            headers={"Retry-After": "2"},
        )
        self.queued = queued
        self.maxQueued = maxQueued


class QueueBound:
    """
    The accounting, mixed into L{bwcd.execution.service.ExecutionService}
    (which calls L{_queued} when it queues work).
    """

    _store: IStore
    maxQueued: int = 10000
    #: the last count, less the part of the delta it already reflects
    _queuedCounted = 0
    #: what this process queued minus what it claimed, ever
    _queuedDelta = 0

    #: executions this process has seen claimed, ever (L{noteClaimed})
    _claimsNoted = 0
    #: refreshes started, and the latest one whose count was applied
    _countsStarted = 0
    _countApplied = 0

    @property
    def queued(self) -> int:
        """
        How many executions wait for a slot: the store's count at the last
        refresh, corrected by what this process queued and claimed since.

        C{_queuedDelta} is what this process has queued minus what it has
        claimed, ever; C{_queuedCounted} is the last count less the part of
        that delta the count already reflects (L{refreshQueued}).
        """
        return max(self._queuedCounted + self._queuedDelta, 0)

    def checkCapacity(self) -> None:
        """
        @raise QueueFull: the queue of waiting executions is at its bound.
        """
        if self.queued >= self.maxQueued:
            raise QueueFull(self.queued, self.maxQueued)

    def noteClaimed(self, count: int) -> None:
        self._queuedDelta -= count
        self._claimsNoted += count

    async def refreshQueued(self) -> int:
        """
        Count waiting executions in the store (they may come from other
        processes sharing it).

        What changed before the count was sent is in it.  What changes
        while it runs may or may not be: an execution queued meanwhile is
        still added and one claimed meanwhile is not subtracted, so that
        C{queued} errs high (one request too many refused until the next
        count) and never low (one too many let past C{runner.max_queued}).
        A count that lands after a later one is dropped.
        """
        self._countsStarted += 1
        generation = self._countsStarted
        deltaBefore, claimsBefore = self._queuedDelta, self._claimsNoted
        counted = await self._store.count("executions", {"status": "requested"})
        if generation > self._countApplied:
            self._countApplied = generation
            self._queuedCounted = counted - deltaBefore + (self._claimsNoted - claimsBefore)
        return counted
