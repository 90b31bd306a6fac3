# -*- test-case-name: tests.test_store_sqlite -*-
"""
The SQLite database file itself: who may read it, how a connection to it
is opened and configured, and how its schema version is brought up to date.

The file holds trigger-instance payloads and execution parameters, so it and
its C{-wal} and C{-shm} companions are readable by the owner only, whatever
the umask: SQLite creates the companions with the mode of the database file,
so creating that file C{0600} before SQLite opens it is enough.
"""

from __future__ import annotations

import os
import sqlite3
import stat
from typing import Callable, Sequence, Tuple

from twisted.logger import Logger

from bwcd.store.interface import StoreError
from bwcd.store.sqlite_query import schemaStatements

log = Logger()

PRIVATE_MODE = 0o600
COMPANIONS = ("", "-wal", "-shm", "-journal")
"""
The suffixes of the files SQLite keeps for one database.
"""


def makePrivate(path: str) -> None:
    """
    Create the database file readable and writable by its owner only when
    it does not exist, and take group and other access away from it and its
    companions when they do (files left by a bwcd that did not do this).
    """
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), PRIVATE_MODE)
    except FileExistsError:
        pass
    else:
        try:
            # the umask may have taken the owner's write bit away
            os.fchmod(fd, PRIVATE_MODE)
        finally:
            os.close(fd)
    for suffix in COMPANIONS:
        name = path + suffix
        try:
            mode = stat.S_IMODE(os.stat(name).st_mode)
        except FileNotFoundError:
            continue
        if mode & 0o077:
            try:
                os.chmod(name, mode & 0o700)
            except OSError as e:
                log.warn("Cannot make {file} private (mode {mode:o}): {error}", file=name, mode=mode, error=e)
            else:
                log.info("Made {file} private (mode was {mode:o})", file=name, mode=mode)


def openConnection(path: str, timeout: float) -> sqlite3.Connection:
    """
    Open a connection (in the store's thread).  Autocommit mode: the store
    issues BEGIN/COMMIT itself.
    """
    return sqlite3.connect(path, timeout=timeout, isolation_level=None, cached_statements=512)


def configure(cur: sqlite3.Cursor, busyTimeout: float, path: str) -> bool:
    """
    Set the pragmas every connection of the store uses.

    @return: whether the file is in WAL mode (readers and the writer do
        not wait for each other).
    """
    mode = cur.execute("PRAGMA journal_mode = WAL").fetchone()[0]
    if mode != "wal":
        log.warn("SQLite store {path} runs in journal mode {mode}, not WAL", path=path, mode=mode)
    cur.execute("PRAGMA synchronous = FULL")
    cur.execute(f"PRAGMA busy_timeout = {int(busyTimeout * 1000)}")
    return mode == "wal"


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


__all__ = ["COMPANIONS", "MIGRATIONS", "PRIVATE_MODE", "configure", "makePrivate", "migrate", "openConnection"]
