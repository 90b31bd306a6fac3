# -*- test-case-name: tests.test_explain -*-
"""
"Why did (or didn't) my rule fire?": what the rules engine would decide for
one trigger payload, rule by rule and criterion by criterion, with nothing
stored or run.

StackStorm answers this only with the separate C{st2-rule-tester}; here the
answer comes from the very code the engine uses (L{bwcd.rules.criteria}'s
evaluation for the verdict, L{bwcd.rules.templating.renderParameters} for
the action parameters), so an explanation cannot disagree with what the
engine does.  Everything here is pure: the caller reads the rules, the
trigger and the instance from the store and gives the current time.
"""

from __future__ import annotations

from typing import Any, Dict, List, Mapping, Optional, Sequence

import attrs

from bwcd.rules.criteria import CriterionVerdict, checkEach, evaluate
from bwcd.rules.model import BACKSTOP, STANDARD
from bwcd.rules.operators import Now
from bwcd.rules.templating import ParameterRenderError, renderParameters
from bwcd.rules.triggers import hasParameters, parameterisedTrigger

__all__ = [
    "CriterionExplanation",
    "RuleExplanation",
    "Explanation",
    "explainRule",
    "explainRules",
    "ruleTriggerRef",
    "actionContext",
    "EXPLAIN_INSTANCE_ID",
]

#: the instance id named in failure reasons when the payload was given
#: directly rather than as a stored trigger instance
EXPLAIN_INSTANCE_ID = "(explained payload)"


@attrs.frozen
class CriterionExplanation:
    verdict: CriterionVerdict

    def toJson(self) -> Dict[str, Any]:
        v = self.verdict
        doc: Dict[str, Any] = {
            "key": v.key,
            "operator": v.operator,
            "pattern": v.rendered,
            "pattern_source": v.pattern,
            "value": v.value,
            "matched": v.matched,
            "error": v.error,
        }
        if v.condition is not None:
            doc["condition"] = v.condition
        if v.operator is None:
            doc["error"] = "No operator (type) given: a criterion without one never matches"
        return doc


@attrs.frozen
class RuleExplanation:
    """
    One rule against one payload.

    @ivar matched: the trigger is the rule's and its criteria hold.
    @ivar fires: the engine would start its action: matched, enabled, and
        (for a backstop rule) no standard rule fired.
    @ivar failureReason: what a failed enforcement would record when an
        error stopped the match.
    """

    ref: str
    id: Optional[str]
    enabled: bool
    type: str
    triggerRef: Optional[str]
    triggerMatches: Optional[bool]
    matched: bool
    fires: bool
    reason: str
    failureReason: Optional[str]
    criteria: Sequence[CriterionExplanation]
    action: Optional[str]
    parameters: Optional[Dict[str, Any]]
    parametersError: Optional[str]

    def toJson(self) -> Dict[str, Any]:
        return {
            "ref": self.ref,
            "id": self.id,
            "saved": self.id is not None,
            "enabled": self.enabled,
            "type": self.type,
            "trigger": self.triggerRef,
            "trigger_matches": self.triggerMatches,
            "matched": self.matched,
            "fires": self.fires,
            "reason": self.reason,
            "failure_reason": self.failureReason,
            "criteria": [c.toJson() for c in self.criteria],
            "action": self.action,
            "parameters": self.parameters,
            "parameters_error": self.parametersError,
        }


@attrs.frozen
class Explanation:
    """
    Every rule asked about, against one payload of one trigger.
    """

    trigger: Optional[str]
    instanceId: Optional[str]
    payload: Any
    rules: Sequence[RuleExplanation]
    payloadError: Optional[str] = None

    def toJson(self) -> Dict[str, Any]:
        return {
            "trigger": self.trigger,
            "trigger_instance": self.instanceId,
            "payload": self.payload,
            "payload_error": self.payloadError,
            "matched": any(r.matched for r in self.rules),
            "rules": [r.toJson() for r in self.rules],
        }


def ruleTriggerRef(rule: Mapping[str, Any], triggerType: Optional[Mapping[str, Any]]) -> Optional[str]:
    """
    The ref of the trigger a rule points at: its C{trigger.ref} once saved;
    for a rule not yet saved, the ref saving it would give (the type's own
    ref for a parameterless type, the ref derived from type and parameters
    otherwise), or None when its trigger type is unknown.
    """
    trigger = rule.get("trigger") or {}
    if trigger.get("ref"):
        return trigger["ref"]
    typeRef = trigger.get("type")
    parameters = trigger.get("parameters") or {}
    if not parameters:
        return typeRef
    if triggerType is None or not hasParameters(triggerType):
        return None
    return parameterisedTrigger(typeRef, triggerType["pack"], parameters)["ref"]


def actionContext(rule: Mapping[str, Any], instanceId: Optional[str], user: str) -> Dict[str, Any]:
    """
    The C{action_context} a rule-started execution renders its parameters
    with (L{bwcd.rules.enforcement.Enforcer}'s, plus the pack the execution
    service adds).
    """
    actionRef = (rule.get("action") or {}).get("ref") or ""
    return {
        "trigger_instance": {"id": instanceId, "name": None},
        "rule": {"id": rule.get("id"), "name": rule.get("name")},
        "user": user,
        "pack": actionRef.split(".", 1)[0],
    }


def _reason(triggerMatches: Optional[bool], ruleTrigger: Optional[str], trigger: Optional[str], payload: Any,
            verdicts: Sequence[CriterionVerdict], matched: bool, failure: Optional[str]) -> str:
    if triggerMatches is False:
        return f'The rule is for trigger "{ruleTrigger}", not "{trigger}".'
    if failure:
        return failure
    if matched:
        return "Every criterion holds." if verdicts else "The rule has no criteria: it matches every instance of its trigger."
    if not payload:
        return "The payload is empty: a rule with criteria never matches it."
    failing = [v for v in verdicts if not v.matched]
    if failing:
        first = failing[0]
        return f'Criterion "{first.key}" ({first.operator}) does not hold.'
    return "The criteria do not hold."


def explainRule(
    rule: Mapping[str, Any],
    payload: Any,
    now: Now,
    *,
    trigger: Optional[str] = None,
    ruleTrigger: Optional[str] = None,
    instanceId: Optional[str] = None,
    user: str = "stanley",
    parameterContext: Optional[Mapping[str, Any]] = None,
) -> RuleExplanation:
    """
    Explain one rule against one payload (C{fires} as if it were the only
    rule of its trigger; L{explainRules} settles backstop rules).

    @param rule: a normalised rule document (saved, or not yet).
    @param trigger: the ref of the trigger the payload came from; None to
        skip the trigger check.
    @param ruleTrigger: the rule's trigger ref (L{ruleTriggerRef}); defaults
        to its C{trigger.ref}.
    @param now: the current time for the timediff operators, as
        L{bwcd.rules.criteria.evaluate} takes it.
    @param parameterContext: extra names for the action parameters (the
        caller's C{st2kv}), beside C{trigger} and C{action_context}.
    """
    ref = rule.get("ref") or "%s.%s" % (rule.get("pack"), rule.get("name"))
    if ruleTrigger is None:
        ruleTrigger = (rule.get("trigger") or {}).get("ref")
    triggerMatches = None if trigger is None else ruleTrigger == trigger
    criteria = rule.get("criteria") or {}
    shownId = instanceId or EXPLAIN_INSTANCE_ID
    result = evaluate(ref, shownId, criteria, payload, now=now)
    verdicts = checkEach(ref, shownId, criteria, payload, now=now)
    matched = result.matched and triggerMatches is not False
    failure = result.failure_reason if triggerMatches is not False else None
    enabled = bool(rule.get("enabled"))
    action = rule.get("action") or {}
    scope: Dict[str, Any] = dict(parameterContext or {})
    scope["trigger"] = payload
    scope["action_context"] = actionContext(rule, instanceId, user)
    parameters: Optional[Dict[str, Any]] = None
    parametersError: Optional[str] = None
    try:
        parameters = renderParameters(action.get("parameters") or {}, scope)
    except ParameterRenderError as e:
        parametersError = str(e)
    reason = _reason(triggerMatches, ruleTrigger, trigger, payload, verdicts, matched, failure)
    if matched and not enabled:
        reason += " The rule is disabled, so it does not fire."
    return RuleExplanation(
        ref=ref,
        id=rule.get("id"),
        enabled=enabled,
        type=((rule.get("type") or {}).get("ref") or STANDARD),
        triggerRef=ruleTrigger,
        triggerMatches=triggerMatches,
        matched=matched,
        fires=matched and enabled,
        reason=reason,
        failureReason=failure,
        criteria=tuple(CriterionExplanation(v) for v in verdicts),
        action=action.get("ref"),
        parameters=parameters,
        parametersError=parametersError,
    )


def explainRules(
    rules: Sequence[Mapping[str, Any]],
    payload: Any,
    now: Now,
    *,
    trigger: Optional[str] = None,
    ruleTriggers: Optional[Sequence[Optional[str]]] = None,
    instanceId: Optional[str] = None,
    user: str = "stanley",
    parameterContext: Optional[Mapping[str, Any]] = None,
    payloadError: Optional[str] = None,
) -> Explanation:
    """
    Explain several rules (all those of a trigger, or the ones asked about)
    against one payload, sorted as the engine sorts them (pack, name).  A
    backstop rule only fires when no standard rule does, as in the engine.

    @param ruleTriggers: each rule's trigger ref, in C{rules}' order
        (defaults to their C{trigger.ref}).
    """
    triggers = list(ruleTriggers) if ruleTriggers is not None else [None] * len(rules)
    pairs = sorted(zip(rules, triggers), key=lambda p: (p[0].get("pack") or "", p[0].get("name") or ""))
    explained: List[RuleExplanation] = [
        explainRule(rule, payload, now, trigger=trigger, ruleTrigger=ruleTrigger, instanceId=instanceId,
                    user=user, parameterContext=parameterContext)
        for rule, ruleTrigger in pairs
    ]
    standardFires = any(r.fires for r in explained if r.type != BACKSTOP)
    if standardFires:
        explained = [
            attrs.evolve(r, fires=False, reason=r.reason + " It is a backstop rule and a standard rule fires.")
            if r.type == BACKSTOP and r.fires else r
            for r in explained
        ]
    return Explanation(trigger, instanceId, payload, tuple(explained), payloadError)
