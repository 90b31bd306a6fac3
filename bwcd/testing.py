# -*- test-case-name: tests.test_store_contract -*-
"""
Test doubles for bwcd's own tests and for code built on it.

L{MemoryStore} is an in-memory L{IStore} that passes the same contract suite
as the SQLite and MongoDB backends.  Every Deferred it returns has already
fired, so tests of code on top of a store can be L{SynchronousTestCase}s
using C{successResultOf}, driven by a L{twisted.internet.task.Clock}, with
no threads, files or servers.

Documents are copied through JSON on the way in and out, as a real backend
serialises them: a caller can neither change stored state by mutating a
dict it passed or got back, nor store what SQLite could not (C{NaN}, sets,
datetimes fail with C{TypeError}/C{ValueError}).

Where SQLite and MongoDB differ outside the contract, this store follows
MongoDB's rules (sort order across types: null, numbers, strings, objects,
arrays, booleans) and it is stricter than both where the interface states a
caller's duty: a document lacking one of its collection's unique keys, or
holding C{None} there, is refused with C{ValueError}.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.interfaces import IReactorTime
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
    applyUpdate,
    checkDocument,
    checkFilter,
    checkSort,
    checkUpdate,
    collectionSchema,
    getPath,
)
from bwcd.timeutil import isoformat, utcnow
from bwcd.store.matching import matches, sortDocuments, sortKey, valuesEqual

_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode


def _copy(value: Any) -> Any:
    """
    A private copy, made as a backend would make it: through JSON.
    """
    return json.loads(_dumps(value))


# -- matching (pure) -----------------------------------------------------------


class MemoryDatabase:
    """
    The data of one or more L{MemoryStore}s: stores made on the same
    database see each other's writes, as two processes sharing a SQLite file
    or a MongoDB server do.

    @ivar collections: collection name to C{{id: document}}, in insertion
        order.  Tests may read it; writing it bypasses every check.
    """

    def __init__(self) -> None:
        self.collections: Dict[str, Dict[str, Document]] = {name: {} for name in COLLECTIONS}
        #: the store-side clock of C{update(currentDate=...)}; None: the real time
        self.clock: Optional[IReactorTime] = None


@implementer(IStore)
class MemoryStore:
    """
    L{IStore} in memory, answering with Deferreds that have already fired.

    Like the real backends it must be started before use (C{start()} fires
    at once); after C{stop()} operations fail with L{StoreUnavailable} and
    C{ping} is C{False}; it can be started again and keeps its data.

    Two controls let tests reach states a real backend reaches only under
    load or failure:

      - L{hold} makes operations wait (unfired Deferreds, run in call order
        by L{step} one at a time or by L{release}), for tests of what
        happens while a read or write is pending;
      - L{breakDown} makes every operation fail with L{StoreUnavailable}
        (and C{ping} say C{False}) until L{repair}, for tests of 503 answers.

    @param database: the data to use; a new empty one by default.
    @ivar operations: the names of the operations called so far, in order
        (C{"insert"}, C{"update"}, ...), for tests that check a write was or
        was not attempted.
    """

    name = "memory"

    def __init__(self, database: Optional[MemoryDatabase] = None) -> None:
        self.database = database if database is not None else MemoryDatabase()
        self.operations: List[str] = []
        self._running = False
        self._broken: Optional[StoreUnavailable] = None
        self._held: Optional[List[Tuple[str, Deferred, Callable[[], Any]]]] = None

    def __repr__(self) -> str:
        return f"<MemoryStore {'running' if self._running else 'stopped'}>"

    # -- test controls ---------------------------------------------------------

    def hold(self) -> None:
        """
        From now on, check each operation's arguments at once (a
        programming error still fails at once) but run it only at L{step}
        or L{release}.
        """
        if self._held is None:
            self._held = []

    @property
    def held(self) -> List[str]:
        """
        The names of the held operations, oldest first.
        """
        return [name for name, _d, _operation in self._held or []]

    def step(self) -> Optional[str]:
        """
        Run the oldest held operation and fire its Deferred (whatever that
        starts is held in turn); return its name, or C{None} when nothing
        is held.
        """
        if not self._held:
            return None
        name, d, operation = self._held.pop(0)
        self._fire(d, operation)
        return name

    def release(self) -> int:
        """
        Stop holding: run the held operations in the order they were
        called and fire their Deferreds (what they start runs at once);
        return how many were held.
        """
        held, self._held = self._held or [], None
        for _name, d, operation in held:
            self._fire(d, operation)
        return len(held)

    def breakDown(self, reason: str = "memory store is broken down") -> None:
        """
        Fail every operation with L{StoreUnavailable} until L{repair}.
        """
        self._broken = StoreUnavailable(reason)

    def repair(self) -> None:
        """
        Answer operations again after L{breakDown}.
        """
        self._broken = None

    # -- lifecycle ---------------------------------------------------------------

    def start(self) -> Deferred[None]:
        if self._running:
            return fail(StoreError("cannot start a store that is running"))
        self._running = True
        return succeed(None)

    def stop(self) -> Deferred[None]:
        # Like SQLite, writes issued before stop are finished first.
        self.release()
        self._running = False
        return succeed(None)

    # -- plumbing ------------------------------------------------------------------

    def _fire(self, d: Deferred, operation: Callable[[], Any]) -> None:
        try:
            value = operation()
        except Exception as e:
            d.errback(e)
        else:
            d.callback(value)

    def _submit(self, name: str, check: Callable[[], Callable[[], Any]]) -> Deferred:
        """
        Check the arguments (C{check()}, which raises for a programming
        error and returns the operation), then run the operation now or,
        while holding, at L{release}.
        """
        self.operations.append(name)
        try:
            operation = check()
        except (TypeError, ValueError) as e:
            return fail(e)
        if not self._running:
            return fail(StoreUnavailable("memory store is not running"))
        if self._broken is not None:
            return fail(self._broken)
        d: Deferred = Deferred()
        if self._held is not None:
            self._held.append((name, d, operation))
        else:
            self._fire(d, operation)
        return d

    def _collection(self, collection: str) -> Dict[str, Document]:
        collectionSchema(collection)
        return self.database.collections.setdefault(collection, {})

    def _matching(self, collection: str, filter: Filter, sort: Sort) -> Callable[[], List[Document]]:
        docs = self._collection(collection)
        checkFilter(filter)
        checkSort(sort)
        filter = _copy(filter)
        return lambda: sortDocuments([doc for doc in docs.values() if matches(doc, filter)], sort)

    def _checkUnique(self, collection: str, doc: Document, isNew: bool) -> None:
        """
        Raise L{DuplicateKey} when C{doc} would break a unique index,
        naming the document holding the key.
        """
        docs = self.database.collections[collection]
        if isNew and doc["id"] in docs:
            raise DuplicateKey(collection, doc["id"], f"id {doc['id']!r} already exists")
        for key in collectionSchema(collection).unique:
            values = [getPath(doc, path)[1] for path in key]
            for other in docs.values():
                if other["id"] != doc["id"] and all(
                    valuesEqual(getPath(other, path)[1], value) for path, value in zip(key, values)
                ):
                    raise DuplicateKey(collection, other["id"], f"duplicate {', '.join(key)}")

    def _write(self, collection: str, doc: Document, isNew: bool) -> Document:
        """
        Store C{doc} (a private copy) unless it breaks a unique index, and
        return a copy for the caller.
        """
        self._checkUnique(collection, doc, isNew)
        self.database.collections[collection][doc["id"]] = doc
        return _copy(doc)

    @staticmethod
    def _checkKeysPresent(collection: str, doc: Document) -> None:
        for key in collectionSchema(collection).unique:
            for path in key:
                if getPath(doc, path)[1] is None:
                    raise ValueError(
                        f"{collection}: unique key {path!r} must be present and not null (see bwcd.store.interface)"
                    )

    # -- IStore ----------------------------------------------------------------------

    def ping(self) -> Deferred[bool]:
        return self._submit("ping", lambda: lambda: True).addErrback(lambda f: False)

    def insert(self, collection: str, doc: Document) -> Deferred[Document]:
        def check() -> Callable[[], Document]:
            docs = self._collection(collection)
            checkDocument(doc)
            stored = _copy(doc)
            stored.setdefault("id", newId())
            self._checkKeysPresent(collection, stored)

            return lambda: self._write(collection, stored, isNew=True)

        return self._submit("insert", check)

    def get(self, collection: str, docId: str) -> Deferred[Optional[Document]]:
        def check() -> Callable[[], Optional[Document]]:
            docs = self._collection(collection)
            return lambda: _copy(docs.get(docId)) if isinstance(docId, str) else None

        return self._submit("get", check)

    def findOne(self, collection: str, filter: Filter, sort: Sort = ()) -> Deferred[Optional[Document]]:
        def check() -> Callable[[], Optional[Document]]:
            found = self._matching(collection, filter, sort)
            return lambda: _copy(next(iter(found()), None))

        return self._submit("findOne", check)

    def find(
        self,
        collection: str,
        filter: Filter,
        sort: Sort = (),
        limit: Optional[int] = None,
        offset: int = 0,
    ) -> Deferred[list]:
        def check() -> Callable[[], list]:
            if limit is not None and (not isinstance(limit, int) or limit < 0):
                raise ValueError(f"limit must be None or >= 0, not {limit!r}")
            if not isinstance(offset, int) or offset < 0:
                raise ValueError(f"offset must be >= 0, not {offset!r}")
            found = self._matching(collection, filter, sort)
            end = None if limit is None else offset + limit
            return lambda: _copy(found()[offset:end])

        return self._submit("find", check)

    def count(self, collection: str, filter: Filter) -> Deferred[int]:
        def check() -> Callable[[], int]:
            found = self._matching(collection, filter, ())
            return lambda: len(found())

        return self._submit("count", check)

    def update(
        self,
        collection: str,
        filter: Filter,
        set: Optional[dict] = None,
        push: Optional[dict] = None,
        sort: Sort = (),
        currentDate: Sequence[str] = (),
    ) -> Deferred[Optional[Document]]:
        def check() -> Callable[[], Optional[Document]]:
            checkUpdate({**(set or {}), **{path: None for path in currentDate}}, push)
            found = self._matching(collection, filter, sort)
            # A snapshot of the caller's values, checked now, as SQLite does.
            changes = _copy([set or {}, push or {}])
            docs = self.database.collections[collection]

            def update() -> Optional[Document]:
                first = next(iter(found()), None)
                if first is None:
                    return None
                # Change a copy, so that a failed change leaves nothing behind.
                newSet, newPush = _copy(changes)
                if currentDate:
                    now = isoformat(utcnow(self.database.clock) if self.database.clock is not None else datetime.now(timezone.utc))
                    newSet.update({path: now for path in currentDate})
                changed = applyUpdate(_copy(first), newSet, newPush)
                self._checkKeysPresent(collection, changed)
                return self._write(collection, changed, isNew=False)

            return update

        return self._submit("update", check)

    def replace(self, collection: str, doc: Document) -> Deferred[Optional[Document]]:
        def check() -> Callable[[], Optional[Document]]:
            docs = self._collection(collection)
            checkDocument(doc)
            if "id" not in doc:
                raise ValueError("replace needs a document with an id")
            stored = _copy(doc)
            self._checkKeysPresent(collection, stored)

            def replace() -> Optional[Document]:
                if stored["id"] not in docs:
                    return None
                return self._write(collection, stored, isNew=False)

            return replace

        return self._submit("replace", check)

    def delete(self, collection: str, filter: Filter) -> Deferred[int]:
        def check() -> Callable[[], int]:
            found = self._matching(collection, filter, ())
            docs = self.database.collections[collection]

            def delete() -> int:
                gone = found()
                for doc in gone:
                    del docs[doc["id"]]
                return len(gone)

            return delete

        return self._submit("delete", check)

    def deleteOne(self, collection: str, docId: str) -> Deferred[bool]:
        def check() -> Callable[[], bool]:
            docs = self._collection(collection)
            return lambda: isinstance(docId, str) and docs.pop(docId, None) is not None

        return self._submit("deleteOne", check)


def startedStore(documents: Optional[Dict[str, List[Document]]] = None, database: Optional[MemoryDatabase] = None) -> "MemoryStore":
    """
    A started L{MemoryStore} already holding C{documents}
    (C{{collection: [document, ...]}}): the usual first lines of a test.
    """
    store = MemoryStore(database)
    failures: List[Any] = []
    store.start().addErrback(failures.append)
    for collection, docs in (documents or {}).items():
        for doc in docs:
            store.insert(collection, dict(doc)).addErrback(failures.append)
    if failures:
        failures[0].raiseException()
    return store


__all__ = [
    "startedStore",
    "MemoryDatabase",
    "MemoryStore",
    "matches",
    "sortDocuments",
    "sortKey",
    "valuesEqual",
]
