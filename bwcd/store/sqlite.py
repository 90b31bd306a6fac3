# -*- test-case-name: tests.test_store_contract -*-
"""
The embedded storage backend: one SQLite file, documents kept as JSON text.

This module holds the L{IStore} operations: each checks its arguments on the
reactor thread, compiles its SQL (L{bwcd.store.sqlite_query}) and hands a
small function to the store's thread (L{bwcd.store.sqlite_thread}), which
runs it inside a group-committed transaction.  The file's modes, pragmas and
schema versions are L{bwcd.store.sqlite_file}'s.

C{update} reads, changes the document in Python and writes it back inside the
batch's C{BEGIN IMMEDIATE} transaction, which holds SQLite's write lock from
the start, so claims are atomic even between processes sharing the file.

A C{find} that may return more than a page of rows (no limit, a large one,
or a large offset) is read as a stream: in steps, on a reader connection,
outside the write transaction, so that one listing never holds commits back.
"""

from __future__ import annotations

import json
import re
import sqlite3
from typing import Any, Dict, Optional, Sequence

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.interfaces import IReactorFromThreads
from zope.interface import implementer

from bwcd.store.interface import Document, DuplicateKey, Filter, IStore, Sort, newId
from bwcd.store.schema import (
    COLLECTIONS,
    applyUpdate,
    checkDocument,
    checkPage,
    checkUpdate,
    collectionSchema,
    indexName,
)
from bwcd.store.sqlite_file import MIGRATIONS, migrate
from bwcd.store.sqlite_file import openConnection as _openConnection
from bwcd.store.sqlite_query import (
    compileFilter,
    compileSelect,
    compileSort,
    dumpJson as _dumps,
    jsonPath,
    schemaStatements,
    valueExpressions,
)
from bwcd.store.sqlite_thread import StoreThread

_loads = json.loads


def _document(row: Any) -> dict:
    return _loads(row[0])


def _opener(path: str, timeout: float) -> sqlite3.Connection:
    # Looked up at call time, so that tests can replace _openConnection.
    return _openConnection(path, timeout)


@implementer(IStore)
class SQLiteStore:
    """
    L{IStore} on a SQLite file, with group commit.

    @param path: the database file (created when missing, mode 0600; its
        directory must exist).
    @param reactor: used only to hand results back to the reactor thread.
    @param busyTimeout: seconds to wait for another process's write lock
        before failing a batch with L{StoreUnavailable}.
    @param maxBatch: most operations run in one transaction.
    @param pageRows: most rows a listing reads in one turn of the store's
        thread; a C{find} that may return more is read in such steps.
    """

    name = "sqlite"

    def __init__(
        self,
        path: str,
        reactor: IReactorFromThreads,
        busyTimeout: float = 5.0,
        maxBatch: int = 2000,
        pageRows: int = 500,
    ) -> None:
        self.path = path
        # MIGRATIONS is looked up when the store opens, so tests can replace it.
        self._thread = StoreThread(path, reactor, _opener, lambda: MIGRATIONS, busyTimeout, maxBatch, pageRows)
        self._submit = self._thread.submit
        self._sql: Dict[str, Dict[str, str]] = {
            name: {
                "insert": f'INSERT INTO "{name}" (id, doc) VALUES (?, ?)',
                "get": f'SELECT doc FROM "{name}" WHERE id = ?',
                "write": f'UPDATE "{name}" SET doc = ? WHERE id = ?',
                "deleteOne": f'DELETE FROM "{name}" WHERE id = ?',
            }
            for name in COLLECTIONS
        }

    def __repr__(self) -> str:
        return f"<SQLiteStore {self.path!r} {self._thread.state}>"

    def start(self) -> Deferred[None]:
        return self._thread.start()

    def stop(self) -> Deferred[None]:
        return self._thread.stop()

    def ping(self) -> Deferred[bool]:
        return self._submit(_doPing, False).addErrback(lambda f: False)

    def insert(self, collection: str, doc: Document) -> Deferred[Document]:
        try:
            sql = self._sql[collection]
        except KeyError:
            return fail(ValueError(f"unknown collection {collection!r}"))
        try:
            checkDocument(doc)
            stored = dict(doc)
            if "id" not in stored:
                stored["id"] = newId()
            text = _dumps(stored)
        except (TypeError, ValueError) as e:
            return fail(e)
        return self._submit(_doInsert, True, collection, sql["insert"], stored["id"], text, stored)

    def get(self, collection: str, docId: str) -> Deferred[Optional[Document]]:
        try:
            sql = self._sql[collection]["get"]
        except KeyError:
            return fail(ValueError(f"unknown collection {collection!r}"))
        return self._submit(_doFindOne, False, sql, (docId,))

    def findOne(self, collection: str, filter: Filter, sort: Sort = ()) -> Deferred[Optional[Document]]:
        try:
            sql, params = compileSelect("doc", collection, filter, sort, " LIMIT 1")
        except ValueError as e:
            return fail(e)
        return self._submit(_doFindOne, False, sql, params)

    def find(
        self,
        collection: str,
        filter: Filter,
        sort: Sort = (),
        limit: Optional[int] = None,
        offset: int = 0,
    ) -> Deferred[list]:
        try:
            checkPage(limit, offset)
            sql, params = compileSelect("doc", collection, filter, sort, " LIMIT ?")
        except ValueError as e:
            return fail(e)
        if limit == 0:
            return succeed([])
        pageRows = self._thread.pageRows
        if limit is not None and limit + offset <= pageRows:
            params.extend((limit, offset))
            return self._submit(_doFind, False, sql + " OFFSET ?", params)
        # The offset is skipped in the steps too, so a large one is no
        # longer a single long scan.
        params.append(-1 if limit is None else limit + offset)
        return self._thread.stream(sql, params, offset, _document)

    def count(self, collection: str, filter: Filter) -> Deferred[int]:
        try:
            sql, params = compileSelect("count(*)", collection, filter, ())
        except ValueError as e:
            return fail(e)
        return self._submit(_doCount, False, sql, params)

    def update(
        self,
        collection: str,
        filter: Filter,
        set: Optional[dict] = None,
        push: Optional[dict] = None,
        sort: Sort = (),
        currentDate: Sequence[str] = (),
    ) -> Deferred[Optional[Document]]:
        try:
            checkUpdate({**(set or {}), **{path: None for path in currentDate}}, push)
            sql, params = compileSelect("id, doc", collection, filter, sort, " LIMIT 1")
            # Serialised here: a snapshot of the caller's values, checked now.
            changes = _dumps([set or {}, push or {}, list(currentDate)])
        except (TypeError, ValueError) as e:
            return fail(e)
        return self._submit(self._doUpdate, True, collection, sql, params, changes)

    def replace(self, collection: str, doc: Document) -> Deferred[Optional[Document]]:
        try:
            sql = self._sql[collection]["write"]
        except KeyError:
            return fail(ValueError(f"unknown collection {collection!r}"))
        try:
            checkDocument(doc)
            if "id" not in doc:
                raise ValueError("replace needs a document with an id")
            stored = dict(doc)
            text = _dumps(stored)
        except (TypeError, ValueError) as e:
            return fail(e)
        return self._submit(_doReplace, True, collection, sql, stored["id"], text, stored)

    def delete(self, collection: str, filter: Filter) -> Deferred[int]:
        try:
            collectionSchema(collection)
            where, params = compileFilter(filter)
        except ValueError as e:
            return fail(e)
        return self._submit(_doChange, True, f'DELETE FROM "{collection}" WHERE {where}', params)

    def deleteOne(self, collection: str, docId: str) -> Deferred[bool]:
        try:
            sql = self._sql[collection]["deleteOne"]
        except KeyError:
            return fail(ValueError(f"unknown collection {collection!r}"))
        return self._submit(_doChange, True, sql, (docId,)).addCallback(lambda n: n == 1)

    def _doUpdate(self, cur: sqlite3.Cursor, collection: str, sql: str, params: list, changes: str) -> Optional[dict]:
        row = cur.execute(sql, params).fetchone()
        if row is None:
            return None
        docId, doc = row[0], _loads(row[1])
        set, push, currentDate = _loads(changes)
        if currentDate:
            # the database file's clock, the one every process sharing it reads
            now = cur.execute("SELECT strftime('%Y-%m-%dT%H:%M:%fZ', 'now')").fetchone()[0]
            set = {**set, **{path: now for path in currentDate}}
        text = _dumps(applyUpdate(doc, set, push))
        try:
            cur.execute(self._sql[collection]["write"], (text, docId))
        except sqlite3.IntegrityError as e:
            raise _duplicate(cur, collection, docId, text, e, isNew=False) from None
        return doc


# -- what runs in the store's thread ---------------------------------------------


def _doPing(cur: sqlite3.Cursor) -> bool:
    return cur.execute("SELECT 1").fetchone()[0] == 1


def _doInsert(cur: sqlite3.Cursor, collection: str, sql: str, docId: str, text: str, doc: dict) -> dict:
    try:
        cur.execute(sql, (docId, text))
    except sqlite3.IntegrityError as e:
        raise _duplicate(cur, collection, docId, text, e, isNew=True) from None
    return doc


def _doFindOne(cur: sqlite3.Cursor, sql: str, params: Any) -> Optional[dict]:
    row = cur.execute(sql, params).fetchone()
    return None if row is None else _loads(row[0])


def _doFind(cur: sqlite3.Cursor, sql: str, params: list) -> list:
    return [_loads(row[0]) for row in cur.execute(sql, params).fetchall()]


def _doCount(cur: sqlite3.Cursor, sql: str, params: list) -> int:
    return cur.execute(sql, params).fetchone()[0]


def _doReplace(cur: sqlite3.Cursor, collection: str, sql: str, docId: str, text: str, doc: dict) -> Optional[dict]:
    try:
        cur.execute(sql, (text, docId))
    except sqlite3.IntegrityError as e:
        raise _duplicate(cur, collection, docId, text, e, isNew=False) from None
    return doc if cur.rowcount == 1 else None


def _doChange(cur: sqlite3.Cursor, sql: str, params: Any) -> int:
    return cur.execute(sql, params).rowcount


def _duplicate(
    cur: sqlite3.Cursor, collection: str, docId: str, text: str, error: sqlite3.IntegrityError, isNew: bool
) -> DuplicateKey:
    """
    Build the L{DuplicateKey} for a failed write, finding the document that
    holds the key through the same expressions the unique index uses.
    """
    message = str(error)
    if isNew and message.endswith(f"{collection}.id"):
        return DuplicateKey(collection, docId, f"id {docId!r} already exists")
    schema = collectionSchema(collection)
    named = re.search(r"index '([^']+)'", message)
    keys = [k for k in schema.unique if named and named.group(1) == f"{collection}_{indexName(k, True)}"]
    for key in keys or schema.unique:
        clauses, params = [], []
        for path in key:
            clauses.append(f"{valueExpressions(path)[0]} = json_extract(?, '{jsonPath(path)}')")
            params.append(text)
        params.append(docId)
        row = cur.execute(
            f'SELECT id FROM "{collection}" WHERE {" AND ".join(clauses)} AND id != ? LIMIT 1', params
        ).fetchone()
        if row is not None:
            return DuplicateKey(collection, row[0], f"duplicate {', '.join(key)}")
    return DuplicateKey(collection, None, message)


__all__ = [
    "MIGRATIONS",
    "SQLiteStore",
    "applyUpdate",
    "compileFilter",
    "compileSort",
    "jsonPath",
    "migrate",
    "schemaStatements",
]
