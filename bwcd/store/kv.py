# -*- test-case-name: tests.test_store_kv -*-
"""
Named values in the store's C{kv} collection: the change markers that tell
processes sharing a store to reload (rules, webhook policies) and the
nodes' heartbeats.  One place for the read and the upsert, which the store
interface has no single operation for.
"""

from __future__ import annotations

from typing import Any, Optional

from bwcd.store.interface import DuplicateKey, IStore, newId

__all__ = ["readValue", "writeValue", "replaceValue"]

COLLECTION = "kv"


async def readValue(store: IStore, name: str) -> Optional[Any]:
    doc = await store.findOne(COLLECTION, {"name": name})
    return None if doc is None else doc.get("value")


async def writeValue(store: IStore, name: str, value: Any) -> None:
    """
    Set C{name} to C{value}, creating it if needed; a process that creates
    it at the same moment makes the insert fail, and the update then wins.
    """
    if await store.update(COLLECTION, {"name": name}, set={"value": value}) is not None:
        return
    try:
        await store.insert(COLLECTION, {"id": newId(), "name": name, "value": value})
    except DuplicateKey:
        await store.update(COLLECTION, {"name": name}, set={"value": value})


async def replaceValue(store: IStore, name: str, expected: Any, value: Any) -> bool:
    """
    Set C{name} to C{value} only if it still holds C{expected} (atomic in
    the store): whether it did.
    """
    return await store.update(COLLECTION, {"name": name, "value": expected}, set={"value": value}) is not None
