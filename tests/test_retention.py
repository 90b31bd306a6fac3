"""
Tests for L{bwcd.retention}: purging documents past their TTL, in batches,
one process at a time, never an unfinished execution or an unprocessed
trigger instance.
"""

from __future__ import annotations

import os
from datetime import datetime, timedelta, timezone
from typing import Any, Dict, List

from twisted.internet import reactor
from twisted.internet.defer import ensureDeferred
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase, TestCase

from bwcd.config import parseConfig
from bwcd.retention import LEASE_NAME, LEASE_SECONDS, Purger, RetentionService, cutoffs
from bwcd.store.sqlite import SQLiteStore
from bwcd.store.url import openStore
from bwcd.testing import MemoryDatabase, MemoryStore
from bwcd.timeutil import isoformat
from tests.daemon import startDaemon
from tests.mongoserver import mongoURL

NOW = datetime(2026, 12, 3, 12, 0, 0, tzinfo=timezone.utc)
ALL_TTLS = {"executions": 30, "execution_output": 7, "trigger_instances": 30, "rule_enforcements": 30}


def clockAt(when: datetime = NOW) -> Clock:
    clock = Clock()
    clock.advance(when.timestamp())
    return clock


def daysAgo(days: float) -> str:
    return isoformat(NOW - timedelta(days=days))


def seedDocuments(days: float, tag: str) -> Dict[str, List[dict]]:
    """
    One document of each kind and state, C{days} old: completed and
    unfinished executions with output rows, processed and pending trigger
    instances, an enforcement.
    """
    ts = daysAgo(days)
    docs: Dict[str, List[dict]] = {"executions": [], "execution_output": [], "triggerinstances": [], "ruleenforcements": []}
    for status in ("succeeded", "failed", "running", "requested", "scheduled"):
        execId = f"{tag}-{status}"
        doc = {"id": execId, "status": status, "start_timestamp": ts}
        if status in ("succeeded", "failed"):
            doc["end_timestamp"] = ts
        docs["executions"].append(doc)
        for seq in (1, 2):
            docs["execution_output"].append({"id": f"{execId}-out{seq}", "execution_id": execId, "seq": seq, "timestamp": ts, "data": "x"})
    for status in ("processed", "processing_failed", "pending", "processing"):
        docs["triggerinstances"].append({"id": f"{tag}-ti-{status}", "status": status, "occurrence_time": ts, "trigger": "t"})
    docs["ruleenforcements"].append(
        {"id": f"{tag}-enf", "enforced_at": ts, "rule": {"id": "r", "ref": "p.r"}, "trigger_instance_id": f"{tag}-ti-processed"}
    )
    return docs


async def insertAll(store: Any, docs: Dict[str, List[dict]]) -> None:
    for collection, items in docs.items():
        for doc in items:
            await store.insert(collection, doc)


async def remaining(store: Any) -> Dict[str, List[str]]:
    found = {}
    for collection in ("executions", "execution_output", "triggerinstances", "ruleenforcements"):
        found[collection] = sorted(d["id"] for d in await store.find(collection, {}))
    return found


#: what survives a purge with ALL_TTLS of seedDocuments(60, "old") and
#: seedDocuments(1, "new"): everything new, and the old unfinished
#: executions with their output and the old unprocessed instances
SURVIVORS = {
    "executions": sorted(
        [f"new-{s}" for s in ("succeeded", "failed", "running", "requested", "scheduled")]
        + [f"old-{s}" for s in ("running", "requested", "scheduled")]
    ),
    "execution_output": sorted(
        [f"new-{s}-out{n}" for s in ("succeeded", "failed", "running", "requested", "scheduled") for n in (1, 2)]
        + [f"old-{s}-out{n}" for s in ("running", "requested", "scheduled") for n in (1, 2)]
    ),
    "triggerinstances": sorted(
        [f"new-ti-{s}" for s in ("processed", "processing_failed", "pending", "processing")] + ["old-ti-pending", "old-ti-processing"]
    ),
    "ruleenforcements": ["new-enf"],
}


def drive(testCase: SynchronousTestCase, clock: Clock, d: Any, step: float = 1.0) -> Any:
    """
    Advance C{clock} until C{d} fires (the purge pauses between batches);
    its result.
    """
    for _ in range(10000):
        if d.called:
            break
        clock.advance(step)
    return testCase.successResultOf(d)


class PurgerTests(SynchronousTestCase):
    """
    L{Purger} over a L{MemoryStore}.
    """

    def setUp(self) -> None:
        self.clock = clockAt()
        self.store = MemoryStore()
        self.store.start()
        self.successResultOf(ensureDeferred(insertAll(self.store, seedDocuments(60, "old"))))
        self.successResultOf(ensureDeferred(insertAll(self.store, seedDocuments(1, "new"))))

    def purge(self, ttls: Dict[str, int], purger: Any = None, batchSize: int = 100) -> Any:
        purger = purger or Purger(self.store, self.clock, batchSize=batchSize, pause=0.5)
        return drive(self, self.clock, ensureDeferred(purger.run(cutoffs(ttls, NOW))))

    def test_purgesOldKeepsNewAndUnfinished(self) -> None:
        """
        Everything older than its TTL goes, except unfinished executions
        (and their output) and unprocessed instances; nothing newer goes;
        an execution's output goes with it.
        """
        counts = self.purge(ALL_TTLS)
        self.assertEqual(self.successResultOf(ensureDeferred(remaining(self.store))), SURVIVORS)
        self.assertEqual(counts, {"executions": 2, "execution_output": 4, "trigger_instances": 2, "rule_enforcements": 1})

    def test_nothingConfigured(self) -> None:
        """
        With no TTL set (the default) nothing is read or deleted, and the
        lease is not even taken.
        """
        before = self.successResultOf(ensureDeferred(remaining(self.store)))
        self.store.operations.clear()
        self.assertEqual(self.purge({k: 0 for k in ALL_TTLS}), {})
        self.assertEqual(self.store.operations, [])
        self.assertEqual(self.successResultOf(ensureDeferred(remaining(self.store))), before)

    def test_executionsTakeTheirOutput(self) -> None:
        """
        With only the executions TTL, the output rows of the purged
        executions are deleted and no other output is.
        """
        counts = self.purge({"executions": 30})
        left = self.successResultOf(ensureDeferred(remaining(self.store)))["execution_output"]
        self.assertEqual(counts, {"executions": 2, "execution_output": 4})
        self.assertNotIn("old-succeeded-out1", left)
        self.assertIn("old-running-out1", left)
        self.assertEqual(len(left), 16)

    def test_outputOfUnfinishedStepsOver(self) -> None:
        """
        With a batch size of 1, old output rows of unfinished executions,
        which sort first, are stepped over so the run still ends and still
        deletes the rows after them.
        """
        for n in range(5):
            self.successResultOf(self.store.insert("execution_output", {"id": f"zz{n}", "execution_id": "old-succeeded", "timestamp": daysAgo(50)}))
        counts = self.purge({"execution_output": 7}, batchSize=1)
        left = self.successResultOf(ensureDeferred(remaining(self.store)))["execution_output"]
        self.assertEqual(counts, {"execution_output": 9})
        self.assertEqual([i for i in left if i.startswith(("old", "zz"))], sorted(f"old-{s}-out{n}" for s in ("running", "requested", "scheduled") for n in (1, 2)))

    def test_batches(self) -> None:
        """
        25 old enforcements with a batch size of 10 are found and deleted in
        three batches, the clock (the reactor) given back between them.
        """
        for n in range(24):
            self.successResultOf(self.store.insert("ruleenforcements", {"id": f"e{n:02}", "enforced_at": daysAgo(40), "rule": {"id": f"r{n}"}, "trigger_instance_id": "x"}))
        self.store.operations.clear()
        purger = Purger(self.store, self.clock, batchSize=10, pause=0.5)
        d = ensureDeferred(purger.run(cutoffs({"rule_enforcements": 30}, NOW)))
        self.assertEqual(self.store.operations.count("delete"), 1)  # waits after the first batch
        counts = drive(self, self.clock, d)
        self.assertEqual(counts, {"rule_enforcements": 25})
        self.assertEqual(self.store.operations.count("delete"), 3)
        self.assertEqual(self.store.operations.count("find"), 3)

    def test_leaseOneAtATime(self) -> None:
        """
        Two purgers on one database (two processes): while one is between
        batches the other skips its run (C{None}); once the first is done
        the second gets the lease.
        """
        for n in range(30):
            self.successResultOf(self.store.insert("ruleenforcements", {"id": f"e{n:02}", "enforced_at": daysAgo(40), "rule": {"id": f"r{n}"}, "trigger_instance_id": "x"}))
        other = MemoryStore(self.store.database)
        other.start()
        first = Purger(self.store, self.clock, batchSize=10, pause=0.5)
        second = Purger(other, self.clock, batchSize=10, pause=0.5)
        d1 = ensureDeferred(first.run(cutoffs({"rule_enforcements": 30}, NOW)))
        self.assertFalse(d1.called)
        self.assertIsNone(self.successResultOf(ensureDeferred(second.run(cutoffs({"rule_enforcements": 30}, NOW)))))
        self.assertEqual(drive(self, self.clock, d1), {"rule_enforcements": 31})
        self.assertEqual(self.successResultOf(ensureDeferred(second.run(cutoffs({"rule_enforcements": 30}, NOW)))), {"rule_enforcements": 0})

    def test_expiredLeaseTakenOver(self) -> None:
        """
        A holder that died keeps the lease only until it expires; a purger
        that loses its lease stops after the current batch.
        """
        dead = Purger(self.store, self.clock)
        self.assertTrue(self.successResultOf(ensureDeferred(dead.claim())))
        other = Purger(MemoryStore(self.store.database), self.clock)
        other._store.start()
        self.assertFalse(self.successResultOf(ensureDeferred(other.claim())))
        self.clock.advance(LEASE_SECONDS + 1)
        self.assertTrue(self.successResultOf(ensureDeferred(other.claim())))
        (lease,) = self.store.database.collections["kv"].values()
        self.assertEqual((lease["name"], lease["value"]["holder"]), (LEASE_NAME, other.holder))
        # the old holder, back, has lost it: its run stops before deleting
        self.store.operations.clear()
        self.assertIsNone(self.successResultOf(ensureDeferred(dead.run(cutoffs({"rule_enforcements": 30}, NOW)))))
        self.assertNotIn("delete", self.store.operations)

    def test_storeDownDuringPurge(self) -> None:
        """
        A store failure ends the run with the error (the service logs it
        and tries again at the next interval).
        """
        self.store.breakDown()
        d = ensureDeferred(Purger(self.store, self.clock).run(cutoffs(ALL_TTLS, NOW)))
        self.failureResultOf(d)


class RetentionServiceTests(SynchronousTestCase):
    """
    L{RetentionService}: a purge at start and every interval; a stop ends
    the run after its current batch.
    """

    def test_periodic(self) -> None:
        """
        Documents that age past the TTL between runs go at the next run.
        """
        clock = clockAt()
        store = MemoryStore()
        store.start()
        self.successResultOf(ensureDeferred(insertAll(store, seedDocuments(60, "old"))))
        self.successResultOf(ensureDeferred(insertAll(store, seedDocuments(1, "new"))))
        service = RetentionService(store, clock, ALL_TTLS, interval=86400, batchSize=100, pause=0)
        service.startService()
        clock.advance(0)
        self.assertEqual(self.successResultOf(ensureDeferred(remaining(store))), SURVIVORS)
        self.assertIn("new-enf", self.successResultOf(ensureDeferred(remaining(store)))["ruleenforcements"])
        clock.advance(30 * 86400)
        clock.advance(0)
        self.assertEqual(self.successResultOf(ensureDeferred(remaining(store)))["ruleenforcements"], [])
        self.successResultOf(service.stopService())

    def test_disabled(self) -> None:
        """
        Without TTLs the service never touches the store.
        """
        clock = clockAt()
        store = MemoryStore()
        store.start()
        service = RetentionService(store, clock, {k: 0 for k in ALL_TTLS})
        service.startService()
        clock.advance(7 * 86400)
        self.assertEqual(store.operations, [])
        self.successResultOf(service.stopService())

    def test_stopBetweenBatches(self) -> None:
        """
        Stopping during a run fires once the current batch is done, without
        further deletes, and gives the lease back.
        """
        clock = clockAt()
        store = MemoryStore()
        store.start()
        for n in range(30):
            store.insert("ruleenforcements", {"id": f"e{n:02}", "enforced_at": daysAgo(40), "rule": {"id": f"r{n}"}, "trigger_instance_id": "x"})
        service = RetentionService(store, clock, {"rule_enforcements": 30}, batchSize=10, pause=1)
        service.startService()
        self.assertEqual(store.operations.count("delete"), 1)
        stopped = service.stopService()
        self.assertFalse(stopped.called)
        clock.advance(1)
        self.successResultOf(stopped)
        self.assertEqual(store.operations.count("delete"), 1)
        self.assertEqual(len(store.database.collections["ruleenforcements"]), 20)
        other = Purger(MemoryStore(store.database), clock)
        other._store.start()
        self.assertTrue(self.successResultOf(ensureDeferred(other.claim())))

    def test_config(self) -> None:
        """
        The C{retention} section: days per kind (0 by default), and
        negative TTLs or a zero batch are refused.
        """
        config = parseConfig({"retention": {"executions": 30, "batch_size": 5}}, environ={})
        self.assertEqual((config.retention.executions, config.retention.trigger_instances, config.retention.batch_size), (30, 0, 5))
        self.assertEqual(parseConfig({}, environ={}).retention.execution_output, 0)
        from bwcd.config import ConfigError

        for bad in ({"executions": -1}, {"batch_size": 0}, {"pause": -1}, {"interval": 0}):
            self.assertRaises(ConfigError, parseConfig, {"retention": bad}, None, {})


class RealStoreMixin:
    """
    The purge over a real backend.
    """

    async def makeStore(self) -> Any:
        raise NotImplementedError

    async def test_purge(self) -> None:
        """
        The same survivors as with the memory store, in batches of 3 with
        the output of purged executions going with them; a second run
        deletes nothing.
        """
        store = await self.makeStore()
        await insertAll(store, seedDocuments(60, "old"))
        await insertAll(store, seedDocuments(1, "new"))
        purger = Purger(store, reactor, batchSize=3, pause=0)
        now = datetime.now(timezone.utc)
        # the seeds are dated from NOW; shift the TTLs to today's date
        shift = (now - NOW).days
        ttls = {k: v + shift for k, v in ALL_TTLS.items()}
        counts = await purger.run(cutoffs(ttls, now))
        self.assertEqual(counts, {"executions": 2, "execution_output": 4, "trigger_instances": 2, "rule_enforcements": 1})
        self.assertEqual(await remaining(store), SURVIVORS)
        self.assertEqual(await purger.run(cutoffs(ttls, now)), {k: 0 for k in counts})


class SQLitePurgeTests(RealStoreMixin, TestCase):
    async def makeStore(self) -> Any:
        store = SQLiteStore(os.path.abspath(self.mktemp()) + ".sqlite", reactor)
        await store.start()
        self.addCleanup(store.stop)
        return store


class MongoPurgeTests(RealStoreMixin, TestCase):
    timeout = 120

    async def makeStore(self) -> Any:
        store = openStore(await mongoURL(self), reactor)
        await store.start()
        self.addCleanup(store.stop)
        return store


class DaemonPurgeTests(TestCase):
    """
    A real daemon with retention configured.
    """

    timeout = 180

    async def test_webhooksAcceptedDuringPurge(self) -> None:
        """
        A few thousand old documents put in the store before start are
        purged in small batches while webhooks keep being answered 202;
        what is newer stays.
        """
        from tests.test_webhooks_e2e import SAMPLE_RULE

        path = os.path.abspath(self.mktemp()) + ".sqlite"
        store = SQLiteStore(path, reactor)
        await store.start()
        old = isoformat(datetime.now(timezone.utc) - timedelta(days=90))
        for n in range(1500):
            await store.insert("triggerinstances", {"id": f"{n:024x}", "status": "processed", "occurrence_time": old, "trigger": "t"})
            await store.insert("ruleenforcements", {"enforced_at": old, "rule": {"id": "r"}, "trigger_instance_id": f"{n:024x}"})
        await store.stop()
        d = await startDaemon(
            self,
            storage="sqlite://" + path,
            config={"retention": {"trigger_instances": 30, "rule_enforcements": 30, "batch_size": 20, "pause": 0.02}},
        )
        started = d.logged("Retention purge started")
        done = d.logged(r"Retention purge done: (.*)")
        await started
        response, rule = await d.post("/v1/rules", SAMPLE_RULE)
        self.assertEqual(response.code, 201, rule)
        codes: List[int] = []
        acceptedBeforeDone = None
        while True:
            response, body = await d.post("/v1/webhooks/sample", {"key1": "other"})
            codes.append(response.code)
            if done.called:
                break
            acceptedBeforeDone = len(codes)
        summary = (await done).group(1)
        self.assertEqual(set(codes), {202})
        self.assertIsNotNone(acceptedBeforeDone)
        self.assertIn("rule_enforcements=1500", summary)
        self.assertIn("trigger_instances=1500", summary)
        _, instances = await d.get("/v1/triggerinstances?limit=100")
        self.assertTrue(instances)
        self.assertTrue(all(not i["id"].startswith("0000") for i in instances))
