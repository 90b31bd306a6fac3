"""
Store health: a failed store is marked down at once, operations are then
refused without waiting, probes bring it back, and health says so within a
second; on MemoryStore with a Clock, on a locked SQLite file, and on a real
daemon whose MongoDB (SecantusDB) is paused and then killed under a steady
webhook load.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
from typing import Any, Dict, List, Optional

import treq
from treq.testing import StubTreq
from twisted.internet import reactor
from twisted.internet.defer import Deferred, ensureDeferred
from twisted.internet.task import Clock, deferLater
from twisted.trial.unittest import SynchronousTestCase, TestCase

from bwcd.api.framework import Api
from bwcd.api.health_routes import installHealthRoutes
from bwcd.metrics import Metrics
from bwcd.store.health import PING_TIMEOUT, PROBE_INTERVAL, StoreDown, StoreHealth
from bwcd.store.interface import DuplicateKey, StoreUnavailable
from bwcd.store.sqlite import SQLiteStore
from bwcd.testing import MemoryStore
from tests.daemon import startDaemon


class SilentPingStore(MemoryStore):
    """
    A MemoryStore whose pings never answer while C{silent}: a server that
    accepts the connection and says nothing (SIGSTOP).
    """

    silent = False

    def ping(self) -> Deferred[bool]:
        if self.silent:
            return Deferred()
        return super().ping()


class StoreHealthTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.inner = SilentPingStore()
        self.changes: List[tuple] = []
        self.store = StoreHealth(self.inner, self.clock, onChange=lambda down, reason: self.changes.append((down, reason)))
        self.successResultOf(self.store.start())

    def test_forwards(self):
        """
        While the store is up, operations reach it and their answers and
        non-health errors pass through; the backend's name shows through.
        """
        doc = self.successResultOf(self.store.insert("kv", {"name": "a", "value": 1}))
        self.assertEqual(self.successResultOf(self.store.get("kv", doc["id"]))["value"], 1)
        self.failureResultOf(self.store.insert("kv", {"name": "a", "value": 2}), DuplicateKey)
        self.assertEqual(self.successResultOf(self.store.count("kv", {})), 1)
        self.assertEqual(self.store.name, "memory")
        self.assertFalse(self.store.down)
        self.assertEqual(self.changes, [])

    def test_downAfterFailureThenRefusedAtOnce(self):
        """
        The first StoreUnavailable marks the store down, naming the error;
        from then on operations fail with StoreDown without reaching the
        store, even once it could answer again, until a probe succeeds.
        """
        self.inner.breakDown("disk on fire")
        self.failureResultOf(self.store.insert("kv", {"name": "a"}), StoreUnavailable)
        self.assertTrue(self.store.down)
        self.assertIn("disk on fire", self.store.reason)
        self.assertEqual(self.changes, [(True, self.store.reason)])
        self.inner.repair()
        before = len(self.inner.operations)
        failure = self.failureResultOf(self.store.find("kv", {}), StoreDown)
        self.assertIn("Storage is down: disk on fire", str(failure.value))
        self.assertEqual(len(self.inner.operations), before)

    def test_probeBringsItBack(self):
        """
        While down, a ping every probe interval: a failed one keeps the
        store down, the first one that answers brings it back up.
        """
        self.inner.breakDown()
        self.failureResultOf(self.store.update("kv", {"name": "a"}, set={"value": 1}), StoreUnavailable)
        self.clock.advance(PROBE_INTERVAL)
        self.assertTrue(self.store.down)
        self.assertEqual(self.inner.operations[-1], "ping")
        self.inner.repair()
        self.clock.advance(PROBE_INTERVAL)
        self.assertFalse(self.store.down)
        self.assertIsNone(self.store.reason)
        self.assertEqual([down for down, _ in self.changes], [True, False])
        self.successResultOf(self.store.insert("kv", {"name": "a"}))
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_probeBoundedInTime(self):
        """
        A probe whose ping never answers gives up after the ping timeout and
        the next probe tries again; the store stays down meanwhile.
        """
        self.inner.breakDown()
        self.failureResultOf(self.store.delete("kv", {}), StoreUnavailable)
        self.inner.repair()
        self.inner.silent = True
        self.clock.advance(PROBE_INTERVAL)
        self.clock.advance(PING_TIMEOUT)
        self.assertTrue(self.store.down)
        self.inner.silent = False
        self.clock.advance(PROBE_INTERVAL - PING_TIMEOUT)
        self.assertFalse(self.store.down)

    def test_checkWhenUp(self):
        """
        check() says nothing is wrong when the ping answers, and when it
        does not within the ping timeout it names the reason and marks the
        store down.
        """
        self.assertIsNone(self.successResultOf(self.store.check()))
        self.inner.silent = True
        d = self.store.check()
        self.assertNoResult(d)
        self.clock.advance(PING_TIMEOUT)
        reason = self.successResultOf(d)
        self.assertIn("did not answer a ping", reason)
        self.assertTrue(self.store.down)

    def test_checkWhenDown(self):
        """
        While down, check() answers at once with the reason, without a ping.
        """
        self.inner.breakDown("gone")
        self.failureResultOf(self.store.deleteOne("kv", "0" * 24), StoreUnavailable)
        self.inner.silent = True
        self.assertIn("gone", self.successResultOf(self.store.check()))

    def test_stopEndsProbing(self):
        """
        Stopping the store ends the probe loop, and failures after stop (a
        stopped store is not an outage) do not start one.
        """
        self.inner.breakDown()
        self.failureResultOf(self.store.findOne("kv", {}), StoreUnavailable)
        self.assertTrue(self.clock.getDelayedCalls())
        self.successResultOf(self.store.stop())
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.inner.repair()
        self.store.markUp()
        self.failureResultOf(self.store.findOne("kv", {}), StoreUnavailable)
        self.assertFalse(self.store.down)


class HealthRouteTests(SynchronousTestCase):
    """
    /v1/health and a store-backed route over a StoreHealth, through StubTreq.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.inner = SilentPingStore()
        self.store = StoreHealth(self.inner, self.clock)
        self.successResultOf(self.store.start())
        self.api = Api(authenticate=None)
        installHealthRoutes(self.api, self.store, self.clock, Metrics(), lambda: 0, metricsEnabled=False)

        @self.api.route("/v1/things", ["POST"], auth=False, needsStore=True)
        async def things(request, principal: Any):
            return await self.store.insert("kv", {"name": "x"})

        self.api.ready = True
        self.http = StubTreq(self.api.resource())

    def request(self, method: str, path: str):
        d = self.http.request(method, "http://bwcd.example" + path)
        self.http.flush()
        response = self.successResultOf(d)
        return response, json.loads(self.successResultOf(self.http.content(response)))

    def test_states(self):
        """
        Health is 200 while the store answers; a failed write is a 503 with
        Retry-After and marks the store down; health is then 503 naming the
        reason, with no ping; the next write is refused with a 503 too;
        after a successful probe both answer normally again.
        """
        response, body = self.request("GET", "/v1/health")
        self.assertEqual((response.code, body["status"]), (200, "ok"))
        self.inner.breakDown("no space left on device")
        response, body = self.request("POST", "/v1/things")
        self.assertEqual(response.code, 503)
        self.assertTrue(response.headers.getRawHeaders("Retry-After"))
        self.inner.silent = True  # health must not depend on a ping now
        response, body = self.request("GET", "/v1/health")
        self.assertEqual(response.code, 503)
        self.assertEqual(body["faultstring"], "Storage is down: no space left on device")
        self.assertTrue(response.headers.getRawHeaders("Retry-After"))
        before = len(self.inner.operations)
        response, body = self.request("POST", "/v1/things")
        self.assertEqual((response.code, body["faultstring"]), (503, "Storage is unavailable; try again shortly."))
        self.assertEqual(len(self.inner.operations), before)
        self.inner.silent = False
        self.inner.repair()
        self.clock.advance(PROBE_INTERVAL)
        self.assertEqual(self.request("GET", "/v1/health")[0].code, 200)
        self.assertEqual(self.request("POST", "/v1/things")[0].code, 200)
        # each 503 is one warning line, never a logged traceback
        self.assertEqual(self.flushLoggedErrors(), [])

    def test_silentStore(self):
        """
        A store that stops answering (no error, no reply) makes health 503
        after the bounded ping, not after a driver's timeout, and marks it
        down.
        """
        self.inner.silent = True
        d = self.http.request("GET", "http://bwcd.example/v1/health")
        self.http.flush()
        self.assertNoResult(d)
        self.clock.advance(PING_TIMEOUT)
        self.http.flush()
        response = self.successResultOf(d)
        self.assertEqual(response.code, 503)
        body = json.loads(self.successResultOf(self.http.content(response)))
        self.assertIn("did not answer a ping within", body["faultstring"])
        self.assertTrue(self.store.down)


class SQLiteHealthTests(TestCase):
    timeout = 30

    async def test_lockedBeyondBusyTimeout(self):
        """
        A SQLite file locked by another process beyond the busy timeout
        fails the write with StoreUnavailable and marks the store down;
        further writes are refused at once; once the lock is gone a probe
        brings it back and writes succeed.
        """
        path = os.path.abspath(self.mktemp()) + ".sqlite"
        up: List[Deferred] = []
        store = StoreHealth(
            SQLiteStore(path, reactor, busyTimeout=0.2), reactor, probeInterval=0.1,
            onChange=lambda down, reason: [d.callback(down) for d in up if not d.called],
        )
        await store.start()
        self.addCleanup(store.stop)
        await store.insert("kv", {"name": "before"})
        other = sqlite3.connect(path, isolation_level=None)
        self.addCleanup(other.close)
        other.execute("BEGIN IMMEDIATE")
        failure = await self.assertFailure(store.insert("kv", {"name": "locked"}), StoreUnavailable)
        self.assertIn("locked", str(failure))
        self.assertTrue(store.down)
        self.assertIn("locked", store.reason)
        await self.assertFailure(store.insert("kv", {"name": "refused"}), StoreDown)
        other.execute("ROLLBACK")
        changed: Deferred = Deferred()
        up.append(changed)
        self.assertFalse(await changed)  # the change is "up"
        await store.insert("kv", {"name": "after"})
        self.assertEqual(sorted(d["name"] for d in await store.find("kv", {})), ["after", "before"])


    async def openWithWriter(self) -> tuple:
        """
        A started StoreHealth over SQLite, the store's writer connection (to
        set its limits from the test while the store's thread is idle), and
        a list to append Deferreds fired with the next health change.
        """
        import bwcd.store.sqlite as sqliteModule

        connections: List[sqlite3.Connection] = []

        def opener(path: str, timeout: float) -> sqlite3.Connection:
            conn = sqlite3.connect(path, timeout=timeout, isolation_level=None, check_same_thread=False)
            connections.append(conn)
            return conn

        self.patch(sqliteModule, "_openConnection", opener)
        changes: List[Deferred] = []
        store = StoreHealth(
            SQLiteStore(os.path.abspath(self.mktemp()) + ".sqlite", reactor), reactor, probeInterval=0.1,
            onChange=lambda down, reason: [d.callback(down) for d in changes if not d.called],
        )
        await store.start()
        self.addCleanup(store.stop)
        await store.insert("kv", {"name": "before"})
        return store, connections[0], changes

    async def test_diskFull(self):
        """
        A write SQLite refuses because the disk is full (SQLITE_FULL, here
        through max_page_count) marks the store down and is refused at once
        after; with room again, the probe brings it back.
        """
        store, writer, changes = await self.openWithWriter()
        pages = writer.execute("PRAGMA page_count").fetchone()[0]
        writer.execute(f"PRAGMA max_page_count = {pages}")
        failure = await self.assertFailure(store.insert("kv", {"name": "big", "value": "x" * 200000}), StoreUnavailable)
        self.assertIn("full", str(failure))
        self.assertIn("full", store.reason)
        await self.assertFailure(store.insert("kv", {"name": "refused"}), StoreDown)
        writer.execute("PRAGMA max_page_count = 1073741823")
        changed: Deferred = Deferred()
        changes.append(changed)
        self.assertFalse(await changed)
        await store.insert("kv", {"name": "after", "value": "x" * 200000})
        self.assertEqual(await store.count("kv", {}), 2)

    async def test_readOnly(self):
        """
        A write to a database SQLite will not write (SQLITE_READONLY, here
        through query_only) marks the store down, naming the reason.
        """
        store, writer, changes = await self.openWithWriter()
        writer.execute("PRAGMA query_only = 1")
        await self.assertFailure(store.update("kv", {"name": "before"}, set={"value": 1}), StoreUnavailable)
        self.assertIn("readonly", store.reason)
        await self.assertFailure(store.insert("kv", {"name": "refused"}), StoreDown)
        writer.execute("PRAGMA query_only = 0")
        changed: Deferred = Deferred()
        changes.append(changed)
        self.assertFalse(await changed)
        self.assertEqual((await store.update("kv", {"name": "before"}, set={"value": 1}))["value"], 1)


class MongoOutageTests(TestCase):
    """
    A daemon on its own SecantusDB, which is paused (SIGSTOP) and later
    killed and restarted on the same port and storage path, while webhooks
    keep arriving.
    """

    timeout = 180

    async def test_outagesUnderLoad(self):
        """
        Every webhook answer is 202 or 503 (with Retry-After); once health
        says the store is down, webhooks are refused as such (StoreDown in
        the daemon's log, no wait for the driver's timeout); after the
        database returns the daemon recovers by itself; every 202's trigger
        instance exists and ran its rule exactly once.
        """
        from tests.mongoserver import privateServer

        server = await privateServer(self)
        # the default write concern (w=majority, j=true): with journal=false
        # the kill below loses writes SecantusDB had acknowledged, i.e. 202s
        d = await startDaemon(self, storage=server.url + "bwcdoutage")
        rule = {
            "name": "outage", "pack": "health", "enabled": True,
            "trigger": {"type": "core.st2.webhook", "parameters": {"url": "outage"}},
            "action": {"ref": "core.noop"},
        }
        response, _ = await d.post("/v1/rules", rule)
        self.assertEqual(response.code, 201)

        answers: List[Dict[str, Any]] = []
        sending = {"on": True}

        async def sender(n: int) -> None:
            i = 0
            while sending["on"]:
                i += 1
                response, body = await d.post("/v1/webhooks/outage", {"sender": n, "i": i})
                answers.append({
                    "code": response.code,
                    "id": (response.headers.getRawHeaders("X-BWC-Trigger-Instance") or [None])[0],
                    "retryAfter": response.headers.getRawHeaders("Retry-After"),
                    "body": body,
                })

        senders = [ensureDeferred(sender(n)) for n in range(2)]

        async def answered(count: int) -> None:
            # Waits for the senders to have had C{count} more answers.
            target = len(answers) + count
            while len(answers) < target:
                # Justified wait: the senders run in this same reactor; a short poll of their progress.
                await deferLater(reactor, 0.05, lambda: None)

        async def health() -> tuple:
            response = await treq.get(d.apiURL + "/v1/health")
            return response.code, await response.json()

        async def healthBecomes(code: int) -> dict:
            while True:
                got, body = await health()
                if got == code:
                    return body
                # Justified wait: a bounded re-ask of /v1/health (each answer takes under a second).
                await deferLater(reactor, 0.1, lambda: None)

        async def outage(begin, end) -> None:
            await answered(10)
            self.assertEqual({a["code"] for a in answers[-10:]}, {202})
            begin()
            body = await healthBecomes(503)
            self.assertTrue(body["faultstring"].startswith("Storage is down: "), body)
            since = d.linesLogged
            start = len(answers)
            await answered(10)
            refused = answers[start:]
            self.assertEqual({a["code"] for a in refused}, {503}, refused)
            for a in refused:
                self.assertEqual(a["body"]["faultstring"], "Storage is unavailable; try again shortly.")
                self.assertTrue(a["retryAfter"])
            # refused by the health state, not by a timed-out operation
            await d.loggedTimes(r"Storage unavailable for /v1/webhooks/\S+: Storage is down: ", 10, since)
            self.assertEqual((await health())[0], 503)
            end()
            await healthBecomes(200)
            await answered(10)

        await outage(lambda: server.process.send_signal(signal.SIGSTOP), lambda: server.process.send_signal(signal.SIGCONT))

        restarted: Dict[str, Optional[Deferred]] = {"d": None}

        def restart() -> None:
            restarted["d"] = ensureDeferred(server.waitUntilListening())

        def kill() -> None:
            server.process.kill()
            server.process.wait()

        await outage(kill, lambda: (server.restart(), restart()))
        sending["on"] = False
        for s in senders:
            await s
        codes = {a["code"] for a in answers}
        self.assertLessEqual(codes, {202, 503}, [a for a in answers if a["code"] not in (202, 503)])
        accepted = [a["id"] for a in answers if a["code"] == 202]
        self.assertEqual(len(accepted), len(set(accepted)))
        self.assertGreaterEqual(len(accepted), 30)
        for a in answers:
            if a["code"] == 503:
                self.assertTrue(a["retryAfter"], a)
        for instanceId in accepted:
            response, _ = await d.get(f"/v1/triggerinstances/{instanceId}")
            self.assertEqual(response.code, 200, instanceId)
            self.assertEqual(len(await d.ruleExecutions(instanceId, 1)), 1)
        # exactly once: no instance has a second execution, by the store's own count
        response, executions = await d.get("/v1/executions?limit=10000")
        perInstance: Dict[str, int] = {}
        for e in executions:
            instanceId = (e.get("trigger_instance") or {}).get("id")
            if instanceId:
                perInstance[instanceId] = perInstance.get(instanceId, 0) + 1
        self.assertEqual({perInstance.get(i) for i in accepted}, {1})
