"""
Tests for L{bwcd.cli.args}: st2's run argument parsing and typed casts.
"""

from __future__ import annotations

import os

from twisted.trial.unittest import SynchronousTestCase

from bwcd.cli.args import (
    ArgumentError,
    castArray,
    castBoolean,
    castObject,
    inheritedEnvironment,
    parameterType,
    parseRunArguments,
)

#: the local-shell-cmd runner parameters (st2 runner.yaml), as the API returns them
RUNNER = {
    "cmd": {"type": "string"},
    "cwd": {"type": "string"},
    "env": {"type": "object"},
    "kwarg_op": {"type": "string", "default": "--"},
    "sudo": {"type": "boolean", "default": False},
    "timeout": {"type": "integer", "default": 60},
}

ACTION = {
    "cmd": {"type": "string", "required": True},
    "hosts": {"type": "array"},
    "ratio": {"type": "number"},
    "count": {"type": "integer"},
    "flag": {"type": "boolean"},
    "untyped": {},
}


class CastTests(SynchronousTestCase):
    def test_arrayFromCommaList(self) -> None:
        """
        A plain comma list becomes a list of stripped strings.
        """
        self.assertEqual(castArray("value 1, value2,value3"), ["value 1", "value2", "value3"])

    def test_arrayFromJSON(self) -> None:
        """
        A JSON list is used as is, with its types.
        """
        self.assertEqual(castArray('[1, "a", true]'), [1, "a", True])

    def test_arraySingleInteger(self) -> None:
        """
        A lone integer becomes a one-element integer list (not an int).
        """
        self.assertEqual(castArray("51"), [51])

    def test_arrayJSONScalarIsSplit(self) -> None:
        """
        JSON that is not a list (a quoted string) falls back to splitting.
        """
        self.assertEqual(castArray('"a"'), ['"a"'])

    def test_booleanValues(self) -> None:
        """
        true and false in any case are accepted.
        """
        self.assertIs(castBoolean("true"), True)
        self.assertIs(castBoolean("False"), False)
        self.assertIs(castBoolean("TRUE"), True)

    def test_booleanInvalid(self) -> None:
        """
        Anything else gives st2's message.
        """
        e = self.assertRaises(ArgumentError, castBoolean, "yes")
        self.assertEqual(str(e), "Invalid value for boolean parameter. Valid values are: true, false")

    def test_objectJSON(self) -> None:
        """
        An object starting with { is JSON.
        """
        self.assertEqual(castObject('{"key1": "val1", "n": 2}'), {"key1": "val1", "n": 2})

    def test_objectPairs(self) -> None:
        """
        Otherwise k1=v1,k2=v2 pairs; values keep later '=' signs; bare words are skipped.
        """
        self.assertEqual(castObject("key1=val1,key2=a=b,junk"), {"key1": "val1", "key2": "a=b"})

    def test_objectBadJSON(self) -> None:
        """
        Malformed JSON is reported, not sent.
        """
        self.assertRaises(ArgumentError, castObject, "{nope")

    def test_runnerTypeWins(self) -> None:
        """
        The runner's declaration is looked up before the action's.
        """
        self.assertEqual(parameterType("timeout", {"timeout": {"type": "string"}}, RUNNER), "integer")
        self.assertEqual(parameterType("hosts", ACTION, RUNNER), "array")
        self.assertIsNone(parameterType("untyped", ACTION, RUNNER))
        self.assertIsNone(parameterType("unknown", ACTION, RUNNER))


class ParseRunArgumentsTests(SynchronousTestCase):
    def parse(self, *words: str, **kwargs):
        return parseRunArguments(list(words), ACTION, RUNNER, cwd=kwargs.get("cwd", "/"), **{k: v for k, v in kwargs.items() if k != "cwd"})

    def test_firstWordMakesCmd(self) -> None:
        """
        C{bwc run core.local "echo hi"}: the argument without '=' becomes cmd.
        """
        self.assertEqual(self.parse("echo hi"), {"cmd": "echo hi"})

    def test_cmdJoinsTheRest(self) -> None:
        """
        Everything from the first bare word on is joined by spaces, even k=v words.
        """
        self.assertEqual(self.parse("timeout=5", "date", "-R", "x=y"), {"timeout": 5, "cmd": "date -R x=y"})

    def test_typedCasts(self) -> None:
        """
        Each k=v is cast by its declared type; undeclared values stay strings.
        """
        result = self.parse("timeout=30", "sudo=false", "ratio=1.5", "count=3", "hosts=a,b", "env=A=1,B=2", "untyped=7", "other=x")
        self.assertEqual(
            result,
            {"timeout": 30, "sudo": False, "ratio": 1.5, "count": 3, "hosts": ["a", "b"], "env": {"A": "1", "B": "2"}, "untyped": "7", "other": "x"},
        )

    def test_valueKeepsEquals(self) -> None:
        """
        Only the first '=' separates the name.
        """
        self.assertEqual(self.parse("cmd=echo a=b"), {"cmd": "echo a=b"})

    def test_repeatedArrayAppends(self) -> None:
        """
        Repeating an array parameter appends to the list.
        """
        self.assertEqual(self.parse("hosts=a", "hosts=b,c"), {"hosts": ["a", "b", "c"]})

    def test_repeatedScalarReplaces(self) -> None:
        """
        Repeating a non-array parameter keeps the last value.
        """
        self.assertEqual(self.parse("count=1", "count=2"), {"count": 2})

    def test_badInteger(self) -> None:
        """
        A non-integer for an integer parameter is an error naming the value.
        """
        e = self.assertRaises(ArgumentError, self.parse, "timeout=soon")
        self.assertIn("'soon'", str(e))

    def test_badBoolean(self) -> None:
        """
        A boolean parameter given something else fails with st2's message.
        """
        e = self.assertRaises(ArgumentError, self.parse, "sudo=1")
        self.assertIn("Valid values are: true, false", str(e))

    def test_fileParameter(self) -> None:
        """
        @k=path sends the file's content (relative to the working directory), uncast.
        """
        directory = self.mktemp()
        os.makedirs(directory)
        with open(os.path.join(directory, "script.sh"), "w") as f:
            f.write("echo from file\n")
        self.assertEqual(self.parse("@cmd=script.sh", "count=1", cwd=directory), {"cmd": "echo from file\n", "count": 1})

    def test_fileMissing(self) -> None:
        """
        A missing file is reported with st2's message.
        """
        e = self.assertRaises(ArgumentError, self.parse, "@cmd=nope.txt", cwd="/nonexistent-dir")
        self.assertEqual(str(e), 'File "/nonexistent-dir/nope.txt" doesn\'t exist')

    def test_fileIsDirectory(self) -> None:
        """
        A directory is not a file.
        """
        e = self.assertRaises(ArgumentError, self.parse, "@cmd=.", cwd="/")
        self.assertEqual(str(e), '"/" is not a file')

    def test_empty(self) -> None:
        """
        No arguments, no parameters.
        """
        self.assertEqual(self.parse(), {})


class InheritedEnvironmentTests(SynchronousTestCase):
    def test_blacklistRemoved(self) -> None:
        """
        Session variables (any case) are dropped, the rest is kept.
        """
        env = {"PATH": "/bin", "HOME": "/root", "user": "x", "Term": "xterm", "MY_VAR": "1", "ST2_API_URL": "u"}
        self.assertEqual(inheritedEnvironment(env), {"MY_VAR": "1", "ST2_API_URL": "u"})
