"""
Tests for L{bwcd.rules.criteria}: criteria validation and matching rules
against trigger payloads.
"""

import time
from datetime import datetime, timezone

from twisted.trial.unittest import SynchronousTestCase

from bwcd.rules.criteria import (
    CompiledCriteria,
    CriteriaError,
    MatchResult,
    compileCriteria,
    evaluate,
    renderPattern,
    validateCriteria,
)
from bwcd.rules.templating import renderTemplate

ALLOWED = (
    "['matchwildcard', 'matchregex', 'regex', 'iregex', 'eq', 'equals', 'neq', 'nequals', "
    "'ieq', 'iequals', 'contains', 'icontains', 'ncontains', 'incontains', 'startswith', "
    "'istartswith', 'endswith', 'iendswith', 'lt', 'lessthan', 'gt', 'greaterthan', 'td_lt', "
    "'timediff_lt', 'td_gt', 'timediff_gt', 'exists', 'nexists', 'inside', 'in', 'ninside', "
    "'nin', 'search']"
)

PREFIX = 'Failed to match rule "examples.rule" against trigger instance "ti-1": '

NOW = datetime(2024, 1, 1, 0, 10, 0, tzinfo=timezone.utc)


def match(criteria, payload, **kwargs):
    return evaluate("examples.rule", "ti-1", criteria, payload, **kwargs)


class ValidateCriteriaTests(SynchronousTestCase):
    """
    validateCriteria gives st2's 400 messages word for word.
    """

    def assertRejected(self, criteria, message):
        error = self.assertRaises(CriteriaError, validateCriteria, criteria)
        self.assertEqual(str(error), message)
        self.assertIsInstance(error, ValueError)

    def test_valid(self):
        """
        Well-formed criteria, including search, pass.
        """
        validateCriteria({})
        validateCriteria({
            "trigger.body.a": {"type": "equals", "pattern": "x"},
            "trigger.body.b": {"type": "exists", "pattern": "anything"},
            "trigger.items": {"type": "search", "condition": "any",
                              "pattern": {"item.name": {"type": "eq", "pattern": "a"}}},
            "trigger.n": {"type": "lt", "pattern": 0},
            "trigger.flag": {"type": "eq", "pattern": False},
        })

    def test_operatorMissing(self):
        """
        A criterion without type is rejected.
        """
        self.assertRejected({"trigger.a": {"pattern": "x"}}, "Operator not specified for field: trigger.a")

    def test_operatorUnknown(self):
        """
        An unknown operator is rejected with the full list of allowed names.
        """
        self.assertRejected(
            {"trigger.a": {"type": "bogus", "pattern": "x"}},
            "For field: trigger.a, operator bogus not in list of allowed operators: " + ALLOWED)

    def test_operatorCaseSensitive(self):
        """
        Validation is case-sensitive, so Equals is rejected.
        """
        self.assertRejected(
            {"trigger.a": {"type": "Equals", "pattern": "x"}},
            "For field: trigger.a, operator Equals not in list of allowed operators: " + ALLOWED)

    def test_patternMissing(self):
        """
        A missing or null pattern is rejected, even for exists and nexists.
        """
        self.assertRejected({"trigger.a": {"type": "equals"}},
                            "For field: trigger.a, no pattern specified for operator equals")
        self.assertRejected({"trigger.a": {"type": "exists"}},
                            "For field: trigger.a, no pattern specified for operator exists")
        self.assertRejected({"trigger.a": {"type": "nexists", "pattern": None}},
                            "For field: trigger.a, no pattern specified for operator nexists")

    def test_stopsAtFirstProblem(self):
        """
        Criteria are checked in order and the first problem is reported.
        """
        self.assertRejected({"trigger.ok": {"type": "eq", "pattern": 1},
                             "trigger.bad": {"type": "eq"},
                             "trigger.worse": {}},
                            "For field: trigger.bad, no pattern specified for operator eq")

    def test_notADict(self):
        """
        Criteria that are not a mapping are rejected.
        """
        self.assertRejected(["x"], "Criteria should be a dict.")
        self.assertRejected({"trigger.a": "equals"}, "Operator not specified for field: trigger.a")


class EvaluateTests(SynchronousTestCase):
    """
    evaluate: AND semantics, falsy payloads, pattern rendering and the
    failure reasons recorded for failed enforcements.
    """

    PAYLOAD = {
        "body": {"name": "st2", "count": 5, "count_text": "5", "flag": True, "tags": ["a", "b"]},
        "headers": {"X-Custom-Header": "custom"},
        "items": [{"name": "first"}, {"name": "second"}],
        "expected": "second",
    }

    def test_noCriteriaMatchesAnything(self):
        """
        A rule without criteria matches, even an empty payload.
        """
        self.assertEqual(match({}, {}), MatchResult(True, None))
        self.assertEqual(match({}, None), MatchResult(True, None))

    def test_falsyPayloadNeverMatches(self):
        """
        A rule with criteria never matches an empty or falsy payload, even
        with criteria that would hold for missing keys.
        """
        criteria = {"trigger.x": {"type": "nexists", "pattern": "x"}}
        for payload in [{}, None, [], ""]:
            self.assertEqual(match(criteria, payload), MatchResult(False, None))
        self.assertTrue(match(criteria, {"y": 1}).matched)

    def test_allCriteriaAnded(self):
        """
        Every criterion must hold.
        """
        criteria = {
            "trigger.body.name": {"type": "equals", "pattern": "st2"},
            "trigger.headers['X-Custom-Header']": {"type": "eq", "pattern": "custom"},
            "trigger.items[1].name": {"type": "startswith", "pattern": "sec"},
        }
        self.assertEqual(match(criteria, self.PAYLOAD), MatchResult(True, None))
        criteria["trigger.body.count"] = {"type": "gt", "pattern": 10}
        self.assertEqual(match(criteria, self.PAYLOAD), MatchResult(False, None))

    def test_stopsAtFirstFailure(self):
        """
        After a criterion fails the later ones are not evaluated, so a later
        error is not reported.
        """
        criteria = {
            "trigger.body.name": {"type": "equals", "pattern": "other"},
            "trigger.body.count_text": {"type": "lt", "pattern": 3},
        }
        self.assertEqual(match(criteria, self.PAYLOAD), MatchResult(False, None))

        rendered = []

        def recordingRender(source, context):
            rendered.append(source)
            return renderTemplate(source, context)

        criteria = {
            "trigger.body.name": {"type": "equals", "pattern": "other"},
            "trigger.body.count": {"type": "equals", "pattern": "{{ trigger.body.count }}"},
        }
        self.assertFalse(match(criteria, self.PAYLOAD, render=recordingRender).matched)
        self.assertEqual(rendered, [])

    def test_suffixedKeys(self):
        """
        trigger.x#1 and trigger.x#2 are two criteria on the same key.
        """
        criteria = {
            "trigger.body.count#1": {"type": "gt", "pattern": 1},
            "trigger.body.count#2": {"type": "lt", "pattern": 10},
        }
        self.assertTrue(match(criteria, self.PAYLOAD).matched)
        criteria["trigger.body.count#3"] = {"type": "lt", "pattern": 5}
        self.assertFalse(match(criteria, self.PAYLOAD).matched)

    def test_patternKeepsType(self):
        """
        A "{{ expr }}" pattern keeps the rendered value's type: an integer
        stays an integer and a numeric string stays a string.
        """
        self.assertTrue(match({"trigger.body.count": {"type": "eq", "pattern": "{{ trigger.body.count }}"}},
                              self.PAYLOAD).matched)
        self.assertTrue(match({"trigger.body.count_text": {"type": "eq", "pattern": "{{ trigger.body.count_text }}"}},
                              self.PAYLOAD).matched)
        self.assertFalse(match({"trigger.body.count_text": {"type": "eq", "pattern": "{{ trigger.body.count }}"}},
                               self.PAYLOAD).matched)
        self.assertTrue(match({"trigger.body.tags": {"type": "eq", "pattern": "{{ trigger.body.tags }}"}},
                              self.PAYLOAD).matched)
        self.assertTrue(match({"trigger.body.count": {"type": "lt", "pattern": "{{ (trigger.body.count + 1) }}"}},
                              self.PAYLOAD).matched)

    def test_patternMixedTextIsString(self):
        """
        A pattern with text around the expression renders to a string.
        """
        self.assertEqual(renderPattern("n-{{ trigger.n }}", {"trigger": {"n": 5}}), "n-5")
        self.assertEqual(renderPattern("{{ trigger.n }}", {"trigger": {"n": 5}}), 5)
        self.assertEqual(renderPattern("{% if true %}7{% endif %}", {}), "7")
        self.assertEqual(renderPattern(7, {}), 7)
        self.assertIsNone(renderPattern(None, {}))

    def test_patternUsesExtraContext(self):
        """
        Key-value data passed as context is visible to patterns and keys.
        """
        context = {"st2kv": {"system": {"expected": "st2"}}, "system": {"limit": 3}}
        criteria = {
            "trigger.body.name": {"type": "eq", "pattern": "{{ st2kv.system.expected }}"},
            "system.limit": {"type": "lt", "pattern": "{{ trigger.body.count }}"},
        }
        self.assertTrue(match(criteria, self.PAYLOAD, context=context).matched)

    def test_customRender(self):
        """
        The render callable receives the template and the lookup context.
        """
        calls = []

        def fakeRender(source, context):
            calls.append((source, context))
            return '"st2"'

        criteria = {"trigger.body.name": {"type": "eq", "pattern": "{{ anything }}"}}
        self.assertTrue(match(criteria, self.PAYLOAD, render=fakeRender).matched)
        self.assertEqual(calls, [("{{anything  | to_complex}}", {"trigger": self.PAYLOAD})])

    def test_literalPatternsNotRendered(self):
        """
        Patterns Jinja would not change are used without rendering.
        """
        def refuse(source, context):
            raise AssertionError("rendered %r" % (source,))

        criteria = {"trigger.body.name": {"type": "regex", "pattern": "^s{1}t2$"}}
        self.assertTrue(match(criteria, self.PAYLOAD, render=refuse).matched)

    def test_renderFailure(self):
        """
        A pattern that fails to render gives no match and st2's reason.
        """
        criteria = {"trigger.body.name": {"type": "eq", "pattern": "{{ trigger.nope }}"}}
        self.assertEqual(match(criteria, self.PAYLOAD), MatchResult(
            False,
            PREFIX + 'Failed to render pattern value "{{ trigger.nope }}" for key "trigger.body.name": '
            "'dict object' has no attribute 'nope'"))

    def test_keyFailure(self):
        """
        A key that is not valid JSONPath gives st2's transforming reason.
        """
        result = match({"trigger.[": {"type": "eq", "pattern": "x"}}, self.PAYLOAD)
        self.assertFalse(result.matched)
        self.assertEqual(result.failure_reason,
                         PREFIX + "Failed transforming criteria key trigger.[: Parse error near the end of string!")

    def test_operatorFailure(self):
        """
        An operator error ("5" < 3) gives st2's criteria problem reason.
        """
        result = match({"trigger.body.count_text": {"type": "lt", "pattern": 3}}, self.PAYLOAD)
        self.assertEqual(result, MatchResult(
            False,
            PREFIX + "There might be a problem with the criteria in rule examples.rule: "
            "'<' not supported between instances of 'str' and 'int'"))

    def test_missingValueFailure(self):
        """
        contains on a missing key is an operator error, not a plain mismatch.
        """
        result = match({"trigger.nothing": {"type": "contains", "pattern": "x"}}, self.PAYLOAD)
        self.assertFalse(result.matched)
        self.assertTrue(result.failure_reason.startswith(
            PREFIX + "There might be a problem with the criteria in rule examples.rule: "))

    def test_missingTypeNoMatch(self):
        """
        A criterion without type (validation bypassed) simply does not match.
        """
        self.assertEqual(match({"trigger.body.name": {"pattern": "st2"}}, self.PAYLOAD),
                         MatchResult(False, None))

    def test_unknownOperatorAtEvaluation(self):
        """
        An unknown operator reaching evaluation is a criteria problem.
        """
        result = match({"trigger.body.name": {"type": "bogus", "pattern": "st2"}}, self.PAYLOAD)
        self.assertEqual(result.failure_reason,
                         PREFIX + "There might be a problem with the criteria in rule examples.rule: "
                         "Invalid operator: bogus")

    def test_operatorCaseIgnoredAtEvaluation(self):
        """
        Evaluation accepts mixed-case operator names, as st2's get_operator.
        """
        self.assertTrue(match({"trigger.body.name": {"type": "EQUALS", "pattern": "st2"}},
                              self.PAYLOAD).matched)

    def test_exists(self):
        """
        exists and nexists look at the key only.
        """
        self.assertTrue(match({"trigger.body.flag": {"type": "exists", "pattern": "x"},
                               "trigger.body.none": {"type": "nexists", "pattern": "x"}},
                              self.PAYLOAD).matched)

    def test_timediffUsesNow(self):
        """
        The timediff operators use the given now, read once per evaluation.
        """
        reads = []

        def now():
            reads.append(1)
            return NOW

        criteria = {"trigger.at#1": {"type": "td_lt", "pattern": 60},
                    "trigger.at#2": {"type": "timediff_gt", "pattern": "10"}}
        payload = {"at": "2024-01-01T00:09:30Z"}
        self.assertTrue(match(criteria, payload, now=now).matched)
        self.assertEqual(len(reads), 1)
        self.assertFalse(match(criteria, payload, now=NOW.timestamp() + 3600).matched)

    def test_timediffWithoutNow(self):
        """
        Without now a timediff criterion fails with a reason instead of
        reading the wall clock.
        """
        result = match({"trigger.at": {"type": "td_lt", "pattern": 60}}, {"at": "2024-01-01T00:00:00Z"})
        self.assertFalse(result.matched)
        self.assertIn("The current time is needed", result.failure_reason)

    def test_search(self):
        """
        search checks child criteria against each item; child patterns are
        rendered against the item.
        """
        payload = {"items": [{"name": "first", "want": "first"}, {"name": "second", "want": "other"}]}
        anyCriteria = {"trigger.items": {"type": "search", "condition": "any", "pattern": {
            "item.name": {"type": "eq", "pattern": "{{ item.want }}"}}}}
        self.assertTrue(match(anyCriteria, payload).matched)
        allCriteria = {"trigger.items": dict(anyCriteria["trigger.items"], condition="all")}
        self.assertEqual(match(allCriteria, payload), MatchResult(False, None))

    def test_searchChildFailureReported(self):
        """
        A child error that leaves the search unmatched is the failure reason.
        """
        criteria = {"trigger.items": {"type": "search", "condition": "all", "pattern": {
            "item.name": {"type": "lt", "pattern": 3}}}}
        result = match(criteria, self.PAYLOAD)
        self.assertEqual(result, MatchResult(
            False,
            PREFIX + "There might be a problem with the criteria in rule examples.rule: "
            "'<' not supported between instances of 'str' and 'int'"))

    def test_searchChildFailureIgnoredWhenMatched(self):
        """
        A child error does not taint a search that matched through another
        item.
        """
        payload = {"items": [{"n": "text"}, {"n": 1}]}
        criteria = {"trigger.items": {"type": "search", "condition": "any", "pattern": {
            "item.n": {"type": "lt", "pattern": 3}}},
            "trigger.items[0].n": {"type": "eq", "pattern": "other"}}
        self.assertEqual(match(criteria, payload), MatchResult(False, None))

    def test_searchUnknownCondition(self):
        """
        An unknown search condition is a criteria problem.
        """
        criteria = {"trigger.items": {"type": "search", "condition": "most", "pattern": {
            "item.name": {"type": "eq", "pattern": "first"}}}}
        result = match(criteria, self.PAYLOAD)
        self.assertFalse(result.matched)
        self.assertIn("'most' search condition is not recognized", result.failure_reason)


class CompiledCriteriaTests(SynchronousTestCase):
    """
    compileCriteria: prepared once, same results, fast to evaluate.
    """

    CRITERIA = {
        "trigger.body.a": {"type": "equals", "pattern": "x"},
        "trigger.body.b": {"type": "eq", "pattern": "y"},
        "trigger.headers['X-Kind']": {"type": "eq", "pattern": "push"},
    }
    PAYLOAD = {"body": {"a": "x", "b": "y"}, "headers": {"X-Kind": "push"}}

    def test_sameResults(self):
        """
        Compiled and plain criteria give the same result.
        """
        compiled = compileCriteria(self.CRITERIA)
        self.assertIsInstance(compiled, CompiledCriteria)
        self.assertEqual(match(compiled, self.PAYLOAD), match(self.CRITERIA, self.PAYLOAD))
        other = {"body": {"a": "x", "b": "z"}, "headers": {"X-Kind": "push"}}
        self.assertEqual(match(compiled, other), MatchResult(False, None))

    def test_errorsDeferredToEvaluation(self):
        """
        A malformed key or unknown operator compiles, and is reported when
        the criteria are evaluated.
        """
        compiled = compileCriteria({"trigger.[": {"type": "eq", "pattern": 1}})
        result = match(compiled, {"a": 1})
        self.assertTrue(result.failure_reason.startswith(PREFIX + "Failed transforming criteria key trigger.["))
        result = match(compiled, {"a": 1})
        self.assertTrue(result.failure_reason.startswith(PREFIX + "Failed transforming criteria key trigger.["))

    def test_hotPathIsFast(self):
        """
        A few equals criteria on a small payload evaluate in microseconds
        (the bound allows 250us per evaluation, far above the expected).
        """
        compiled = compileCriteria(self.CRITERIA)
        self.assertTrue(match(compiled, self.PAYLOAD).matched)
        count = 2000
        start = time.perf_counter()
        for _ in range(count):
            match(compiled, self.PAYLOAD)
        elapsed = time.perf_counter() - start
        self.assertLess(elapsed / count, 250e-6)
