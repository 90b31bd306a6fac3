"""
Tests for L{bwcd.rules.acceptance}: an accepted trigger instance is stored
once though the store's answer is lost, and one answered 503 never runs;
on the in-memory store with a fake clock, through the engine and the
webhook route.  And the take-over of a SIGKILLed node's instances by
another daemon sharing its MongoDB.
"""

from __future__ import annotations

import json
from typing import Any, Dict, List

from treq.testing import StubTreq
from twisted.internet.defer import ensureDeferred, fail, gatherResults
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase, TestCase

from bwcd.api.framework import Api
from bwcd.api.webhook_routes import installWebhookRoutes
from bwcd.auth.principal import Principal
from bwcd.execution.service import ExecutionService
from bwcd.packs.registrar import registerActions, registerRunnerTypes
from bwcd.rules.acceptance import DISCARDED, Unconfirmed, ambiguous, insertOnce
from bwcd.rules.engine import PENDING, PROCESSED, PROCESSING_FAILED, RulesEngine
from bwcd.rules.index import RuleIndex
from bwcd.rules.registry import prepareRule, saveRule
from bwcd.rules.triggers import ensureSystemTriggerTypes
from bwcd.store.interface import DuplicateKey, StoreUnavailable
from bwcd.testing import MemoryDatabase, MemoryStore
from tests.daemon import startDaemon
from tests.test_rules_engine import webhookPayload, webhookRule

DELAY = 0.25


class LostAnswers:
    """
    A store whose next C{lose} inserts reach the store but answer
    L{StoreUnavailable}, as when a connection drops after the server applied
    the write; with C{breakAfter}, the store then breaks down (the retries
    do not reach it) until repaired.
    """

    def __init__(self, inner: MemoryStore) -> None:
        self.inner = inner
        self.lose = 0
        self.breakAfter = False
        self.inserts: List[str] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def insert(self, collection: str, doc: Dict[str, Any]):
        if collection == "triggerinstances":
            self.inserts.append(doc["id"])
        d = self.inner.insert(collection, doc)
        if collection == "triggerinstances" and self.lose:
            self.lose -= 1
            d.addErrback(lambda f: None)
            if self.breakAfter:
                self.inner.breakDown("connection lost")
            return fail(StoreUnavailable("connection lost after the write"))
        return d


class World:
    """
    A store (behind L{LostAnswers}), an execution service, a rule index
    with one webhook rule, and an engine on one node, with a fake clock.
    """

    def __init__(self, testCase: SynchronousTestCase, clock: Clock, database: MemoryDatabase, node: str = "a", rule: bool = True) -> None:
        self.testCase = testCase
        self.clock = clock
        self.raw = MemoryStore(database)
        testCase.successResultOf(self.raw.start())
        self.store = LostAnswers(self.raw)
        self.run(registerRunnerTypes(self.raw))
        self.run(registerActions(self.raw, []))
        self.run(ensureSystemTriggerTypes(self.raw))
        self.executions = ExecutionService(self.store, clock, "http://127.0.0.1:9101")
        self.index = RuleIndex(self.store, clock)
        self.run(self.index.reload())
        if rule:
            self.rule = self.createRule(webhookRule())
        self.engine = RulesEngine(self.store, self.executions, self.index, clock, nodeId=lambda: node, insertDelay=DELAY)
        self.engine.start(recover=False)
        testCase.addCleanup(lambda: self.run(self.engine.stop()))

    def run(self, coroutine: Any) -> Any:
        return self.testCase.successResultOf(ensureDeferred(coroutine))

    def createRule(self, body: Dict[str, Any]) -> Dict[str, Any]:
        async def create() -> Dict[str, Any]:
            await self.index.lock()
            try:
                return await saveRule(self.store, self.index, await prepareRule(self.store, self.index, body, "tester"), None)
            finally:
                self.index.unlock()

        rule = self.run(create())
        self.run(self.index.publish())
        return rule

    def instance(self) -> Dict[str, Any]:
        return self.engine.newInstance(self.rule["trigger"]["ref"], webhookPayload({"key1": "value1"}))

    def stored(self, collection: str) -> List[Dict[str, Any]]:
        return list(self.raw.database.collections[collection].values())


class InsertOnceTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.store = MemoryStore()
        self.successResultOf(self.store.start())
        self.lost = LostAnswers(self.store)

    def test_lostAnswerIsStoredOnce(self) -> None:
        """
        An insert that reached the store but lost its answer is tried again
        with the same id, after the delay; the duplicate key it meets means
        it was stored.
        """
        self.lost.lose = 1
        doc = {"id": "0" * 24, "trigger": "t", "payload": {}, "occurrence_time": "x", "status": PENDING}
        d = ensureDeferred(insertOnce(self.lost, self.clock, "triggerinstances", doc, delay=DELAY))
        self.assertNoResult(d)
        self.clock.advance(DELAY)
        self.successResultOf(d)
        self.assertEqual(self.lost.inserts, [doc["id"], doc["id"]])
        self.assertEqual(len(self.store.database.collections["triggerinstances"]), 1)

    def test_backoffThenUnconfirmed(self) -> None:
        """
        Every attempt ambiguous: attempts wait DELAY, then twice as long,
        and the failure says the write is unconfirmed.
        """
        self.store.breakDown()
        doc = {"id": "1" * 24, "trigger": "t", "payload": {}, "occurrence_time": "x", "status": PENDING}
        d = ensureDeferred(insertOnce(self.store, self.clock, "triggerinstances", doc, attempts=3, delay=DELAY))
        self.assertEqual(self.store.operations.count("insert"), 1)
        self.clock.advance(DELAY)
        self.assertEqual(self.store.operations.count("insert"), 2)
        self.clock.advance(DELAY)
        self.assertNoResult(d)
        self.clock.advance(DELAY)
        self.assertEqual(self.store.operations.count("insert"), 3)
        self.assertTrue(ambiguous(self.failureResultOf(d, Unconfirmed).value))

    def test_definiteFailureIsNotRetried(self) -> None:
        """
        A failure that says the write certainly did not happen (C{definite},
        as a store known down refusing at once) is not tried again and is
        not ambiguous.
        """

        class Refused(StoreUnavailable):
            definite = True

        self.store.breakDown()
        self.store._broken = Refused("store is down")
        doc = {"id": "2" * 24, "trigger": "t", "payload": {}, "occurrence_time": "x", "status": PENDING}
        failure = self.failureResultOf(ensureDeferred(insertOnce(self.store, self.clock, "triggerinstances", doc, delay=DELAY)), Refused)
        self.assertFalse(ambiguous(failure.value))
        self.assertEqual(self.store.operations.count("insert"), 1)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_duplicateOnFirstAttemptIsAnError(self) -> None:
        """
        A duplicate id on the first attempt is not "stored by us": it fails.
        """
        doc = {"id": "3" * 24, "trigger": "t", "payload": {}, "occurrence_time": "x", "status": PENDING}
        self.successResultOf(self.store.insert("triggerinstances", doc))
        self.failureResultOf(ensureDeferred(insertOnce(self.store, self.clock, "triggerinstances", doc)), DuplicateKey)


class EngineAcceptanceTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(1_800_000_000)
        self.world = World(self, self.clock, MemoryDatabase())

    def test_lostAnswerOneInstanceOneExecution(self) -> None:
        """
        The engine accepts an instance whose first insert lost its answer:
        one instance, carrying this node, processed once, one execution.
        """
        w = self.world
        w.store.lose = 1
        instance = w.instance()
        d = ensureDeferred(w.engine.accept([instance]))
        self.clock.advance(DELAY)
        [done] = self.successResultOf(d)
        self.clock.advance(0)
        outcome = self.successResultOf(done)
        self.assertEqual(outcome.instance["status"], PROCESSED)
        [stored] = w.stored("triggerinstances")
        self.assertEqual((stored["id"], stored["node"], stored["status"]), (instance["id"], "a", PROCESSED))
        self.assertEqual(len(w.stored("executions")), 1)
        self.assertEqual(len(w.stored("ruleenforcements")), 1)

    def test_unconfirmedStoredInstanceNeverRuns(self) -> None:
        """
        The first insert reaches the store and loses its answer, then the
        store is down for every retry: accept fails (503), and once the
        store answers again the stored instance is marked failed, so that
        neither this node nor a restart runs it.
        """
        w = self.world
        w.store.lose = 1
        w.store.breakAfter = True
        instance = w.instance()
        d = ensureDeferred(w.engine.accept([instance]))
        self.clock.advance(DELAY)
        self.clock.advance(2 * DELAY)
        self.failureResultOf(d, Unconfirmed)
        self.assertEqual(w.engine.load, 0)
        self.assertIn(instance["id"], w.engine.discards)
        self.assertEqual(w.stored("triggerinstances")[0]["status"], PENDING)
        self.clock.advance(10)  # the store is still down: settling waits
        self.assertIn(instance["id"], w.engine.discards)
        w.raw.repair()
        self.clock.advance(30)
        self.successResultOf(w.engine.discards.whenSettled())
        [stored] = w.stored("triggerinstances")
        self.assertEqual((stored["status"], stored["failure_reason"]), (PROCESSING_FAILED, DISCARDED))
        w.run(w.engine.stop())
        w.engine.start(recover=True)
        self.assertEqual(self.successResultOf(w.engine._recovery), 0)
        self.assertEqual(w.stored("executions"), [])

    def test_unstoredInstanceTombstoned(self) -> None:
        """
        When no attempt reached the store, settling stores the instance
        already failed, so a late arrival of the first insert is refused.
        """
        w = self.world
        w.raw.breakDown()
        instance = w.instance()
        d = ensureDeferred(w.engine.accept([instance]))
        self.clock.advance(DELAY)
        self.clock.advance(2 * DELAY)
        self.failureResultOf(d, Unconfirmed)
        w.raw.repair()
        self.clock.advance(1)
        [stored] = w.stored("triggerinstances")
        self.assertEqual(stored["status"], PROCESSING_FAILED)
        self.failureResultOf(w.raw.insert("triggerinstances", instance), DuplicateKey)
        self.clock.advance(1)
        self.assertEqual(w.stored("executions"), [])

    def test_stopEndsSettling(self) -> None:
        """
        Stopping the engine stops settling, leaving no timer behind.
        """
        w = self.world
        w.raw.breakDown()
        d = ensureDeferred(w.engine.accept([w.instance()]))
        self.clock.advance(DELAY)
        self.clock.advance(2 * DELAY)
        self.failureResultOf(d, StoreUnavailable)
        self.assertEqual(len(w.engine.discards), 1)
        w.raw.repair()
        w.run(w.engine.stop())
        self.assertEqual(self.clock.getDelayedCalls(), [])


class WebhookAcceptanceTests(SynchronousTestCase):
    """
    Through the webhook route (treq's StubTreq, in memory).
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(1_800_000_000)
        self.world = World(self, self.clock, MemoryDatabase())

        async def authenticate(request) -> Principal:
            return Principal("tester", "apikey")

        api = Api(authenticate)
        api.ready = True
        w = self.world
        installWebhookRoutes(api, w.index, w.engine, w.executions, w.store, self.clock)
        self.stub = StubTreq(api.resource())

    def post(self, body: Any):
        d = self.stub.post(
            "http://bwcd.test/v1/webhooks/sample", data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
        )
        for _ in range(3):
            self.clock.advance(DELAY * 2)
            self.stub.flush()
        response = self.successResultOf(d)
        self.successResultOf(response.content())
        return response

    def test_lostAnswerIs202OnceRun(self) -> None:
        """
        A webhook whose instance insert reached the store but lost its
        answer is answered 202 with that instance, which runs once.
        """
        self.world.store.lose = 1
        response = self.post({"key1": "value1"})
        self.assertEqual(response.code, 202)
        [instanceId] = response.headers.getRawHeaders("X-BWC-Trigger-Instance")
        self.assertEqual(self.world.store.inserts, [instanceId, instanceId])
        [stored] = self.world.stored("triggerinstances")
        self.assertEqual((stored["id"], stored["status"]), (instanceId, PROCESSED))
        [execution] = self.world.stored("executions")
        self.assertEqual(execution["context"]["trigger_instance"]["id"], instanceId)

    def test_unconfirmedIs503AndNothingRuns(self) -> None:
        """
        When the retries cannot reach the store either, the answer is 503
        with Retry-After, and the instance that did reach the store is
        marked failed once the store is back, never run.
        """
        self.world.store.lose = 1
        self.world.store.breakAfter = True
        response = self.post({"key1": "value1"})
        self.assertEqual(response.code, 503)
        self.assertTrue(response.headers.getRawHeaders("Retry-After"))
        self.world.raw.repair()
        self.clock.advance(30)
        [stored] = self.world.stored("triggerinstances")
        self.assertEqual(stored["status"], PROCESSING_FAILED)
        self.assertEqual(self.world.stored("executions"), [])
        self.flushLoggedErrors(StoreUnavailable)


class DeadNodeTakeOverTests(TestCase):
    """
    Two real daemons on one MongoDB (SecantusDB or
    C{$BWCD_TEST_MONGODB_URL}): one is SIGKILLed right after answering a
    burst of webhooks, and the other processes what it left pending,
    without the first being restarted.
    """

    timeout = 120

    async def test_killedNodesInstancesRunOnTheOther(self):
        """
        Every webhook node a answered 202 ends with exactly one execution;
        those a left pending are taken over and run by b.
        """
        config = {"runner": {"node_timeout": 3.0, "kill_grace": 1.0}}
        a = await startDaemon(self, storage="mongodb", config=config)
        b = await startDaemon(self, storage=a.configData["storage"]["url"], config=config)
        since = b.linesLogged
        response, _ = await a.post("/v1/rules", dict(webhookRule(criteria={}), action={"ref": "core.local", "parameters": {"cmd": "echo {{ trigger.body.n }}"}}))
        self.assertEqual(response.code, 201)
        await b.logged(r"\bRule index loaded: 1 rules, 1 webhooks", since)

        async def send(n):
            response, _ = await a.post("/v1/webhooks/sample", {"n": n})
            return response.code, response.headers.getRawHeaders("X-BWC-Trigger-Instance")[0]

        since = b.linesLogged
        accepted = await gatherResults([ensureDeferred(send(n)) for n in range(50)])
        await a.kill()
        self.assertEqual({code for code, _ in accepted}, {202})
        # What the kill left: b takes nothing over before a's heartbeat is
        # stale, node_timeout after a's last one.
        leftover = set()
        for status in ("pending", "processing"):
            _, docs = await b.get(f"/v1/triggerinstances?status={status}&limit=-1")
            leftover.update(doc["id"] for doc in docs)
        self.assertGreater(len(leftover), 0, "the kill came after everything was processed; nothing was tested")
        self.assertLessEqual(leftover, {i for _, i in accepted})

        await b.logged(r"\bTook over \d+ trigger instances of dead nodes", since)
        for instanceId in sorted(leftover):
            [execId] = await b.ruleExecutions(instanceId, 1)
            self.assertIn((await b.waitFor(execId))["status"], ("succeeded", "failed"))
            _, instance = await b.get(f"/v1/triggerinstances/{instanceId}")
            self.assertEqual(instance["status"], "processed")
        _, executions = await b.get("/v1/executions?limit=-1")
        perInstance: Dict[str, int] = {}
        for execution in executions:
            instanceId = execution["context"]["trigger_instance"]["id"]
            perInstance[instanceId] = perInstance.get(instanceId, 0) + 1
        self.assertEqual(set(perInstance.values()), {1})
        self.assertLessEqual(leftover, set(perInstance))
