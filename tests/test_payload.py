"""
Tests for L{bwcd.rules.payload}: criteria keys as JSONPath lookups.
"""

from collections import OrderedDict

from jsonpath_ng.exceptions import JsonPathParserError
from twisted.trial.unittest import SynchronousTestCase

from bwcd.rules import payload
from bwcd.rules.payload import compileLookup, lookup, stripSuffix

CONTEXT = {
    "trigger": {
        "body": {"key1": "value1", "nested": {"deep": [1, 2, 3]}, "empty": None, "zero": 0},
        "headers": {"X-Custom-Header": "custom", "Content-Type": "application/json"},
        "items": [{"name": "first"}, {"name": "second"}],
        "text": "a string",
        "a-b": "dashed",
    },
    "system": {"key": "kv value"},
}


class LookupTests(SynchronousTestCase):
    """
    The key forms rule authors write, resolved against a trigger context.
    """

    def test_dotted(self):
        """
        trigger.body.key1 walks nested objects.
        """
        self.assertEqual(lookup(CONTEXT, "trigger.body.key1"), "value1")

    def test_bracketWithDashes(self):
        """
        A bracketed, quoted field name may contain dashes (webhook headers).
        """
        self.assertEqual(lookup(CONTEXT, "trigger.headers['X-Custom-Header']"), "custom")
        self.assertEqual(lookup(CONTEXT, 'trigger.headers["Content-Type"]'), "application/json")

    def test_index(self):
        """
        trigger.items[0].name indexes into a list.
        """
        self.assertEqual(lookup(CONTEXT, "trigger.items[0].name"), "first")
        self.assertEqual(lookup(CONTEXT, "trigger.items[1].name"), "second")
        self.assertEqual(lookup(CONTEXT, "trigger.body.nested.deep[2]"), 3)

    def test_firstOfSeveralMatches(self):
        """
        When a wildcard matches several nodes the first one's value is used.
        """
        self.assertEqual(lookup(CONTEXT, "trigger.items[*].name"), "first")

    def test_wholeObjects(self):
        """
        A key may resolve to an object or to the whole payload.
        """
        self.assertEqual(lookup(CONTEXT, "trigger.body.nested"), {"deep": [1, 2, 3]})
        self.assertIs(lookup(CONTEXT, "trigger"), CONTEXT["trigger"])

    def test_noMatchIsNone(self):
        """
        Missing keys, indexes past the end and fields of a string give None.
        """
        self.assertIsNone(lookup(CONTEXT, "trigger.body.missing"))
        self.assertIsNone(lookup(CONTEXT, "trigger.nothing.at.all"))
        self.assertIsNone(lookup(CONTEXT, "trigger.items[5].name"))
        self.assertIsNone(lookup(CONTEXT, "trigger.text.length"))
        self.assertIsNone(lookup(CONTEXT, "trigger.headers['X-Other']"))

    def test_fieldOfListIsNone(self):
        """
        A dotted field on a list does not reach into its elements.
        """
        self.assertIsNone(lookup(CONTEXT, "trigger.items.name"))

    def test_falsyValuesKept(self):
        """
        Present falsy values come back as they are; a present null is None.
        """
        self.assertEqual(lookup(CONTEXT, "trigger.body.zero"), 0)
        self.assertIsNone(lookup(CONTEXT, "trigger.body.empty"))

    def test_suffixDropped(self):
        """
        Everything after '#' is ignored, so one key can carry two criteria.
        """
        self.assertEqual(lookup(CONTEXT, "trigger.body.key1#1"), "value1")
        self.assertEqual(lookup(CONTEXT, "trigger.body.key1#second check"), "value1")
        self.assertEqual(lookup(CONTEXT, "trigger.headers['X-Custom-Header']#2"), "custom")
        self.assertEqual(stripSuffix("a.b#c#d"), "a.b")

    def test_otherRoots(self):
        """
        Keys are resolved against the whole context, not only the trigger.
        """
        self.assertEqual(lookup(CONTEXT, "system.key"), "kv value")

    def test_dashInPlainKey(self):
        """
        jsonpath-ng reads a dash inside a bare identifier as part of the name.
        """
        self.assertEqual(lookup(CONTEXT, "trigger.a-b"), "dashed")

    def test_malformedKeyRaises(self):
        """
        A key that is not valid JSONPath raises the parser's error.
        """
        self.assertRaises(JsonPathParserError, lookup, CONTEXT, "trigger.[")
        self.assertRaises(JsonPathParserError, lookup, CONTEXT, "")

    def test_anyMappingWithGet(self):
        """
        Context values only need a .get method, like jsonpath-ng's Fields.
        """
        context = {"trigger": OrderedDict(a=OrderedDict(b=2))}
        self.assertEqual(lookup(context, "trigger.a.b"), 2)
        self.assertEqual(lookup(context, "trigger['a']['b']"), 2)


class FastPathTests(SynchronousTestCase):
    """
    Plain dotted keys skip jsonpath-ng but must agree with it exactly.
    """

    KEYS = [
        "trigger", "trigger.body", "trigger.body.key1", "trigger.body.missing",
        "trigger.body.nested.deep", "trigger.items", "trigger.items.name", "trigger.text.length",
        "trigger.body.zero", "trigger.body.empty", "system.key", "nothing", "trigger.a-b",
        "trigger._private", "trigger.where",
    ]
    CONTEXTS = [
        CONTEXT,
        {},
        {"trigger": None},
        {"trigger": []},
        {"trigger": "text"},
        {"trigger": 5},
        {"trigger": {"body": ["not", "a", "dict"]}},
        {"trigger": {"body": {"key1": {"x": 1}}}},
        {"trigger": {"_private": 1, "where": 2}},
    ]

    def _resultOf(self, function, context, key):
        try:
            return ("value", function(context, key))
        except Exception as e:
            return ("error", type(e))

    def test_agreesWithJsonPath(self):
        """
        For every key and context the fast path and jsonpath-ng give the
        same value, or the same kind of error.
        """
        for context in self.CONTEXTS:
            for key in self.KEYS:
                self.assertEqual(
                    self._resultOf(lookup, context, key),
                    self._resultOf(payload._lookupWithoutFastPath, context, key),
                    "key %r in %r" % (key, context),
                )

    def test_dottedKeysSkipJsonPath(self):
        """
        A plain dotted key is resolved without parsing any JSONPath.
        """
        def refuse(expression):
            raise AssertionError("parsed %r" % (expression,))

        self.patch(payload, "_parseJsonPath", refuse)
        self.assertEqual(lookup(CONTEXT, "trigger.body.fast_path_only_key"), None)
        self.assertEqual(lookup({"fast": {"path": 1}}, "fast.path"), 1)

    def test_bracketKeysUseJsonPath(self):
        """
        Keys with brackets go through jsonpath-ng.
        """
        parsed = []
        original = payload._parseJsonPath

        def recording(expression):
            parsed.append(expression)
            return original(expression)

        self.patch(payload, "_parseJsonPath", recording)
        key = "trigger.headers['X-Only-In-This-Test']"
        lookup(CONTEXT, key)
        self.assertEqual(parsed, [key])

    def test_compiledLookupsCached(self):
        """
        The same key (whatever its #suffix) is compiled once.
        """
        self.assertIs(compileLookup("trigger.items[0].name"), compileLookup("trigger.items[0].name#2"))
        self.assertIs(compileLookup("trigger.body.key1"), compileLookup("trigger.body.key1"))
