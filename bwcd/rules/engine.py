# -*- test-case-name: tests.test_rules_engine -*-
"""
The rules engine: admission of trigger instances, their queue, recovery of
unprocessed ones and the C{core.st2.generic.actiontrigger} of completed
executions.  What processing one instance does is
L{bwcd.rules.enforcement}.

An instance is stored (C{pending}) before its webhook is answered; the
engine then takes it from an in-memory queue.  Instances left C{pending} or
C{processing} by a process that died are processed again at start-up
(L{RulesEngine.recover}), so an accepted event is never lost.  An instance
nothing matched is stored already C{processed}: one store write per
unmatched event.

Every instance carries the C{node} that accepted it.  A node restarting
recovers its own (and those of no node); those of a node that died for
good are taken over by a live one (L{RulesEngine.takeOver}, called by
L{bwcd.execution.nodes.NodeWatch}): one conditional update moves each from
the dead node to this one, so only one live node gets it.  The claim
C{pending -> processing} is conditional on the node too, so a node that
was only paused finds its instance gone when it resumes.

An insert whose answer was lost is tried again with the same id
(L{bwcd.rules.acceptance}).

Admission: L{RulesEngine.admit} is the one gate new events pass.  It
refuses (with a L{bwcd.errors.Unavailable} kind, answered 503 with
Retry-After) when the engine is stopping, when the execution queue is full,
or when C{maxQueued} instances are already waiting or being processed in
this process.  It reserves a place before anything is stored, so an event
is either refused or durably stored and queued; never accepted and dropped.
When the store fails while an instance is processed the instance keeps its
place and is retried after C{retryDelay} seconds.
"""

from __future__ import annotations

import collections
from typing import Any, Callable, Deque, Dict, List, Optional, Sequence, Tuple

import attrs
from twisted.application.service import Service
from twisted.internet.defer import Deferred, DeferredList, ensureDeferred, gatherResults, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from bwcd.errors import Unavailable
from bwcd.rules.enforcement import (
    ENFORCEMENT_FAILED,
    ENFORCEMENT_SUCCEEDED,
    PENDING,
    PROCESSED,
    PROCESSING,
    PROCESSING_FAILED,
    Enforcer,
    ExecutionRequester,
    Match,
    Outcome,
    executionIdFor,
)
from bwcd.rules.acceptance import Discards, ambiguous, insertOnce
from bwcd.rules.actiontrigger import actionTriggerPayload
from bwcd.rules.index import RuleIndex
from bwcd.rules.recovery import Recovery
from bwcd.rules.triggers import ACTION_TRIGGER_TYPE
from bwcd.store.interface import DuplicateKey, IStore, StoreError, newId
from bwcd.timeutil import isoformat, utcnow

log = Logger(namespace="bwcd.rules.engine")


class Overloaded(Unavailable):
    """
    The engine's queue is full.
    """

    def __init__(self, faultstring: str = "Too many trigger instances are waiting to be processed; try again shortly.") -> None:
        super().__init__(faultstring, headers={"Retry-After": "1"})


class ShuttingDown(Unavailable):
    """
    The engine stopped before it processed the instance (which stays stored
    and is processed at the next start), or before it took it.
    """

    def __init__(self, faultstring: str = "bwcd is shutting down; try again shortly.") -> None:
        super().__init__(faultstring, headers={"Retry-After": "2"})


@attrs.define
class _Item:
    instance: Dict[str, Any]
    recovered: bool
    done: Deferred
    #: what it matched when accepted; None: match when processed
    match: Optional[Match] = None


class RulesEngine(Recovery, Service):
    """
    As a service: starting it starts processing (and the recovery of an
    earlier run's leftovers, in the background); stopping it lets the
    instances being processed finish.

    @param executions: where executions are requested, and the capacity of
        their queue checked.
    @param systemUser: C{context.user} of executions started by rules.
    @param maxQueued: most instances waiting or in processing at once.
    @param concurrency: most instances processed at once.
    @param retryDelay: seconds before an instance is retried after a store
        failure.
    @param emitActionTriggers: store a C{core.st2.generic.actiontrigger}
        instance for every completed execution (StackStorm does, by
        default).
    @param nodeId: this node's name, stored in the instances it accepts
        (None: instances carry no node, and recovery takes all).
    @param insertAttempts: attempts at storing an instance whose insert
        failed ambiguously, the first retry after C{insertDelay} seconds.
    """

    def __init__(
        self,
        store: IStore,
        executions: ExecutionRequester,
        index: RuleIndex,
        clock: IReactorTime,
        systemUser: str = "stanley",
        maxQueued: int = 10000,
        concurrency: int = 64,
        retryDelay: float = 2.0,
        emitActionTriggers: bool = True,
        nodeId: Optional[Callable[[], str]] = None,
        insertAttempts: int = 3,
        insertDelay: float = 0.25,
    ) -> None:
        self._nodeId = nodeId
        self._insertAttempts = insertAttempts
        self._insertDelay = insertDelay
        self.discards = Discards(store, clock)
        self._store = store
        self._executions = executions
        self._index = index
        self._clock = clock
        self._enforcer = Enforcer(store, executions, index, clock, systemUser)
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
        self._listening = False
        self._idle: List[Deferred] = []
        self._recovery: Optional[Deferred] = None

    @property
    def systemUser(self) -> str:
        return self._enforcer.systemUser

    # -- admission -----------------------------------------------------------

    @property
    def load(self) -> int:
        """
        Instances reserved, waiting, being retried or being processed.
        """
        return self._reserved + len(self._queue) + self._active + len(self._retrying)

    def admit(self, count: int = 1) -> None:
        """
        The admission gate for new events: reserve C{count} places, or
        refuse.

        @raise ShuttingDown: the engine is stopping.
        @raise bwcd.errors.Unavailable: the execution queue is full.
        @raise Overloaded: there are not that many free places.
        """
        if self._stopping or not self._running:
            raise ShuttingDown()
        self._executions.checkCapacity()
        self.reserve(count)

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
        instance = {
            "id": newId(),
            "trigger": triggerRef,
            "payload": payload if payload is not None else {},
            "occurrence_time": isoformat(utcnow(self._clock)),
            "status": PENDING,
        }
        if self._nodeId is not None:
            instance["node"] = self._nodeId()
        return instance

    def enqueue(self, instance: Dict[str, Any], reserved: bool = True, recovered: bool = False, match: Optional[Match] = None) -> Deferred:
        """
        Queue a stored instance; processing starts on a later turn of the
        reactor, never inside this call (so a webhook answer goes out
        first).

        @param reserved: a place was taken with L{reserve} for it.
        @param match: what it matched when accepted (None: match it when
            it is processed).
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
        self._queue.append(_Item(instance, recovered, done, match))
        self._scheduleDrain()
        return done

    async def accept(self, instances: Sequence[Dict[str, Any]], reserved: int = 0, bypassLimit: bool = False) -> List[Deferred]:
        """
        Durably store and queue new instances: the webhook path.

        Criteria are evaluated here, once: an event no rule wants is stored
        already processed, in one write; the others are queued with what
        they matched.

        @param reserved: places the caller already took (with L{admit});
            accept owns them from now on and reserves the others.
        @param bypassLimit: take no place (internal triggers, which the
            engine's own work produces and so cannot be refused without
            being lost).
        @raise Overloaded: no room; nothing was stored.
        @raise StoreError: they could not be stored; nothing is queued, and
            any that may have been stored are settled so that they never
            run (L{bwcd.rules.acceptance.Discards}).
        """
        matches = [self._enforcer.match(i) for i in instances]
        for instance, match in zip(instances, matches):
            if not match.wanted:
                instance["status"] = PROCESSED
            if self._nodeId is not None:
                instance.setdefault("node", self._nodeId())
        held = 0 if bypassLimit else len(instances)
        if bypassLimit and (self._stopping or not self._running):
            raise ShuttingDown()
        if held > reserved:
            try:
                self.reserve(held - reserved)
            except Unavailable:
                self.release(reserved)
                raise
        elif held < reserved:
            self.release(reserved - held)

        def insert(instance: Dict[str, Any]) -> Deferred:
            return ensureDeferred(insertOnce(self._store, self._clock, "triggerinstances", instance, self._insertAttempts, self._insertDelay))

        try:
            if len(instances) == 1:
                await insert(instances[0])
            else:
                await gatherResults([insert(i) for i in instances], consumeErrors=True)
        except BaseException as e:
            self.release(held)
            cause = getattr(e, "subFailure", None)
            error = cause.value if cause is not None else e
            if len(instances) > 1 or ambiguous(error):
                for instance in instances:
                    self.discards.add(instance)
            if cause is not None:
                cause.raiseException()
            raise
        outcomes: List[Deferred] = []
        for instance, match in zip(instances, matches):
            if match.wanted:
                outcomes.append(self.enqueue(instance, reserved=bool(held), match=match))
            else:
                self.release(1 if held else 0)
                outcomes.append(succeed(Outcome(instance)))
        return outcomes

    async def dispatch(self, triggerRef: str, payload: Any, bypassLimit: bool = False) -> Tuple[Dict[str, Any], Deferred]:
        """
        Store and queue one new instance of C{triggerRef} (see L{accept}).
        """
        instance = self.newInstance(triggerRef, payload)
        [done] = await self.accept([instance], bypassLimit=bypassLimit)
        return instance, done

    # -- the queue -------------------------------------------------------------

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
            outcome = await self._enforcer.process(item.instance, item.recovered, item.match)
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

    async def process(self, instance: Dict[str, Any], recovered: bool = False, match: Optional[Match] = None) -> Outcome:
        """
        Enforce the rules one stored instance matches (see
        L{Enforcer.process}).
        """
        return await self._enforcer.process(instance, recovered, match)

    # -- action trigger ------------------------------------------------------------

    def _executionCompleted(self, execution: Dict[str, Any]) -> None:
        if not self._emitActionTriggers or not self._running or self._stopping:
            return
        if self._index.trigger(ACTION_TRIGGER_TYPE) is None:
            return
        d = ensureDeferred(self.dispatch(ACTION_TRIGGER_TYPE, actionTriggerPayload(execution), bypassLimit=True))
        d.addErrback(lambda f: None if f.check(ShuttingDown) else log.failure("Could not emit {trigger} for execution {id}", f, trigger=ACTION_TRIGGER_TYPE, id=execution.get("id")))

    # -- service ---------------------------------------------------------------

    def startService(self) -> None:
        super().startService()
        self.start(recover=True)

    def stopService(self) -> Deferred:  # type: ignore[override]
        super().stopService()
        return ensureDeferred(self.stop())

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
        if not self._listening:
            self._listening = True
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
        self.discards.stop()
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
    "ENFORCEMENT_FAILED", "ENFORCEMENT_SUCCEEDED", "Match", "Outcome", "Overloaded", "PENDING", "PROCESSED", "PROCESSING",
    "PROCESSING_FAILED", "RulesEngine", "ShuttingDown", "actionTriggerPayload", "executionIdFor",
]
