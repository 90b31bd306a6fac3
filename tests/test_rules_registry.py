"""
Tests for L{bwcd.rules.registry}: creating, replacing, deleting and finding
rules, with their triggers and the rule index, over the in-memory store
(every store call has fired when it returns, so these are synchronous).
"""

from __future__ import annotations

from typing import Any, Dict, Optional

from twisted.internet.defer import ensureDeferred
from twisted.internet.task import Clock
from twisted.logger import globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from bwcd.errors import Conflict, Invalid, NotFound
from bwcd.rules.index import MARKER_NAME, RuleIndex
from bwcd.rules.registry import RuleRegistry, findByRefOrId, notFound, publishQuietly
from bwcd.rules.triggers import ensureSystemTriggerTypes
from bwcd.testing import MemoryStore


def rule(name: str = "sample_rule", url: str = "sample", **extra: Any) -> Dict[str, Any]:
    body: Dict[str, Any] = {
        "name": name,
        "pack": "examples",
        "trigger": {"type": "core.st2.webhook", "parameters": {"url": url}},
        "criteria": {"trigger.body.key1": {"type": "equals", "pattern": "value1"}},
        "action": {"ref": "core.local", "parameters": {"cmd": "echo {{ trigger.body.key1 }}"}},
    }
    body.update(extra)
    return body


class RegistryTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.store = MemoryStore()
        self.successResultOf(self.store.start())
        self.successResultOf(ensureDeferred(ensureSystemTriggerTypes(self.store)))
        self.index = RuleIndex(self.store, Clock())
        self.successResultOf(ensureDeferred(self.index.reload()))
        self.rules = RuleRegistry(self.store, self.index)

    def result(self, coroutine: Any) -> Any:
        return self.successResultOf(ensureDeferred(coroutine))

    def refused(self, coroutine: Any, kind: type) -> Any:
        return self.failureResultOf(ensureDeferred(coroutine), kind).value

    def webhookTriggers(self) -> list:
        return sorted(t["parameters"]["url"] for t in self.result(self.store.find("triggers", {"type": "core.st2.webhook"})))

    def marker(self) -> Optional[str]:
        doc = self.result(self.store.findOne("kv", {"name": MARKER_NAME}))
        return doc and doc["value"]

    def test_create(self) -> None:
        """
        A created rule is stored with its creator and trigger, is in the
        index at once (its hook answers), and the change is published.
        """
        stored = self.result(self.rules.create(rule(), "alice"))
        self.assertEqual((stored["ref"], stored["context"]), ("examples.sample_rule", {"user": "alice"}))
        self.assertEqual(self.result(self.rules.get(stored["id"])), stored)
        self.assertEqual(self.result(self.rules.get("examples.sample_rule")), stored)
        self.assertEqual([h["parameters"]["url"] for h in self.index.hooks()], ["sample"])
        self.assertEqual(self.webhookTriggers(), ["sample"])
        self.assertIsNotNone(self.marker())

    def test_invalidLeavesNothing(self) -> None:
        """
        An invalid body is L{Invalid} with StackStorm's message, and leaves
        no rule and no trigger behind.
        """
        cases = [
            ({"name": "r", "action": {"ref": "core.noop"}}, "'trigger' is a required property"),
            (rule(criteria={"trigger.a": {"pattern": 1}}), "Operator not specified for field: trigger.a"),
            (dict(rule(), trigger={"type": "core.st2.webhook", "parameters": {"url": "x", "y": 1}}), "Additional properties are not allowed ('y' was unexpected)"),
            (dict(rule(), trigger={"type": "mypack.unknown", "parameters": {"a": 1}}), 'Trigger type with reference "mypack.unknown" doesn\'t exist in the database'),
        ]
        for body, message in cases:
            self.assertEqual(self.refused(self.rules.create(body, "alice"), Invalid).faultstring, message)
        self.assertEqual(self.result(self.store.count("rules", {})), 0)
        self.assertEqual(self.webhookTriggers(), [])

    def test_wrongShapesAreInvalid(self) -> None:
        """
        A JSON value of the wrong shape, at the top or nested (trigger,
        parameters, criteria, action, context, tags), is L{Invalid}, never
        another exception.
        """
        shapes = ["s", [], 1, None, True, 1.5, [1], {"a": []}, {"type": []}, {"parameters": "s"}]
        bodies: list = [None, [], "x", 1, True]
        for field in ("trigger", "criteria", "action", "context", "tags", "type", "enabled", "name", "pack", "parameters"):
            bodies.extend(dict(rule(), **{field: v}) for v in shapes)
        bodies.extend(rule(criteria={"trigger.a": v}) for v in shapes)
        bodies.extend(dict(rule(), action={"ref": "core.local", "parameters": v}) for v in shapes)
        bodies.extend(dict(rule(), trigger={"type": "core.st2.webhook", "parameters": v}) for v in shapes)
        for body in bodies:
            d = ensureDeferred(self.rules.create(body, "alice"))
            results: list = []
            d.addBoth(results.append)
            [result] = results
            if hasattr(result, "value"):
                self.assertIsInstance(result.value, Invalid, body)
            else:
                self.result(self.rules.delete(result["id"]))

    def test_duplicateIsConflict(self) -> None:
        """
        A second rule with the same ref is L{Conflict} naming the first,
        and the trigger created for it alone is released.
        """
        first = self.result(self.rules.create(rule(), "alice"))
        error = self.refused(self.rules.create(rule(url="other"), "alice"), Conflict)
        self.assertTrue(error.faultstring.startswith("Tried to save duplicate unique keys ("), error.faultstring)
        self.assertEqual(error.extra, {"conflict-id": first["id"]})
        self.assertEqual(self.webhookTriggers(), ["sample"])

    def test_replace(self) -> None:
        """
        Replacing keeps the id, moves the hook, and releases the old
        trigger when no rule uses it.
        """
        first = self.result(self.rules.create(rule(), "alice"))
        moved = self.result(self.rules.replace("examples.sample_rule", rule(url="moved"), "bob"))
        self.assertEqual(moved["id"], first["id"])
        self.assertEqual(self.webhookTriggers(), ["moved"])
        self.assertEqual([h["parameters"]["url"] for h in self.index.hooks()], ["moved"])

    def test_sharedTriggerStays(self) -> None:
        """
        Rules on the same hook share a trigger, released with the last.
        """
        a = self.result(self.rules.create(rule(name="a"), "alice"))
        b = self.result(self.rules.create(rule(name="b"), "alice"))
        self.assertEqual(a["trigger"]["ref"], b["trigger"]["ref"])
        self.result(self.rules.delete(a["id"]))
        self.assertEqual(self.webhookTriggers(), ["sample"])
        self.assertEqual(self.result(self.rules.delete("examples.b"))["id"], b["id"])
        self.assertEqual(self.webhookTriggers(), [])
        self.assertEqual(self.index.hooks(), [])

    def test_notFound(self) -> None:
        """
        Showing, replacing or deleting an unknown rule is L{NotFound} with
        StackStorm's message.
        """
        message = 'Resource with a reference or id "examples.nope" not found'
        for coroutine in (self.rules.get("examples.nope"), self.rules.replace("examples.nope", rule(), "a"), self.rules.delete("examples.nope")):
            self.assertEqual(self.refused(coroutine, NotFound).faultstring, message)
        self.assertEqual(notFound("x").faultstring, 'Resource with a reference or id "x" not found')
        self.assertEqual(self.webhookTriggers(), [])

    def test_findByRefOrId(self) -> None:
        """
        A 24-hex-digit key is tried as an id, then as a ref; anything else
        as a ref.
        """
        webhook = self.result(findByRefOrId(self.store, "triggertypes", "core.st2.webhook"))
        self.assertEqual(self.result(findByRefOrId(self.store, "triggertypes", webhook["id"]))["ref"], "core.st2.webhook")
        self.assertIsNone(self.result(findByRefOrId(self.store, "triggertypes", "0" * 24)))
        self.assertIsNone(self.result(findByRefOrId(self.store, "triggertypes", "nope.nope")))

    def test_publishQuietly(self) -> None:
        """
        A change already stored is not turned into an error when telling
        the other processes fails; the failure is logged as a warning.
        """
        events: list = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        self.store.breakDown()
        self.assertIsNone(self.result(publishQuietly(self.index)))
        self.assertTrue(any("Could not publish a rule change" in e.get("log_format", "") for e in events))
