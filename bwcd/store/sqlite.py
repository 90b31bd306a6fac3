# -*- test-case-name: tests.test_store_contract -*-
"""
The embedded storage backend: one SQLite file, documents kept as JSON text.

Why it is built this way:

  - sqlite3 blocks, so every statement runs in one thread the store owns;
    the reactor thread only puts operations on a queue, and results come back
    with one C{callFromThread} per batch.
  - A webhook answer must not be sent before its trigger instance is on disk
    (C{synchronous=FULL}), and a webhook endpoint must take thousands of such
    writes a second.  An fsync per write cannot do that, so the thread takes
    every operation waiting in the queue, runs them all in one transaction
    and commits once (group commit).  Each write runs inside its own
    SAVEPOINT so that one failing write (a duplicate key) is undone alone.
  - Filters become SQL over C{json_extract(doc, '$.path')}, the same
    expressions the indexes from L{bwcd.store.schema} are built on, so the
    planner uses them.  C{json_extract} gives JSON C{true} as 1 and an object
    as its JSON text, so every comparison also checks C{json_type}; that keeps
    C{True} from matching C{1} and gives range operators MongoDB's rule that
    strings and numbers never compare with each other.
  - C{update} reads, changes the document in Python and writes it back inside
    a C{BEGIN IMMEDIATE} transaction, which holds SQLite's write lock from the
    start, so claims are atomic even between processes sharing the file.
"""

from __future__ import annotations

import json
import queue
from functools import lru_cache
import re
import sqlite3
import threading
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.interfaces import IReactorFromThreads
from twisted.logger import Logger
from zope.interface import implementer

from bwcd.store.interface import (
    Document,
    DuplicateKey,
    Filter,
    IStore,
    Sort,
    StoreError,
    StoreUnavailable,
    newId,
)
from bwcd.store.schema import (
    COLLECTIONS,
    CollectionSchema,
    Key,
    checkDocument,
    checkFilter,
    checkSort,
    checkUpdate,
    collectionSchema,
    indexName,
    isOperatorCondition,
    splitPath,
)

log = Logger()

_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode
_loads = json.loads

_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


# -- SQL generation (pure) ---------------------------------------------------


@lru_cache(maxsize=1024)
def jsonPath(path: str) -> str:
    """
    The SQLite JSON path for a dotted document path (C{$.a.b}; keys that are
    not identifiers are quoted).
    """
    return "$" + "".join("." + (p if _IDENT.match(p) else f'"{p}"') for p in splitPath(path))


@lru_cache(maxsize=1024)
def _exprs(path: str) -> Tuple[str, str]:
    """
    The SQL giving a path's value and its JSON type.  Paths are checked by
    L{splitPath} (letters, digits, C{_}, C{-}), so inlining them is safe, and
    inlining is needed for the planner to match the expression indexes.
    """
    if path == "id":
        return "id", "'text'"
    p = jsonPath(path)
    return f"json_extract(doc,'{p}')", f"json_type(doc,'{p}')"


_NUMBER = "IN ('integer','real')"
_RANGE_SQL = {"$gt": ">", "$gte": ">=", "$lt": "<", "$lte": "<="}


def _isNumber(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _equals(value: Any, ve: str, te: str, params: List[Any]) -> str:
    if value is None:
        return f"{ve} IS NULL"
    if isinstance(value, bool):
        return f"({ve} = {int(value)} AND {te} = '{'true' if value else 'false'}')"
    if _isNumber(value):
        params.append(value)
        return f"({ve} = ? AND {te} {_NUMBER})"
    if isinstance(value, str):
        params.append(value)
        return f"({ve} = ? AND {te} = 'text')"
    params.append(_dumps(value))
    kind = "object" if isinstance(value, dict) else "array"
    return f"({ve} = json(?) AND {te} = '{kind}')"


def _condition(path: str, condition: Any, params: List[Any]) -> str:
    ve, te = _exprs(path)
    if not isOperatorCondition(condition):
        return _equals(condition, ve, te, params)
    clauses = []
    for op, arg in condition.items():
        if op in _RANGE_SQL:
            params.append(arg)
            guard = "= 'text'" if isinstance(arg, str) else _NUMBER
            clauses.append(f"({ve} {_RANGE_SQL[op]} ? AND {te} {guard})")
        elif op == "$ne":
            clauses.append(f"NOT COALESCE({_equals(arg, ve, te, params)}, 0)")
        elif op == "$exists":
            clauses.append(f"{te} IS {'NOT ' if arg else ''}NULL")
        else:  # $in
            values = list(arg)
            if not values:
                clauses.append("0")
            elif all(isinstance(v, str) for v in values) or all(_isNumber(v) for v in values):
                params.extend(values)
                guard = "= 'text'" if isinstance(values[0], str) else _NUMBER
                clauses.append(f"({ve} IN ({','.join('?' * len(values))}) AND {te} {guard})")
            else:
                clauses.append("(" + " OR ".join(_equals(v, ve, te, params) for v in values) + ")")
    return " AND ".join(clauses)


def compileFilter(filter: Filter) -> Tuple[str, List[Any]]:
    """
    The SQL C{WHERE} expression and its parameters for C{filter}.

    @raise ValueError: for a filter outside the store's language.
    """
    checkFilter(filter)
    params: List[Any] = []
    clauses = [_condition(path, condition, params) for path, condition in filter.items()]
    return (" AND ".join(clauses) if clauses else "1"), params


def compileSort(sort: Sort) -> str:
    """
    The SQL C{ORDER BY} clause (with its leading space) for C{sort}.
    """
    items = checkSort(sort)
    if not items:
        return ""
    return " ORDER BY " + ", ".join(
        f"{_exprs(path)[0]} {'ASC' if direction == 1 else 'DESC'}" for path, direction in items
    )


def _indexSQL(schema: CollectionSchema, key: Key, unique: bool) -> str:
    name = f"{schema.name}_{indexName(key, unique)}"
    columns = ", ".join(_exprs(path)[0] for path in key)
    kind = "UNIQUE INDEX" if unique else "INDEX"
    return f'CREATE {kind} IF NOT EXISTS "{name}" ON "{schema.name}" ({columns})'


def schemaStatements() -> List[str]:
    """
    The idempotent statements creating every declared table and index.
    """
    statements = []
    for schema in COLLECTIONS.values():
        statements.append(
            f'CREATE TABLE IF NOT EXISTS "{schema.name}" (id TEXT PRIMARY KEY NOT NULL, doc TEXT NOT NULL)'
        )
        statements.extend(_indexSQL(schema, key, False) for key in schema.indexes)
        statements.extend(_indexSQL(schema, key, True) for key in schema.unique)
    return statements


# -- updates (pure) ----------------------------------------------------------


def _parent(doc: dict, path: str) -> Tuple[dict, str]:
    parts = path.split(".")
    node = doc
    for part in parts[:-1]:
        child = node.get(part)
        if child is None and part not in node:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise ValueError(f"cannot set {path!r}: {part!r} is not an object")
        node = child
    return node, parts[-1]


def applyUpdate(doc: dict, set: Optional[dict], push: Optional[dict]) -> dict:
    """
    Change C{doc} in place as MongoDB's C{$set} and C{$push} would, and
    return it.  Missing intermediate objects are created; pushing to a
    missing field creates a one-element list.

    @raise ValueError: when a path crosses a non-object or a push targets a
        field that is not a list.
    """
    for path, value in (set or {}).items():
        node, key = _parent(doc, path)
        node[key] = value
    for path, value in (push or {}).items():
        node, key = _parent(doc, path)
        if key not in node:
            node[key] = [value]
        elif isinstance(node[key], list):
            node[key].append(value)
        else:
            raise ValueError(f"cannot push to {path!r}: not a list")
    return doc


# -- schema versions ---------------------------------------------------------


def _createEverything(cursor: sqlite3.Cursor) -> None:
    for statement in schemaStatements():
        cursor.execute(statement)


MIGRATIONS: Sequence[Callable[[sqlite3.Cursor], None]] = (_createEverything,)
"""
One step per schema version (there are
L{bwcd.store.schema.SCHEMA_VERSION} of them): C{MIGRATIONS[n]} brings a
database from C{user_version} n to n + 1, inside the caller's transaction.
Tables and indexes declared in L{bwcd.store.schema} are also (re)created
idempotently on every start, so a new index needs no migration; migrations
are for reshaping data (and must tolerate tables that already exist).
"""


def migrate(cursor: sqlite3.Cursor, migrations: Sequence[Callable[[sqlite3.Cursor], None]]) -> Tuple[int, int]:
    """
    Bring the database up to C{len(migrations)} in one C{BEGIN IMMEDIATE}
    transaction, so two processes starting together do not both migrate.

    @return: the versions before and after.
    @raise StoreError: when the file was written by a newer bwcd.
    """
    target = len(migrations)
    cursor.execute("BEGIN IMMEDIATE")
    try:
        version = cursor.execute("PRAGMA user_version").fetchone()[0]
        if version > target:
            raise StoreError(
                f"database schema version {version} is newer than this bwcd supports ({target})"
            )
        for step in range(version, target):
            migrations[step](cursor)
        if version != target:
            cursor.execute(f"PRAGMA user_version = {int(target)}")
        _createEverything(cursor)
        cursor.execute("COMMIT")
    except BaseException:
        cursor.execute("ROLLBACK")
        raise
    return version, target


def _openConnection(path: str, timeout: float) -> sqlite3.Connection:
    """
    Open the connection (in the store's thread).  Autocommit mode: the store
    issues BEGIN/COMMIT itself.  Tests replace this to observe statements.
    """
    return sqlite3.connect(path, timeout=timeout, isolation_level=None, cached_statements=512)


# -- the store -----------------------------------------------------------------

_STOP = object()


def _fatal(e: BaseException) -> bool:
    """
    Whether a sqlite error dooms the whole batch (I/O, locking, corruption)
    rather than one operation.
    """
    return isinstance(e, sqlite3.DatabaseError) and not isinstance(
        e, (sqlite3.IntegrityError, sqlite3.ProgrammingError, sqlite3.DataError, sqlite3.NotSupportedError)
    )


_Op = Tuple[Any, bool, Deferred, tuple]


@implementer(IStore)
class SQLiteStore:
    """
    L{IStore} on a SQLite file, with group commit.

    @param path: the database file (created when missing; its directory must
        exist).
    @param reactor: used only to hand results back to the reactor thread.
    @param busyTimeout: seconds to wait for another process's write lock
        before failing a batch with L{StoreUnavailable}.
    @param maxBatch: most operations run in one transaction.
    """

    name = "sqlite"

    def __init__(
        self,
        path: str,
        reactor: IReactorFromThreads,
        busyTimeout: float = 5.0,
        maxBatch: int = 2000,
    ) -> None:
        self.path = path
        self._reactor = reactor
        self._busyTimeout = busyTimeout
        self._maxBatch = maxBatch
        self._queue: "queue.SimpleQueue[Any]" = queue.SimpleQueue()
        self._put = self._queue.put
        # Operations submitted during one turn of the reactor are handed to
        # the thread together at the end of the turn, so that they share a
        # transaction (one commit, one fsync) instead of waking the thread
        # and committing once per operation.
        self._outbox: List[Any] = []
        self._flushCall: Any = None
        self._state = "new"
        self._thread: Optional[threading.Thread] = None
        self._startD: Optional[Deferred] = None
        self._stopWaiters: List[Deferred] = []
        self._openError: Optional[BaseException] = None
        # Owned by the store's thread:
        self._conn: Optional[sqlite3.Connection] = None
        self._cur: Optional[sqlite3.Cursor] = None
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
        return f"<SQLiteStore {self.path!r} {self._state}>"

    # -- reactor side ---------------------------------------------------------

    def start(self) -> Deferred[None]:
        if self._state != "new":
            return fail(StoreError(f"cannot start a store that is {self._state}"))
        self._state = "running"
        self._openError = None
        self._startD = Deferred()
        self._thread = threading.Thread(target=self._run, name=f"bwcd-sqlite {self.path}", daemon=True)
        self._thread.start()
        return self._startD

    def stop(self) -> Deferred[None]:
        d: Deferred[None] = Deferred()
        if self._state == "new":
            return succeed(None)
        if self._state == "running":
            self._state = "stopping"
            if self._flushCall is not None:
                self._flushCall.cancel()
            self._flush()
            self._put((_STOP, False, d, ()))
        else:
            self._stopWaiters.append(d)
        return d

    def _submit(self, fn: Any, write: bool, *args: Any) -> Deferred:
        if self._state != "running":
            return fail(StoreUnavailable(f"sqlite store {self.path!r} is {self._state}"))
        if self._openError is not None:
            return fail(StoreUnavailable(f"sqlite store {self.path!r} did not open: {self._openError}"))
        d: Deferred = Deferred()
        self._outbox.append((fn, write, d, args))
        if self._flushCall is None:
            self._flushCall = self._reactor.callLater(0, self._flush)
        return d

    def _flush(self) -> None:
        self._flushCall = None
        outbox, self._outbox = self._outbox, []
        for op in outbox:
            self._put(op)

    def _deliver(self, results: List[Tuple[Deferred, bool, Any]]) -> None:
        for d, ok, value in results:
            if ok:
                d.callback(value)
            else:
                d.errback(value)

    def _opened(self, error: Optional[BaseException]) -> None:
        d, self._startD = self._startD, None
        assert d is not None
        if error is None:
            d.callback(None)
        else:
            self._openError = error
            d.errback(error)

    def _stopped(self, d: Deferred, thread: threading.Thread, results: list) -> None:
        # The thread's last act was to schedule this call, so it is ending.
        thread.join()
        self._thread = None
        self._state = "new"
        self._deliver(results)
        waiters, self._stopWaiters = [d] + self._stopWaiters, []
        for waiter in waiters:
            waiter.callback(None)

    def ping(self) -> Deferred[bool]:
        return self._submit(self._doPing, False).addErrback(lambda f: False)

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
        return self._submit(self._doInsert, True, collection, sql["insert"], stored["id"], text, stored)

    def get(self, collection: str, docId: str) -> Deferred[Optional[Document]]:
        try:
            sql = self._sql[collection]["get"]
        except KeyError:
            return fail(ValueError(f"unknown collection {collection!r}"))
        return self._submit(self._doGet, False, sql, docId)

    def _select(self, what: str, collection: str, filter: Filter, sort: Sort, tail: str = "") -> Tuple[str, list]:
        collectionSchema(collection)
        where, params = compileFilter(filter)
        return f'SELECT {what} FROM "{collection}" WHERE {where}{compileSort(sort)}{tail}', params

    def findOne(self, collection: str, filter: Filter, sort: Sort = ()) -> Deferred[Optional[Document]]:
        try:
            sql, params = self._select("doc", collection, filter, sort, " LIMIT 1")
        except ValueError as e:
            return fail(e)
        return self._submit(self._doFindOne, False, sql, params)

    def find(
        self,
        collection: str,
        filter: Filter,
        sort: Sort = (),
        limit: Optional[int] = None,
        offset: int = 0,
    ) -> Deferred[list]:
        try:
            if limit is not None and (not isinstance(limit, int) or limit < 0):
                raise ValueError(f"limit must be None or >= 0, not {limit!r}")
            if not isinstance(offset, int) or offset < 0:
                raise ValueError(f"offset must be >= 0, not {offset!r}")
            sql, params = self._select("doc", collection, filter, sort, " LIMIT ? OFFSET ?")
        except ValueError as e:
            return fail(e)
        if limit == 0:
            return succeed([])
        params.extend((-1 if limit is None else limit, offset))
        return self._submit(self._doFind, False, sql, params)

    def count(self, collection: str, filter: Filter) -> Deferred[int]:
        try:
            sql, params = self._select("count(*)", collection, filter, ())
        except ValueError as e:
            return fail(e)
        return self._submit(self._doCount, False, sql, params)

    def update(
        self,
        collection: str,
        filter: Filter,
        set: Optional[dict] = None,
        push: Optional[dict] = None,
        sort: Sort = (),
    ) -> Deferred[Optional[Document]]:
        try:
            checkUpdate(set, push)
            sql, params = self._select("id, doc", collection, filter, sort, " LIMIT 1")
            # Serialised here: a snapshot of the caller's values, checked now.
            changes = _dumps([set or {}, push or {}])
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
        return self._submit(self._doReplace, True, collection, sql, stored["id"], text, stored)

    def delete(self, collection: str, filter: Filter) -> Deferred[int]:
        try:
            collectionSchema(collection)
            where, params = compileFilter(filter)
        except ValueError as e:
            return fail(e)
        return self._submit(self._doDelete, True, f'DELETE FROM "{collection}" WHERE {where}', params)

    def deleteOne(self, collection: str, docId: str) -> Deferred[bool]:
        try:
            sql = self._sql[collection]["deleteOne"]
        except KeyError:
            return fail(ValueError(f"unknown collection {collection!r}"))
        return self._submit(self._doDeleteOne, True, sql, docId)

    # -- the store's thread ---------------------------------------------------

    def _run(self) -> None:
        try:
            self._open()
        except BaseException as e:
            log.error("Cannot open SQLite store {path}: {error}", path=self.path, error=e)
            self._conn = self._cur = None
            error: BaseException = e if isinstance(e, StoreError) else StoreUnavailable(f"sqlite: {e}")
            self._reactor.callFromThread(self._opened, error)
        else:
            self._reactor.callFromThread(self._opened, None)
        get, getNowait, maxBatch = self._queue.get, self._queue.get_nowait, self._maxBatch
        while True:
            batch = [get()]
            while len(batch) < maxBatch:
                try:
                    batch.append(getNowait())
                except queue.Empty:
                    break
            stopAt = next((i for i, op in enumerate(batch) if op[0] is _STOP), None)
            work = batch if stopAt is None else batch[:stopAt]
            if work:
                self._reactor.callFromThread(self._deliver, self._runBatch(work))
            if stopAt is not None:
                self._close(batch[stopAt][2], batch[stopAt + 1 :])
                return

    def _open(self) -> None:
        conn = _openConnection(self.path, self._busyTimeout)
        try:
            cur = conn.cursor()
            mode = cur.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if mode != "wal":
                log.warn("SQLite store {path} runs in journal mode {mode}, not WAL", path=self.path, mode=mode)
            cur.execute("PRAGMA synchronous = FULL")
            cur.execute(f"PRAGMA busy_timeout = {int(self._busyTimeout * 1000)}")
            before, after = migrate(cur, MIGRATIONS)
        except BaseException:
            conn.close()
            raise
        if before == 0:
            log.info("Created SQLite store {path} at schema version {after}", path=self.path, after=after)
        elif before != after:
            log.info(
                "Migrated SQLite store {path} from schema version {before} to {after}",
                path=self.path,
                before=before,
                after=after,
            )
        self._conn, self._cur = conn, cur

    def _close(self, stopD: Deferred, late: List[_Op]) -> None:
        # Operations queued after stop() are refused on the reactor side, so
        # `late` is empty unless stop() raced a caller; fail them rather
        # than leave their Deferreds hanging.
        while True:
            try:
                late.append(self._queue.get_nowait())
            except queue.Empty:
                break
        results = [(op[2], False, StoreUnavailable("sqlite store stopped")) for op in late if op[0] is not _STOP]
        if self._conn is not None:
            try:
                self._cur.execute("PRAGMA optimize")
            except sqlite3.Error:
                pass
            self._conn.close()
            self._conn = self._cur = None
        self._reactor.callFromThread(self._stopped, stopD, threading.current_thread(), results)

    def _runBatch(self, ops: List[_Op]) -> List[Tuple[Deferred, bool, Any]]:
        cur = self._cur
        if cur is None:
            return [(op[2], False, StoreUnavailable(f"sqlite store {self.path!r} is not open")) for op in ops]
        results: List[Tuple[Deferred, bool, Any]] = []
        append = results.append
        try:
            cur.execute("BEGIN IMMEDIATE" if any(op[1] for op in ops) else "BEGIN")
            for fn, write, d, args in ops:
                if write:
                    cur.execute("SAVEPOINT op")
                try:
                    value = fn(cur, *args)
                except Exception as e:
                    if _fatal(e):
                        raise
                    if write:
                        cur.execute("ROLLBACK TO op")
                        cur.execute("RELEASE op")
                    append((d, False, e))
                else:
                    if write:
                        cur.execute("RELEASE op")
                    append((d, True, value))
            cur.execute("COMMIT")
        except Exception as e:
            log.error(
                "SQLite batch of {count} operations failed on {path}: {error}",
                count=len(ops),
                path=self.path,
                error=e,
            )
            try:
                if self._conn is not None and self._conn.in_transaction:
                    cur.execute("ROLLBACK")
            except sqlite3.Error:
                pass
            error = StoreUnavailable(f"sqlite: {e}")
            return [(op[2], False, error) for op in ops]
        return results

    def _doPing(self, cur: sqlite3.Cursor) -> bool:
        return cur.execute("SELECT 1").fetchone()[0] == 1

    def _doInsert(self, cur: sqlite3.Cursor, collection: str, sql: str, docId: str, text: str, doc: dict) -> dict:
        try:
            cur.execute(sql, (docId, text))
        except sqlite3.IntegrityError as e:
            raise self._duplicate(cur, collection, docId, text, e, isNew=True) from None
        return doc

    def _doGet(self, cur: sqlite3.Cursor, sql: str, docId: str) -> Optional[dict]:
        row = cur.execute(sql, (docId,)).fetchone()
        return None if row is None else _loads(row[0])

    def _doFindOne(self, cur: sqlite3.Cursor, sql: str, params: list) -> Optional[dict]:
        row = cur.execute(sql, params).fetchone()
        return None if row is None else _loads(row[0])

    def _doFind(self, cur: sqlite3.Cursor, sql: str, params: list) -> list:
        return [_loads(row[0]) for row in cur.execute(sql, params).fetchall()]

    def _doCount(self, cur: sqlite3.Cursor, sql: str, params: list) -> int:
        return cur.execute(sql, params).fetchone()[0]

    def _doUpdate(self, cur: sqlite3.Cursor, collection: str, sql: str, params: list, changes: str) -> Optional[dict]:
        row = cur.execute(sql, params).fetchone()
        if row is None:
            return None
        docId, doc = row[0], _loads(row[1])
        set, push = _loads(changes)
        text = _dumps(applyUpdate(doc, set, push))
        try:
            cur.execute(self._sql[collection]["write"], (text, docId))
        except sqlite3.IntegrityError as e:
            raise self._duplicate(cur, collection, docId, text, e, isNew=False) from None
        return doc

    def _doReplace(self, cur: sqlite3.Cursor, collection: str, sql: str, docId: str, text: str, doc: dict) -> Optional[dict]:
        try:
            cur.execute(sql, (text, docId))
        except sqlite3.IntegrityError as e:
            raise self._duplicate(cur, collection, docId, text, e, isNew=False) from None
        return doc if cur.rowcount == 1 else None

    def _doDelete(self, cur: sqlite3.Cursor, sql: str, params: list) -> int:
        return cur.execute(sql, params).rowcount

    def _doDeleteOne(self, cur: sqlite3.Cursor, sql: str, docId: str) -> bool:
        return cur.execute(sql, (docId,)).rowcount == 1

    def _duplicate(
        self, cur: sqlite3.Cursor, collection: str, docId: str, text: str, error: sqlite3.IntegrityError, isNew: bool
    ) -> DuplicateKey:
        """
        Build the L{DuplicateKey} for a failed write, finding the document
        that holds the key through the same expressions the unique index
        uses.
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
                ve, te = _exprs(path)
                clauses.append(f"{ve} = json_extract(?, '{jsonPath(path)}')")
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
