"""
Tests for L{bwcd.jsontext}: the strict parser every JSON route uses.
"""

import json

from twisted.trial.unittest import SynchronousTestCase

from bwcd.jsontext import MAX_DEPTH, JsonError, loadJson


class LoadJsonTests(SynchronousTestCase):
    def test_ordinaryDocuments(self) -> None:
        """
        Objects, arrays, unicode, floats and valid surrogate pairs parse as
        the standard library parses them.
        """
        for raw in [b'{"a": 1, "b": [1.5, "x", null, true]}', "[\"\u00e9\u20ac\"]".encode(), b'["\\ud83d\\ude00"]', b"[]"]:
            self.assertEqual(loadJson(raw), json.loads(raw))

    def test_deepNestingRefused(self) -> None:
        """
        Nesting beyond MAX_DEPTH is a JsonError, both just over the limit and
        far beyond Python's recursion limit.
        """
        self.assertEqual(loadJson(b"[" * MAX_DEPTH + b"]" * MAX_DEPTH), json.loads(b"[" * MAX_DEPTH + b"]" * MAX_DEPTH))
        for depth in (MAX_DEPTH + 1, 100000):
            with self.assertRaises(JsonError):
                loadJson(b"[" * depth + b"]" * depth)
        with self.assertRaises(JsonError):
            loadJson(b'{"a":' * 70 + b"1" + b"}" * 70)

    def test_manyBracketsButShallow(self) -> None:
        """
        Many sibling containers are not depth.
        """
        raw = b"[" + b",".join([b"[]"] * 500) + b"]"
        self.assertEqual(len(loadJson(raw)), 500)

    def test_nonFiniteNumbersRefused(self) -> None:
        """
        NaN, Infinity and floats that overflow cannot be written back as
        JSON, so they are refused.
        """
        for raw in [b"[NaN]", b'{"a": Infinity}', b"[-Infinity]", b"[1e309]", b"[-1e400]"]:
            with self.assertRaises(JsonError, msg=raw):
                loadJson(raw)

    def test_hugeIntegersRefused(self) -> None:
        """
        Integers beyond 64 bits are refused (BSON cannot hold them).
        """
        self.assertEqual(loadJson(b"[9223372036854775807]"), [2**63 - 1])
        with self.assertRaises(JsonError):
            loadJson(b"[9223372036854775808]")
        with self.assertRaises(JsonError):
            loadJson(b"[" + b"9" * 5000 + b"]")

    def test_loneSurrogatesRefused(self) -> None:
        """
        A lone surrogate escape, in a value or a key, is refused; so are
        surrogates encoded directly as bytes.
        """
        for raw in [b'["\\ud800"]', b'{"\\uDC00": 1}', b'["a\\udbffb"]', b'["\xed\xa0\x80"]']:
            with self.assertRaises(JsonError, msg=raw):
                loadJson(raw)

    def test_invalidUtf8Refused(self) -> None:
        """
        Bytes that are not UTF-8 are refused with the offset.
        """
        with self.assertRaises(JsonError) as e:
            loadJson(b'{"a": "\xff"}')
        self.assertIn("UTF-8", str(e.exception))

    def test_syntaxErrorsAreJsonError(self) -> None:
        """
        Ordinary syntax errors are JsonError too (a ValueError subclass).
        """
        for raw in [b"{", b"", b"{'a': 1}", b"\xef\xbb\xbf{}"]:
            with self.assertRaises(JsonError):
                loadJson(raw)
        self.assertTrue(issubclass(JsonError, ValueError))
