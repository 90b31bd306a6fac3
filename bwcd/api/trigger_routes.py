# -*- test-case-name: tests.test_triggers_api -*-
"""
C{/v1/triggertypes}, C{/v1/triggers}, C{/v1/triggerinstances} (with
C{re_emit}) and C{/v1/ruleenforcements}: following an event from the
webhook that stored it to the rules it matched and the executions they
started (st2-api.md sections 6 and 7).
"""

from __future__ import annotations

import copy
from typing import Any, Dict, Optional

from bwcd.api.framework import Api, Principal, Reply
from bwcd.api.query import arg, filtersFrom, listPage
from bwcd.errors import Invalid, Unavailable
from bwcd.rules.engine import Overloaded, RulesEngine, ShuttingDown
from bwcd.rules.index import RuleIndex
from bwcd.rules.registry import notFound, requireByRefOrId
from bwcd.rules.triggers import publicTrigger
from bwcd.store.interface import IStore
from bwcd.timeutil import isoformat, parseIso


def timestampArg(request, name: str) -> Optional[str]:
    """
    A timestamp query value in the stored format, so that it compares
    correctly as a string.

    @raise Invalid: not a UTC ISO-8601 timestamp.
    """
    value = arg(request, name)
    if value is None or value == "":
        return None
    try:
        if value.endswith(" 00:00"):
            # An unencoded "+00:00" arrives with the + read as a space.
            value = value[:-6] + "+00:00"
        return isoformat(parseIso(value))
    except ValueError:
        raise Invalid(f'Parameter "{name}" is not a valid UTC ISO-8601 timestamp: {value!r}') from None


def _range(filters: Dict[str, Any], path: str, op: str, value: Optional[str]) -> None:
    if value is not None:
        filters.setdefault(path, {})[op] = value


def installTriggerRoutes(api: Api, store: IStore, index: RuleIndex, engine: RulesEngine) -> None:
    """
    Add the trigger type, trigger, trigger instance and rule enforcement
    routes to C{api}.
    """

    # -- trigger types ---------------------------------------------------------

    @api.route("/v1/triggertypes", ["GET"])
    async def listTriggerTypes(request, principal: Principal):
        filters = {k: v for k in ("pack", "name") if (v := arg(request, k)) is not None}
        return await listPage(store, "triggertypes", filters, [("pack", 1), ("name", 1)], request, principal, None)

    @api.route("/v1/triggertypes/<string:refOrId>", ["GET"])
    async def showTriggerType(request, principal: Principal, refOrId: str):
        return await requireByRefOrId(store, "triggertypes", refOrId)

    # -- triggers --------------------------------------------------------------

    @api.route("/v1/triggers", ["GET"])
    async def listTriggers(request, principal: Principal):
        filters = {k: v for k in ("type", "pack", "name") if (v := arg(request, k)) is not None}
        reply = await listPage(store, "triggers", filters, [("pack", 1), ("name", 1)], request, principal, None)
        return Reply([publicTrigger(d) for d in reply.body], reply.code, reply.headers)

    @api.route("/v1/triggers/<string:refOrId>", ["GET"])
    async def showTrigger(request, principal: Principal, refOrId: str):
        return publicTrigger(await requireByRefOrId(store, "triggers", refOrId))

    # -- trigger instances -----------------------------------------------------

    @api.route("/v1/triggerinstances", ["GET"])
    async def listTriggerInstances(request, principal: Principal):
        filters: Dict[str, Any] = {}
        trigger = arg(request, "trigger")
        if trigger is not None:
            filters["trigger"] = trigger
        triggerType = arg(request, "trigger_type")
        if triggerType is not None:
            refs = [t["ref"] for t in await store.find("triggers", {"type": triggerType})]
            if "trigger" in filters:
                refs = [r for r in refs if r == filters["trigger"]]
            filters["trigger"] = {"$in": refs}
        status = arg(request, "status")
        if status is not None:
            filters["status"] = status
        _range(filters, "occurrence_time", "$gt", timestampArg(request, "timestamp_gt"))
        _range(filters, "occurrence_time", "$lt", timestampArg(request, "timestamp_lt"))
        return await listPage(store, "triggerinstances", filters, [("occurrence_time", -1), ("id", -1)], request, principal, 100)

    @api.route("/v1/triggerinstances/<string:instanceId>", ["GET"])
    async def showTriggerInstance(request, principal: Principal, instanceId: str):
        doc = await store.get("triggerinstances", instanceId)
        if doc is None:
            raise notFound(instanceId)
        return doc

    @api.route("/v1/triggerinstances/<string:instanceId>/re_emit", ["POST"])
    async def reEmit(request, principal: Principal, instanceId: str):
        # st2 takes no body here; it is read for the checks every JSON route
        # makes (a cross-site text/plain POST must not re-emit)
        api.readJson(request, required=False)
        original = await store.get("triggerinstances", instanceId)
        if original is None:
            raise notFound(instanceId)
        payload = copy.deepcopy(original.get("payload") or {})
        if isinstance(payload, dict):
            payload["__context"] = {"original_id": instanceId}
        try:
            instance, _ = await engine.dispatch(original["trigger"], payload)
        except Overloaded:
            raise Unavailable("Too many trigger instances are waiting to be processed; try again shortly.", headers={"Retry-After": "1"}) from None
        except ShuttingDown:
            raise Unavailable("bwcd is shutting down; try again shortly.", headers={"Retry-After": "2"}) from None
        body = {"message": f"Trigger instance {instanceId} succesfully re-sent.", "payload": payload}
        return Reply(body, 200, {"Location": f"/v1/triggerinstances/{instance['id']}", "X-BWC-Trigger-Instance": instance["id"]})

    # -- rule enforcements -----------------------------------------------------

    @api.route("/v1/ruleenforcements", ["GET"])
    async def listEnforcements(request, principal: Principal):
        filters = filtersFrom(request, {"rule_ref": "rule.ref", "rule_id": "rule.id", "execution": "execution_id", "trigger_instance": "trigger_instance_id"})
        exact = timestampArg(request, "enforced_at")
        if exact is not None:
            filters["enforced_at"] = exact
        _range(filters, "enforced_at", "$gt", timestampArg(request, "enforced_at_gt"))
        _range(filters, "enforced_at", "$lt", timestampArg(request, "enforced_at_lt"))
        return await listPage(store, "ruleenforcements", filters, [("enforced_at", -1), ("rule.ref", 1)], request, principal, 50)

    @api.route("/v1/ruleenforcements/<string:enforcementId>", ["GET"])
    async def showEnforcement(request, principal: Principal, enforcementId: str):
        doc = await store.get("ruleenforcements", enforcementId)
        if doc is None:
            raise notFound(enforcementId)
        return doc


__all__ = ["installTriggerRoutes", "timestampArg"]
