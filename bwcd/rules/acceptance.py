# -*- test-case-name: tests.test_acceptance -*-
"""
Storing an accepted trigger instance once, when the store's answer can be
lost.

The id of an instance is made before it is inserted, so an insert whose
answer was lost (a timeout, a dropped connection: L{StoreUnavailable}) can
be tried again with the same id: if the first attempt did reach the store,
the second is refused with L{DuplicateKey}, which means "stored", and the
event is accepted (202) once.

When every attempt is ambiguous the sender is answered 503 and will send
the event again (as a new instance), so the instance must never run, even
if it was stored after all.  It cannot be deleted or checked for while the
store does not answer, and a delete could even come before a late insert.
So it is B{settled} once the store answers again (L{Discards}): a copy
marked C{processing_failed} is inserted under the same id.  Either that
insert succeeds, and a late arrival of the first insert is then refused by
the unique id; or it is refused, which means the instance was stored, and
it is marked C{processing_failed} if it is still C{pending}.  Until then
this process does not process it.  If the process dies before it could
settle it (a second fault during a store outage), a stored instance may
still run once after a restart or a take-over.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional

from twisted.internet.defer import CancelledError, Deferred, TimeoutError, ensureDeferred
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import deferLater
from twisted.logger import Logger

from bwcd.store.interface import DuplicateKey, IStore, StoreError, StoreUnavailable

log = Logger(namespace="bwcd.rules.engine")

PENDING = "pending"
PROCESSING_FAILED = "processing_failed"

#: why a settled instance did not run (its sender was answered 503)
DISCARDED = "not accepted: the store did not confirm the write, and the sender was answered 503"


class Unconfirmed(StoreUnavailable):
    """
    Storing an instance failed, and some attempt may have reached the store:
    it may or may not be stored (so it is settled, see L{Discards}).
    """


def ambiguous(error: BaseException) -> bool:
    """
    Whether a failed write may have reached the store anyway.  A store
    error may say that it certainly did not by carrying a true
    C{definite} attribute (a store known to be down refusing at once).
    """
    if isinstance(error, Unconfirmed):
        return True
    if getattr(error, "definite", False):
        return False
    return isinstance(error, (StoreUnavailable, TimeoutError, CancelledError))


async def insertOnce(store: IStore, clock: IReactorTime, collection: str, doc: Dict[str, Any], attempts: int = 3, delay: float = 0.25) -> None:
    """
    Insert C{doc} (which has its C{id}), trying again with the same id
    after an ambiguous failure, up to C{attempts} times, waiting C{delay}
    seconds and then twice as long each time.

    @raise Unconfirmed: no attempt succeeded, and one may have reached the
        store.
    @raise StoreError: a definite failure of the first attempt: nothing was
        stored.
    """
    for attempt in range(attempts):
        try:
            await store.insert(collection, doc)
            return
        except DuplicateKey as e:
            if attempt == 0 or e.conflictId not in (None, doc["id"]):
                raise
            log.info("Trigger instance {id} was stored though the answer was lost", id=doc["id"])
            return
        except BaseException as e:
            if attempt > 0 and (not ambiguous(e) or attempt + 1 == attempts):
                raise Unconfirmed(f"storing trigger instance {doc['id']} is unconfirmed after {attempt + 1} attempts: {e!r}") from e
            if not ambiguous(e) or attempt + 1 == attempts:
                raise
            wait = delay * 2**attempt
            log.warn("Storing trigger instance {id} may have failed ({error}); trying again in {delay}s", id=doc["id"], error=repr(e), delay=wait)
            await deferLater(clock, wait)


class Discards:
    """
    Instances refused with a 503 that may have been stored anyway, settled
    (see the module docstring) as soon as the store answers, with backoff.

    @param maxDelay: longest wait between two attempts.
    """

    def __init__(self, store: IStore, clock: IReactorTime, delay: float = 0.5, maxDelay: float = 30.0) -> None:
        self._store = store
        self._clock = clock
        self._delay = delay
        self._maxDelay = maxDelay
        self._waiting: Dict[str, Dict[str, Any]] = {}
        self._calls: Dict[str, Any] = {}
        self._stopped = False
        self._settled: List[Deferred] = []

    def __contains__(self, instanceId: object) -> bool:
        return instanceId in self._waiting

    def __len__(self) -> int:
        return len(self._waiting)

    def add(self, instance: Dict[str, Any]) -> None:
        """
        Settle C{instance}, now and until the store answers.
        """
        if instance["id"] in self._waiting:
            return
        self._waiting[instance["id"]] = instance
        self._stopped = False
        self._schedule(instance["id"], 0, self._delay)

    def _schedule(self, instanceId: str, wait: float, nextWait: float) -> None:
        def attempt() -> None:
            self._calls.pop(instanceId, None)
            d = ensureDeferred(self._attempt(instanceId, nextWait))
            d.addErrback(lambda f: log.failure("Settling trigger instance {id} failed", f, id=instanceId))

        self._calls[instanceId] = self._clock.callLater(wait, attempt)

    async def _attempt(self, instanceId: str, nextWait: float) -> None:
        instance = self._waiting.get(instanceId)
        if instance is None or self._stopped:
            return
        try:
            outcome = await self.settle(instance)
        except StoreError as e:
            if self._stopped:
                return
            log.warn("Cannot settle trigger instance {id} yet ({error}); trying again in {delay}s", id=instanceId, error=repr(e), delay=nextWait)
            self._schedule(instanceId, nextWait, min(nextWait * 2, self._maxDelay))
            return
        self._waiting.pop(instanceId, None)
        log.info("Trigger instance {id}, answered 503, settled: {outcome}", id=instanceId, outcome=outcome)
        if not self._waiting:
            settled, self._settled = self._settled, []
            for d in settled:
                d.callback(None)

    def whenSettled(self) -> Deferred:
        """
        Fire once nothing is left to settle.
        """
        d: Deferred = Deferred()
        if self._waiting:
            self._settled.append(d)
        else:
            d.callback(None)
        return d

    async def settle(self, instance: Dict[str, Any]) -> str:
        """
        Make sure C{instance} never runs; one attempt.

        @return: what was found: C{"never stored"}, C{"stored; marked failed"}
            or C{"stored; already <status>"}.
        @raise StoreError: the store did not answer.
        """
        tombstone = dict(instance, status=PROCESSING_FAILED, failure_reason=DISCARDED)
        try:
            await self._store.insert("triggerinstances", tombstone)
            return "never stored"
        except DuplicateKey:
            pass
        marked = await self._store.update(
            "triggerinstances",
            {"id": instance["id"], "status": PENDING},
            set={"status": PROCESSING_FAILED, "failure_reason": DISCARDED},
        )
        if marked is not None:
            return "stored; marked failed"
        current: Optional[Dict[str, Any]] = await self._store.get("triggerinstances", instance["id"])
        return f"stored; already {(current or {}).get('status')}"

    def stop(self) -> None:
        """
        Stop trying (at shutdown); what is left unsettled stays as it is.
        """
        self._stopped = True
        for call in self._calls.values():
            if call.active():
                call.cancel()
        self._calls.clear()
        if self._waiting:
            log.warn("{count} trigger instances answered 503 were not settled before shutdown", count=len(self._waiting))
