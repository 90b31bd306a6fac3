# -*- test-case-name: tests.test_store_contract -*-
"""
The MongoDB storage backend, on txmongo.

Kept deliberately thin: bwcd's filter language is a subset of MongoDB's, so
filters pass through once checked (only C{id} becomes C{_id}), claims are
C{findAndModify} with C{new: true}, and unique keys are unique indexes.

Ids are stored as the 24-hex string itself in C{_id}, not as an ObjectId, so
that a document reads back exactly as it was written and the two backends
agree.

txmongo always uses the global reactor (connections, its pinger and its
C{timeout=} handling), which is why the pool is created in L{MongoStore.start}
and not at construction, and why every operation carries C{timeout=}: while
MongoDB is unreachable txmongo waits for a reconnection forever, and callers
must get a L{StoreUnavailable} (a 503) instead.  The timeout is short
(L{DEFAULT_TIMEOUT}): only the operations already in flight when MongoDB
goes away wait for it, since the first failure marks the store down
(L{bwcd.store.health}) and later ones are refused at once.

Writes are acknowledged under C{w: "majority", j: true} unless the URL says
otherwise: a 202 then means the instance is in the journal of a majority of
the replica set, so no failover can lose it.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Awaitable, Callable, Dict, List, Optional, Sequence

from pymongo import ReturnDocument
from pymongo.errors import ConfigurationError, ConnectionFailure, DuplicateKeyError, OperationFailure, WriteConcernError
from pymongo.errors import DocumentTooLarge
from pymongo.uri_parser import parse_uri
from twisted.internet import error as netError
from twisted.internet.defer import CancelledError, Deferred, TimeoutError, ensureDeferred, fail, gatherResults, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from txmongo import filter as qf
from txmongo.connection import ConnectionPool
from txmongo.errors import TimeExceeded
from zope.interface import implementer

from bwcd.timeutil import isoformat
from bwcd.store.interface import Document, DuplicateKey, Filter, IStore, Sort, StoreUnavailable, newId
from bwcd.store.interface import StoreError
from bwcd.store.schema import (
    COLLECTIONS,
    checkDocument,
    checkFilter,
    checkPage,
    checkSort,
    checkUpdate,
    collectionSchema,
    getPath,
    indexName,
)

log = Logger()

DEFAULT_DATABASE = "bwcd"

#: seconds an operation may take before it fails with StoreUnavailable
DEFAULT_TIMEOUT = 3.0
#: seconds connecting and creating the indexes at start may take
START_TIMEOUT = 10.0

#: bwcd's write concern, for whatever the URL leaves unsaid
DEFAULT_WRITE_CONCERN = {"w": "majority", "j": True}

_NOTHING_TO_DROP = (26, 27)  # NamespaceNotFound, IndexNotFound

#: BSONObjectTooLarge, and an update whose result is over the limit: a
#: definite refusal of this document (a StoreError, never "unavailable")
_TOO_LARGE = (10334, 17419, 17420)

_UNAVAILABLE = (
    ConnectionFailure,  # AutoReconnect, NotPrimaryError, NetworkTimeout, ...
    WriteConcernError,
    TimeExceeded,
    TimeoutError,
    CancelledError,
    netError.ConnectError,
    netError.ConnectionLost,
    netError.ConnectionDone,
)


def _toMongo(doc: Document) -> dict:
    out = dict(doc)
    out["_id"] = out.pop("id")
    return out


def _fromMongo(doc: Optional[dict]) -> Optional[Document]:
    if doc is None:
        return None
    out = dict(doc)
    out["id"] = out.pop("_id")
    return out


def _isoAt(doc: dict, path: str) -> None:
    """
    Turn the date at dotted C{path} (a C{$currentDate}) into the store's
    timestamp string.
    """
    *parents, last = path.split(".")
    for name in parents:
        doc = doc[name]
    value = doc.get(last)
    if isinstance(value, datetime):
        doc[last] = isoformat(value)


def mongoFilter(filter: Filter) -> dict:
    """
    The MongoDB query for a store filter (C{id} spelled C{_id}).

    @raise ValueError: for a filter outside the store's language.
    """
    checkFilter(filter)
    return {("_id" if path == "id" else path): condition for path, condition in filter.items()}


def mongoSort(sort: Sort) -> Optional[qf.sort]:
    """
    The txmongo sort specification for a store sort, or C{None}.
    """
    items = checkSort(sort)
    if not items:
        return None
    spec = None
    for path, direction in items:
        path = "_id" if path == "id" else path
        part = qf.ASCENDING(path) if direction == 1 else qf.DESCENDING(path)
        spec = part if spec is None else spec + part
    return qf.sort(spec)


def parseMongoURL(url: str) -> Dict[str, Any]:
    """
    Check a C{mongodb://} URL and pick out what the store needs.

    @return: C{{"database": name, "writeConcern": kwargs}} where the
        keyword arguments add bwcd's default write concern (C{w="majority",
        j=True}: an acknowledged write is in the journal of a majority of
        the replica set, or of the one node) for whatever the URL leaves
        unsaid (its C{w}, C{journal}/C{j}/C{fsync}; C{wtimeoutMS} is passed
        on as the URL gives it).
    @raise ValueError: for a malformed URL.
    """
    if not url.startswith("mongodb://"):
        raise ValueError(f"storage.url: not a mongodb:// URL: {url!r}")
    try:
        parsed = parse_uri(url)
    except (ConfigurationError, ValueError) as e:
        raise ValueError(f"storage.url: bad MongoDB URL: {e}") from None
    options = {k.lower() for k in parsed["options"]}
    writeConcern: Dict[str, Any] = {}
    if "w" not in options:
        writeConcern["w"] = DEFAULT_WRITE_CONCERN["w"]
    if not options & {"j", "journal", "fsync"}:
        writeConcern["j"] = DEFAULT_WRITE_CONCERN["j"]
    return {"database": parsed["database"] or DEFAULT_DATABASE, "writeConcern": writeConcern}


@implementer(IStore)
class MongoStore:
    """
    L{IStore} on MongoDB.

    @param url: C{mongodb://host:port/dbname?options}; the database defaults
        to C{bwcd}.  Write-concern options in the URL (C{w}, C{journal},
        C{wtimeoutMS}) win over the default C{w="majority", j=True}.
    @param reactor: for the timeout of index creation (txmongo itself uses
        the global reactor).
    @param timeout: seconds an operation may take before it fails with
        L{StoreUnavailable}.
    @param startTimeout: seconds L{start} may take to connect and create the
        indexes.
    @param poolSize: connections in the txmongo pool.
    """

    name = "mongodb"

    def __init__(
        self, url: str, reactor: IReactorTime, timeout: float = DEFAULT_TIMEOUT, poolSize: int = 1,
        startTimeout: float = START_TIMEOUT,
    ) -> None:
        parsed = parseMongoURL(url)
        self.url = url
        self.database = parsed["database"]
        self._writeConcern = parsed["writeConcern"]
        self._reactor = reactor
        self._timeout = timeout
        self._startTimeout = startTimeout
        self._poolSize = poolSize
        self._pool: Optional[ConnectionPool] = None
        self._db: Any = None

    def __repr__(self) -> str:
        return f"<MongoStore {self.database!r} {'open' if self._pool else 'closed'}>"

    # -- lifecycle -------------------------------------------------------------

    def start(self) -> Deferred[None]:
        return ensureDeferred(self._start())

    async def _start(self) -> None:
        if self._pool is not None:
            return
        # max_delay: reconnect within seconds once MongoDB is back, rather
        # than txmongo's default back-off of up to a minute.
        pool = ConnectionPool(self.url, pool_size=self._poolSize, max_delay=5.0, **self._writeConcern)
        self._pool, self._db = pool, pool[self.database]
        try:
            d = gatherResults(
                [self._ensureIndex(name, key, unique) for name, key, unique in self._indexes()],
                consumeErrors=True,
            )
            d.addTimeout(self._startTimeout, self._reactor)
            await d.addErrback(lambda f: f.value.subFailure if hasattr(f.value, "subFailure") else f)
            for name, key in self._retiredIndexes():
                await self._dropRetired(name, key)
        except BaseException as e:
            self._pool = self._db = None
            await pool.disconnect()
            if isinstance(e, _UNAVAILABLE):
                raise StoreUnavailable(f"mongodb: cannot reach {self.database!r}: {e!r}") from None
            raise
        log.info("Opened MongoDB store {database}", database=self.database)

    def _indexes(self):
        for schema in COLLECTIONS.values():
            for key in schema.indexes:
                yield schema.name, key, False
            for key in schema.unique:
                yield schema.name, key, True

    def _retiredIndexes(self):
        for schema in COLLECTIONS.values():
            for key in schema.retired:
                yield schema.name, key

    async def _dropRetired(self, collection: str, key: tuple) -> None:
        """
        Drop an index the schema has retired; one that is not there (a new
        database) is no error, and a failure only costs write speed.
        """
        try:
            # txmongo's drop_index sends deleteIndexes, which servers no longer know
            await self._db.command("dropIndexes", collection, index=indexName(key, False), timeout=self._startTimeout)
        except OperationFailure as e:
            if e.code not in _NOTHING_TO_DROP:
                log.warn("Cannot drop retired index {index} of {collection}: {error}",
                         index=indexName(key, False), collection=collection, error=str(e))

    def _ensureIndex(self, collection: str, key: tuple, unique: bool) -> Deferred:
        spec = None
        for path in key:
            spec = qf.ASCENDING(path) if spec is None else spec + qf.ASCENDING(path)
        kwargs: Dict[str, Any] = {"name": indexName(key, unique)}
        if unique:
            kwargs["unique"] = True
        return self._db[collection].create_index(qf.sort(spec), **kwargs)

    def stop(self) -> Deferred[None]:
        pool, self._pool, self._db = self._pool, None, None
        if pool is None:
            return succeed(None)
        return pool.disconnect()

    # -- helpers -----------------------------------------------------------------

    def _collection(self, collection: str) -> Any:
        collectionSchema(collection)
        if self._db is None:
            raise StoreUnavailable("mongodb store is not started")
        return self._db[collection]

    async def _run(
        self,
        operation: Callable[[], Awaitable[Any]],
        collection: str,
        candidates: Optional[Callable[[], List[dict]]] = None,
    ) -> Any:
        """
        Await C{operation()} and turn driver errors into store errors.

        @param candidates: filters that may find the document holding a
            duplicate key, for servers that do not name it.
        """
        try:
            return await operation()
        except DuplicateKeyError as e:
            conflictId = await self._conflictId(collection, e, candidates)
            raise DuplicateKey(collection, conflictId, str(e)) from None
        except _UNAVAILABLE as e:
            raise StoreUnavailable(f"mongodb: {e!r}") from None
        except (DocumentTooLarge, OperationFailure) as e:
            if isinstance(e, OperationFailure) and e.code not in _TOO_LARGE:
                raise
            raise StoreError(f"mongodb: document too large: {e}") from None

    async def _conflictId(self, collection: str, error: DuplicateKeyError, candidates) -> Optional[str]:
        """
        The id of the document holding the key that C{error} is about.
        MongoDB (4.4+) and SecantusDB name the key in C{keyValue}; without it,
        C{candidates()} lists filters to try.
        """
        details = error.details or {}
        keyValue = details.get("keyValue")
        if isinstance(keyValue, dict) and keyValue:
            if set(keyValue) == {"_id"}:
                return keyValue["_id"]
            filters = [keyValue]
        else:
            filters = candidates() if candidates else []
        for query in filters:
            try:
                found = await self._db[collection].find_one(query, {"_id": 1}, timeout=self._timeout)
            except Exception:
                log.failure("Cannot look up the document holding a duplicate key in {collection}", collection=collection)
                return None
            if found is not None:
                return found["_id"]
        return None

    def _keyFilters(self, collection: str, doc: dict, exceptId: Optional[str] = None):
        """
        Filters matching a document holding one of C{doc}'s unique keys.
        """

        def candidates():
            out = [] if exceptId is not None else [{"_id": doc["id"]}]
            for key in collectionSchema(collection).unique:
                query: Dict[str, Any] = {path: getPath(doc, path)[1] for path in key}
                if exceptId is not None:
                    query["_id"] = {"$ne": exceptId}
                out.append(query)
            return out

        return candidates

    # -- IStore ------------------------------------------------------------------

    def ping(self) -> Deferred[bool]:
        if self._db is None:
            return succeed(False)
        d = self._db.command("ping", timeout=self._timeout)
        return d.addCallbacks(lambda reply: bool(reply.get("ok")), lambda f: False)

    def insert(self, collection: str, doc: Document) -> Deferred[Document]:
        try:
            coll = self._collection(collection)
            checkDocument(doc)
            stored = dict(doc)
            if "id" not in stored:
                stored["id"] = newId()
        except Exception as e:
            return fail(e)

        async def insert():
            await coll.insert_one(_toMongo(stored), timeout=self._timeout)
            return stored

        return ensureDeferred(self._run(insert, collection, self._keyFilters(collection, stored)))

    def get(self, collection: str, docId: str) -> Deferred[Optional[Document]]:
        return self.findOne(collection, {"id": docId})

    def findOne(self, collection: str, filter: Filter, sort: Sort = ()) -> Deferred[Optional[Document]]:
        try:
            coll = self._collection(collection)
            query, order = mongoFilter(filter), mongoSort(sort)
        except Exception as e:
            return fail(e)

        async def findOne():
            return _fromMongo(await coll.find_one(query, sort=order, timeout=self._timeout))

        return ensureDeferred(self._run(findOne, collection))

    def find(
        self,
        collection: str,
        filter: Filter,
        sort: Sort = (),
        limit: Optional[int] = None,
        offset: int = 0,
    ) -> Deferred[list]:
        try:
            coll = self._collection(collection)
            query, order = mongoFilter(filter), mongoSort(sort)
            checkPage(limit, offset)
        except Exception as e:
            return fail(e)
        if limit == 0:
            return succeed([])

        async def find():
            docs = await coll.find(query, skip=offset, limit=limit or 0, sort=order, timeout=self._timeout)
            return [_fromMongo(doc) for doc in docs]

        return ensureDeferred(self._run(find, collection))

    def count(self, collection: str, filter: Filter) -> Deferred[int]:
        try:
            coll = self._collection(collection)
            query = mongoFilter(filter)
        except Exception as e:
            return fail(e)

        async def count():
            return await coll.count_documents(query, timeout=self._timeout)

        return ensureDeferred(self._run(count, collection))

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
            coll = self._collection(collection)
            checkUpdate({**(set or {}), **{path: None for path in currentDate}}, push)
            query, order = mongoFilter(filter), mongoSort(sort)
        except Exception as e:
            return fail(e)
        change: Dict[str, Any] = {}
        if set:
            change["$set"] = dict(set)
        if push:
            change["$push"] = dict(push)
        if currentDate:
            change["$currentDate"] = {path: True for path in currentDate}

        async def update():
            doc = await coll.find_one_and_update(
                query, change, sort=order, return_document=ReturnDocument.AFTER, timeout=self._timeout
            )
            doc = _fromMongo(doc)
            for path in currentDate if doc is not None else ():
                _isoAt(doc, path)
            return doc

        return ensureDeferred(self._run(update, collection))

    def replace(self, collection: str, doc: Document) -> Deferred[Optional[Document]]:
        try:
            coll = self._collection(collection)
            checkDocument(doc)
            if "id" not in doc:
                raise ValueError("replace needs a document with an id")
            stored = dict(doc)
        except Exception as e:
            return fail(e)

        async def replace():
            body = _toMongo(stored)
            body.pop("_id")
            result = await coll.replace_one({"_id": stored["id"]}, body, timeout=self._timeout)
            return stored if result.matched_count else None

        return ensureDeferred(self._run(replace, collection, self._keyFilters(collection, stored, stored["id"])))

    def delete(self, collection: str, filter: Filter) -> Deferred[int]:
        try:
            coll = self._collection(collection)
            query = mongoFilter(filter)
        except Exception as e:
            return fail(e)

        async def delete():
            return (await coll.delete_many(query, timeout=self._timeout)).deleted_count

        return ensureDeferred(self._run(delete, collection))

    def deleteOne(self, collection: str, docId: str) -> Deferred[bool]:
        try:
            coll = self._collection(collection)
        except Exception as e:
            return fail(e)

        async def deleteOne():
            return (await coll.delete_one({"_id": docId}, timeout=self._timeout)).deleted_count == 1

        return ensureDeferred(self._run(deleteOne, collection))


__all__ = ["DEFAULT_DATABASE", "DEFAULT_TIMEOUT", "DEFAULT_WRITE_CONCERN", "MongoStore", "mongoFilter", "mongoSort", "parseMongoURL"]
