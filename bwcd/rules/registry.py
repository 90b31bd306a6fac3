# -*- test-case-name: tests.test_rules_registry -*-
"""
The rule registry: creating, replacing, deleting and finding rules, with
the triggers they need.

Kept apart from the HTTP routes because packs register rules too (at start
and on SIGHUP) and must go through the same steps; the failures are
L{bwcd.errors} kinds carrying StackStorm's messages, which the API turns
into answers.

Every change is applied to the in-memory L{RuleIndex} before it returns
(so the very next event sees it) and published to the other processes
through the index's change marker.  The index lock is held from the first
store write until the index reflects it, so a concurrent reload can never
put back an older view.
"""

from __future__ import annotations

import re
from typing import Any, Dict, Optional

from twisted.logger import Logger

from bwcd.errors import Invalid, NotFound, duplicateConflict
from bwcd.rules.index import RuleIndex
from bwcd.rules.model import RuleError, normaliseRule
from bwcd.rules.triggers import TriggerError, releaseTrigger, triggerForRule
from bwcd.store.interface import DuplicateKey, IStore, StoreError, newId

log = Logger(namespace="bwcd.rules.registry")

_OBJECT_ID = re.compile(r"[0-9a-f]{24}\Z")


def notFound(refOrId: str) -> NotFound:
    """
    StackStorm's 404 for a rule, trigger or trigger type looked up by ref
    or id.
    """
    return NotFound(f'Resource with a reference or id "{refOrId}" not found')


async def findByRefOrId(store: IStore, collection: str, refOrId: str) -> Optional[Dict[str, Any]]:
    """
    The document whose id (24 hex digits) or ref is C{refOrId}, or C{None}.
    """
    if _OBJECT_ID.match(refOrId):
        doc = await store.get(collection, refOrId)
        if doc is not None:
            return doc
    return await store.findOne(collection, {"ref": refOrId})


async def requireByRefOrId(store: IStore, collection: str, refOrId: str) -> Dict[str, Any]:
    """
    Like L{findByRefOrId}, for callers that need the document.

    @raise NotFound: there is none.
    """
    doc = await findByRefOrId(store, collection, refOrId)
    if doc is None:
        raise notFound(refOrId)
    return doc


async def prepareRule(store: IStore, index: RuleIndex, body: Any, user: Optional[str], previous: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """
    Validate a rule body, find or create its trigger, and return the
    document to store (with C{trigger.ref}).

    @raise Invalid: with StackStorm's messages.
    """
    try:
        doc = normaliseRule(body, user=user)
    except RuleError as e:
        raise Invalid(str(e)) from None
    typeRef = doc["trigger"]["type"]
    triggerType = index.triggerType(typeRef)
    if triggerType is None:
        triggerType = await store.findOne("triggertypes", {"ref": typeRef})
    try:
        trigger = await triggerForRule(store, typeRef, triggerType, doc["trigger"]["parameters"])
    except TriggerError as e:
        raise Invalid(str(e)) from None
    index.putTrigger(trigger)
    doc["trigger"]["ref"] = trigger["ref"]
    return doc


async def saveRule(store: IStore, index: RuleIndex, doc: Dict[str, Any], previous: Optional[Dict[str, Any]]) -> Dict[str, Any]:
    """
    Insert (C{previous} is None) or replace a prepared rule, update the
    index and release a trigger no rule uses any more.  The caller holds
    the index lock.

    @raise Conflict: another rule has the same ref.
    @raise NotFound: C{previous} was deleted meanwhile.
    """
    try:
        if previous is None:
            doc["id"] = doc.get("id") or newId()
            stored = await store.insert("rules", doc)
        else:
            doc["id"] = previous["id"]
            stored = await store.replace("rules", doc)
            if stored is None:
                raise notFound(previous["id"])
    except BaseException as e:
        # The trigger may have been created for this rule alone.
        released = await releaseTrigger(store, doc["trigger"]["ref"])
        if released is not None:
            index.removeTrigger(released["ref"])
        if isinstance(e, DuplicateKey):
            raise duplicateConflict(e.detail or e.collection, e.conflictId) from None
        raise
    index.putRule(stored, previous)
    if previous is not None and previous["trigger"].get("ref") != stored["trigger"]["ref"]:
        released = await releaseTrigger(store, previous["trigger"].get("ref"))
        if released is not None:
            index.removeTrigger(released["ref"])
    return stored


async def deleteRule(store: IStore, index: RuleIndex, doc: Dict[str, Any]) -> None:
    """
    Delete a rule and release its trigger.  The caller holds the index lock.
    """
    await store.deleteOne("rules", doc["id"])
    index.removeRule(doc)
    released = await releaseTrigger(store, (doc.get("trigger") or {}).get("ref"))
    if released is not None:
        index.removeTrigger(released["ref"])


async def publishQuietly(index: RuleIndex) -> None:
    """
    Publish a change that is already stored: failing to tell the other
    processes must not turn a successful write into an error (they also
    catch up at the next change, and at restart).
    """
    try:
        await index.publish()
    except StoreError as e:
        log.warn("Could not publish a rule change to other processes: {error}", error=str(e))


class RuleRegistry:
    """
    The rules of one store and the index that mirrors them: what the
    C{/v1/rules} routes do, without HTTP.
    """

    def __init__(self, store: IStore, index: RuleIndex) -> None:
        self._store = store
        self._index = index

    async def get(self, refOrId: str) -> Dict[str, Any]:
        """
        @raise NotFound: no rule has this ref or id.
        """
        return await requireByRefOrId(self._store, "rules", refOrId)

    async def create(self, body: Any, user: Optional[str]) -> Dict[str, Any]:
        """
        Store a new rule from a client's C{body}, created by C{user}.

        @raise Invalid: the body is not a valid rule.
        @raise Conflict: a rule with its ref exists.
        """
        await self._index.lock()
        try:
            doc = await prepareRule(self._store, self._index, body, user)
            stored = await saveRule(self._store, self._index, doc, None)
        finally:
            self._index.unlock()
        await publishQuietly(self._index)
        return stored

    async def replace(self, refOrId: str, body: Any, user: Optional[str]) -> Dict[str, Any]:
        """
        Replace the rule C{refOrId} by C{body}, keeping its id.

        @raise NotFound: no such rule.
        @raise Invalid: the body is not a valid rule.
        @raise Conflict: the new ref is another rule's.
        """
        await self._index.lock()
        try:
            previous = await requireByRefOrId(self._store, "rules", refOrId)
            doc = await prepareRule(self._store, self._index, body, user, previous)
            stored = await saveRule(self._store, self._index, doc, previous)
        finally:
            self._index.unlock()
        await publishQuietly(self._index)
        return stored

    async def delete(self, refOrId: str) -> Dict[str, Any]:
        """
        Delete the rule C{refOrId}; the document it had.

        @raise NotFound: no such rule.
        """
        await self._index.lock()
        try:
            doc = await requireByRefOrId(self._store, "rules", refOrId)
            await deleteRule(self._store, self._index, doc)
        finally:
            self._index.unlock()
        await publishQuietly(self._index)
        return doc


__all__ = [
    "RuleRegistry",
    "deleteRule",
    "findByRefOrId",
    "notFound",
    "prepareRule",
    "publishQuietly",
    "requireByRefOrId",
    "saveRule",
]
