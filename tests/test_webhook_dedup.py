"""
Deduplicated deliveries: the record store logic with an in-memory store and
a clock, and over real HTTP: one delivery sent three times, after a restart,
and to two processes sharing one MongoDB gives one trigger instance and one
execution.
"""

from __future__ import annotations

import json
import os

import treq
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase, TestCase

from bwcd.testing import MemoryStore
from bwcd.webhooks.dedup import COLLECTION, ORPHAN_GRACE, Deliveries, deliveryIdFrom, deliveryRecordId
from tests.daemon import startDaemon
from tests.test_webhook_verify import SECRETS, instanceIds, policyPack, sign
from tests.test_webhooks_e2e import WebhooksEndToEndMixin


def fired(d):
    results = []
    d.addBoth(results.append)
    assert results, "Deferred has not fired"
    if hasattr(results[0], "raiseException"):
        results[0].raiseException()
    return results[0]


class DeliveriesTests(SynchronousTestCase):
    def setUp(self):
        self.clock = Clock()
        self.clock.advance(1000)
        self.store = MemoryStore()
        fired(self.store.start())
        self.deliveries = Deliveries(self.store, self.clock)

    def claim(self, hook, delivery, ids, window=60.0):
        from twisted.internet.defer import ensureDeferred

        return fired(ensureDeferred(self.deliveries.claim(hook, delivery, ids, window)))

    def test_firstThenRepeat(self):
        """
        The first claim owns the delivery; a repeat gets the first one's
        instance ids; another hook or delivery id is independent.
        """
        self.assertTrue(self.claim("h", "d1", ["a"]).first)
        again = self.claim("h", "d1", ["b"])
        self.assertEqual((again.first, list(again.instances)), (False, ["a"]))
        self.assertTrue(self.claim("h2", "d1", ["c"]).first)
        self.assertTrue(self.claim("h", "d2", ["e"]).first)

    def test_windowExpires(self):
        """
        After its window a delivery id counts as new again.
        """
        self.claim("h", "d1", ["a"], window=60)
        self.clock.advance(61)
        taken = self.claim("h", "d1", ["b"], window=60)
        self.assertEqual((taken.first, list(taken.instances)), (True, ["b"]))
        self.assertEqual(list(self.claim("h", "d1", ["c"]).instances), ["b"])

    def test_orphanTakenOver(self):
        """
        A record whose instance was never stored (a crash between the two
        writes) is taken over after the grace period, not before.
        """
        self.claim("h", "d1", ["missing"], window=3600)
        self.assertFalse(self.claim("h", "d1", ["b"]).first)
        self.clock.advance(ORPHAN_GRACE + 1)
        self.assertTrue(self.claim("h", "d1", ["b"]).first)

    def test_releaseAndPurge(self):
        """
        A released claim is forgotten; purging drops expired records only.
        """
        from twisted.internet.defer import ensureDeferred

        claim = self.claim("h", "d1", ["a"], window=10)
        fired(ensureDeferred(self.deliveries.release(claim)))
        self.assertTrue(self.claim("h", "d1", ["b"], window=10).first)
        self.claim("h", "d2", ["c"], window=1000)
        self.clock.advance(11)
        self.assertEqual(fired(ensureDeferred(self.deliveries.purgeExpired())), 1)
        self.assertIsNotNone(fired(self.store.get(COLLECTION, deliveryRecordId("h", "d2"))))

    def test_deliveryIdFrom(self):
        """
        Ids come from a header or a dotted body path; absent or non-scalar
        values give none.
        """
        self.assertEqual(deliveryIdFrom("header", "X", " abc ", None), "abc")
        self.assertEqual(deliveryIdFrom("body", "data.id", None, {"data": {"id": 7}}), "7")
        self.assertIsNone(deliveryIdFrom("body", "id", None, {"id": {"x": 1}}))
        self.assertIsNone(deliveryIdFrom("body", "id", None, [1]))
        self.assertIsNone(deliveryIdFrom("header", "X", None, None))


async def send(d, body: bytes, delivery: str):
    headers = dict(sign("github", SECRETS["github"], body), **{"Content-Type": "application/json", "X-GitHub-Delivery": delivery})
    response = await treq.post(f"{d.apiURL}/v1/webhooks/github", data=body, headers=headers)
    answer = json.loads(await response.content())
    return response, answer


class DedupEndToEndMixin:
    timeout = 180
    storage = "sqlite"
    executionsOf = WebhooksEndToEndMixin.executionsOf

    def pack(self):
        secretDir = os.path.abspath(self.mktemp())
        os.makedirs(secretDir)
        return policyPack(self, secretDir, presets=("github",), extra={"github": {"dedup": True}})

    async def assertOnce(self, d, responses, instanceId):
        for response, answer in responses:
            self.assertEqual(response.code, 202, answer)
            self.assertEqual(response.headers.getRawHeaders("X-BWC-Trigger-Instance"), [instanceId])
            self.assertEqual(response.headers.getRawHeaders("Location"), [f"/v1/triggerinstances/{instanceId}"])
        _, _, docs = await self.executionsOf(d, instanceId, 1)
        self.assertEqual(len(docs), 1)
        self.assertEqual(await instanceIds(d), {instanceId})
        _, executions = await d.get("/v1/executions")
        self.assertEqual([e["id"] for e in executions], [docs[0]["id"]])


class DedupEndToEndTests(DedupEndToEndMixin, TestCase):
    async def test_threeTimesThenRestart(self):
        """
        The same delivery three times, then once more after a restart: one
        trigger instance, one execution; repeats say X-BWC-Duplicate.
        """
        d = await startDaemon(self, packs=[self.pack()])
        body = b'{"ref": "refs/heads/main"}'
        first = await send(d, body, "72d3162e-cc78-11e3-81ab-4c9367dc0958")
        instanceId = first[0].headers.getRawHeaders("X-BWC-Trigger-Instance")[0]
        self.assertIsNone(first[0].headers.getRawHeaders("X-BWC-Duplicate"))
        repeats = [await send(d, body, "72d3162e-cc78-11e3-81ab-4c9367dc0958") for _ in range(2)]
        for response, answer in repeats:
            self.assertEqual(response.headers.getRawHeaders("X-BWC-Duplicate"), ["true"])
            self.assertEqual(answer, {"ref": "refs/heads/main"})
        await self.assertOnce(d, [first] + repeats, instanceId)
        await d.restart()
        after = await send(d, body, "72d3162e-cc78-11e3-81ab-4c9367dc0958")
        self.assertEqual(after[0].headers.getRawHeaders("X-BWC-Duplicate"), ["true"])
        await self.assertOnce(d, [after], instanceId)
        # another delivery id is another event
        other = await send(d, body, "another")
        self.assertIsNone(other[0].headers.getRawHeaders("X-BWC-Duplicate"))


class MongoDedupEndToEndTests(DedupEndToEndMixin, TestCase):
    storage = "mongodb"

    async def test_twoProcesses(self):
        """
        One delivery sent to each of two processes on one MongoDB (and a
        third time to the first): one instance, one execution.
        """
        pack = self.pack()
        a = await startDaemon(self, storage="mongodb", packs=[pack])
        b = await startDaemon(self, storage=a.configData["storage"]["url"], packs=[pack])
        body = b'{"n": 1}'
        first = await send(a, body, "delivery-1")
        instanceId = first[0].headers.getRawHeaders("X-BWC-Trigger-Instance")[0]
        second = await send(b, body, "delivery-1")
        third = await send(a, body, "delivery-1")
        self.assertEqual(second[0].headers.getRawHeaders("X-BWC-Duplicate"), ["true"])
        await self.assertOnce(a, [first, second, third], instanceId)
