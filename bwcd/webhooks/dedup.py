# -*- test-case-name: tests.test_webhook_dedup -*-
"""
Deduplicated deliveries: a sender's retry of a delivery it already made runs
nothing and is answered like the first.

The record of a delivery is a store document whose id is derived from
(hook, delivery id), so the store's unique id decides which of two
concurrent deliveries is first, in one process or in several sharing a
MongoDB, and the decision survives restarts.  The record is written before
the trigger instances; if they then cannot be stored it is deleted again.  A
record older than its window is taken over by a conditional update (only one
taker wins), and so is one whose instance never got stored (a crash between
the two writes) once a short grace has passed.
"""

from __future__ import annotations

import hashlib
from typing import Any, Dict, List, Optional, Sequence

import attrs
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from bwcd.store.interface import DuplicateKey, IStore, StoreError

__all__ = ["COLLECTION", "Claim", "Deliveries", "deliveryRecordId", "deliveryIdFrom"]

log = Logger(namespace="bwcd.webhooks.dedup")

COLLECTION = "webhookdeliveries"
#: seconds after which a record whose instance is missing is presumed orphaned
ORPHAN_GRACE = 30.0
_MAX_ID = 512


def deliveryRecordId(hook: str, deliveryId: str) -> str:
    """
    The record's store id: 24 hex digits of a hash of both, like the
    ObjectId-shaped ids of every other document.
    """
    return hashlib.sha256(f"{hook}\x00{deliveryId}".encode("utf-8", "replace")).hexdigest()[:24]


def deliveryIdFrom(source: str, name: str, headerValue: Any, body: Any) -> Optional[str]:
    """
    The delivery id of a request, or None when it carries none.

    @param headerValue: the value of header C{name} (for C{source} "header").
    @param body: the parsed body (for C{source} "body": C{name} is a dotted
        path into it).
    """
    if source == "header":
        value = headerValue
    else:
        value = body
        for part in name.split("."):
            if not isinstance(value, dict) or part not in value:
                return None
            value = value[part]
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        return None
    text = str(value).strip()
    return text[:_MAX_ID] if text else None


@attrs.frozen
class Claim:
    """
    The outcome of L{Deliveries.claim}: C{first} when this request owns the
    delivery (and must store C{instances}), else the ids the first one
    stored.
    """

    first: bool
    recordId: str
    instances: Sequence[str]


class Deliveries:
    """
    The delivery records in the store.
    """

    def __init__(self, store: IStore, clock: IReactorTime) -> None:
        self._store = store
        self._clock = clock

    async def claim(self, hook: str, deliveryId: str, instances: List[str], window: float) -> Claim:
        """
        Record that C{instances} are the answer to this delivery, unless a
        record within its window says otherwise.
        """
        now = self._clock.seconds()
        recordId = deliveryRecordId(hook, deliveryId)
        doc: Dict[str, Any] = {
            "id": recordId,
            "hook": hook,
            "delivery_id": deliveryId,
            "instances": list(instances),
            "received_at": now,
            "expires_at": now + window,
        }
        try:
            await self._store.insert(COLLECTION, doc)
            return Claim(True, recordId, instances)
        except DuplicateKey:
            pass
        previous = await self._store.get(COLLECTION, recordId)
        if previous is None:
            # deleted (purged or released) in between: try once more
            try:
                await self._store.insert(COLLECTION, doc)
                return Claim(True, recordId, instances)
            except DuplicateKey:
                previous = await self._store.get(COLLECTION, recordId)
                if previous is None:
                    raise
        if await self._reusable(previous, now):
            taken = await self._store.update(
                COLLECTION,
                {"id": recordId, "received_at": previous["received_at"]},
                set={"instances": list(instances), "received_at": now, "expires_at": now + window},
            )
            if taken is not None:
                return Claim(True, recordId, instances)
            previous = await self._store.get(COLLECTION, recordId) or previous
        return Claim(False, recordId, list(previous.get("instances") or []))

    async def _reusable(self, record: Dict[str, Any], now: float) -> bool:
        if float(record.get("expires_at", 0)) <= now:
            return True
        if now - float(record.get("received_at", now)) < ORPHAN_GRACE:
            return False
        ids = record.get("instances") or []
        return not ids or await self._store.get("triggerinstances", ids[0]) is None

    async def release(self, claim: Claim) -> None:
        """
        Forget a claim whose instances could not be stored (best effort).
        """
        try:
            current = await self._store.get(COLLECTION, claim.recordId)
            if current is not None and list(current.get("instances") or []) == list(claim.instances):
                await self._store.deleteOne(COLLECTION, claim.recordId)
        except StoreError as e:
            log.warn("Could not release delivery record {id}: {error}", id=claim.recordId, error=str(e))

    async def purgeExpired(self) -> int:
        """
        Delete the records whose window has passed.
        """
        return await self._store.delete(COLLECTION, {"expires_at": {"$lt": self._clock.seconds()}})
