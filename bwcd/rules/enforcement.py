# -*- test-case-name: tests.test_rules_engine -*-
"""
Enforcing the rules a trigger instance matched, exactly once.

Life of a trigger instance::

    pending --(no rule matched)----------------------------> processed
    pending --> processing --(enforcements written)--------> processed
                          \\--(unexpected error)-----------> processing_failed

Processing twice (after a crash, or by two processes at once) must never
start an action twice, which is arranged like this:

  - the execution a rule starts for an instance has an id derived from
    (rule id, instance id) (L{executionIdFor}), and the store refuses a
    second document with the same id, so a second attempt fails to insert
    and finds the execution the first attempt created instead;
  - the enforcement record is written after the execution, with a unique
    index on (rule id, instance id); a second attempt that finds it simply
    reads it.

A crash between the two writes leaves an execution without its enforcement;
reprocessing finds the execution by its id and writes the enforcement then.
Nothing here holds a lease, so this also holds when several processes share
one MongoDB and one of them recovers instances another is still working on.

The claim (C{pending} -> C{processing}) is a conditional update, on the
status and on the instance's C{node} (the node that accepted it, or took
it over from a dead one), so two processes that both hold an instance
process it once in the normal case; the derived ids are what makes the
rare overlap harmless.

Criteria are evaluated once per (rule, instance), when the instance is
accepted (L{matchRules}); the L{Match} travels with the instance to
L{Enforcer.process}.  Only an instance recovered after a restart is matched
again.
"""

from __future__ import annotations

import hashlib
from typing import Any, Callable, Dict, List, Mapping, Optional, Protocol, Sequence, Tuple

import attrs
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from bwcd.errors import Invalid
from bwcd.rules.criteria import evaluate
from bwcd.rules.index import IndexedRule, RuleIndex, RuleSet
from bwcd.rules.model import publicRule
from bwcd.rules.triggers import publicTrigger
from bwcd.store.interface import DuplicateKey, IStore, StoreError, newId
from bwcd.timeutil import isoformat, utcnow

log = Logger(namespace="bwcd.rules.engine")

PENDING = "pending"
PROCESSING = "processing"
PROCESSED = "processed"
PROCESSING_FAILED = "processing_failed"

ENFORCEMENT_SUCCEEDED = "succeeded"
ENFORCEMENT_FAILED = "failed"


class ExecutionRequester(Protocol):
    """
    How the rules engine asks for executions: the part of
    L{bwcd.execution.service.ExecutionService} it uses, given to it by the
    daemon's wiring (the rules know nothing of how actions run).
    """

    async def create(
        self,
        actionRef: str,
        parameters: Optional[Mapping[str, Any]],
        context: Optional[Mapping[str, Any]],
        user: str,
        embed: Optional[Mapping[str, Any]] = None,
        renderContext: Optional[Mapping[str, Any]] = None,
        failOnError: bool = False,
        executionId: Optional[str] = None,
    ) -> dict:
        """
        Store an execution (C{failOnError}: a failed one carrying a render
        or validation error rather than raising).

        @raise bwcd.errors.Invalid: the action does not exist.
        @raise DuplicateKey: an execution with C{executionId} exists.
        """

    def checkCapacity(self) -> None:
        """
        @raise bwcd.errors.Unavailable: no more executions can be queued now.
        """

    def addCompletionListener(self, fn: Callable[[dict], Any]) -> None:
        """
        Call C{fn(execution)} whenever an execution completes.
        """


@attrs.frozen
class Outcome:
    """
    What processing one trigger instance did.

    @ivar instance: the instance as stored afterwards.
    @ivar enforcements: the enforcement records written (or found).
    @ivar executions: the executions started (or found), as stored when
        created.
    """

    instance: Dict[str, Any]
    enforcements: Tuple[Dict[str, Any], ...] = ()
    executions: Tuple[Dict[str, Any], ...] = ()


@attrs.frozen
class Match:
    """
    The rules one instance matched, and those whose criteria failed to
    evaluate (each enforced as a failure with its reason).
    """

    matched: Tuple[IndexedRule, ...] = ()
    failed: Tuple[Tuple[IndexedRule, str], ...] = ()

    @property
    def wanted(self) -> bool:
        """
        Whether any rule has something to enforce.
        """
        return bool(self.matched or self.failed)


def _evaluate(rules: Sequence[IndexedRule], instance: Mapping[str, Any], now: Callable[[], float]) -> Match:
    matched: List[IndexedRule] = []
    failed: List[Tuple[IndexedRule, str]] = []
    payload = instance.get("payload")
    for rule in rules:
        result = evaluate(rule.ref, instance["id"], rule.criteria, payload, now=now)
        if result.matched:
            matched.append(rule)
        elif result.failure_reason:
            failed.append((rule, result.failure_reason))
    return Match(tuple(matched), tuple(failed))


def matchRules(ruleSet: RuleSet, instance: Mapping[str, Any], now: Callable[[], float]) -> Match:
    """
    Evaluate the criteria of a trigger's rules against one instance: the
    standard rules, and the backstop rules only when no standard one
    matched.

    @param now: the clock's C{seconds}, for the timediff operators.
    """
    match = _evaluate(ruleSet.standard, instance, now)
    if not match.matched and ruleSet.backstop:
        backstop = _evaluate(ruleSet.backstop, instance, now)
        match = Match(match.matched + backstop.matched, match.failed + backstop.failed)
    return match


def executionIdFor(ruleId: str, instanceId: str) -> str:
    """
    The id of the execution rule C{ruleId} starts for instance
    C{instanceId}: the instance id's ObjectId timestamp (so ids still sort
    roughly by time) and 16 hex digits of a hash of both ids.
    """
    digest = hashlib.sha1(f"{ruleId}:{instanceId}".encode("ascii", "replace")).hexdigest()
    return instanceId[:8] + digest[:16]


def failedAtCreation(execution: Mapping[str, Any]) -> Optional[str]:
    """
    The error of an execution stored already failed because its parameters
    could not be rendered or validated (it never ran), or None.
    """
    if execution.get("status") != "failed":
        return None
    statuses = {entry.get("status") for entry in execution.get("log") or []}
    if not statuses <= {"requested", "failed"}:
        return None
    result = execution.get("result") or {}
    error = result.get("error") if isinstance(result, dict) else None
    return str(error) if error else "Execution failed before it started"


class Enforcer:
    """
    Turns one matched instance into enforcement records and executions.

    @param systemUser: C{context.user} of executions started by rules.
    """

    def __init__(self, store: IStore, executions: ExecutionRequester, index: RuleIndex, clock: IReactorTime, systemUser: str = "stanley") -> None:
        self._store = store
        self._executions = executions
        self._index = index
        self._clock = clock
        self.systemUser = systemUser

    def match(self, instance: Mapping[str, Any]) -> Match:
        """
        The rules of C{instance}'s trigger that it matches, as the index has
        them now.
        """
        return matchRules(self._index.rulesFor(instance["trigger"]), instance, self._clock.seconds)

    async def process(self, instance: Dict[str, Any], recovered: bool = False, match: Optional[Match] = None) -> Outcome:
        """
        Enforce the rules one stored instance matched.

        @param recovered: the instance may already be C{processing} (left by
            a process that died, or a retry), not only C{pending}.
        @param match: what the instance matched when it was accepted; when
            None (a recovered instance), its criteria are evaluated now.
        """
        if match is None:
            match = self.match(instance)
        # only while the instance is still this node's: a node taken for
        # dead and resuming finds it gone (see RulesEngine.takeOver)
        claimable = {"id": instance["id"], "status": {"$in": [PENDING, PROCESSING]} if recovered else PENDING, "node": instance.get("node")}
        if not match.wanted:
            updated = await self._store.update("triggerinstances", claimable, set={"status": PROCESSED})
            return Outcome(updated or instance)
        claimed = await self._store.update("triggerinstances", claimable, set={"status": PROCESSING})
        if claimed is None:
            # Another process took it (or it was finished already).
            current = await self._store.get("triggerinstances", instance["id"])
            return Outcome(current or instance)
        enforcements: List[Dict[str, Any]] = []
        executions: List[Dict[str, Any]] = []
        for rule, reason in match.failed:
            enforcement = await self._writeEnforcement(rule, claimed, None, reason)
            # the reason may quote the payload (an operator's error on a
            # value): it is in the enforcement, not in the log
            log.info("Rule {rule} failed to match trigger instance {id}: an error stopped the match; see rule enforcement {enforcement}",
                     rule=rule.ref, id=instance["id"], enforcement=(enforcement or {}).get("id"))
            enforcements.append(enforcement)
        for rule in match.matched:
            enforcement, execution = await self._enforce(rule, claimed)
            enforcements.append(enforcement)
            if execution is not None:
                executions.append(execution)
        final = await self._store.update("triggerinstances", {"id": instance["id"]}, set={"status": PROCESSED})
        return Outcome(final or dict(claimed, status=PROCESSED), tuple(enforcements), tuple(executions))

    async def _enforce(self, rule: IndexedRule, instance: Dict[str, Any]) -> Tuple[Dict[str, Any], Optional[Dict[str, Any]]]:
        ruleDoc = rule.doc
        actionRef = (ruleDoc.get("action") or {}).get("ref")
        execId = executionIdFor(rule.id, instance["id"])
        execution: Optional[Dict[str, Any]] = None
        failure: Optional[str] = None
        try:
            execution = await self._startExecution(rule, ruleDoc, instance, execId)
        except Invalid as e:
            # With failOnError only an unknown action is refused outright.
            failure = f'Action "{actionRef}" doesn\'t exist' if "cannot be found" in e.faultstring else e.faultstring
        except DuplicateKey as e:
            if e.collection != "executions":
                raise
            execution = await self._store.get("executions", execId)
        except StoreError:
            raise
        except Exception as e:
            # One rule's failure is that rule's enforcement, not the
            # instance's (StackStorm catches them the same way).
            log.failure("Enforcing rule {rule} for trigger instance {instance} failed", rule=rule.ref, instance=instance["id"])
            failure = f"{type(e).__name__}: {e}"
        if execution is not None:
            failure = failedAtCreation(execution)
            log.info(
                "Rule {rule} matched trigger instance {instance}: execution {execution} of {action}",
                rule=rule.ref,
                instance=instance["id"],
                execution=execution["id"],
                action=actionRef,
            )
        enforcement = await self._writeEnforcement(rule, instance, execution["id"] if execution else None, failure)
        if execution is None:
            # the reason may quote rendered parameters: it is in the
            # enforcement, not in the log
            log.info("Rule {rule} matched trigger instance {instance} but failed; see rule enforcement {enforcement}",
                     rule=rule.ref, instance=instance["id"], enforcement=(enforcement or {}).get("id"))
        return enforcement, execution

    async def _startExecution(self, rule: IndexedRule, ruleDoc: Dict[str, Any], instance: Dict[str, Any], execId: str) -> Dict[str, Any]:
        action = ruleDoc.get("action") or {}
        trigger = self._index.trigger(instance["trigger"]) or {"ref": instance["trigger"]}
        triggerType = self._index.triggerType(trigger.get("type", "")) or {}
        context = {
            "trigger_instance": {"id": instance["id"], "name": None},
            "rule": {"id": rule.id, "name": rule.name},
            "user": self.systemUser,
        }
        embed = {
            "trigger": publicTrigger(trigger),
            "trigger_type": triggerType,
            "trigger_instance": dict(instance, status=PROCESSING),
            "rule": publicRule(ruleDoc),
        }
        return await self._executions.create(
            action.get("ref"),
            action.get("parameters") or {},
            context,
            self.systemUser,
            embed=embed,
            renderContext={"trigger": instance.get("payload")},
            failOnError=True,
            executionId=execId,
        )

    async def _writeEnforcement(self, rule: IndexedRule, instance: Mapping[str, Any], executionId: Optional[str], failure: Optional[str]) -> Dict[str, Any]:
        doc: Dict[str, Any] = {
            "id": newId(),
            "trigger_instance_id": instance["id"],
            "rule": {"ref": rule.ref, "id": rule.id, "uid": rule.uid},
            "enforced_at": isoformat(utcnow(self._clock)),
            "status": ENFORCEMENT_FAILED if failure else ENFORCEMENT_SUCCEEDED,
        }
        if executionId is not None:
            doc["execution_id"] = executionId
        if failure:
            doc["failure_reason"] = failure
        try:
            return await self._store.insert("ruleenforcements", doc)
        except DuplicateKey:
            existing = await self._store.findOne("ruleenforcements", {"rule.id": rule.id, "trigger_instance_id": instance["id"]})
            if existing is None:
                raise
            return existing


__all__ = [
    "ENFORCEMENT_FAILED",
    "ENFORCEMENT_SUCCEEDED",
    "Enforcer",
    "ExecutionRequester",
    "Match",
    "Outcome",
    "PENDING",
    "PROCESSED",
    "PROCESSING",
    "PROCESSING_FAILED",
    "executionIdFor",
    "failedAtCreation",
    "matchRules",
]
