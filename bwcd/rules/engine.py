# -*- test-case-name: tests.test_rules_engine -*-
"""
The rules engine: from a stored trigger instance to rule enforcements and
executions, exactly once.

Life of a trigger instance::

    pending --(no rule matched)----------------------------> processed
    pending --> processing --(enforcements written)--------> processed
                          \\--(unexpected error)-----------> processing_failed

An instance is stored (C{pending}) before its webhook is answered; the
engine then takes it from an in-memory queue.  Instances left C{pending} or
C{processing} by a process that died are processed again at start-up
(L{RulesEngine.recover}), so an accepted event is never lost.  Processing
twice must then never start an action twice, which is arranged like this:

  - the execution a rule starts for an instance has an id derived from
    (rule id, instance id) (L{executionIdFor}), and the store refuses a
    second document with the same id, so a second attempt (after a crash,
    or by another process recovering at the same moment) fails to insert
    and finds the execution the first attempt created instead;
  - the enforcement record is written after the execution, with a unique
    index on (rule id, instance id); a second attempt that finds it simply
    reads it.

A crash between the two writes leaves an execution without its enforcement;
reprocessing finds the execution by its id and writes the enforcement then.
Nothing here holds a lease, so this also holds when several processes share
one MongoDB and one of them recovers instances another is still working on.

The claim (C{pending} -> C{processing}) is a conditional update, so two
processes that both hold an instance in their queues process it once in the
normal case; the derived ids are what makes the rare overlap harmless.  An
instance nothing matched goes from C{pending} straight to C{processed} in
that one conditional write: one store write per unmatched event.

Backpressure: at most C{maxQueued} instances are waiting or being processed
in this process.  The webhook path reserves a place before it stores an
instance and answers 503 when there is none, so an event is either refused
or durably stored and queued; never accepted and dropped.  When the store
fails while an instance is processed the instance keeps its place and is
retried after C{retryDelay} seconds.
"""

from __future__ import annotations

import collections
import hashlib
import inspect
from typing import Any, Deque, Dict, List, Mapping, Optional, Sequence, Tuple

import attrs
from twisted.internet.defer import Deferred, DeferredList, ensureDeferred, gatherResults, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from bwcd.execution.service import ExecutionRequestError
from bwcd.rules.criteria import evaluate
from bwcd.rules.index import IndexedRule, RuleIndex
from bwcd.rules.model import publicRule
from bwcd.store.interface import DuplicateKey, IStore, StoreError, newId
from bwcd.timeutil import isoformat, parseIso, utcnow
from bwcd.rules.triggers import ACTION_TRIGGER_TYPE, publicTrigger

log = Logger(namespace="bwcd.rules.engine")

PENDING = "pending"
PROCESSING = "processing"
PROCESSED = "processed"
PROCESSING_FAILED = "processing_failed"

ENFORCEMENT_SUCCEEDED = "succeeded"
ENFORCEMENT_FAILED = "failed"


class Overloaded(Exception):
    """
    The engine's queue is full; the caller answers 503 with Retry-After.
    """


class ShuttingDown(Exception):
    """
    The engine stopped before it processed the instance (which stays stored
    and is processed at the next start).
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


def executionIdFor(ruleId: str, instanceId: str) -> str:
    """
    The id of the execution rule C{ruleId} starts for instance
    C{instanceId}: the instance id's ObjectId timestamp (so ids still sort
    roughly by time) and 16 hex digits of a hash of both ids.
    """
    digest = hashlib.sha1(f"{ruleId}:{instanceId}".encode("ascii", "replace")).hexdigest()
    return instanceId[:8] + digest[:16]


def actionTriggerPayload(execution: Mapping[str, Any]) -> Dict[str, Any]:
    """
    The payload of C{core.st2.generic.actiontrigger} for a completed
    execution (st2-api.md section 4), with StackStorm's Python-style
    C{start_timestamp}.
    """
    start = execution.get("start_timestamp")
    try:
        startText = str(parseIso(start)) if start else None
    except ValueError:
        startText = start
    action = execution.get("action") or {}
    ref = action.get("ref")
    return {
        "execution_id": execution.get("id"),
        "status": execution.get("status"),
        "start_timestamp": startText,
        "action_name": ref,
        "action_ref": ref,
        "runner_ref": (execution.get("runner") or {}).get("name") or action.get("runner_type"),
        "parameters": execution.get("parameters") or {},
        "result": execution.get("result") or {},
    }


def _failedAtCreation(execution: Mapping[str, Any]) -> Optional[str]:
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


@attrs.define
class _Item:
    instance: Dict[str, Any]
    recovered: bool
    done: Deferred


class RulesEngine:
    """
    @param executions: the L{bwcd.execution.service.ExecutionService}.
    @param systemUser: C{context.user} of executions started by rules.
    @param maxQueued: most instances waiting or in processing at once.
    @param concurrency: most instances processed at once.
    @param retryDelay: seconds before an instance is retried after a store
        failure.
    @param emitActionTriggers: store a C{core.st2.generic.actiontrigger}
        instance for every completed execution (StackStorm does, by
        default).
    """

    def __init__(
        self,
        store: IStore,
        executions: Any,
        index: RuleIndex,
        clock: IReactorTime,
        systemUser: str = "stanley",
        maxQueued: int = 10000,
        concurrency: int = 64,
        retryDelay: float = 2.0,
        emitActionTriggers: bool = True,
    ) -> None:
        self._store = store
        self._executions = executions
        self._index = index
        self._clock = clock
        self.systemUser = systemUser
        self.maxQueued = maxQueued
        self._concurrency = concurrency
        self._retryDelay = retryDelay
        self._emitActionTriggers = emitActionTriggers
        self._queue: Deque[_Item] = collections.deque()
        self._active = 0
        self._reserved = 0
        self._retrying: Dict[int, Tuple[_Item, Any]] = {}
        self._drainCall: Any = None
        self._running = False
        self._stopping = False
        self._idle: List[Deferred] = []
        self._recovery: Optional[Deferred] = None
        try:
            self._createTakesId = "executionId" in inspect.signature(executions.create).parameters
        except (TypeError, ValueError):
            self._createTakesId = False

    # -- queue ---------------------------------------------------------------

    @property
    def load(self) -> int:
        """
        Instances reserved, waiting, being retried or being processed.
        """
        return self._reserved + len(self._queue) + self._active + len(self._retrying)

    def reserve(self, count: int = 1) -> None:
        """
        Take C{count} places in the queue before storing instances.

        @raise Overloaded: there are not that many free places.
        @raise ShuttingDown: the engine is stopping.
        """
        if self._stopping or not self._running:
            raise ShuttingDown()
        if self.load + count > self.maxQueued:
            raise Overloaded()
        self._reserved += count

    def release(self, count: int = 1) -> None:
        """
        Give back places reserved for instances that were not stored.
        """
        self._reserved = max(0, self._reserved - count)

    def newInstance(self, triggerRef: str, payload: Any) -> Dict[str, Any]:
        """
        A trigger instance document for an event happening now.
        """
        return {
            "id": newId(),
            "trigger": triggerRef,
            "payload": payload if payload is not None else {},
            "occurrence_time": isoformat(utcnow(self._clock)),
            "status": PENDING,
        }

    def enqueue(self, instance: Dict[str, Any], reserved: bool = True, recovered: bool = False) -> Deferred:
        """
        Queue a stored instance; processing starts on a later turn of the
        reactor, never inside this call (so a webhook answer goes out
        first).

        @param reserved: a place was taken with L{reserve} for it.
        @return: a Deferred firing with the L{Outcome}, or with None when
            the engine stopped first (the instance stays stored and is
            processed at the next start).  It never fails, so callers that
            do not care about the outcome may drop it.
        """
        if reserved:
            self.release()
        done: Deferred = Deferred()
        if self._stopping:
            done.callback(None)
            return done
        self._queue.append(_Item(instance, recovered, done))
        self._scheduleDrain()
        return done

    async def accept(self, instances: Sequence[Dict[str, Any]]) -> List[Deferred]:
        """
        Reserve places for, durably store and queue new instances: the
        webhook path.

        @raise Overloaded: no room; nothing was stored.
        @raise StoreError: they could not be stored; nothing is queued and
            any partly stored ones are deleted again (best effort; one left
            behind is processed at the next start).
        """
        # An event that no rule wants (no rule for its trigger, or none whose
        # criteria match or fail) is settled before it is stored: it is
        # written once, already processed, instead of written pending and
        # then updated.  Criteria are pure and in memory, so this costs
        # microseconds; anything a rule wants goes through the queue.
        settled = [self._wantedByNoRule(i) for i in instances]
        for instance, done in zip(instances, settled):
            if done:
                instance["status"] = PROCESSED
        self.reserve(len(instances))
        try:
            if len(instances) == 1:
                await self._store.insert("triggerinstances", instances[0])
            else:
                await gatherResults([self._store.insert("triggerinstances", i) for i in instances], consumeErrors=True)
        except BaseException as e:
            self.release(len(instances))
            if len(instances) > 1:
                for instance in instances:
                    try:
                        await self._store.deleteOne("triggerinstances", instance["id"])
                    except StoreError:
                        pass
            cause = getattr(e, "subFailure", None)
            if cause is not None:
                cause.raiseException()
            raise
        outcomes: List[Deferred] = []
        for instance, done in zip(instances, settled):
            if done:
                self.release()
                outcomes.append(succeed(Outcome(instance)))
            else:
                outcomes.append(self.enqueue(instance))
        return outcomes

    def _wantedByNoRule(self, instance: Mapping[str, Any]) -> bool:
        ruleSet = self._index.rulesFor(instance["trigger"])
        for rules in (ruleSet.standard, ruleSet.backstop):
            if rules:
                matched, failed = self._match(rules, instance)
                if matched or failed:
                    return False
        return True

    async def dispatch(self, triggerRef: str, payload: Any, bypassLimit: bool = False) -> Tuple[Dict[str, Any], Deferred]:
        """
        Store and queue one new instance of C{triggerRef}.

        @param bypassLimit: queue even when the queue is full (internal
            triggers, which the engine's own work produces and so cannot be
            refused without being lost).
        """
        instance = self.newInstance(triggerRef, payload)
        if bypassLimit:
            if self._stopping or not self._running:
                raise ShuttingDown()
            await self._store.insert("triggerinstances", instance)
            return instance, self.enqueue(instance, reserved=False)
        [done] = await self.accept([instance])
        return instance, done

    def _scheduleDrain(self) -> None:
        if self._drainCall is None and self._running:
            self._drainCall = self._clock.callLater(0, self._drain)

    def _drain(self) -> None:
        self._drainCall = None
        while self._queue and self._active < self._concurrency and not self._stopping:
            item = self._queue.popleft()
            self._active += 1
            d = ensureDeferred(self._run(item))
            d.addBoth(self._finished)

    def _finished(self, result: Any) -> None:
        self._active -= 1
        if self._queue:
            self._scheduleDrain()
        if self._active == 0 and not self._queue and not self._retrying:
            idle, self._idle = self._idle, []
            for d in idle:
                d.callback(None)

    async def _run(self, item: _Item) -> None:
        try:
            outcome = await self.process(item.instance, item.recovered)
        except StoreError as e:
            if isinstance(e, DuplicateKey):
                log.failure("Unexpected duplicate key processing trigger instance {id}", id=item.instance["id"])
                await self._markFailed(item)
                return
            log.warn(
                "Storage failed while processing trigger instance {id} ({error}); retrying in {delay}s",
                id=item.instance["id"],
                error=str(e),
                delay=self._retryDelay,
            )
            self._retry(item)
            return
        except Exception:
            log.failure("Processing trigger instance {id} failed", id=item.instance["id"])
            await self._markFailed(item)
            return
        item.done.callback(outcome)

    async def _markFailed(self, item: _Item) -> None:
        try:
            updated = await self._store.update("triggerinstances", {"id": item.instance["id"]}, set={"status": PROCESSING_FAILED})
        except StoreError:
            updated = None
        item.done.callback(Outcome(updated or dict(item.instance, status=PROCESSING_FAILED)))

    def _retry(self, item: _Item) -> None:
        key = id(item)

        def again() -> None:
            self._retrying.pop(key, None)
            if self._stopping:
                item.done.callback(None)
                return
            item.recovered = True
            self._queue.appendleft(item)
            self._scheduleDrain()

        self._retrying[key] = (item, self._clock.callLater(self._retryDelay, again))

    # -- processing ------------------------------------------------------------

    def _match(self, rules: Sequence[IndexedRule], instance: Mapping[str, Any]) -> Tuple[List[IndexedRule], List[Tuple[IndexedRule, str]]]:
        matched: List[IndexedRule] = []
        failed: List[Tuple[IndexedRule, str]] = []
        payload = instance.get("payload")
        for rule in rules:
            result = evaluate(rule.ref, instance["id"], rule.criteria, payload, now=self._clock.seconds)
            if result.matched:
                matched.append(rule)
            elif result.failure_reason:
                failed.append((rule, result.failure_reason))
        return matched, failed

    async def process(self, instance: Dict[str, Any], recovered: bool = False) -> Outcome:
        """
        Match one stored instance against its trigger's enabled rules and
        enforce the matches.

        @param recovered: the instance may already be C{processing} (left by
            a process that died, or a retry), not only C{pending}.
        """
        ruleSet = self._index.rulesFor(instance["trigger"])
        matched, failed = self._match(ruleSet.standard, instance)
        if not matched and ruleSet.backstop:
            backstopMatched, backstopFailed = self._match(ruleSet.backstop, instance)
            matched.extend(backstopMatched)
            failed.extend(backstopFailed)
        claimable = {"$in": [PENDING, PROCESSING]} if recovered else PENDING
        if not matched and not failed:
            updated = await self._store.update("triggerinstances", {"id": instance["id"], "status": claimable}, set={"status": PROCESSED})
            return Outcome(updated or instance)
        claimed = await self._store.update("triggerinstances", {"id": instance["id"], "status": claimable}, set={"status": PROCESSING})
        if claimed is None:
            # Another process took it (or it was finished already).
            current = await self._store.get("triggerinstances", instance["id"])
            return Outcome(current or instance)
        enforcements: List[Dict[str, Any]] = []
        executions: List[Dict[str, Any]] = []
        for rule, reason in failed:
            log.info("Rule {rule} failed to match trigger instance {id}: {reason}", rule=rule.ref, id=instance["id"], reason=reason)
            enforcements.append(await self._writeEnforcement(rule, claimed, None, reason))
        for rule in matched:
            enforcement, execution = await self._enforce(rule, claimed, recovered)
            enforcements.append(enforcement)
            if execution is not None:
                executions.append(execution)
        final = await self._store.update("triggerinstances", {"id": instance["id"]}, set={"status": PROCESSED})
        return Outcome(final or dict(claimed, status=PROCESSED), tuple(enforcements), tuple(executions))

    async def _enforce(self, rule: IndexedRule, instance: Dict[str, Any], recovered: bool) -> Tuple[Dict[str, Any], Optional[Dict[str, Any]]]:
        ruleDoc = rule.doc
        actionRef = (ruleDoc.get("action") or {}).get("ref")
        execId = executionIdFor(rule.id, instance["id"])
        execution: Optional[Dict[str, Any]] = None
        failure: Optional[str] = None
        try:
            execution = await self._startExecution(rule, ruleDoc, instance, execId, recovered)
        except ExecutionRequestError as e:
            # With failOnError only an unknown action is refused outright.
            failure = f'Action "{actionRef}" doesn\'t exist' if "cannot be found" in str(e) else str(e)
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
            failure = _failedAtCreation(execution)
            log.info(
                "Rule {rule} matched trigger instance {instance}: execution {execution} of {action}",
                rule=rule.ref,
                instance=instance["id"],
                execution=execution["id"],
                action=actionRef,
            )
        else:
            log.info("Rule {rule} matched trigger instance {instance} but failed: {reason}", rule=rule.ref, instance=instance["id"], reason=failure)
        enforcement = await self._writeEnforcement(rule, instance, execution["id"] if execution else None, failure)
        return enforcement, execution

    async def _startExecution(self, rule: IndexedRule, ruleDoc: Dict[str, Any], instance: Dict[str, Any], execId: str, recovered: bool) -> Dict[str, Any]:
        action = ruleDoc.get("action") or {}
        if not self._createTakesId and recovered:
            # Without caller-chosen ids, look for what an earlier attempt
            # started before starting anything.
            existing = await self._store.findOne("executions", {"context.trigger_instance.id": instance["id"], "context.rule.id": rule.id})
            if existing is not None:
                return existing
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
        kwargs: Dict[str, Any] = {
            "embed": embed,
            "renderContext": {"trigger": instance.get("payload")},
            "failOnError": True,
        }
        if self._createTakesId:
            kwargs["executionId"] = execId
        return await self._executions.create(action.get("ref"), action.get("parameters") or {}, context, self.systemUser, **kwargs)

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

    # -- recovery --------------------------------------------------------------

    async def recover(self, pageSize: int = 200) -> int:
        """
        Process instances left C{pending} or C{processing} by an earlier
        run, oldest first, a page at a time (so that a long backlog does not
        fill the queue new webhooks need).

        @return: how many were processed.
        """
        before = isoformat(utcnow(self._clock))
        attempted: set = set()
        total = 0
        while self._running and not self._stopping:
            page = await self._store.find(
                "triggerinstances",
                {"status": {"$in": [PENDING, PROCESSING]}, "occurrence_time": {"$lte": before}},
                sort=[("occurrence_time", 1), ("id", 1)],
                limit=pageSize,
            )
            fresh = [doc for doc in page if doc["id"] not in attempted]
            if not fresh:
                break
            if total == 0:
                log.info("Recovering trigger instances left unprocessed by an earlier run")
            attempted.update(doc["id"] for doc in fresh)
            waits = [self.enqueue(doc, reserved=False, recovered=True) for doc in fresh]
            results = await DeferredList(waits, consumeErrors=True)
            total += sum(1 for ok, outcome in results if ok and outcome is not None)
        if total:
            log.info("Recovered {count} trigger instances", count=total)
        return total

    # -- action trigger ------------------------------------------------------------

    def _executionCompleted(self, execution: Dict[str, Any]) -> None:
        if not self._emitActionTriggers or not self._running or self._stopping:
            return
        if self._index.trigger(ACTION_TRIGGER_TYPE) is None:
            return
        payload = actionTriggerPayload(execution)
        ruleSet = self._index.rulesFor(ACTION_TRIGGER_TYPE)
        if ruleSet.standard or ruleSet.backstop:
            d = ensureDeferred(self.dispatch(ACTION_TRIGGER_TYPE, payload, bypassLimit=True))
        else:
            # No rule to run: the instance is recorded as processed at once,
            # one write instead of an insert and a status update.
            instance = self.newInstance(ACTION_TRIGGER_TYPE, payload)
            instance["status"] = PROCESSED
            d = self._store.insert("triggerinstances", instance)
        d.addErrback(lambda f: None if f.check(ShuttingDown) else log.failure("Could not emit {trigger} for execution {id}", f, trigger=ACTION_TRIGGER_TYPE, id=execution.get("id")))

    # -- service ---------------------------------------------------------------

    def start(self, recover: bool = True) -> Optional[Deferred]:
        """
        Start processing; with C{recover}, process leftovers of an earlier
        run in the background.

        @return: the recovery's Deferred (fires with the count), or None.
        """
        if self._running:
            return self._recovery
        self._running = True
        self._stopping = False
        self._executions.addCompletionListener(self._executionCompleted)
        if self._queue:
            self._scheduleDrain()
        if recover:
            self._recovery = ensureDeferred(self.recover())
            self._recovery.addErrback(self._recoveryFailed)
        return self._recovery

    def _recoveryFailed(self, failure: Any) -> int:
        if self._stopping and failure.check(StoreError):
            log.info("Recovery of unprocessed trigger instances interrupted by shutdown: {error}", error=failure.getErrorMessage())
        else:
            log.failure("Recovering unprocessed trigger instances failed; they are retried at the next start", failure)
        return 0

    async def stop(self, timeout: float = 10.0) -> None:
        """
        Stop taking work, let instances being processed finish (up to
        C{timeout} seconds) and drop the queue: queued instances are stored
        as C{pending} and processed at the next start.
        """
        if not self._running:
            return
        self._stopping = True
        if self._drainCall is not None and self._drainCall.active():
            self._drainCall.cancel()
        self._drainCall = None
        for item, call in list(self._retrying.values()):
            if call.active():
                call.cancel()
            item.done.callback(None)
        self._retrying.clear()
        while self._queue:
            self._queue.popleft().done.callback(None)
        waits: List[Deferred] = []
        if self._recovery is not None and not self._recovery.called:
            # It ends after its current page, whose queued part was just
            # dropped.
            waits.append(self._recovery)
        if self._active:
            idle: Deferred = Deferred()
            self._idle.append(idle)
            waits.append(idle)
        if waits:
            done: Deferred = Deferred()
            timer = self._clock.callLater(timeout, lambda: done.called or done.callback(None))
            DeferredList(waits).addBoth(lambda _: done.called or done.callback(None))
            await done
            if timer.active():
                timer.cancel()
        self._running = False

    def whenIdle(self) -> Deferred:
        """
        Fire when nothing is queued or being processed (for tests and
        graceful shutdown).
        """
        d: Deferred = Deferred()
        if self._active == 0 and not self._queue and not self._retrying and self._drainCall is None:
            d.callback(None)
        else:
            self._idle.append(d)
        return d


__all__ = [
    "ENFORCEMENT_FAILED",
    "ENFORCEMENT_SUCCEEDED",
    "Outcome",
    "Overloaded",
    "PENDING",
    "PROCESSED",
    "PROCESSING",
    "PROCESSING_FAILED",
    "RulesEngine",
    "ShuttingDown",
    "actionTriggerPayload",
    "executionIdFor",
]
