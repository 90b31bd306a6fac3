# -*- test-case-name: tests.test_store_sqlite -*-
"""
The one thread that owns the SQLite connections, with group commit and
listings read in bounded steps.

Why it is built this way:

  - sqlite3 blocks, so every statement runs in this thread; the reactor
    thread only puts operations on a queue, and results come back with one
    C{callFromThread} per batch.
  - A webhook answer must not be sent before its trigger instance is on disk
    (C{synchronous=FULL}), and a webhook endpoint must take thousands of such
    writes a second.  An fsync per write cannot do that, so the thread takes
    every operation waiting in the queue, runs them all in one transaction
    and commits once (group commit).  Each write runs inside its own
    SAVEPOINT so that one failing write (a duplicate key) is undone alone.
  - A listing of many rows must not hold that transaction, or every commit
    queued behind it waits.  Such a listing is a I{stream}: it runs after the
    batch it came with has committed, on a reader connection of its own (in
    WAL mode readers and the writer do not wait for each other, and the
    reader keeps one snapshot for the whole listing), and reads
    C{pageRows} rows per turn; between turns it goes back to the end of the
    queue, so the writes queued meanwhile get their batch and commit first.
"""

from __future__ import annotations

import queue
import sqlite3
import threading
from collections import deque
from typing import Any, Callable, Deque, List, Optional, Sequence, Tuple

from attrs import define, field
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.interfaces import IReactorFromThreads
from twisted.logger import Logger

from bwcd.store.interface import StoreError, StoreUnavailable
from bwcd.store.sqlite_file import configure, makePrivate, migrate

log = Logger()

_STOP = object()

Opener = Callable[[str, float], sqlite3.Connection]
Migrations = Callable[[], Sequence[Callable[[sqlite3.Cursor], None]]]
Result = Tuple[Deferred, bool, Any]
_Op = Tuple[Any, Optional[bool], Deferred, tuple]


def _fatal(e: BaseException) -> bool:
    """
    Whether a sqlite error dooms the whole batch (I/O, locking, corruption)
    rather than one operation.
    """
    return isinstance(e, sqlite3.DatabaseError) and not isinstance(
        e, (sqlite3.IntegrityError, sqlite3.ProgrammingError, sqlite3.DataError, sqlite3.NotSupportedError)
    )


@define
class Stream:
    """
    One listing read in steps: its query, how many leading rows to drop,
    what it has read so far, and (once started) its reader connection and
    cursor.

    @ivar convert: turns one row into the value delivered.
    """

    sql: str
    params: list
    skip: int
    convert: Callable[[Any], Any]
    rows: list = field(factory=list)
    conn: Optional[sqlite3.Connection] = None
    cursor: Optional[sqlite3.Cursor] = None

    def take(self, rows: List[Any]) -> None:
        if self.skip:
            dropped = min(self.skip, len(rows))
            self.skip -= dropped
            rows = rows[dropped:]
        convert = self.convert
        self.rows.extend(convert(row) for row in rows)


class StoreThread:
    """
    The store's thread and its queue.

    @param opener: opens a connection to C{path} (called in the thread).
    @param migrations: gives the schema migrations to run when opening
        (L{bwcd.store.sqlite_file.MIGRATIONS}).
    @param busyTimeout: seconds to wait for another process's write lock
        before failing a batch with L{StoreUnavailable}.
    @param maxBatch: most operations run in one transaction.
    @param pageRows: most rows a stream reads in one turn.
    @param maxReaders: most streams reading at once (each holds a reader
        connection and its snapshot); others wait for one to finish.
    """

    def __init__(self, path: str, reactor: IReactorFromThreads, opener: Opener, migrations: Migrations,
                 busyTimeout: float = 5.0, maxBatch: int = 2000, pageRows: int = 500, maxReaders: int = 4) -> None:
        self.path = path
        self.pageRows = pageRows
        self._reactor = reactor
        self._opener = opener
        self._migrations = migrations
        self._busyTimeout = busyTimeout
        self._maxBatch = maxBatch
        self._maxReaders = maxReaders
        self._queue: "queue.SimpleQueue[Any]" = queue.SimpleQueue()
        self._put = self._queue.put
        # Operations submitted during one turn of the reactor are handed to
        # the thread together at the end of the turn, so that they share a
        # transaction (one commit, one fsync) instead of waking the thread
        # and committing once per operation.
        self._outbox: List[Any] = []
        self._flushCall: Any = None
        self.state = "new"
        self._thread: Optional[threading.Thread] = None
        self._startD: Optional[Deferred] = None
        self._stopWaiters: List[Deferred] = []
        self._openError: Optional[BaseException] = None
        # Owned by the thread:
        self._conn: Optional[sqlite3.Connection] = None
        self._cur: Optional[sqlite3.Cursor] = None
        self._wal = False
        self._idleReaders: List[sqlite3.Connection] = []
        self._readers = 0
        self._waiting: Deque[_Op] = deque()

    # -- reactor side ---------------------------------------------------------

    def start(self) -> Deferred[None]:
        if self.state != "new":
            return fail(StoreError(f"cannot start a store that is {self.state}"))
        self.state = "running"
        self._openError = None
        self._startD = Deferred()
        self._thread = threading.Thread(target=self._run, name=f"bwcd-sqlite {self.path}", daemon=True)
        self._thread.start()
        return self._startD

    def stop(self) -> Deferred[None]:
        d: Deferred[None] = Deferred()
        if self.state == "new":
            return succeed(None)
        if self.state == "running":
            self.state = "stopping"
            if self._flushCall is not None:
                self._flushCall.cancel()
            self._flush()
            self._put((_STOP, False, d, ()))
        else:
            self._stopWaiters.append(d)
        return d

    def submit(self, fn: Any, write: bool, *args: Any) -> Deferred:
        """
        Run C{fn(cursor, *args)} in the next batch (inside its transaction;
        a write in a savepoint of its own) and fire with its result.
        """
        return self._enqueue(fn, write, args)

    def stream(self, sql: str, params: list, skip: int, convert: Callable[[Any], Any]) -> Deferred[list]:
        """
        Read every row of C{sql} in steps of C{pageRows}, drop the first
        C{skip}, and fire with the others, each through C{convert}.
        """
        return self._enqueue(Stream(sql, params, skip, convert), None, ())

    def _enqueue(self, fn: Any, write: Optional[bool], args: tuple) -> Deferred:
        if self.state != "running":
            return fail(StoreUnavailable(f"sqlite store {self.path!r} is {self.state}"))
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

    def _deliver(self, results: List[Result]) -> None:
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
        self.state = "new"
        self._deliver(results)
        waiters, self._stopWaiters = [d] + self._stopWaiters, []
        for waiter in waiters:
            waiter.callback(None)

    # -- the thread -------------------------------------------------------------

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
            ops = [op for op in work if op[1] is not None]
            if ops:
                self._reactor.callFromThread(self._deliver, self._runBatch(ops))
            for op in work:
                if op[1] is None:
                    self._step(op)
            if stopAt is not None:
                self._close(batch[stopAt][2], batch[stopAt + 1 :])
                return

    def _open(self) -> None:
        makePrivate(self.path)
        conn = self._opener(self.path, self._busyTimeout)
        try:
            cur = conn.cursor()
            self._wal = configure(cur, self._busyTimeout, self.path)
            before, after = migrate(cur, self._migrations())
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
        # `late` holds only streams between two steps and operations that
        # raced stop(); fail them rather than leave their Deferreds hanging.
        while True:
            try:
                late.append(self._queue.get_nowait())
            except queue.Empty:
                break
        late.extend(self._waiting)
        self._waiting.clear()
        error = StoreUnavailable("sqlite store stopped")
        results = [(op[2], False, error) for op in late if op[0] is not _STOP]
        for op in late:
            if op[1] is None:
                self._endStream(op[0], keep=False)
        for conn in self._idleReaders:
            conn.close()
        self._idleReaders.clear()
        if self._conn is not None:
            try:
                self._cur.execute("PRAGMA optimize")
            except sqlite3.Error:
                pass
            self._conn.close()
            self._conn = self._cur = None
        self._reactor.callFromThread(self._stopped, stopD, threading.current_thread(), results)

    def _runBatch(self, ops: List[_Op]) -> List[Result]:
        cur = self._cur
        if cur is None:
            return [(op[2], False, StoreUnavailable(f"sqlite store {self.path!r} is not open")) for op in ops]
        results: List[Result] = []
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

    # -- streams ------------------------------------------------------------------

    def _step(self, op: _Op) -> None:
        """
        Read one page of a stream; queue it again or deliver it.
        """
        stream: Stream = op[0]
        d = op[2]
        try:
            if self._cur is None:
                raise StoreUnavailable(f"sqlite store {self.path!r} is not open")
            if stream.cursor is None:
                if not self._wal:
                    # Without WAL an open reader would block the writer's
                    # commit in this same thread: read it all at once.
                    stream.take(self._cur.execute(stream.sql, stream.params).fetchall())
                    self._reactor.callFromThread(self._deliver, [(d, True, stream.rows)])
                    return
                conn = self._reader()
                if conn is None:
                    self._waiting.append(op)
                    return
                stream.conn = conn
                stream.cursor = conn.execute(stream.sql, stream.params)
            rows = stream.cursor.fetchmany(self.pageRows)
            stream.take(rows)
        except Exception as e:
            self._endStream(stream, keep=not _fatal(e))
            if not isinstance(e, StoreError):
                log.error("SQLite listing failed on {path}: {error}", path=self.path, error=e)
                e = StoreUnavailable(f"sqlite: {e}")
            self._reactor.callFromThread(self._deliver, [(d, False, e)])
            return
        if len(rows) < self.pageRows:
            self._endStream(stream, keep=True)
            self._reactor.callFromThread(self._deliver, [(d, True, stream.rows)])
        else:
            self._put(op)

    def _reader(self) -> Optional[sqlite3.Connection]:
        """
        An idle reader connection, a new one, or C{None} when C{maxReaders}
        are busy.
        """
        if self._idleReaders:
            return self._idleReaders.pop()
        if self._readers >= self._maxReaders:
            return None
        conn = self._opener(self.path, self._busyTimeout)
        try:
            conn.execute("PRAGMA query_only = 1")
            conn.execute(f"PRAGMA busy_timeout = {int(self._busyTimeout * 1000)}")
        except BaseException:
            conn.close()
            raise
        self._readers += 1
        return conn

    def _endStream(self, stream: Stream, keep: bool) -> None:
        """
        Close a stream's cursor (ending its snapshot) and give its reader
        back, or close it; a stream waiting for a reader may then start.
        """
        conn, stream.conn, cursor, stream.cursor = stream.conn, None, stream.cursor, None
        if cursor is not None:
            try:
                cursor.close()
            except sqlite3.Error:
                keep = False
        if conn is None:
            return
        if keep:
            self._idleReaders.append(conn)
        else:
            conn.close()
            self._readers -= 1
        if self._waiting:
            self._put(self._waiting.popleft())


__all__ = ["Opener", "Stream", "StoreThread"]
