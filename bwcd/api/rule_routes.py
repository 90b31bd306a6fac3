# -*- test-case-name: tests.test_triggers_api -*-
"""
C{/v1/rules}: create, list, show, replace and delete rules (st2-api.md
section 6).  What a change does is the registry's
(L{bwcd.rules.registry}); this module only reads requests and shapes
answers.
"""

from __future__ import annotations

from bwcd.api.framework import Api, Principal, Reply
from bwcd.api.query import boolArg, filtersFrom, listPage
from bwcd.rules.index import RuleIndex
from bwcd.rules.model import publicRule
from bwcd.rules.registry import RuleRegistry, deleteRule, findByRefOrId, notFound, prepareRule, saveRule
from bwcd.store.interface import IStore

PREFIXES = ("/v1/rules",)

#: query name -> document path for GET /v1/rules
FILTERS = {
    "name": "name",
    "pack": "pack",
    "action": "action.ref",
    "trigger": "trigger.ref",
    "user": "context.user",
}


def installRuleRoutes(api: Api, store: IStore, index: RuleIndex) -> None:
    """
    Add the rule routes to C{api}.
    """
    rules = RuleRegistry(store, index)

    @api.route(list(PREFIXES), ["GET"])
    async def listRules(request, principal: Principal):
        filters = filtersFrom(request, FILTERS)
        enabled = boolArg(request, "enabled")
        if enabled is not None:
            filters["enabled"] = enabled
        return await listPage(store, "rules", filters, [("pack", 1), ("name", 1)], request, principal, None, publicRule)

    @api.route([p + "/<string:refOrId>" for p in PREFIXES], ["GET"])
    async def showRule(request, principal: Principal, refOrId: str):
        return publicRule(await rules.get(refOrId))

    @api.route(list(PREFIXES), ["POST"])
    async def createRule(request, principal: Principal):
        body = api.readJson(request)
        stored = await rules.create(body, principal.user if principal else None)
        return Reply(publicRule(stored), 201)

    @api.route([p + "/<string:refOrId>" for p in PREFIXES], ["PUT"])
    async def replaceRule(request, principal: Principal, refOrId: str):
        body = api.readJson(request)
        return publicRule(await rules.replace(refOrId, body, principal.user if principal else None))

    @api.route([p + "/<string:refOrId>" for p in PREFIXES], ["DELETE"])
    async def removeRule(request, principal: Principal, refOrId: str):
        await rules.delete(refOrId)
        return Reply(None, 204)


# deleteRule, findByRefOrId, notFound, prepareRule and saveRule moved to
# bwcd.rules.registry; named here for callers not yet switched over.
__all__ = ["deleteRule", "findByRefOrId", "installRuleRoutes", "notFound", "prepareRule", "saveRule"]
