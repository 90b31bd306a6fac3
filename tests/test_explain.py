"""
Tests for L{bwcd.rules.explain} (pure), the per-criterion checks it uses
(L{bwcd.rules.criteria.checkEach}), and C{POST /v1/rules/explain} driven
through treq's C{StubTreq} on the in-memory store.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any, Dict, Optional

from treq.testing import StubTreq
from twisted.internet.defer import ensureDeferred
from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase

from bwcd.api.framework import Api
from bwcd.api.rule_routes import installRuleRoutes
from bwcd.auth.principal import Principal
from bwcd.rules.criteria import checkEach, evaluate
from bwcd.rules.explain import explainRule, explainRules, ruleTriggerRef
from bwcd.rules.index import RuleIndex
from bwcd.rules.model import normaliseRule
from bwcd.rules.triggers import SYSTEM_TRIGGER_TYPES, WEBHOOK_TYPE, ensureSystemTriggerTypes, parameterisedTrigger
from bwcd.store.interface import newId
from bwcd.testing import MemoryStore

NOW = datetime(2026, 12, 4, 12, 0, tzinfo=timezone.utc).timestamp()
BASE = "http://bwcd.test"


def sampleRule(**changes: Any) -> Dict[str, Any]:
    """
    The README's C{sample_rule.yaml} (the guide's custom webhook), as a
    request body.
    """
    body = {
        "name": "sample_rule",
        "pack": "examples",
        "enabled": True,
        "trigger": {"type": "core.st2.webhook", "parameters": {"url": "sample"}},
        "criteria": {"trigger.body.key1": {"type": "equals", "pattern": "value1"}},
        "action": {"ref": "core.local", "parameters": {"cmd": "echo {{ trigger.body.key1 | shell_quote }}"}},
    }
    body.update(changes)
    return body


def hookPayload(body: Any) -> Dict[str, Any]:
    """
    What the sample hook stores for a JSON body.
    """
    return {"headers": {"Content-Type": "application/json"}, "headers_lower": {"content-type": "application/json"}, "body": body}


def webhookType() -> Dict[str, Any]:
    return next(t for t in SYSTEM_TRIGGER_TYPES if t["ref"] == WEBHOOK_TYPE)


def savedSample(**changes: Any) -> Dict[str, Any]:
    doc = normaliseRule(sampleRule(**changes))
    doc["id"] = newId()
    doc["trigger"]["ref"] = ruleTriggerRef(doc, webhookType())
    return doc


class ExplainRuleTests(SynchronousTestCase):
    """
    L{explainRule} and L{explainRules}: pure explanations.
    """

    def test_sampleMatches(self) -> None:
        """
        The sample rule matches C{{"key1": "value1"}}: its one criterion
        shows the key, the value found, the operator, the pattern and a
        holding verdict, and the command it would run is rendered.
        """
        rule = savedSample()
        result = explainRule(rule, hookPayload({"key1": "value1"}), NOW, trigger=rule["trigger"]["ref"])
        self.assertEqual((result.matched, result.fires, result.triggerMatches, result.failureReason), (True, True, True, None))
        self.assertEqual(result.reason, "Every criterion holds.")
        [criterion] = result.toJson()["criteria"]
        self.assertEqual(
            criterion,
            {"key": "trigger.body.key1", "operator": "equals", "pattern": "value1", "pattern_source": "value1",
             "value": "value1", "matched": True, "error": None},
        )
        self.assertEqual(result.parameters, {"cmd": "echo value1"})
        self.assertIsNone(result.parametersError)

    def test_sampleDoesNotMatch(self) -> None:
        """
        With another value the criterion fails, naming the value found;
        the rule neither matches nor fires, and no failure is recorded (a
        mismatch is not an error).
        """
        rule = savedSample()
        result = explainRule(rule, hookPayload({"key1": "value2"}), NOW, trigger=rule["trigger"]["ref"]).toJson()
        self.assertEqual((result["matched"], result["fires"], result["failure_reason"]), (False, False, None))
        self.assertEqual(result["reason"], 'Criterion "trigger.body.key1" (equals) does not hold.')
        [criterion] = result["criteria"]
        self.assertEqual((criterion["value"], criterion["matched"], criterion["error"]), ("value2", False, None))
        self.assertEqual(result["parameters"], {"cmd": "echo value2"})

    def test_everyCriterionHasItsVerdict(self) -> None:
        """
        Every criterion is checked, also after one that fails (the engine
        stops there): each shows its own verdict, a templated pattern is
        shown rendered (keeping its type) next to the source, and a
        missing key shows the value null.
        """
        criteria = {
            "trigger.body.key1": {"type": "equals", "pattern": "value1"},
            "trigger.body.n": {"type": "greaterthan", "pattern": "{{ trigger.body.limit }}"},
            "trigger.body.tag": {"type": "exists", "pattern": "x"},
            "trigger.headers['Content-Type']": {"type": "contains", "pattern": "json"},
        }
        rule = savedSample(criteria=criteria)
        result = explainRule(rule, hookPayload({"key1": "value1", "n": 3, "limit": 5}), NOW).toJson()
        self.assertFalse(result["matched"])
        verdicts = {c["key"]: (c["value"], c["pattern"], c["matched"]) for c in result["criteria"]}
        self.assertEqual(
            verdicts,
            {
                "trigger.body.key1": ("value1", "value1", True),
                "trigger.body.n": (3, 5, False),
                "trigger.body.tag": (None, "x", False),
                "trigger.headers['Content-Type']": ("application/json", "json", True),
            },
        )
        rendered = result["criteria"][1]
        self.assertEqual(rendered["pattern_source"], "{{ trigger.body.limit }}")
        self.assertEqual(result["reason"], 'Criterion "trigger.body.n" (greaterthan) does not hold.')
        self.assertIsNone(result["trigger_matches"])

    def test_patternRenderError(self) -> None:
        """
        A pattern that cannot be rendered is the rule's failure (what a
        failed enforcement would record) and that criterion's error.
        """
        rule = savedSample(criteria={"trigger.body.key1": {"type": "equals", "pattern": "{{ nothing.here }}"}})
        result = explainRule(rule, hookPayload({"key1": "value1"}), NOW)
        self.assertFalse(result.matched)
        self.assertTrue(result.failureReason.startswith('Failed to match rule "examples.sample_rule" against trigger instance'), result.failureReason)
        self.assertEqual(result.reason, result.failureReason)
        [criterion] = result.toJson()["criteria"]
        self.assertFalse(criterion["matched"])
        self.assertTrue(criterion["error"].startswith('Failed to render pattern value "{{ nothing.here }}" for key "trigger.body.key1": '), criterion)
        self.assertIsNone(criterion["pattern"])

    def test_parameterRenderError(self) -> None:
        """
        Parameters that cannot be rendered give st2's render error instead
        of parameters; the match itself is unaffected.
        """
        rule = savedSample(action={"ref": "core.local", "parameters": {"cmd": "echo {{ trigger.body.missing.deep }}"}})
        result = explainRule(rule, hookPayload({"key1": "value1"}), NOW)
        self.assertTrue(result.matched)
        self.assertIsNone(result.parameters)
        self.assertTrue(result.parametersError.startswith('Failed to render parameter "cmd": '), result.parametersError)

    def test_actionContext(self) -> None:
        """
        Parameters see C{action_context} as a rule-started execution does:
        the instance, the rule and the system user.
        """
        rule = savedSample(action={"ref": "core.local", "parameters": {"cmd": "{{ action_context.rule.name }} {{ action_context.user }} {{ action_context.trigger_instance.id }}"}})
        result = explainRule(rule, hookPayload({"key1": "value1"}), NOW, instanceId="abc", user="bot")
        self.assertEqual(result.parameters, {"cmd": "sample_rule bot abc"})

    def test_unsavedRuleTrigger(self) -> None:
        """
        A rule not yet saved points at the trigger saving it would create:
        the derived ref for a parameterised type, the type's ref otherwise.
        """
        doc = normaliseRule(sampleRule())
        expected = parameterisedTrigger(WEBHOOK_TYPE, "core", {"url": "sample"})["ref"]
        self.assertEqual(ruleTriggerRef(doc, webhookType()), expected)
        self.assertIsNone(ruleTriggerRef(doc, None))
        plain = normaliseRule(sampleRule(trigger={"type": "mypack.mytrigger"}))
        self.assertEqual(ruleTriggerRef(plain, None), "mypack.mytrigger")
        result = explainRule(doc, hookPayload({"key1": "value1"}), NOW, trigger=expected, ruleTrigger=expected)
        self.assertEqual((result.matched, result.id, result.toJson()["saved"]), (True, None, False))

    def test_otherTrigger(self) -> None:
        """
        A payload of another trigger never matches, whatever the criteria
        say, and the reason names both triggers.
        """
        rule = savedSample()
        result = explainRule(rule, hookPayload({"key1": "value1"}), NOW, trigger="core.other")
        self.assertEqual((result.matched, result.triggerMatches, result.fires), (False, False, False))
        self.assertEqual(result.reason, f'The rule is for trigger "{rule["trigger"]["ref"]}", not "core.other".')

    def test_emptyPayload(self) -> None:
        """
        A rule with criteria never matches an empty payload (as in st2), and
        says why; a rule without criteria matches it.
        """
        result = explainRule(savedSample(), {}, NOW)
        self.assertFalse(result.matched)
        self.assertEqual(result.reason, "The payload is empty: a rule with criteria never matches it.")
        bare = explainRule(savedSample(criteria={}), {}, NOW)
        self.assertTrue(bare.matched)
        self.assertEqual(bare.criteria, ())

    def test_disabled(self) -> None:
        """
        A disabled rule may match but does not fire.
        """
        result = explainRule(savedSample(enabled=False), hookPayload({"key1": "value1"}), NOW)
        self.assertEqual((result.matched, result.fires), (True, False))
        self.assertIn("disabled", result.reason)

    def test_backstop(self) -> None:
        """
        Backstop rules fire only when no standard rule fires, as in the
        engine; rules come sorted by pack and name.
        """
        standard = savedSample(name="b_standard")
        backstop = savedSample(name="a_backstop", type={"ref": "backstop"}, criteria={})
        payload = hookPayload({"key1": "value1"})
        explained = explainRules([standard, backstop], payload, NOW).toJson()
        self.assertEqual([(r["ref"], r["matched"], r["fires"]) for r in explained["rules"]],
                         [("examples.a_backstop", True, False), ("examples.b_standard", True, True)])
        explained = explainRules([standard, backstop], hookPayload({"key1": "no"}), NOW).toJson()
        self.assertEqual([(r["ref"], r["fires"]) for r in explained["rules"]], [("examples.a_backstop", True), ("examples.b_standard", False)])
        self.assertTrue(explained["matched"])


class CheckEachTests(SynchronousTestCase):
    """
    L{checkEach} agrees with L{evaluate}, which decides for the engine.
    """

    def test_agreesWithEvaluate(self) -> None:
        """
        For a non-empty payload, every criterion holding is exactly
        L{evaluate}'s match, over operators, templates, search, a missing
        type and a broken key.
        """
        criteria = {
            "trigger.a": {"type": "equals", "pattern": 1},
            "trigger.b": {"type": "regex", "pattern": "^x+$"},
            "trigger.c": {"type": "search", "condition": "any", "pattern": {"item.k": {"type": "equals", "pattern": "v"}}},
            "trigger.d": {"type": "timediff_lt", "pattern": 60},
            "trigger.e": {"type": "equals", "pattern": "{{ trigger.a }}"},
        }
        payloads = [
            {"a": 1, "b": "xx", "c": [{"k": "v"}], "d": "2026-12-04T11:59:30Z", "e": 1},
            {"a": 2, "b": "xx", "c": [{"k": "v"}], "d": "2026-12-04T11:59:30Z", "e": 2},
            {"a": 1, "b": "xy", "c": [{"k": "w"}], "d": "2026-12-04T10:00:00Z", "e": 1},
            {"a": 1, "b": "xx", "c": "not a list", "d": "not a time", "e": 1},
        ]
        for payload in payloads:
            verdicts = checkEach("p.r", "i", criteria, payload, now=NOW)
            self.assertEqual(len(verdicts), len(criteria))
            self.assertEqual(all(v.matched for v in verdicts), evaluate("p.r", "i", criteria, payload, now=NOW).matched, payload)
        for odd in ({"trigger.a": {"pattern": 1}}, {"trigger[": {"type": "equals", "pattern": 1}}):
            [verdict] = checkEach("p.r", "i", odd, {"a": 1}, now=NOW)
            self.assertFalse(verdict.matched)
            self.assertFalse(evaluate("p.r", "i", odd, {"a": 1}, now=NOW).matched)

    def test_errorsOfCriteria(self) -> None:
        """
        A broken key and an operator failure are that criterion's error,
        with the reason st2 records.
        """
        [broken] = checkEach("p.r", "i", {"trigger[": {"type": "equals", "pattern": 1}}, {"a": 1}, now=NOW)
        self.assertTrue(broken.error.startswith("Failed transforming criteria key trigger["), broken.error)
        self.assertEqual(broken.reached, "pattern")
        [timed] = checkEach("p.r", "i", {"trigger.d": {"type": "timediff_lt", "pattern": 60}}, {"d": "nope"}, now=NOW)
        self.assertTrue(timed.error.startswith("There might be a problem with the criteria in rule p.r: "), timed.error)
        self.assertEqual((timed.reached, timed.value), ("value", "nope"))


class ExplainRouteTests(SynchronousTestCase):
    """
    C{POST /v1/rules/explain} over the rule routes on a memory store.
    """

    def setUp(self) -> None:
        self.clock = MemoryReactorClock()
        self.clock.advance(NOW)
        self.store = MemoryStore()
        self.successResultOf(self.store.start())
        self.successResultOf(ensureDeferred(ensureSystemTriggerTypes(self.store)))
        self.index = RuleIndex(self.store, self.clock)
        self.successResultOf(ensureDeferred(self.index.reload()))

        async def authenticate(request):
            return Principal("tester", "token", "t1", True)

        self.api = Api(authenticate)
        installRuleRoutes(self.api, self.store, self.index, clock=self.clock)
        self.api.ready = True
        self.http = StubTreq(self.api.resource())

    def request(self, method: str, path: str, body: Any = None, raw: Optional[bytes] = None):
        headers = {"Content-Type": "application/json"}
        if body is not None:
            raw = json.dumps(body).encode("utf-8")
        d = self.http.request(method, BASE + path, headers=headers, data=raw)
        self.http.flush()
        response = self.successResultOf(d)
        content = self.successResultOf(self.http.content(response))
        return response, (json.loads(content) if content else None)

    def createRule(self, **changes: Any) -> Dict[str, Any]:
        response, rule = self.request("POST", "/v1/rules", sampleRule(**changes))
        self.assertEqual(response.code, 201, rule)
        return rule

    def storeInstance(self, trigger: str, payload: Any) -> str:
        instanceId = newId()
        self.successResultOf(self.store.insert("triggerinstances", {
            "id": instanceId, "trigger": trigger, "payload": payload,
            "occurrence_time": "2026-12-04T12:00:00.000000Z", "status": "processed",
        }))
        return instanceId

    def counts(self) -> Dict[str, int]:
        return {c: self.successResultOf(self.store.count(c, {})) for c in ("rules", "triggers", "triggerinstances", "ruleenforcements", "executions")}

    def test_triggerInstance(self) -> None:
        """
        For a stored instance, every rule of its trigger is explained, the
        matching one and the other one, with their criteria; nothing is
        stored.
        """
        rule = self.createRule()
        self.createRule(name="other_rule", criteria={"trigger.body.key1": {"type": "equals", "pattern": "nope"}})
        instanceId = self.storeInstance(rule["trigger"]["ref"], hookPayload({"key1": "value1"}))
        before = self.counts()
        response, body = self.request("POST", "/v1/rules/explain", {"trigger_instance": instanceId})
        self.assertEqual(response.code, 200, body)
        self.assertEqual(self.counts(), before)
        self.assertEqual((body["trigger"], body["trigger_instance"], body["matched"], body["payload_error"]), (rule["trigger"]["ref"], instanceId, True, None))
        self.assertEqual(body["payload"], hookPayload({"key1": "value1"}))
        first, second = body["rules"]
        self.assertEqual(
            {k: first[k] for k in ("ref", "id", "saved", "enabled", "type", "trigger", "trigger_matches", "matched", "fires", "failure_reason", "action", "parameters", "parameters_error")},
            {"ref": "examples.other_rule", "id": first["id"], "saved": True, "enabled": True, "type": "standard", "trigger": rule["trigger"]["ref"],
             "trigger_matches": True, "matched": False, "fires": False, "failure_reason": None, "action": "core.local",
             "parameters": {"cmd": "echo value1"}, "parameters_error": None},
        )
        self.assertEqual(first["criteria"][0]["pattern"], "nope")
        self.assertEqual((second["ref"], second["id"], second["matched"], second["fires"]), ("examples.sample_rule", rule["id"], True, True))
        self.assertEqual(second["criteria"], [{"key": "trigger.body.key1", "operator": "equals", "pattern": "value1", "pattern_source": "value1", "value": "value1", "matched": True, "error": None}])

    def test_triggerAndPayload(self) -> None:
        """
        A trigger ref and a payload are explained like an instance; with a
        rule ref, only that rule is.
        """
        rule = self.createRule()
        self.createRule(name="other_rule")
        response, body = self.request("POST", "/v1/rules/explain", {"trigger": rule["trigger"]["ref"], "payload": hookPayload({"key1": "x"})})
        self.assertEqual(response.code, 200, body)
        self.assertEqual([(r["ref"], r["matched"]) for r in body["rules"]], [("examples.other_rule", False), ("examples.sample_rule", False)])
        self.assertIsNone(body["trigger_instance"])
        self.assertFalse(body["matched"])
        response, body = self.request("POST", "/v1/rules/explain", {"trigger": rule["trigger"]["ref"], "payload": hookPayload({"key1": "value1"}), "rule": rule["id"]})
        self.assertEqual([(r["ref"], r["matched"]) for r in body["rules"]], [("examples.sample_rule", True)])

    def test_unsavedRule(self) -> None:
        """
        A rule document not yet saved is explained against a payload, with
        or without a trigger (whose check then compares the trigger saving
        it would create); nothing is saved, not even its trigger.
        """
        before = self.counts()
        response, body = self.request("POST", "/v1/rules/explain", {"rule": sampleRule(), "payload": hookPayload({"key1": "value1"})})
        self.assertEqual(response.code, 200, body)
        [explained] = body["rules"]
        self.assertEqual((explained["saved"], explained["id"], explained["matched"], explained["trigger_matches"]), (False, None, True, None))
        self.assertEqual(explained["parameters"], {"cmd": "echo value1"})
        ref = parameterisedTrigger(WEBHOOK_TYPE, "core", {"url": "sample"})["ref"]
        self.assertEqual(explained["trigger"], ref)
        response, body = self.request("POST", "/v1/rules/explain", {"rule": sampleRule(), "trigger": ref, "payload": hookPayload({"key1": "value1"})})
        self.assertEqual((body["rules"][0]["trigger_matches"], body["rules"][0]["matched"]), (True, True))
        response, body = self.request("POST", "/v1/rules/explain", {"rule": sampleRule(), "trigger": "core.st2.webhook", "payload": {"body": {"key1": "value1"}}})
        self.assertEqual((body["rules"][0]["trigger_matches"], body["rules"][0]["matched"]), (False, False))
        self.assertEqual(self.counts(), before)

    def test_payloadError(self) -> None:
        """
        A payload the generic hook would refuse is explained anyway, with
        the hook's reason.
        """
        response, body = self.request("POST", "/v1/rules/explain", {"trigger": "no.such.trigger", "payload": {"a": 1}})
        self.assertEqual(response.code, 200, body)
        self.assertEqual(body["rules"], [])
        self.assertIn('Trigger type with reference "no.such.trigger" doesn\'t exist in the database', body["payload_error"])

    def test_refused(self) -> None:
        """
        Malformed requests are 400 and unknown instances or rules 404, with
        a faultstring; the route is not taken for a rule called "explain".
        """
        cases = [
            ([1], 400),
            ({}, 400),
            ({"payload": {}}, 400),
            ({"trigger_instance": 5}, 400),
            ({"trigger_instance": "a", "payload": {}}, 400),
            ({"trigger": "t", "bogus": 1}, 400),
            ({"trigger": "t", "rule": 3}, 400),
            ({"rule": {"name": "x"}, "payload": {}}, 400),
            ({"trigger_instance": "0123456789abcdef01234567"}, 404),
            ({"trigger": "t", "rule": "examples.none"}, 404),
        ]
        for body, code in cases:
            response, answer = self.request("POST", "/v1/rules/explain", body)
            self.assertEqual(response.code, code, (body, answer))
            self.assertIsInstance(answer["faultstring"], str)
        response, answer = self.request("GET", "/v1/rules/explain")
        self.assertEqual(response.code, 404)
        self.assertEqual(answer["faultstring"], 'Resource with a reference or id "explain" not found')
