"""
Tests for L{bwcd.store.kv}: named values shared by processes on one store.
"""

from twisted.trial.unittest import SynchronousTestCase

from bwcd.store.kv import readValue, replaceValue, writeValue
from bwcd.testing import MemoryDatabase, MemoryStore


class KvTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.db = MemoryDatabase()
        self.a, self.b = MemoryStore(self.db), MemoryStore(self.db)
        self.successResultOf(self.a.start())
        self.successResultOf(self.b.start())

    def test_writeCreatesThenUpdates(self) -> None:
        """
        The first write creates the value, later ones (from any process)
        replace it, and there is only ever one document per name.
        """
        self.assertIsNone(self.successResultOf(readValue(self.a, "m")))
        self.successResultOf(writeValue(self.a, "m", "1"))
        self.successResultOf(writeValue(self.b, "m", "2"))
        self.assertEqual(self.successResultOf(readValue(self.a, "m")), "2")
        self.assertEqual(self.successResultOf(self.a.count("kv", {"name": "m"})), 1)

    def test_replaceOnlyWhenUnchanged(self) -> None:
        """
        A conditional replace succeeds only while the value is the one the
        caller last saw.
        """
        self.successResultOf(writeValue(self.a, "m", "1"))
        self.assertTrue(self.successResultOf(replaceValue(self.a, "m", "1", "2")))
        self.assertFalse(self.successResultOf(replaceValue(self.b, "m", "1", "3")))
        self.assertEqual(self.successResultOf(readValue(self.b, "m")), "2")
