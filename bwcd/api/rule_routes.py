# -*- test-case-name: tests.test_triggers_api -*-
"""
C{/v1/rules}: create, list, show, replace and delete rules (st2-api.md
section 6).

Every change is applied to the in-memory L{RuleIndex} before the answer is
sent (so the very next event sees it) and published to the other processes
through the index's change marker.  The index lock is held from the first
store write until the index reflects it, so a concurrent reload can never
put back an older view.
"""

from __future__ import annotations

import json
import re
from typing import Any, Dict, Optional

from twisted.logger import Logger

from bwcd.api.framework import Api, ApiError, Principal, Reply
from bwcd.api.query import boolArg, filtersFrom, listPage
from bwcd.rules.index import RuleIndex
from bwcd.rules.model import RuleError, normaliseRule, publicRule
from bwcd.store.interface import IStore, StoreError, newId
from bwcd.rules.triggers import TriggerError, releaseTrigger, triggerForRule

log = Logger(namespace="bwcd.api.rules")

PREFIXES = ("/v1/rules",)

#: query name -> document path for GET /v1/rules
FILTERS = {
    "name": "name",
    "pack": "pack",
    "action": "action.ref",
    "trigger": "trigger.ref",
    "user": "context.user",
}

_OBJECT_ID = re.compile(r"[0-9a-f]{24}\Z")


def readJson(request) -> Any:
    raw = request.content.read() if request.content is not None else b""
    if not raw.strip():
        raise ApiError(400, "Request body is required")
    try:
        return json.loads(raw)
    except ValueError as e:
        raise ApiError(400, f"Failed to parse request body: {e}")


async def findByRefOrId(store: IStore, collection: str, refOrId: str) -> Optional[Dict[str, Any]]:
    """
    The document whose id (24 hex digits) or ref is C{refOrId}.
    """
    if _OBJECT_ID.match(refOrId):
        doc = await store.get(collection, refOrId)
        if doc is not None:
            return doc
    return await store.findOne(collection, {"ref": refOrId})


def notFound(refOrId: str) -> ApiError:
    return ApiError(404, f'Resource with a reference or id "{refOrId}" not found')


async def prepareRule(store: IStore, index: RuleIndex, body: Any, user: Optional[str], previous: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """
    Validate a rule body, find or create its trigger, and return the
    document to store (with C{trigger.ref}).

    @raise ApiError: 400 with StackStorm's messages.
    """
    try:
        doc = normaliseRule(body, user=user)
    except RuleError as e:
        raise ApiError(400, str(e))
    typeRef = doc["trigger"]["type"]
    triggerType = index.triggerType(typeRef)
    if triggerType is None:
        triggerType = await store.findOne("triggertypes", {"ref": typeRef})
    try:
        trigger = await triggerForRule(store, typeRef, triggerType, doc["trigger"]["parameters"])
    except TriggerError as e:
        raise ApiError(400, str(e))
    index.putTrigger(trigger)
    doc["trigger"]["ref"] = trigger["ref"]
    return doc


async def saveRule(store: IStore, index: RuleIndex, doc: Dict[str, Any], previous: Optional[Dict[str, Any]]) -> Dict[str, Any]:
    """
    Insert (C{previous} is None) or replace a prepared rule, update the
    index and release a trigger no rule uses any more.  The caller holds
    the index lock.
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
    except BaseException:
        # The trigger may have been created for this rule alone.
        released = await releaseTrigger(store, doc["trigger"]["ref"])
        if released is not None:
            index.removeTrigger(released["ref"])
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
    processes must not turn a successful write into an error answer (they
    also catch up at the next change, and at restart).
    """
    try:
        await index.publish()
    except StoreError as e:
        log.warn("Could not publish a rule change to other processes: {error}", error=str(e))


def installRuleRoutes(api: Api, store: IStore, index: RuleIndex) -> None:
    """
    Add the rule routes to C{api}.
    """

    @api.route(list(PREFIXES), ["GET"])
    async def listRules(request, principal: Principal):
        filters = filtersFrom(request, FILTERS)
        enabled = boolArg(request, "enabled")
        if enabled is not None:
            filters["enabled"] = enabled
        return await listPage(store, "rules", filters, [("pack", 1), ("name", 1)], request, None, publicRule)

    @api.route([p + "/<string:refOrId>" for p in PREFIXES], ["GET"])
    async def showRule(request, principal: Principal, refOrId: str):
        doc = await findByRefOrId(store, "rules", refOrId)
        if doc is None:
            raise notFound(refOrId)
        return publicRule(doc)

    @api.route(list(PREFIXES), ["POST"])
    async def createRule(request, principal: Principal):
        body = readJson(request)
        await index.lock()
        try:
            doc = await prepareRule(store, index, body, principal.user if principal else None)
            stored = await saveRule(store, index, doc, None)
        finally:
            index.unlock()
        await publishQuietly(index)
        return Reply(publicRule(stored), 201)

    @api.route([p + "/<string:refOrId>" for p in PREFIXES], ["PUT"])
    async def replaceRule(request, principal: Principal, refOrId: str):
        body = readJson(request)
        await index.lock()
        try:
            previous = await findByRefOrId(store, "rules", refOrId)
            if previous is None:
                raise notFound(refOrId)
            doc = await prepareRule(store, index, body, principal.user if principal else None, previous)
            stored = await saveRule(store, index, doc, previous)
        finally:
            index.unlock()
        await publishQuietly(index)
        return publicRule(stored)

    @api.route([p + "/<string:refOrId>" for p in PREFIXES], ["DELETE"])
    async def removeRule(request, principal: Principal, refOrId: str):
        await index.lock()
        try:
            doc = await findByRefOrId(store, "rules", refOrId)
            if doc is None:
                raise notFound(refOrId)
            await deleteRule(store, index, doc)
        finally:
            index.unlock()
        await publishQuietly(index)
        return Reply(None, 204)


__all__ = ["deleteRule", "findByRefOrId", "installRuleRoutes", "prepareRule", "saveRule"]
