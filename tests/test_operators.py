"""
Tests for L{bwcd.rules.operators}: every operator name and alias of st2's
table, driven from one table of (value, pattern, expected) rows.
"""

import re
from datetime import datetime, timezone

from twisted.trial.unittest import SynchronousTestCase

from bwcd.rules import operators
from bwcd.rules.operators import (
    ALLOWED_OPERATORS,
    OPERATORS,
    UnknownOperatorError,
    UnrecognizedConditionError,
    applyOperator,
    getOperator,
    parseTimestamp,
    resolveNow,
)

NOW = datetime(2024, 1, 1, 0, 10, 0, tzinfo=timezone.utc)
THIRTY_SECONDS_AGO = "2024-01-01T00:09:30Z"
TEN_MINUTES_AGO = "2024-01-01T00:00:00Z"

# (operator names sharing one implementation) -> rows of
# (description, value, pattern, expected result or exception class)
CASES = {
    ("equals", "eq"): [
        ("equal strings", "abc", "abc", True),
        ("different strings", "abc", "abd", False),
        ("equal integers", 1, 1, True),
        ("no coercion between int and str", 1, "1", False),
        ("bytes value decoded", b"abc", "abc", True),
        ("bytes pattern decoded", "abc", b"abc", True),
        ("equal lists", [1, 2], [1, 2], True),
        ("None pattern never matches", "abc", None, False),
        ("None pattern never matches a None value", None, None, False),
    ],
    ("nequals", "neq"): [
        ("different strings", "a", "b", True),
        ("equal strings", "a", "a", False),
        ("no coercion between int and str", 1, "1", True),
        ("bytes value decoded", b"a", "a", False),
        ("None pattern is compared like any other", "a", None, True),
        ("None pattern equals a None value", None, None, False),
    ],
    ("iequals", "ieq"): [
        ("case-insensitive equal", "ABC", "abc", True),
        ("different strings", "abc", "abd", False),
        ("bytes value decoded", b"ABC", "abc", True),
        ("None pattern never matches", "abc", None, False),
        ("non-string value raises", 1, "1", AttributeError),
        ("missing value raises", None, "a", AttributeError),
    ],
    ("contains",): [
        ("substring", "hello world", "wor", True),
        ("not a substring", "hello", "xyz", False),
        ("list membership", ["a", "b"], "a", True),
        ("not a list member", ["a"], "c", False),
        ("case-sensitive", "Hello", "hello", False),
        ("bytes value decoded", b"hello", "ell", True),
        ("None pattern never matches", "x", None, False),
        ("missing value raises", None, "a", TypeError),
    ],
    ("ncontains",): [
        ("not a substring", "hello", "xyz", True),
        ("substring", "hello", "ell", False),
        ("list member", ["a"], "a", False),
        ("not a list member", ["a"], "b", True),
        ("None pattern never matches", "x", None, False),
        ("missing value raises", None, "a", TypeError),
    ],
    ("icontains",): [
        ("case-insensitive substring", "Hello World", "WORLD", True),
        ("not a substring", "Hello", "xyz", False),
        ("None pattern never matches", "x", None, False),
        ("missing value raises", None, "a", AttributeError),
    ],
    ("incontains",): [
        ("case-insensitively absent", "Hello", "XYZ", True),
        ("case-insensitively present", "Hello", "HELL", False),
        ("None pattern never matches", "x", None, False),
        ("non-string value raises", 5, "a", AttributeError),
    ],
    ("startswith",): [
        ("prefix", "foobar", "foo", True),
        ("case-sensitive", "foobar", "Foo", False),
        ("bytes value decoded", b"foobar", "foo", True),
        ("None pattern never matches", "x", None, False),
        ("non-string value raises", 5, "5", AttributeError),
    ],
    ("istartswith",): [
        ("case-insensitive prefix", "FOObar", "foo", True),
        ("not a prefix", "foobar", "bar", False),
        ("None pattern never matches", "x", None, False),
        ("missing value raises", None, "x", AttributeError),
    ],
    ("endswith",): [
        ("suffix", "foobar", "bar", True),
        ("case-sensitive", "foobar", "BAR", False),
        ("None pattern never matches", "x", None, False),
        ("non-string value raises", 5, "5", AttributeError),
    ],
    ("iendswith",): [
        ("case-insensitive suffix", "fooBAR", "bar", True),
        ("not a suffix", "foobar", "foo", False),
        ("None pattern never matches", "x", None, False),
        ("missing value raises", None, "x", AttributeError),
    ],
    ("lessthan", "lt"): [
        ("smaller", 1, 2, True),
        ("larger", 2, 1, False),
        ("equal is not less", 2, 2, False),
        ("strings compare lexically", "a", "b", True),
        ("str against int raises", "5", 3, TypeError),
        ("missing value raises", None, 1, TypeError),
        ("None pattern never matches", 1, None, False),
    ],
    ("greaterthan", "gt"): [
        ("larger", 2, 1, True),
        ("smaller", 1, 2, False),
        ("float against int", 2.5, 2, True),
        ("str against int raises", "5", 3, TypeError),
        ("None pattern never matches", 1, None, False),
    ],
    ("matchwildcard",): [
        ("star", "foo.txt", "*.txt", True),
        ("star mismatch", "foo.txt", "*.log", False),
        ("question mark", "a1", "a?", True),
        ("character class", "b", "[ab]", True),
        ("None pattern never matches", "x", None, False),
        ("missing value raises", None, "*", TypeError),
    ],
    ("matchregex",): [
        ("anchored match", "abc", "a.c", True),
        ("anchored at the start", "xabc", "abc", False),
        ("dot matches newline", "a\nb", "a.b", True),
        ("bytes value decoded", b"abc", "ab", True),
        ("bad regex raises", "abc", "[", re.error),
        ("None pattern never matches", "x", None, False),
    ],
    ("regex",): [
        ("search anywhere", "xabc", "abc", True),
        ("no match", "xyz", "abc", False),
        ("case-sensitive", "ABC", "abc", False),
        ("dot does not match newline", "a\nb", "a.b", False),
        ("bad regex raises", "x", "[", re.error),
        ("missing value raises", None, "a", TypeError),
        ("None pattern never matches", "x", None, False),
    ],
    ("iregex",): [
        ("case-insensitive search", "xABC", "abc", True),
        ("no match", "xyz", "abc", False),
        ("bad regex raises", "x", "(", re.error),
        ("None pattern never matches", "x", None, False),
    ],
    ("timediff_lt", "td_lt"): [
        ("30s ago is within 60s", THIRTY_SECONDS_AGO, 60, True),
        ("10 minutes ago is not within 60s", TEN_MINUTES_AGO, 60, False),
        ("string pattern is converted to float", THIRTY_SECONDS_AGO, "60", True),
        ("naive timestamp is UTC", "2024-01-01 00:09:30", 60, True),
        ("explicit offset", "2024-01-01T01:09:30+01:00", 60, True),
        ("microseconds", "2024-01-01T00:09:30.123456Z", 60, True),
        ("not a timestamp raises", "not a date", 60, ValueError),
        ("number instead of a timestamp raises", 12345, 60, TypeError),
        ("non-numeric pattern raises", THIRTY_SECONDS_AGO, "abc", ValueError),
        ("None pattern never matches", THIRTY_SECONDS_AGO, None, False),
    ],
    ("timediff_gt", "td_gt"): [
        ("10 minutes ago is older than 60s", TEN_MINUTES_AGO, 60, True),
        ("30s ago is not older than 60s", THIRTY_SECONDS_AGO, 60, False),
        ("string pattern is converted to float", TEN_MINUTES_AGO, "60.5", True),
        ("not a timestamp raises", "yesterday", 60, ValueError),
        ("None pattern never matches", TEN_MINUTES_AGO, None, False),
    ],
    ("exists",): [
        ("present value", "x", "ignored", True),
        ("falsy but present value", 0, "ignored", True),
        ("missing value", None, "ignored", False),
        ("None pattern is ignored", "x", None, True),
    ],
    ("nexists",): [
        ("missing value", None, "ignored", True),
        ("present value", "x", "ignored", False),
        ("None pattern is ignored", None, None, True),
    ],
    ("inside", "in"): [
        ("list member", "a", ["a", "b"], True),
        ("not a list member", "c", ["a", "b"], False),
        ("substring of a string pattern", "ell", "hello", True),
        ("bytes value decoded", b"a", ["a"], True),
        ("int inside a string raises", 1, "abc", TypeError),
        ("None pattern never matches", "a", None, False),
    ],
    ("ninside", "nin"): [
        ("not a list member", "c", ["a", "b"], True),
        ("list member", "a", ["a"], False),
        ("int inside a string raises", 1, "abc", TypeError),
        ("None pattern never matches", "a", None, False),
    ],
}


def _slug(text):
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")


def _makeTest(name, description, value, pattern, expected):
    if isinstance(expected, bool):
        def test(self):
            result = applyOperator(name, value, pattern, now=NOW)
            self.assertIs(result, expected)
        test.__doc__ = "%s: %s (%r, %r) gives %r." % (name, description, value, pattern, expected)
    else:
        def test(self):
            self.assertRaises(expected, applyOperator, name, value, pattern, now=NOW)
        test.__doc__ = "%s: %s (%r, %r) raises %s." % (
            name, description, value, pattern, expected.__name__)
    return test


def _tableTests(cases):
    tests = {}
    for names, rows in cases.items():
        for name in names:
            for description, value, pattern, expected in rows:
                testName = "test_%s_%s" % (name, _slug(description))
                assert testName not in tests, testName
                tests[testName] = _makeTest(name, description, value, pattern, expected)
    return tests


OperatorTableTests = type(
    "OperatorTableTests", (SynchronousTestCase,),
    dict(_tableTests(CASES), __doc__="One generated test per operator name and table row."),
)

ITEMS = [{"name": "a", "v": 1}, {"name": "b", "v": 2}]
# Neither item matches both children; each item matches one child.
SPLIT = {"item.name": {"type": "eq", "pattern": "a"}, "item.v": {"type": "eq", "pattern": 2}}
# Every item matches every child.
EVERYWHERE = {"item.name": {"type": "inside", "pattern": ["a", "b"]},
              "item.v": {"type": "gt", "pattern": 0}}
# Only the first item matches the single child.
FIRST_ONLY = {"item.name": {"type": "eq", "pattern": "a"}}
# No item matches anything.
NOWHERE = {"item.name": {"type": "eq", "pattern": "z"}}

# (description, value, pattern, {condition: expected})
SEARCH_CASES = [
    ("split children", ITEMS, SPLIT, {"any": False, "all": False, "any2any": True, "all2any": True}),
    ("matches everywhere", ITEMS, EVERYWHERE, {"any": True, "all": True, "any2any": True, "all2any": True}),
    ("first item only", ITEMS, FIRST_ONLY, {"any": True, "all": False, "any2any": True, "all2any": False}),
    ("matches nowhere", ITEMS, NOWHERE, {"any": False, "all": False, "any2any": False, "all2any": False}),
    ("empty list", [], FIRST_ONLY, {"any": False, "all": True, "any2any": False, "all2any": True}),
    ("dict is one item", {"name": "a"}, FIRST_ONLY, {"any": True, "all": True, "any2any": True, "all2any": True}),
]


def _makeSearchTest(description, value, pattern, condition, expected):
    def test(self):
        result = applyOperator("search", value, pattern, condition=condition)
        self.assertIs(result, expected)
    test.__doc__ = "search/%s: %s gives %r." % (condition, description, expected)
    return test


def _searchTests():
    tests = {}
    for description, value, pattern, outcomes in SEARCH_CASES:
        for condition, expected in outcomes.items():
            testName = "test_search_%s_%s" % (condition, _slug(description))
            tests[testName] = _makeSearchTest(description, value, pattern, condition, expected)
    return tests


SearchTableTests = type(
    "SearchTableTests", (SynchronousTestCase,),
    dict(_searchTests(), __doc__="One generated test per search condition and table row."),
)


class SearchTests(SynchronousTestCase):
    """
    The parts of C{search} that are not a plain table row.
    """

    def test_unknownCondition(self):
        """
        A condition other than any/all/any2any/all2any raises
        UnrecognizedConditionError naming the condition.
        """
        error = self.assertRaises(
            UnrecognizedConditionError, applyOperator, "search", ITEMS, FIRST_ONLY, condition="some")
        self.assertIn("'some'", str(error))

    def test_missingCondition(self):
        """
        A search without a condition raises UnrecognizedConditionError too.
        """
        self.assertRaises(UnrecognizedConditionError, applyOperator, "search", ITEMS, FIRST_ONLY)

    def test_nonePattern(self):
        """
        A None pattern gives False, like every guarded operator.
        """
        self.assertIs(applyOperator("search", ITEMS, None, condition="any"), False)

    def test_checkReceivesItemContext(self):
        """
        Each child criterion is checked against {"item": element}, with its
        key and criterion as written.
        """
        calls = []

        def check(key, criterion, context):
            calls.append((key, criterion, context))
            return True

        pattern = {"item.name": {"type": "eq", "pattern": "a"}}
        self.assertTrue(operators.search(ITEMS, pattern, "all", check))
        self.assertEqual(calls, [
            ("item.name", {"type": "eq", "pattern": "a"}, {"item": ITEMS[0]}),
            ("item.name", {"type": "eq", "pattern": "a"}, {"item": ITEMS[1]}),
        ])

    def test_nestedPaths(self):
        """
        Child keys are JSONPath expressions under item.
        """
        value = [{"meta": {"tags": ["x", "y"]}}]
        pattern = {"item.meta.tags[1]": {"type": "equals", "pattern": "y"}}
        self.assertTrue(applyOperator("search", value, pattern, condition="any"))

    def test_childErrorPropagates(self):
        """
        With the default check an operator error inside a child escapes.
        """
        pattern = {"item.name": {"type": "lt", "pattern": 3}}
        self.assertRaises(TypeError, applyOperator, "search", ITEMS, pattern, condition="any")


class TableCoverageTests(SynchronousTestCase):
    """
    The operator table itself.
    """

    def test_everyOperatorHasTableRows(self):
        """
        Every operator name is exercised by the generated tests (search has
        its own table).
        """
        covered = {name for names in CASES for name in names} | {"search"}
        self.assertEqual(covered, set(OPERATORS))

    def test_allowedOperatorsInSt2Order(self):
        """
        The allowed operator names and their order are st2's, because the
        order is visible in validation messages.
        """
        self.assertEqual(list(ALLOWED_OPERATORS), [
            "matchwildcard", "matchregex", "regex", "iregex", "eq", "equals", "neq", "nequals",
            "ieq", "iequals", "contains", "icontains", "ncontains", "incontains", "startswith",
            "istartswith", "endswith", "iendswith", "lt", "lessthan", "gt", "greaterthan",
            "td_lt", "timediff_lt", "td_gt", "timediff_gt", "exists", "nexists", "inside", "in",
            "ninside", "nin", "search",
        ])

    def test_aliasesShareImplementation(self):
        """
        Each short name is the same function as its long name.
        """
        for short, long in [("eq", "equals"), ("neq", "nequals"), ("ieq", "iequals"),
                            ("lt", "lessthan"), ("gt", "greaterthan"), ("td_lt", "timediff_lt"),
                            ("td_gt", "timediff_gt"), ("in", "inside"), ("nin", "ninside")]:
            self.assertIs(OPERATORS[short], OPERATORS[long])

    def test_getOperatorIgnoresCase(self):
        """
        Evaluation looks operators up case-insensitively, as st2 does.
        """
        self.assertIs(getOperator("EQUALS"), OPERATORS["equals"])
        self.assertIs(getOperator("Td_Lt"), OPERATORS["td_lt"])

    def test_getOperatorUnknown(self):
        """
        An unknown name raises UnknownOperatorError with st2's message.
        """
        error = self.assertRaises(UnknownOperatorError, getOperator, "Bogus")
        self.assertEqual(str(error), "Invalid operator: bogus")


class TimeTests(SynchronousTestCase):
    """
    The current time and timestamps for the timediff operators.
    """

    def test_nowCallable(self):
        """
        now may be a callable; it is called to get the time.
        """
        self.assertTrue(applyOperator("td_lt", THIRTY_SECONDS_AGO, 60, now=lambda: NOW))

    def test_nowEpochSeconds(self):
        """
        now may be epoch seconds, as an IReactorTime.seconds() gives.
        """
        self.assertTrue(applyOperator("td_gt", TEN_MINUTES_AGO, 60, now=NOW.timestamp()))
        self.assertTrue(applyOperator("td_lt", THIRTY_SECONDS_AGO, 60, now=lambda: NOW.timestamp()))

    def test_nowNaiveIsUtc(self):
        """
        A naive now is taken as UTC.
        """
        self.assertEqual(resolveNow(datetime(2024, 1, 1, 0, 10)), NOW)

    def test_nowMissing(self):
        """
        Without now the timediff operators fail instead of reading a clock.
        """
        self.assertRaises(ValueError, applyOperator, "timediff_lt", THIRTY_SECONDS_AGO, 60)

    def test_parseTimestampForms(self):
        """
        Z, lower-case z, explicit offsets and naive timestamps all parse to
        the same aware instant.
        """
        expected = datetime(2024, 1, 1, 0, 9, 30, tzinfo=timezone.utc)
        for text in ["2024-01-01T00:09:30Z", "2024-01-01T00:09:30z", "2024-01-01T00:09:30+00:00",
                     "2024-01-01 00:09:30", "2024-01-01T02:09:30+02:00", b"2024-01-01T00:09:30Z"]:
            self.assertEqual(parseTimestamp(text), expected, text)
