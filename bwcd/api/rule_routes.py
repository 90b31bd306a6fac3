# -*- test-case-name: tests.test_triggers_api -*-
"""
C{/v1/rules}: create, list, show, replace and delete rules (st2-api.md
section 6).  What a change does is the registry's
(L{bwcd.rules.registry}); this module only reads requests and shapes
answers.
"""

from __future__ import annotations

from typing import Any, Dict, List, Mapping, Optional

from twisted.internet.interfaces import IReactorTime

from bwcd.api.framework import Api, Principal, Reply
from bwcd.api.query import boolArg, filtersFrom, listPage
from bwcd.datastore.templating import mentionsDatastore, renderWithDatastore, serviceFetch
from bwcd.errors import Invalid, NotFound
from bwcd.rules.explain import Explanation, explainRules, ruleTriggerRef
from bwcd.rules.index import RuleIndex
from bwcd.rules.model import RuleError, normaliseRule, publicRule
from bwcd.rules.registry import RuleRegistry, deleteRule, findByRefOrId, notFound, prepareRule, requireByRefOrId, saveRule
from bwcd.rules.triggers import payloadError
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


EXPLAIN_KEYS = frozenset(["trigger_instance", "trigger", "payload", "rule"])


class Explainer:
    """
    C{POST /v1/rules/explain} without HTTP: reads what the request names
    (the instance, the trigger's rules, the rule) and hands them to
    L{bwcd.rules.explain}.  Nothing is written.

    @param clock: the current time for the timediff operators (without
        it, a timediff criterion is explained as an error).
    @param keys: the datastore that C{st2kv} in action parameters reads
        (values are shown as stored: secrets stay encrypted and
        C{decrypt_kv} is an error), or None.
    @param systemUser: the user rule-started executions run as.
    """

    def __init__(self, store: IStore, index: RuleIndex, clock: Optional[IReactorTime] = None, keys: Any = None, systemUser: str = "stanley") -> None:
        self._store = store
        self._index = index
        self._clock = clock
        self._keys = keys
        self._systemUser = systemUser

    async def _triggerType(self, typeRef: Any) -> Optional[Dict[str, Any]]:
        if not isinstance(typeRef, str):
            return None
        found = self._index.triggerType(typeRef)
        if found is None:
            found = await self._store.findOne("triggertypes", {"ref": typeRef})
        return found

    async def _trigger(self, ref: str) -> Optional[Dict[str, Any]]:
        found = self._index.trigger(ref)
        if found is None:
            found = await self._store.findOne("triggers", {"ref": ref})
        return found

    async def explain(self, body: Any) -> Explanation:
        """
        @raise Invalid: the request is malformed, or names a rule document
            that is not valid.
        @raise NotFound: the trigger instance or rule does not exist.
        """
        if not isinstance(body, Mapping):
            raise Invalid("The body needs to be an object with trigger_instance, or trigger and payload")
        unknown = sorted(set(body) - EXPLAIN_KEYS)
        if unknown:
            raise Invalid(f"Unknown field {unknown[0]!r}: expected trigger_instance, or trigger and payload, and optionally rule")
        instanceId = body.get("trigger_instance")
        trigger = body.get("trigger")
        ruleSpec = body.get("rule")
        problem: Optional[str] = None
        if instanceId is not None:
            if "trigger" in body or "payload" in body:
                raise Invalid("Give either trigger_instance, or trigger and payload, not both")
            if not isinstance(instanceId, str):
                raise Invalid("trigger_instance must be a trigger instance id (a string)")
            instance = await self._store.get("triggerinstances", instanceId)
            if instance is None:
                raise NotFound(f'Resource with a reference or id "{instanceId}" not found')
            trigger = instance.get("trigger")
            payload = instance.get("payload")
        else:
            if trigger is not None and not isinstance(trigger, str):
                raise Invalid("trigger must be a trigger or trigger type ref (a string)")
            if trigger is None and ruleSpec is None:
                raise Invalid("Give trigger_instance, or trigger and payload (or a rule and payload)")
            payload = body.get("payload")
            if payload is None:
                payload = {}
            if trigger is not None:
                found = await self._trigger(trigger)
                problem = payloadError(trigger, await self._triggerType(found["type"] if found else trigger), payload)

        rules: List[Dict[str, Any]]
        if ruleSpec is None:
            rules = await self._store.find("rules", {"trigger.ref": trigger})
        elif isinstance(ruleSpec, str):
            rules = [await requireByRefOrId(self._store, "rules", ruleSpec)]
        elif isinstance(ruleSpec, Mapping):
            try:
                rules = [normaliseRule(ruleSpec, enabledDefault=True)]
            except RuleError as e:
                raise Invalid(f"rule: {e}") from None
        else:
            raise Invalid("rule must be a rule ref or id, or a rule document")
        ruleTriggers = [ruleTriggerRef(r, await self._triggerType((r.get("trigger") or {}).get("type"))) for r in rules]
        now = self._clock.seconds if self._clock is not None else None

        def explain(parameterContext: Optional[Mapping[str, Any]]) -> Explanation:
            return explainRules(
                rules, payload, now, trigger=trigger, ruleTriggers=ruleTriggers, instanceId=instanceId,
                user=self._systemUser, parameterContext=parameterContext, payloadError=problem,
            )

        sources = [(r.get("action") or {}).get("parameters") or {} for r in rules]
        if self._keys is None or not mentionsDatastore(sources):
            return explain(None)
        return await renderWithDatastore(lambda st2kv: explain({"st2kv": st2kv}), serviceFetch(self._keys, self._systemUser), sources)


def installRuleRoutes(api: Api, store: IStore, index: RuleIndex, clock: Optional[IReactorTime] = None, keys: Any = None, systemUser: str = "stanley") -> None:
    """
    Add the rule routes to C{api}.

    @param clock, keys, systemUser: for explanations (L{Explainer}).
    """
    rules = RuleRegistry(store, index)
    explainer = Explainer(store, index, clock, keys, systemUser)

    # Declared before the <refOrId> routes (werkzeug would prefer the
    # static path anyway; this keeps the intent visible).
    @api.route([p + "/explain" for p in PREFIXES], ["POST"])
    async def explainRule(request, principal: Principal):
        explanation = await explainer.explain(api.readJson(request))
        return explanation.toJson()

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
__all__ = ["Explainer", "deleteRule", "findByRefOrId", "installRuleRoutes", "notFound", "prepareRule", "saveRule"]
