"""
One contract for every storage backend (L{bwcd.store.interface.IStore}),
run against SQLite, against a real MongoDB wire-protocol server and against
the in-memory test double L{bwcd.testing.MemoryStore}, plus the properties
only one backend has (SQLite's group commit, threads, schema versions;
MongoDB's failure modes; the memory store's synchronous answers and test
controls).
"""

from __future__ import annotations

import os
import re
import sqlite3
import threading
from datetime import datetime, timezone
from typing import Any, Dict, List

from twisted.internet import reactor
from twisted.internet.defer import Deferred, DeferredList, ensureDeferred, gatherResults
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import deferLater
from twisted.protocols.portforward import ProxyClient, ProxyClientFactory, ProxyFactory, ProxyServer
from twisted.trial.unittest import SynchronousTestCase, TestCase
from zope.interface.verify import verifyObject

from bwcd.store import schema, sqlite
from bwcd.store.interface import DuplicateKey, IStore, StoreError, StoreUnavailable
from bwcd.store.mongo import MongoStore, parseMongoURL
from bwcd.store.sqlite import SQLiteStore, compileFilter
from bwcd.store.url import openStore
from bwcd.testing import MemoryDatabase, MemoryStore
from bwcd.timeutil import parseIso
from tests.mongoserver import mongoURL

HEX24 = re.compile(r"[0-9a-f]{24}\Z")


def sleep(seconds: float):
    return deferLater(reactor, seconds, lambda: None)


FIXTURE: List[Dict[str, Any]] = [
    {"name": "a", "status": "queued", "n": 1, "flag": True, "context": {"user": "alice"}, "tag": None,
     "tags": ["x", "y"]},
    {"name": "b", "status": "running", "n": 2, "flag": False, "context": {"user": "bob"}},
    {"name": "c", "status": "queued", "n": 10, "flag": 1, "context": {}, "s": "10"},
    {"name": "d", "status": "succeeded", "n": 2.5, "context": {"user": "alice"}, "tag": "x"},
]


class ContractMixin:
    """
    The behaviour every backend must have.  Subclasses provide
    C{makeStore()}: a started store on empty storage, stopped at cleanup,
    and C{makeSecondStore()}: another started store on the same data (a
    second process, as far as the backend can tell), and C{backendName}.
    """

    backendName: str

    def setUp(self):
        async def setUp():
            self.store = await self.makeStore()

        return ensureDeferred(setUp())

    async def loadFixture(self) -> Dict[str, str]:
        docs = await gatherResults([self.store.insert("executions", dict(doc)) for doc in FIXTURE])
        return {doc["name"]: doc["id"] for doc in docs}

    async def names(self, filter, sort=(), **kw) -> List[str]:
        docs = await self.store.find("executions", filter, sort, **kw)
        return [doc["name"] for doc in docs]

    async def matching(self, filter) -> List[str]:
        return sorted(await self.names(filter))

    # -- basics ------------------------------------------------------------

    def test_interface(self):
        """
        The store provides IStore and names its backend.
        """
        self.assertTrue(verifyObject(IStore, self.store))
        self.assertEqual(self.store.name, self.backendName)

    async def test_ping(self):
        """
        A started store answers ping with True.
        """
        self.assertIs(await self.store.ping(), True)

    async def test_roundTrip(self):
        """
        A document reads back exactly as written: nested objects, unicode,
        null, booleans, integers, floats, lists, empty containers.
        """
        doc = {
            "text": "héllo ✓ 😀 \"quoted\" \\ 'single'",
            "none": None,
            "yes": True,
            "no": False,
            "int": 42,
            "negative": -7,
            "big": 2**53 + 1,
            "float": 0.1,
            "wholeFloat": 2.0,
            "nested": {"a": {"b": [1, "two", {"three": 3}, None]}, "empty": {}},
            "list": [],
            "key-with-dash": {"ünïcode-këy": "v"},
        }
        inserted = await self.store.insert("executions", doc)
        self.assertNotIn("id", doc, "the caller's dict is left alone")
        self.assertEqual(inserted, dict(doc, id=inserted["id"]))
        got = await self.store.get("executions", inserted["id"])
        self.assertEqual(got, inserted)
        self.assertIsInstance(got["wholeFloat"], float)
        self.assertIsInstance(got["int"], int)
        self.assertIs(got["yes"], True)

    async def test_ids(self):
        """
        Missing ids are generated as distinct 24-hex strings; given ids are
        kept.
        """
        one = await self.store.insert("executions", {"x": 1})
        two = await self.store.insert("executions", {"x": 2})
        self.assertRegex(one["id"], HEX24)
        self.assertRegex(two["id"], HEX24)
        self.assertNotEqual(one["id"], two["id"])
        given = await self.store.insert("executions", {"id": "my-own-id", "x": 3})
        self.assertEqual(given["id"], "my-own-id")
        self.assertEqual((await self.store.get("executions", "my-own-id"))["x"], 3)

    async def test_getMissing(self):
        """
        get of an unknown id fires with None.
        """
        self.assertIsNone(await self.store.get("executions", "0" * 24))

    async def test_programmingErrors(self):
        """
        Unknown collections, C{_id} keys, unknown operators and bad paths
        are refused with ValueError, not stored or sent.
        """
        for d in [
            self.store.insert("nosuch", {}),
            self.store.get("nosuch", "x"),
            self.store.find("nosuch", {}),
            self.store.insert("executions", {"_id": "x"}),
            self.store.insert("executions", {"id": 5}),
            self.store.find("executions", {"n": {"$regex": "x"}}),
            self.store.find("executions", {"$or": []}),
            self.store.find("executions", {"a..b": 1}),
            self.store.find("executions", {"n": {"$gt": None}}),
            self.store.find("executions", {}, [("n", 0)]),
            self.store.update("executions", {}, set={"id": "x"}),
            self.store.update("executions", {}),
            self.store.replace("executions", {"no": "id"}),
        ]:
            await self.assertFailure(d, ValueError)

    async def test_everyCollection(self):
        """
        Every declared collection can be written and read.
        """
        for name in schema.COLLECTIONS:
            doc = await self.store.insert(name, {"ref": "p.x", "name": "n", "scope": "st2kv.system", "url": "u", "hook": "h", "delivery_id": "d", "key_hash": "k", "token_hash": "t",
                                                 "rule": {"id": "r"}, "trigger_instance_id": "ti"})
            self.assertEqual(await self.store.get(name, doc["id"]), doc)
            self.assertEqual(await self.store.count(name, {}), 1)

    # -- filters -------------------------------------------------------------

    async def test_equality(self):
        """
        Equality on strings, dotted paths, numbers (1 == 1.0), booleans
        (True is not 1), embedded objects and ids.
        """
        ids = await self.loadFixture()
        self.assertEqual(await self.matching({"status": "queued"}), ["a", "c"])
        self.assertEqual(await self.matching({"context.user": "alice"}), ["a", "d"])
        self.assertEqual(await self.matching({"status": "queued", "context.user": "alice"}), ["a"])
        self.assertEqual(await self.matching({"n": 2}), ["b"])
        self.assertEqual(await self.matching({"n": 2.0}), ["b"])
        self.assertEqual(await self.matching({"n": 2.5}), ["d"])
        self.assertEqual(await self.matching({"flag": True}), ["a"])
        self.assertEqual(await self.matching({"flag": False}), ["b"])
        self.assertEqual(await self.matching({"flag": 1}), ["c"])
        self.assertEqual(await self.matching({"s": 10}), [])
        self.assertEqual(await self.matching({"n": "10"}), [])
        self.assertEqual(await self.matching({"context": {"user": "bob"}}), ["b"])
        self.assertEqual(await self.matching({"context": {}}), ["c"])
        self.assertEqual(await self.matching({"tags": ["x", "y"]}), ["a"])
        self.assertEqual(await self.matching({"tags": ["y", "x"]}), [])
        self.assertEqual(await self.matching({"id": ids["b"]}), ["b"])
        self.assertEqual(await self.matching({}), ["a", "b", "c", "d"])
        self.assertEqual(await self.matching({"status": "nothing"}), [])

    async def test_equalityWithNone(self):
        """
        Equality with None matches a missing field and an explicit null.
        """
        await self.loadFixture()
        self.assertEqual(await self.matching({"tag": None}), ["a", "b", "c"])
        self.assertEqual(await self.matching({"context.user": None}), ["c"])
        self.assertEqual(await self.matching({"nowhere.deep": None}), ["a", "b", "c", "d"])

    async def test_ranges(self):
        """
        $gt/$gte/$lt/$lte compare numbers numerically and strings
        lexically, never a string with a number; several operators on one
        field all apply.
        """
        await self.loadFixture()
        self.assertEqual(await self.matching({"n": {"$gt": 2}}), ["c", "d"])
        self.assertEqual(await self.matching({"n": {"$gte": 2}}), ["b", "c", "d"])
        self.assertEqual(await self.matching({"n": {"$lt": 2}}), ["a"])
        self.assertEqual(await self.matching({"n": {"$lte": 2.5}}), ["a", "b", "d"])
        self.assertEqual(await self.matching({"n": {"$gt": 1, "$lt": 10}}), ["b", "d"])
        self.assertEqual(await self.matching({"status": {"$gt": "r"}}), ["b", "d"])
        self.assertEqual(await self.matching({"status": {"$lte": "running"}}), ["a", "b", "c"])
        self.assertEqual(await self.matching({"s": {"$gt": ""}}), ["c"])
        self.assertEqual(await self.matching({"n": {"$gt": ""}}), [])
        self.assertEqual(await self.matching({"s": {"$gt": 0}}), [])
        self.assertEqual(await self.matching({"flag": {"$gte": 0}}), ["c"])

    async def test_notEqual(self):
        """
        $ne matches documents where the field is missing too; $ne None
        means present and not null.
        """
        ids = await self.loadFixture()
        self.assertEqual(await self.matching({"status": {"$ne": "queued"}}), ["b", "d"])
        self.assertEqual(await self.matching({"context.user": {"$ne": "alice"}}), ["b", "c"])
        self.assertEqual(await self.matching({"tag": {"$ne": None}}), ["d"])
        self.assertEqual(await self.matching({"flag": {"$ne": True}}), ["b", "c", "d"])
        self.assertEqual(await self.matching({"n": {"$ne": 2}}), ["a", "c", "d"])
        self.assertEqual(await self.matching({"id": {"$ne": ids["a"]}}), ["b", "c", "d"])

    async def test_in(self):
        """
        $in matches any listed value with equality's rules, None included.
        """
        ids = await self.loadFixture()
        self.assertEqual(await self.matching({"status": {"$in": ["queued", "succeeded"]}}), ["a", "c", "d"])
        self.assertEqual(await self.matching({"n": {"$in": [1, 2.5]}}), ["a", "d"])
        self.assertEqual(await self.matching({"tag": {"$in": [None, "x"]}}), ["a", "b", "c", "d"])
        self.assertEqual(await self.matching({"context.user": {"$in": ["bob", None]}}), ["b", "c"])
        self.assertEqual(await self.matching({"flag": {"$in": [True]}}), ["a"])
        self.assertEqual(await self.matching({"flag": {"$in": [1, "x"]}}), ["c"])
        self.assertEqual(await self.matching({"status": {"$in": []}}), [])
        self.assertEqual(await self.matching({"id": {"$in": [ids["a"], ids["c"]]}}), ["a", "c"])

    async def test_exists(self):
        """
        $exists tells present fields (null included) from missing ones.
        """
        ids = await self.loadFixture()
        self.assertEqual(await self.matching({"tag": {"$exists": True}}), ["a", "d"])
        self.assertEqual(await self.matching({"tag": {"$exists": False}}), ["b", "c"])
        self.assertEqual(await self.matching({"context.user": {"$exists": True}}), ["a", "b", "d"])
        self.assertEqual(await self.matching({"id": {"$exists": True}}), sorted(ids))

    async def test_objectEqualityIsOrdered(self):
        """
        An embedded object equals a filter value only with the same keys in
        the same order (MongoDB compares field by field, SQLite JSON text).
        """
        await self.store.insert("executions", {"o": {"a": 1, "b": 2}})
        self.assertEqual(await self.store.count("executions", {"o": {"a": 1, "b": 2}}), 1)
        self.assertEqual(await self.store.count("executions", {"o": {"b": 2, "a": 1}}), 0)
        self.assertEqual(await self.store.count("executions", {"o": {"a": 1}}), 0)

    # -- sorting and paging ------------------------------------------------------

    async def test_sort(self):
        """
        Sorting is ascending or descending, numeric for numbers, lexical for
        strings, and by several keys in order.
        """
        await self.loadFixture()
        self.assertEqual(await self.names({}, [("name", 1)]), ["a", "b", "c", "d"])
        self.assertEqual(await self.names({}, [("name", -1)]), ["d", "c", "b", "a"])
        self.assertEqual(await self.names({}, [("n", 1)]), ["a", "b", "d", "c"])
        self.assertEqual(await self.names({}, [("n", -1)]), ["c", "d", "b", "a"])
        self.assertEqual(await self.names({}, [("status", 1), ("n", -1)]), ["c", "a", "b", "d"])
        self.assertEqual(await self.names({}, [("status", -1), ("name", -1)]), ["d", "b", "c", "a"])
        self.assertEqual(await self.names({"context.user": {"$exists": True}}, [("context.user", -1), ("n", 1)]),
                         ["b", "a", "d"])
        self.assertEqual((await self.names({}, [("tag", 1)]))[-1], "d", "missing and null sort first")
        self.assertEqual((await self.names({}, [("tag", -1)]))[0], "d", "missing and null sort last")

    async def test_sortById(self):
        """
        The id can be a sort key.
        """
        for docId in ["b" * 24, "a" * 24, "c" * 24]:
            await self.store.insert("executions", {"id": docId, "name": docId[0]})
        self.assertEqual(await self.names({}, [("id", 1)]), ["a", "b", "c"])
        self.assertEqual(await self.names({}, [("id", -1)]), ["c", "b", "a"])

    async def test_limitOffset(self):
        """
        offset skips, then limit caps, after sorting; limit 0 gives nothing.
        """
        await self.loadFixture()
        order = [("n", 1)]
        self.assertEqual(await self.names({}, order, limit=2), ["a", "b"])
        self.assertEqual(await self.names({}, order, limit=2, offset=1), ["b", "d"])
        self.assertEqual(await self.names({}, order, offset=2), ["d", "c"])
        self.assertEqual(await self.names({}, order, limit=10, offset=3), ["c"])
        self.assertEqual(await self.names({}, order, offset=4), [])
        self.assertEqual(await self.names({}, order, limit=0), [])
        self.assertEqual(await self.names({"status": "queued"}, order, limit=1, offset=1), ["c"])

    async def test_findOne(self):
        """
        findOne returns the first match in sort order, or None.
        """
        await self.loadFixture()
        self.assertEqual((await self.store.findOne("executions", {"status": "queued"}, [("n", -1)]))["name"], "c")
        self.assertEqual((await self.store.findOne("executions", {"status": "queued"}, [("n", 1)]))["name"], "a")
        self.assertIsNone(await self.store.findOne("executions", {"status": "nothing"}))

    async def test_count(self):
        """
        count counts matches.
        """
        await self.loadFixture()
        self.assertEqual(await self.store.count("executions", {}), 4)
        self.assertEqual(await self.store.count("executions", {"status": "queued"}), 2)
        self.assertEqual(await self.store.count("executions", {"tag": None}), 3)
        self.assertEqual(await self.store.count("executions", {"status": "nothing"}), 0)

    # -- writes ------------------------------------------------------------------

    async def test_updateSetPush(self):
        """
        update applies set (dotted paths create objects) and push (creating
        the list), fires with the document after the change and stores it.
        """
        ids = await self.loadFixture()
        after = await self.store.update(
            "executions",
            {"id": ids["a"], "status": {"$in": ["queued", "scheduled"]}},
            set={"status": "running", "context.cancelled_by": "me", "result.deep.x": 1},
            push={"log": {"status": "running"}},
        )
        self.assertEqual(after["status"], "running")
        self.assertEqual(after["context"], {"user": "alice", "cancelled_by": "me"})
        self.assertEqual(after["result"], {"deep": {"x": 1}})
        self.assertEqual(after["log"], [{"status": "running"}])
        self.assertEqual(after["n"], 1, "untouched fields stay")
        after2 = await self.store.update("executions", {"id": ids["a"]}, push={"log": {"status": "succeeded"}})
        self.assertEqual(after2["log"], [{"status": "running"}, {"status": "succeeded"}])
        self.assertEqual(await self.store.get("executions", ids["a"]), after2)

    async def test_updateCurrentDate(self):
        """
        update(currentDate=...) sets each path to the store's own time, as a
        UTC timestamp string in the returned document, along with set; a
        later one is not earlier; ids cannot be set this way.
        """
        ids = await self.loadFixture()
        before = datetime.now(timezone.utc)
        first = await self.store.update("executions", {"id": ids["a"]}, set={"x": 1}, currentDate=["beat.seen"])
        second = await self.store.update("executions", {"id": ids["a"]}, set={"x": 2}, currentDate=["beat.seen"])
        self.assertEqual(second["x"], 2)
        seen1, seen2 = parseIso(first["beat"]["seen"]), parseIso(second["beat"]["seen"])
        self.assertLessEqual(seen1, seen2)
        self.assertLess(abs((seen1 - before).total_seconds()), 60, "the store and this test share a host")
        self.assertIsNone(await self.store.update("executions", {"id": "nope"}, set={"x": 1}, currentDate=["beat.seen"]))
        with self.assertRaises(ValueError):
            await self.store.update("executions", {"id": ids["a"]}, set={"x": 1}, currentDate=["id"])

    async def test_updateNoMatch(self):
        """
        update fires with None and changes nothing when nothing matches.
        """
        ids = await self.loadFixture()
        self.assertIsNone(await self.store.update("executions", {"id": ids["b"], "status": "queued"}, set={"x": 1}))
        self.assertNotIn("x", await self.store.get("executions", ids["b"]))
        self.assertEqual(await self.store.count("executions", {"x": 1}), 0)

    async def test_updateSort(self):
        """
        update changes only the first match in sort order.
        """
        await self.loadFixture()
        first = await self.store.update("executions", {"status": "queued"}, set={"picked": 1}, sort=[("n", -1)])
        self.assertEqual(first["name"], "c")
        second = await self.store.update("executions", {"status": "queued", "picked": None}, set={"picked": 2},
                                         sort=[("n", -1)])
        self.assertEqual(second["name"], "a")
        self.assertEqual(await self.matching({"picked": {"$exists": True}}), ["a", "c"])

    async def test_concurrentClaims(self):
        """
        Many claims fired at once from two stores on the same data claim
        every queued document exactly once.
        """
        other = await self.makeSecondStore()
        queued = 12
        for i in range(queued):
            await self.store.insert("executions", {"status": "queued", "i": i})
        claims = []
        for worker in range(30):
            store = self.store if worker % 2 else other
            claims.append(
                store.update("executions", {"status": "queued"}, set={"status": "running", "worker": worker},
                             push={"log": {"worker": worker}}, sort=[("i", 1)])
            )
        results = await gatherResults(claims)
        claimed = [doc for doc in results if doc is not None]
        self.assertEqual(len(claimed), queued)
        self.assertEqual(sorted(doc["i"] for doc in claimed), list(range(queued)))
        self.assertEqual(len({doc["worker"] for doc in claimed}), queued)
        for doc in await self.store.find("executions", {}):
            self.assertEqual(doc["status"], "running")
            self.assertEqual(len(doc["log"]), 1, "claimed exactly once")

    async def test_duplicateKey(self):
        """
        A second document with a unique key fails with DuplicateKey naming
        the document holding the key, and is not stored.
        """
        first = await self.store.insert("users", {"name": "alice"})
        error = await self.assertFailure(self.store.insert("users", {"name": "alice", "x": 1}), DuplicateKey)
        self.assertEqual(error.collection, "users")
        self.assertEqual(error.conflictId, first["id"])
        self.assertIsInstance(error, StoreError)
        self.assertEqual(await self.store.count("users", {}), 1)
        await self.store.insert("users", {"name": "bob"})

    async def test_duplicateId(self):
        """
        Inserting an id that exists fails with DuplicateKey naming it.
        """
        await self.store.insert("executions", {"id": "e" * 24, "v": 1})
        error = await self.assertFailure(self.store.insert("executions", {"id": "e" * 24, "v": 2}), DuplicateKey)
        self.assertEqual(error.conflictId, "e" * 24)
        self.assertEqual((await self.store.get("executions", "e" * 24))["v"], 1)

    async def test_duplicateCompoundKey(self):
        """
        A compound unique key conflicts only when every part is equal.
        """
        first = await self.store.insert("ruleenforcements", {"rule": {"id": "r1", "ref": "p.r"}, "trigger_instance_id": "t1"})
        await self.store.insert("ruleenforcements", {"rule": {"id": "r1"}, "trigger_instance_id": "t2"})
        await self.store.insert("ruleenforcements", {"rule": {"id": "r2"}, "trigger_instance_id": "t1"})
        error = await self.assertFailure(
            self.store.insert("ruleenforcements", {"rule": {"id": "r1"}, "trigger_instance_id": "t1"}), DuplicateKey
        )
        self.assertEqual(error.conflictId, first["id"])
        self.assertEqual(await self.store.count("ruleenforcements", {}), 3)

    async def test_duplicateOnUpdateAndReplace(self):
        """
        update and replace that would break a unique key fail with
        DuplicateKey naming the other document, and change nothing.
        """
        one = await self.store.insert("rules", {"ref": "p.one", "enabled": True})
        two = await self.store.insert("rules", {"ref": "p.two", "enabled": True})
        error = await self.assertFailure(
            self.store.update("rules", {"id": two["id"]}, set={"ref": "p.one"}), DuplicateKey
        )
        self.assertEqual(error.conflictId, one["id"])
        error = await self.assertFailure(self.store.replace("rules", {"id": two["id"], "ref": "p.one"}), DuplicateKey)
        self.assertEqual(error.conflictId, one["id"])
        self.assertEqual(await self.store.get("rules", two["id"]), two)

    async def test_failedWriteDoesNotSpoilOthers(self):
        """
        Writes issued together with a failing one all succeed.
        """
        await self.store.insert("users", {"name": "taken"})
        ds = [self.store.insert("users", {"name": f"u{i}"}) for i in range(5)]
        bad = self.store.insert("users", {"name": "taken"})
        ds += [self.store.insert("users", {"name": f"v{i}"}) for i in range(5)]
        await self.assertFailure(bad, DuplicateKey)
        await gatherResults(ds)
        self.assertEqual(await self.store.count("users", {}), 11)

    async def test_replace(self):
        """
        replace swaps the whole document (dropped fields go), or fires with
        None for an unknown id.
        """
        ids = await self.loadFixture()
        new = {"id": ids["b"], "name": "b2", "status": "failed"}
        self.assertEqual(await self.store.replace("executions", new), new)
        self.assertEqual(await self.store.get("executions", ids["b"]), new)
        self.assertIsNone(await self.store.replace("executions", {"id": "f" * 24, "name": "ghost"}))
        self.assertIsNone(await self.store.get("executions", "f" * 24))

    async def test_delete(self):
        """
        delete removes every match and counts them; deleteOne says whether
        the id existed.
        """
        ids = await self.loadFixture()
        self.assertEqual(await self.store.delete("executions", {"status": "queued"}), 2)
        self.assertEqual(await self.matching({}), ["b", "d"])
        self.assertEqual(await self.store.delete("executions", {"status": "queued"}), 0)
        self.assertIs(await self.store.deleteOne("executions", ids["b"]), True)
        self.assertIs(await self.store.deleteOne("executions", ids["b"]), False)
        self.assertEqual(await self.matching({}), ["d"])


# -- SQLite ----------------------------------------------------------------------


class SQLiteStoreTests(ContractMixin, TestCase):
    """
    The contract, and SQLite's own guarantees.
    """

    backendName = "sqlite"

    async def makeStore(self, path=None, **kw) -> SQLiteStore:
        if path is None:
            path = self.path = os.path.abspath(self.mktemp())
        store = SQLiteStore(path, reactor, **kw)
        await store.start()
        self.addCleanup(store.stop)
        return store

    async def makeSecondStore(self) -> SQLiteStore:
        return await self.makeStore(self.path)

    def traceStatements(self) -> List[tuple]:
        """
        Record (thread ident, sql) for every statement of stores opened from
        now on.
        """
        seen: List[tuple] = []
        original = sqlite._openConnection

        def traced(path, timeout):
            conn = original(path, timeout)
            conn.set_trace_callback(lambda sql: seen.append((threading.get_ident(), sql)))
            return conn

        self.patch(sqlite, "_openConnection", traced)
        return seen

    async def test_durable(self):
        """
        Documents survive stopping the store and opening the file again.
        """
        doc = await self.store.insert("executions", {"status": "queued"})
        await self.store.stop()
        reopened = await self.makeStore(self.path)
        self.assertEqual(await reopened.get("executions", doc["id"]), doc)

    def test_walMode(self):
        """
        The file is in WAL mode, so readers never wait for the writer.
        """
        conn = sqlite3.connect(self.path)
        self.addCleanup(conn.close)
        self.assertEqual(conn.execute("PRAGMA journal_mode").fetchone()[0], "wal")

    def test_schemaVersionMatchesMigrations(self):
        """
        There is one migration per schema version.
        """
        self.assertEqual(len(sqlite.MIGRATIONS), schema.SCHEMA_VERSION)
        conn = sqlite3.connect(self.path)
        self.addCleanup(conn.close)
        self.assertEqual(conn.execute("PRAGMA user_version").fetchone()[0], schema.SCHEMA_VERSION)

    async def test_migrateFromNothing(self):
        """
        A database at version 0 with no tables is brought to the current
        version with every table and index.
        """
        path = os.path.abspath(self.mktemp())
        conn = sqlite3.connect(path)
        conn.execute("PRAGMA user_version = 0")
        conn.close()
        store = await self.makeStore(path)
        conn = sqlite3.connect(path)
        self.addCleanup(conn.close)
        self.assertEqual(conn.execute("PRAGMA user_version").fetchone()[0], schema.SCHEMA_VERSION)
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        self.assertEqual(tables, set(schema.COLLECTIONS))
        indexes = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
        self.assertIn("executions_ix_status", indexes)
        self.assertIn("ruleenforcements_ux_rule_id__trigger_instance_id", indexes)
        await store.insert("kv", {"name": "k"})

    async def test_migrateInPlace(self):
        """
        Later migrations run in order on an existing database, keep its data,
        and record the new version.
        """
        doc = await self.store.insert("kv", {"name": "k", "value": "v"})
        await self.store.stop()
        ran = []

        def second(cursor):
            ran.append(2)
            cursor.execute("""UPDATE kv SET doc = json_set(doc, '$.migrated', json('true'))""")

        def third(cursor):
            ran.append(3)

        self.patch(sqlite, "MIGRATIONS", (sqlite.MIGRATIONS[0], second, third))
        store = await self.makeStore(self.path)
        self.assertEqual(ran, [2, 3])
        self.assertEqual(await store.get("kv", doc["id"]), dict(doc, migrated=True))
        conn = sqlite3.connect(self.path)
        self.addCleanup(conn.close)
        self.assertEqual(conn.execute("PRAGMA user_version").fetchone()[0], 3)

    async def test_newerSchemaRefused(self):
        """
        A database written by a newer bwcd is not opened.
        """
        path = os.path.abspath(self.mktemp())
        conn = sqlite3.connect(path)
        conn.execute("PRAGMA user_version = 99")
        conn.close()
        store = SQLiteStore(path, reactor)
        self.addCleanup(store.stop)
        error = await self.assertFailure(store.start(), StoreError)
        self.assertIn("99", str(error))
        await self.assertFailure(store.get("kv", "x"), StoreUnavailable)

    async def test_cannotOpen(self):
        """
        A file that cannot be opened fails start and every later operation
        with StoreUnavailable; stop still works.
        """
        store = SQLiteStore(os.path.join(os.path.abspath(self.mktemp()), "missing-dir", "x.sqlite"), reactor)
        await self.assertFailure(store.start(), StoreUnavailable)
        await self.assertFailure(store.insert("kv", {"name": "k"}), StoreUnavailable)
        self.assertIs(await store.ping(), False)
        await store.stop()

    async def test_stopped(self):
        """
        After stop, operations fail with StoreUnavailable and ping is False;
        writes queued before stop are finished first.
        """
        pending = [self.store.insert("kv", {"name": f"k{i}"}) for i in range(50)]
        await self.store.stop()
        await gatherResults(pending)
        await self.assertFailure(self.store.insert("kv", {"name": "late"}), StoreUnavailable)
        self.assertIs(await self.store.ping(), False)
        reopened = await self.makeStore(self.path)
        self.assertEqual(await reopened.count("kv", {}), 50)

    async def test_stopTwiceAndRestart(self):
        """
        stop may be called again while stopping; a stopped store can be
        started again.
        """
        d1 = self.store.stop()
        d2 = self.store.stop()
        await self.assertFailure(self.store.get("kv", "x"), StoreUnavailable)
        await gatherResults([d1, d2])
        await self.store.start()
        await self.store.insert("kv", {"name": "again"})
        self.assertEqual(await self.store.count("kv", {}), 1)

    async def test_groupCommit(self):
        """
        Many concurrent inserts all fire and are all stored, with far fewer
        commits than inserts.
        """
        seen = self.traceStatements()
        store = await self.makeStore(os.path.abspath(self.mktemp()))
        del seen[:]
        count = 2000
        docs = await gatherResults([store.insert("triggerinstances", {"i": i, "status": "pending"}) for i in range(count)])
        self.assertEqual(len({doc["id"] for doc in docs}), count)
        self.assertEqual(await store.count("triggerinstances", {}), count)
        commits = sum(1 for _, sql in seen if sql == "COMMIT")
        self.assertLess(commits, count / 20)

    async def test_batchWithFailure(self):
        """
        A write failing inside a batch is undone alone: the others in the
        same transaction commit.
        """
        seen = self.traceStatements()
        store = await self.makeStore(os.path.abspath(self.mktemp()))
        await store.insert("users", {"name": "taken"})
        # Hold the write lock so that everything below queues up and runs
        # as one batch once it is released.
        blocker = sqlite3.connect(store.path, isolation_level=None)
        self.addCleanup(blocker.close)
        blocker.execute("BEGIN IMMEDIATE")
        del seen[:]
        good = [store.insert("users", {"name": f"u{i}"}) for i in range(10)]
        bad = store.insert("users", {"name": "taken"})
        good += [store.insert("users", {"name": f"v{i}"}) for i in range(10)]
        # justified: lets the store thread reach the lock and queue the rest
        # behind it; SQLite gives no event for "waiting on a lock"
        await sleep(0.2)
        blocker.execute("COMMIT")
        await self.assertFailure(bad, DuplicateKey)
        await gatherResults(good)
        self.assertEqual(await store.count("users", {}), 21)
        self.assertLessEqual(sum(1 for _, sql in seen if sql == "COMMIT"), 2)
        self.assertTrue(any(sql == "ROLLBACK TO op" for _, sql in seen))

    async def test_offReactorThread(self):
        """
        No SQL statement runs in the reactor thread.
        """
        seen = self.traceStatements()
        store = await self.makeStore(os.path.abspath(self.mktemp()))
        await store.insert("kv", {"name": "k"})
        await store.find("kv", {"name": "k"})
        await store.update("kv", {"name": "k"}, set={"v": 1})
        await store.stop()
        threads = {ident for ident, _ in seen}
        self.assertTrue(seen)
        self.assertEqual(len(threads), 1)
        self.assertNotIn(threading.get_ident(), threads)

    async def test_waitsForLockWithoutBlocking(self):
        """
        While another process holds the write lock, a write waits (up to
        busyTimeout) in the store's thread and the reactor keeps running.
        """
        blocker = sqlite3.connect(self.path, isolation_level=None)
        self.addCleanup(blocker.close)
        blocker.execute("BEGIN IMMEDIATE")
        d = self.store.insert("kv", {"name": "k"})
        ticks = []
        for i in range(5):
            # justified: the point is that real reactor turns keep passing
            # while the store thread waits on another process's lock
            await sleep(0.02)
            ticks.append(i)
        self.assertEqual(ticks, [0, 1, 2, 3, 4])
        self.assertNoResult(d)
        blocker.execute("COMMIT")
        self.assertEqual((await d)["name"], "k")

    async def test_lockedTooLong(self):
        """
        A write that cannot get the lock within busyTimeout fails with
        StoreUnavailable, and the store works again afterwards.
        """
        store = await self.makeStore(os.path.abspath(self.mktemp()), busyTimeout=0.2)
        blocker = sqlite3.connect(store.path, isolation_level=None)
        self.addCleanup(blocker.close)
        blocker.execute("BEGIN IMMEDIATE")
        await self.assertFailure(store.insert("kv", {"name": "k"}), StoreUnavailable)
        blocker.execute("COMMIT")
        await store.insert("kv", {"name": "k"})

    def assertUsesIndex(self, collection, filter, index):
        where, params = compileFilter(filter)
        conn = sqlite3.connect(self.path)
        self.addCleanup(conn.close)
        plan = " ".join(row[3] for row in conn.execute(
            f'EXPLAIN QUERY PLAN SELECT doc FROM "{collection}" WHERE {where}', params))
        self.assertIn(f"INDEX {index}", plan)

    def test_indexesUsed(self):
        """
        Filters on declared paths are answered from the expression indexes.
        """
        self.assertUsesIndex("executions", {"status": "queued"}, "executions_ix_status")
        self.assertUsesIndex("executions", {"status": {"$in": ["queued", "running"]}}, "executions_ix_status")
        self.assertUsesIndex("executions", {"context.user": "alice"}, "executions_ix_context_user")
        self.assertUsesIndex("executions", {"start_timestamp": {"$gt": "2026"}}, "executions_ix_start_timestamp")
        self.assertUsesIndex("rules", {"enabled": True}, "rules_ix_enabled")
        self.assertUsesIndex("users", {"name": "x"}, "users_ux_name")
        self.assertUsesIndex("ruleenforcements", {"rule.id": "r", "trigger_instance_id": "t"},
                             "ruleenforcements_ux_rule_id__trigger_instance_id")


# -- MongoDB ------------------------------------------------------------------------


class MongoStoreTests(ContractMixin, TestCase):
    """
    The contract against a MongoDB wire-protocol server (SecantusDB, or
    BWCD_TEST_MONGODB_URL), and MongoDB's failure modes.
    """

    backendName = "mongodb"

    async def makeStore(self, url=None, **kw) -> MongoStore:
        if url is None:
            url = self.url = await mongoURL(self)
        store = MongoStore(url, reactor, **kw)
        await store.start()
        self.addCleanup(store.stop)
        return store

    async def makeSecondStore(self) -> MongoStore:
        return await self.makeStore(self.url)

    async def test_indexesCreated(self):
        """
        start creates the declared indexes, unique ones unique.
        """
        info = await self.store._db["ruleenforcements"].index_information(timeout=10)
        self.assertTrue(info["ux_rule_id__trigger_instance_id"].get("unique"))
        self.assertIn("ix_enforced_at", info)

    def test_writeConcern(self):
        """
        Writes are acknowledged by default only once in the journal of a
        majority (SecantusDB, a single node, accepts w=majority).
        """
        self.assertEqual(self.store._db["kv"].write_concern.document, {"w": "majority", "j": True})

    async def test_unreachable(self):
        """
        A server that refuses connections fails start quickly with
        StoreUnavailable and leaves nothing running.
        """
        port = reactor.listenTCP(0, Factory.forProtocol(Protocol), interface="127.0.0.1")
        number = port.getHost().port
        await port.stopListening()
        store = MongoStore(f"mongodb://127.0.0.1:{number}/x", reactor, timeout=0.3, startTimeout=0.3)
        await self.assertFailure(store.start(), StoreUnavailable)
        self.assertIs(await store.ping(), False)
        await self.assertFailure(store.insert("kv", {"name": "k"}), StoreUnavailable)
        await store.stop()

    async def test_serverStopsAnswering(self):
        """
        When the server stops answering, operations fail with
        StoreUnavailable within the timeout and ping says False.
        """
        # A proxy that can start swallowing requests.  (Closing it would not
        # do: txmongo learns the server's real address from its hello reply
        # and reconnects there.)
        hostPort, database = self.url.split("://", 1)[1].split("/", 1)
        host, port = hostPort.rsplit(":", 1)
        closed: List[Deferred] = []
        swallow = []

        def tracked(cls):
            class Tracked(cls):
                def connectionMade(self):
                    self.closed = Deferred()
                    closed.append(self.closed)
                    cls.connectionMade(self)

                def dataReceived(self, data):
                    if not swallow:
                        cls.dataReceived(self, data)

                def connectionLost(self, reason):
                    cls.connectionLost(self, reason)
                    self.closed.callback(None)

            return Tracked

        class ClientFactory(ProxyClientFactory):
            protocol = tracked(ProxyClient)

        factory = ProxyFactory(host, int(port))
        factory.protocol = tracked(ProxyServer)
        factory.protocol.clientProtocolFactory = ClientFactory
        listening = reactor.listenTCP(0, factory, interface="127.0.0.1")

        async def cleanup():
            await listening.stopListening()
            await DeferredList(closed)

        self.addCleanup(lambda: ensureDeferred(cleanup()))
        store = await self.makeStore(f"mongodb://127.0.0.1:{listening.getHost().port}/{database}", timeout=0.3)
        await store.insert("kv", {"name": "before"})
        self.assertIs(await store.ping(), True)
        swallow.append(True)
        await self.assertFailure(store.insert("kv", {"name": "after"}), StoreUnavailable)
        await self.assertFailure(store.find("kv", {}), StoreUnavailable)
        await self.assertFailure(store.update("kv", {}, set={"x": 1}), StoreUnavailable)
        self.assertIs(await store.ping(), False)
        self.assertEqual(await self.store.find("kv", {}), [await self.store.findOne("kv", {"name": "before"})])


# -- the in-memory test double -------------------------------------------------------


class MemoryStoreContractTests(ContractMixin, TestCase):
    """
    The contract against L{MemoryStore}, so that tests written on it
    describe what the real backends do.
    """

    backendName = "memory"

    async def makeStore(self) -> MemoryStore:
        self.database = MemoryDatabase()
        store = MemoryStore(self.database)
        await store.start()
        self.addCleanup(store.stop)
        return store

    async def makeSecondStore(self) -> MemoryStore:
        store = MemoryStore(self.database)
        await store.start()
        self.addCleanup(store.stop)
        return store


class MemoryStoreTests(SynchronousTestCase):
    """
    What only the memory store has: answers that have already fired, copies
    in and out, and the controls tests use to reach pending and failing
    states.
    """

    def setUp(self):
        self.store = MemoryStore()
        self.successResultOf(self.store.start())

    def test_answersHaveFired(self):
        """
        Every operation's Deferred has fired by the time it is returned.
        """
        store = self.store
        doc = self.successResultOf(store.insert("executions", {"status": "queued", "n": 1}))
        self.assertEqual(self.successResultOf(store.get("executions", doc["id"])), doc)
        self.assertEqual(self.successResultOf(store.findOne("executions", {"n": 1})), doc)
        self.assertEqual(self.successResultOf(store.find("executions", {}, [("n", 1)], limit=5)), [doc])
        self.assertEqual(self.successResultOf(store.count("executions", {"status": "queued"})), 1)
        after = self.successResultOf(store.update("executions", {"id": doc["id"]}, set={"status": "running"}))
        self.assertEqual(after["status"], "running")
        self.assertEqual(self.successResultOf(store.replace("executions", dict(doc, n=2)))["n"], 2)
        self.assertIs(self.successResultOf(store.ping()), True)
        self.assertIs(self.successResultOf(store.deleteOne("executions", doc["id"])), True)
        self.assertEqual(self.successResultOf(store.delete("executions", {})), 0)
        self.failureResultOf(store.insert("users", {"name": "x", "id": 3}), ValueError)
        self.successResultOf(store.insert("users", {"name": "x"}))
        self.failureResultOf(store.insert("users", {"name": "x"}), DuplicateKey)
        self.assertEqual(
            store.operations,
            ["insert", "get", "findOne", "find", "count", "update", "replace", "ping", "deleteOne", "delete",
             "insert", "insert", "insert"],
        )

    def test_copiesInAndOut(self):
        """
        Neither the dict given to insert nor any dict handed back shares
        state with what is stored.
        """
        given = {"name": "k", "value": {"list": [1]}}
        inserted = self.successResultOf(self.store.insert("kv", given))
        given["value"]["list"].append(2)
        inserted["value"]["list"].append(3)
        got = self.successResultOf(self.store.get("kv", inserted["id"]))
        self.assertEqual(got["value"], {"list": [1]})
        got["value"]["list"].append(4)
        for found in self.successResultOf(self.store.find("kv", {})):
            found["value"]["list"].append(5)
        setValue = {"x": [1]}
        self.successResultOf(self.store.update("kv", {"name": "k"}, set={"other": setValue}))
        setValue["x"].append(6)
        self.assertEqual(
            self.successResultOf(self.store.get("kv", inserted["id"])),
            {"id": inserted["id"], "name": "k", "value": {"list": [1]}, "other": {"x": [1]}},
        )

    def test_notJSON(self):
        """
        What a real backend could not serialise is refused, as SQLite refuses
        it, and nothing is stored.
        """
        self.failureResultOf(self.store.insert("kv", {"name": "k", "v": float("nan")}), ValueError)
        self.failureResultOf(self.store.insert("kv", {"name": "k", "v": {1, 2}}), TypeError)
        self.successResultOf(self.store.insert("kv", {"name": "k"}))
        self.failureResultOf(self.store.update("kv", {"name": "k"}, set={"v": object()}), TypeError)
        self.assertEqual(self.successResultOf(self.store.count("kv", {})), 1)
        self.assertNotIn("v", self.successResultOf(self.store.findOne("kv", {})))

    def test_jsonShapes(self):
        """
        Documents read back as JSON would give them: tuples become lists.
        """
        doc = self.successResultOf(self.store.insert("kv", {"name": "k", "v": (1, 2)}))
        self.assertEqual(self.successResultOf(self.store.get("kv", doc["id"]))["v"], [1, 2])

    def test_uniqueKeyRequired(self):
        """
        A document without one of its collection's unique keys (or with a
        null there) is refused, since the real backends would treat it
        differently (SQLite lets many in, MongoDB one).
        """
        self.failureResultOf(self.store.insert("users", {"nick": "x"}), ValueError)
        self.failureResultOf(self.store.insert("users", {"name": None}), ValueError)
        self.failureResultOf(self.store.insert("ruleenforcements", {"rule": {"id": "r"}}), ValueError)
        user = self.successResultOf(self.store.insert("users", {"name": "x"}))
        self.failureResultOf(self.store.update("users", {"id": user["id"]}, set={"name": None}), ValueError)
        self.failureResultOf(self.store.replace("users", {"id": user["id"]}), ValueError)
        self.assertEqual(self.successResultOf(self.store.get("users", user["id"])), user)

    def test_failedUpdateChangesNothing(self):
        """
        An update that fails half-way (a push to a non-list after a set)
        leaves the document as it was.
        """
        doc = self.successResultOf(self.store.insert("kv", {"name": "k", "v": 1}))
        self.failureResultOf(self.store.update("kv", {"name": "k"}, set={"w": 2}, push={"v": 3}), ValueError)
        self.failureResultOf(self.store.update("kv", {"name": "k"}, set={"v.deeper": 3}), ValueError)
        self.assertEqual(self.successResultOf(self.store.get("kv", doc["id"])), doc)

    def test_hold(self):
        """
        While held, operations wait and run in call order at release;
        programming errors still fail at once.
        """
        self.store.hold()
        inserted = self.store.insert("kv", {"name": "k"})
        counted = self.store.count("kv", {})
        pinged = self.store.ping()
        self.failureResultOf(self.store.insert("nosuch", {}), ValueError)
        self.assertNoResult(inserted)
        self.assertNoResult(counted)
        self.assertNoResult(pinged)
        self.assertEqual(self.store.held, ["insert", "count", "ping"])
        self.assertEqual(self.store.database.collections["kv"], {})
        self.assertEqual(self.store.release(), 3)
        self.assertEqual(self.successResultOf(inserted)["name"], "k")
        self.assertEqual(self.successResultOf(counted), 1)
        self.assertIs(self.successResultOf(pinged), True)
        self.assertEqual(self.store.held, [])
        self.successResultOf(self.store.get("kv", "x"))

    def test_step(self):
        """
        step runs one held operation at a time, oldest first, and what its
        callbacks start is held in turn.
        """
        self.store.hold()
        first = self.store.insert("kv", {"name": "a"})
        chained = []
        first.addCallback(lambda _: chained.append(self.store.insert("kv", {"name": "b"})))
        counted = self.store.count("kv", {})
        self.assertEqual(self.store.step(), "insert")
        self.successResultOf(first)
        self.assertNoResult(counted)
        self.assertEqual(self.store.held, ["count", "insert"])
        self.assertEqual(self.store.step(), "count")
        self.assertEqual(self.successResultOf(counted), 1)
        self.assertNoResult(chained[0])
        self.assertEqual(self.store.step(), "insert")
        self.assertIsNone(self.store.step())
        self.assertEqual(self.store.held, [])
        self.assertEqual(self.store.release(), 0)
        self.assertEqual(self.successResultOf(self.store.count("kv", {})), 2)

    def test_stopFinishesHeldWrites(self):
        """
        stop runs the held operations first, as SQLite finishes writes
        queued before stop.
        """
        self.store.hold()
        inserted = self.store.insert("kv", {"name": "k"})
        self.successResultOf(self.store.stop())
        self.assertEqual(self.successResultOf(inserted)["name"], "k")

    def test_breakDown(self):
        """
        A broken-down store fails every operation with StoreUnavailable and
        pings False until repaired; its data is kept.
        """
        self.successResultOf(self.store.insert("kv", {"name": "k"}))
        self.store.breakDown("disk on fire")
        error = self.failureResultOf(self.store.find("kv", {}), StoreUnavailable)
        self.assertEqual(str(error.value), "disk on fire")
        self.failureResultOf(self.store.insert("kv", {"name": "j"}), StoreUnavailable)
        self.assertIs(self.successResultOf(self.store.ping()), False)
        self.store.repair()
        self.assertEqual(self.successResultOf(self.store.count("kv", {})), 1)

    def test_lifecycle(self):
        """
        Starting a running store fails; a stopped one refuses work with
        StoreUnavailable and pings False; started again it has its data.
        """
        self.failureResultOf(self.store.start(), StoreError)
        doc = self.successResultOf(self.store.insert("kv", {"name": "k"}))
        self.successResultOf(self.store.stop())
        self.successResultOf(self.store.stop())
        self.failureResultOf(self.store.get("kv", doc["id"]), StoreUnavailable)
        self.assertIs(self.successResultOf(self.store.ping()), False)
        self.failureResultOf(self.store.get("nosuch", "x"), ValueError)
        self.successResultOf(self.store.start())
        self.assertEqual(self.successResultOf(self.store.get("kv", doc["id"])), doc)

    def test_unstarted(self):
        """
        A store that was never started refuses work, as the real ones do.
        """
        self.failureResultOf(MemoryStore().insert("kv", {"name": "k"}), StoreUnavailable)

    def test_sharedDatabase(self):
        """
        Stores on one database see each other's writes; separate ones do
        not.
        """
        other = MemoryStore(self.store.database)
        self.successResultOf(other.start())
        doc = self.successResultOf(other.insert("kv", {"name": "k"}))
        self.assertEqual(self.successResultOf(self.store.get("kv", doc["id"])), doc)
        alone = MemoryStore()
        self.successResultOf(alone.start())
        self.assertIsNone(self.successResultOf(alone.get("kv", doc["id"])))

    def test_sortAcrossTypes(self):
        """
        Values of different types sort in MongoDB's order: missing and null,
        numbers, strings, objects, arrays, booleans.
        """
        for name, value in [("bool", True), ("list", [1]), ("obj", {"a": 1}), ("str", "s"), ("num", 3),
                            ("null", None)]:
            self.successResultOf(self.store.insert("executions", {"name": name, "v": value}))
        self.successResultOf(self.store.insert("executions", {"name": "missing"}))
        docs = self.successResultOf(self.store.find("executions", {"name": {"$ne": "missing"}}, [("v", 1)]))
        self.assertEqual([d["name"] for d in docs], ["null", "num", "str", "obj", "list", "bool"])


class MongoURLTests(SynchronousTestCase):
    """
    Reading MongoDB URLs.
    """

    def test_defaults(self):
        """
        Without options the write concern is w=majority with journaling, and
        the database defaults to bwcd.
        """
        self.assertEqual(parseMongoURL("mongodb://h:1/"), {"database": "bwcd", "writeConcern": {"w": "majority", "j": True}})
        self.assertEqual(parseMongoURL("mongodb://h:1/db")["database"], "db")

    def test_urlWins(self):
        """
        Write-concern options in the URL replace the defaults.
        """
        self.assertEqual(parseMongoURL("mongodb://h/db?w=majority&journal=false")["writeConcern"], {})
        self.assertEqual(parseMongoURL("mongodb://h/db?w=2")["writeConcern"], {"j": True})
        self.assertEqual(parseMongoURL("mongodb://h/db?journal=false")["writeConcern"], {"w": "majority"})
        self.assertEqual(parseMongoURL("mongodb://h/db?w=1&wtimeoutMS=500")["writeConcern"], {"j": True})

    def test_bad(self):
        """
        Malformed URLs are ValueErrors naming the setting.
        """
        self.assertRaises(ValueError, parseMongoURL, "mongodb://h:notaport/db")
        self.assertRaises(ValueError, parseMongoURL, "http://h/db")


class OpenStoreTests(SynchronousTestCase):
    """
    Choosing the backend from storage.url.
    """

    def test_sqliteAbsolute(self):
        """
        sqlite:/// names an absolute path.
        """
        store = openStore("sqlite:///var/lib/bwcd/bwcd.sqlite", reactor)
        self.assertIsInstance(store, SQLiteStore)
        self.assertEqual(store.path, "/var/lib/bwcd/bwcd.sqlite")

    def test_sqliteRelative(self):
        """
        sqlite:path names a path relative to the working directory.
        """
        store = openStore("sqlite:data/bwcd.sqlite", reactor)
        self.assertIsInstance(store, SQLiteStore)
        self.assertEqual(store.path, "data/bwcd.sqlite")

    def test_sqliteBad(self):
        """
        Two slashes (a host) or no path at all are refused.
        """
        for url in ["sqlite://host/x", "sqlite:", "sqlite:///"]:
            self.assertRaises(ValueError, openStore, url, reactor)

    def test_mongodb(self):
        """
        mongodb:// gives a MongoStore on the URL's database, not connected.
        """
        store = openStore("mongodb://127.0.0.1:27017/bwcd_x?journal=true", reactor)
        self.assertIsInstance(store, MongoStore)
        self.assertEqual(store.database, "bwcd_x")

    def test_unknownScheme(self):
        """
        Any other scheme is refused with a message saying what to use.
        """
        error = self.assertRaises(ValueError, openStore, "postgres://h/db", reactor)
        self.assertEqual(str(error), "storage.url: unknown scheme 'postgres' (use sqlite:/// or mongodb://)")
        self.assertRaises(ValueError, openStore, "/just/a/path", reactor)
        self.assertRaises(ValueError, openStore, "mongodb+srv://h/db", reactor)
