"""
The SQLite backend's own parts: the file's modes, listings read in steps off
the write transaction, and retired indexes.  (What every backend must do is
in L{tests.test_store_contract}.)
"""

from __future__ import annotations

import os
import sqlite3
import stat
import threading
from typing import Any, Callable, List

from twisted.internet import reactor
from twisted.internet.defer import Deferred, gatherResults
from twisted.trial.unittest import SynchronousTestCase, TestCase

from bwcd.store import sqlite
from bwcd.store.interface import StoreUnavailable
from bwcd.store.sqlite import SQLiteStore
from bwcd.store.sqlite_file import makePrivate
from bwcd.store.sqlite_query import schemaStatements


def mode(path: str) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


class FileModeTests(TestCase):
    """
    The database holds payloads and parameters: only its owner reads it.
    """

    def umask(self, value: int) -> None:
        old = os.umask(value)
        self.addCleanup(os.umask, old)

    async def test_databaseFilesArePrivate(self):
        """
        Under a umask of 022 the database, its WAL and its SHM file are all
        created 0600.
        """
        self.umask(0o022)
        path = os.path.abspath(self.mktemp())
        store = SQLiteStore(path, reactor)
        await store.start()
        self.addCleanup(store.stop)
        await store.insert("kv", {"name": "k", "value": "secret"})
        for name in (path, path + "-wal", path + "-shm"):
            self.assertTrue(os.path.exists(name), name)
            self.assertEqual(mode(name), 0o600, name)

    async def test_existingDatabaseMadePrivate(self):
        """
        A database (and WAL) left world-readable by an older bwcd loses group
        and other access when the store opens it.
        """
        self.umask(0o022)
        path = os.path.abspath(self.mktemp())
        conn = sqlite3.connect(path)
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("CREATE TABLE t (x)")
        os.chmod(path, 0o644)
        store = SQLiteStore(path, reactor)
        await store.start()
        self.addCleanup(store.stop)
        conn.close()
        self.assertEqual(mode(path), 0o600)

    def test_privateUnderRestrictiveUmask(self):
        """
        A umask that takes the owner's write bit does not leave the new file
        read-only for the owner.
        """
        self.umask(0o277)
        path = os.path.abspath(self.mktemp())
        makePrivate(path)
        self.assertEqual(mode(path), 0o600)


class StepConvert:
    """
    A stand-in for the row decoder that, on row C{at}, calls C{during} in
    the reactor thread and waits for it to finish before the step goes on:
    the test acts at a known point in the middle of a listing.
    """

    def __init__(self, at: int, during: Callable[[], Any]) -> None:
        self.at = at
        self.during = during
        self.seen = 0
        self.thread: Any = None

    def __call__(self, row: Any) -> Any:
        self.seen += 1
        self.thread = threading.current_thread()
        if self.seen == self.at:
            done = threading.Event()

            def act():
                try:
                    self.during()
                finally:
                    done.set()

            reactor.callFromThread(act)
            done.wait(10)
        return sqlite._loads(row[0])


class ListingTests(TestCase):
    """
    A listing of many rows is read in steps on a reader connection, so the
    commits queued meanwhile do not wait for it.
    """

    async def makeStore(self, **kw) -> SQLiteStore:
        store = SQLiteStore(os.path.abspath(self.mktemp()), reactor, **kw)
        await store.start()
        self.addCleanup(store.stop)
        return store

    async def fill(self, store: SQLiteStore, count: int) -> None:
        await gatherResults([store.insert("triggerinstances", {"i": i, "occurrence_time": f"{i:05d}"}) for i in range(count)])

    async def test_listingInStepsMatchesOneRead(self):
        """
        Every limit/offset read in steps gives what one read gives.
        """
        store = await self.makeStore(pageRows=4)
        await self.fill(store, 13)
        everything = [d["i"] for d in await store.find("triggerinstances", {}, [("occurrence_time", 1)])]
        self.assertEqual(everything, list(range(13)))
        for limit in (None, 1, 3, 4, 5, 12, 13, 20):
            for offset in (0, 1, 3, 4, 9, 13, 15):
                docs = await store.find("triggerinstances", {}, [("occurrence_time", 1)], limit=limit, offset=offset)
                expected = everything[offset:] if limit is None else everything[offset : offset + limit]
                self.assertEqual([d["i"] for d in docs], expected, (limit, offset))

    async def test_listingDoesNotStallCommits(self):
        """
        An insert made while a large listing is half read commits and fires
        before the listing ends, and the listing keeps the snapshot it
        started with (it does not see the new document).
        """
        store = await self.makeStore(pageRows=5)
        await self.fill(store, 40)
        events: List[str] = []
        inserted: List[Deferred] = []

        def during():
            d = store.insert("triggerinstances", {"i": 99, "occurrence_time": "00000"})
            d.addCallback(lambda _: events.append("insert committed"))
            inserted.append(d)
            store._thread._flush()  # on the queue now, before the listing's next step

        self.patch(sqlite, "_document", StepConvert(at=7, during=during))
        listing = store.find("triggerinstances", {}, [("occurrence_time", 1)])
        listing.addCallback(lambda docs: events.append("listing done") or docs)
        docs = await listing
        await inserted[0]
        self.assertEqual(events, ["insert committed", "listing done"])
        self.assertEqual([d["i"] for d in docs], list(range(40)))
        self.assertEqual(await store.count("triggerinstances", {}), 41)

    async def test_stopDuringListing(self):
        """
        Stopping the store while a listing is between steps fails the
        listing with StoreUnavailable instead of leaving it hanging.
        """
        store = await self.makeStore(pageRows=5)
        await self.fill(store, 40)
        stopped: List[Deferred] = []
        self.patch(sqlite, "_document", StepConvert(at=3, during=lambda: stopped.append(store.stop())))
        await self.assertFailure(store.find("triggerinstances", {}), StoreUnavailable)
        await stopped[0]

    async def test_manyListingsAtOnce(self):
        """
        More concurrent listings than reader connections all finish with the
        right rows; the extra ones wait for a reader.
        """
        store = await self.makeStore(pageRows=3)
        await self.fill(store, 20)
        results = await gatherResults([store.find("triggerinstances", {}, [("occurrence_time", -1)]) for _ in range(9)])
        for docs in results:
            self.assertEqual([d["i"] for d in docs], list(range(19, -1, -1)))
        self.assertLessEqual(store._thread._readers, 4)

    async def test_smallListingInBatch(self):
        """
        A find that fits in one page runs in the batch, on the writer's
        connection (no reader is opened for it).
        """
        store = await self.makeStore(pageRows=10)
        await self.fill(store, 20)
        docs = await store.find("triggerinstances", {}, [("occurrence_time", 1)], limit=5, offset=5)
        self.assertEqual([d["i"] for d in docs], [5, 6, 7, 8, 9])
        self.assertEqual(store._thread._readers, 0)


class RetiredIndexTests(SynchronousTestCase):
    """
    Indexes replaced by longer ones are dropped from older databases.
    """

    def test_retiredIndexesDropped(self):
        """
        The schema statements drop an index an older bwcd created and the
        schema has retired (executions by action.ref alone).
        """
        conn = sqlite3.connect(":memory:")
        self.addCleanup(conn.close)
        conn.execute('CREATE TABLE "executions" (id TEXT PRIMARY KEY NOT NULL, doc TEXT NOT NULL)')
        conn.execute('CREATE INDEX "executions_ix_action_ref" ON "executions" (json_extract(doc,\'$.action.ref\'))')
        for statement in schemaStatements():
            conn.execute(statement)
        names = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
        self.assertNotIn("executions_ix_action_ref", names)
        self.assertIn("executions_ix_action_ref__start_timestamp", names)
