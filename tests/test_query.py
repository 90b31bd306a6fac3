"""
The list routes' shared rules (L{bwcd.api.query}): st2's C{limit} rule for
admins and others, and the finding "C{limit=-1} and the C{trigger_instance}
filter scan whole tables": every filter the API offers is answered from an
index on both stores.
"""

from __future__ import annotations

import sqlite3
from typing import Any, Dict, List, Optional, Tuple

from twisted.internet import reactor
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web.test.requesthelper import DummyRequest

from bwcd.api import execution_routes, rule_routes
from bwcd.api.framework import ApiError
from bwcd.api.query import MAX_PAGE_SIZE, callerIsAdmin, checkLimit, paging
from bwcd.auth.principal import Principal
from bwcd.store.mongo import MongoStore
from bwcd.store.schema import COLLECTIONS, indexName
from bwcd.store.sqlite_query import compileSelect, schemaStatements
from tests.mongoserver import mongoURL


def request(**args: str) -> DummyRequest:
    r = DummyRequest([b""])
    for name, value in args.items():
        r.addArg(name.encode("ascii"), value.encode("ascii"))
    return r


class LimitTests(SynchronousTestCase):
    """
    C{limit} as st2 applies it (C{validate_limit_query_param}): non-admins
    get at most C{max_page_size} (100) rows a page, admins may ask for more
    or for everything.
    """

    def refused(self, code: int, limit: int, isAdmin: bool) -> str:
        error = self.assertRaises(ApiError, checkLimit, limit, isAdmin)
        self.assertEqual(error.code, code)
        return error.faultstring

    def test_nonAdminLimitAboveMaxPageSize(self):
        """
        A non-admin asking for more than 100 rows gets st2's 403.
        """
        self.assertEqual(self.refused(403, 1000, False), 'Limit "1000" specified, maximum value is "100"')
        self.assertEqual(checkLimit(MAX_PAGE_SIZE, False), 100)

    def test_nonAdminLimitMinusOne(self):
        """
        A non-admin asking for everything gets st2's 403.
        """
        self.assertEqual(
            self.refused(403, -1, False),
            "Administrator access required to be able to specify limit=-1 and retrieve all the records",
        )

    def test_adminMayAskForMore(self):
        """
        An admin may ask for more than a page, or for everything (None).
        """
        self.assertEqual(checkLimit(20000, True), 20000)
        self.assertIsNone(checkLimit(-1, True))

    def test_malformedLimits(self):
        """
        0 and anything below -1 are 400s with st2's texts, for everyone.
        """
        for isAdmin in (True, False):
            self.assertEqual(
                self.refused(400, 0, isAdmin),
                'Limit, "0" specified, must be a positive number or -1 for full result set.',
            )
            self.assertEqual(self.refused(400, -22, isAdmin), 'Limit, "-22" specified, must be a positive number.')

    def test_pagingDefaultsAndOffset(self):
        """
        Without a limit the route's default applies; the offset is read and
        checked as before.
        """
        self.assertEqual(paging(request(), defaultLimit=50, isAdmin=False), (50, 0))
        self.assertEqual(paging(request(limit="-1", offset="7")), (None, 7))
        error = self.assertRaises(ApiError, paging, request(limit="101"), isAdmin=False)
        self.assertEqual(error.code, 403)
        error = self.assertRaises(ApiError, paging, request(offset="-1"))
        self.assertEqual(error.faultstring, 'Offset "-1" specified must be a positive number.')

    def test_whoIsAdmin(self):
        """
        With authentication off everyone is an admin; otherwise the
        credential says.
        """
        self.assertTrue(callerIsAdmin(None))
        self.assertTrue(callerIsAdmin(Principal("alice", "token", "t1")))
        self.assertFalse(callerIsAdmin(Principal("bot", "apikey", "k1", admin=False)))


#: (collection, filter, sort) for every filter a list route offers, with that
#: route's sort.
EXECUTION_SORT = [("start_timestamp", -1), ("action.ref", 1)]
TRIGGER_INSTANCE_SORT = [("occurrence_time", -1), ("id", -1)]
ENFORCEMENT_SORT = [("enforced_at", -1), ("rule.ref", 1)]
BY_PACK = [("pack", 1), ("name", 1)]


def apiQueries() -> List[Tuple[str, Dict[str, Any], list]]:
    queries: List[Tuple[str, Dict[str, Any], list]] = []
    queries += [("executions", {path: "x"}, EXECUTION_SORT) for path in execution_routes.FILTERS.values()]
    queries += [
        ("executions", {"parent": None}, EXECUTION_SORT),
        ("executions", {"start_timestamp": {"$gt": "a", "$lt": "b"}}, EXECUTION_SORT),
        ("executions", {"id": {"$in": ["a", "b"]}}, EXECUTION_SORT),
        ("executions", {}, EXECUTION_SORT),
    ]
    queries += [("rules", {path: "x"}, BY_PACK) for path in list(rule_routes.FILTERS.values()) + ["enabled"]]
    for collection, paths in (("actions", ("pack", "name")), ("triggertypes", ("pack", "name")), ("triggers", ("type", "pack", "name"))):
        queries += [(collection, {path: "x"}, BY_PACK) for path in paths]
    queries += [("runnertypes", {"name": "x"}, [("name", 1)]), ("apikeys", {"user": "x"}, [("user", 1), ("id", 1)])]
    queries += [
        ("triggerinstances", f, TRIGGER_INSTANCE_SORT)
        for f in ({"trigger": "x"}, {"trigger": {"$in": ["a", "b"]}}, {"status": "x"}, {"occurrence_time": {"$gt": "a"}}, {})
    ]
    queries += [
        ("ruleenforcements", {path: "x"}, ENFORCEMENT_SORT)
        for path in ("rule.ref", "rule.id", "execution_id", "trigger_instance_id", "enforced_at")
    ]
    return queries


#: collections that grow without bound: there a filter many documents share
#: must also give the route's order, so a page is read without sorting
#: every match
GROWING = {"executions", "triggerinstances", "ruleenforcements"}
SELECTIVE = {"id", "trigger_instance.id", "liveaction.id", "execution_id", "trigger_instance_id", "enforced_at"}  # ids, an exact time


def sharedByMany(filter: Dict[str, Any]) -> bool:
    """
    Whether C{filter} may match a large part of its collection: no
    selective path, and no C{$in} (matches for several values are merged
    by a sort, whatever the index).
    """
    if set(filter) & SELECTIVE:
        return False
    return not any(isinstance(c, dict) and "$in" in c for c in filter.values())


class IndexTests(TestCase):
    """
    Every filter the API offers is answered from an index.
    """

    def plan(self, conn: sqlite3.Connection, collection: str, filter: Dict[str, Any], sort: list) -> List[str]:
        sql, params = compileSelect("doc", collection, filter, sort, " LIMIT 100")
        return [row[3] for row in conn.execute("EXPLAIN QUERY PLAN " + sql, params)]

    def test_everyApiFilterIsIndexed(self):
        """
        On SQLite no list query scans its table without an index, and on
        the growing collections none sorts every match.
        """
        conn = sqlite3.connect(":memory:")
        self.addCleanup(conn.close)
        for statement in schemaStatements():
            conn.execute(statement)
        for collection, filter, sort in apiQueries():
            plan = self.plan(conn, collection, filter, sort)
            where = f"{collection} {filter}: {plan}"
            self.assertTrue(plan[0].startswith(("SEARCH", "SCAN")), where)
            self.assertIn(" USING ", plan[0], where)
            if collection in GROWING and sharedByMany(filter):
                self.assertNotIn("USE TEMP B-TREE FOR ORDER BY", plan, where)

    def test_triggerInstanceFilterUsesIndex(self):
        """
        The finding itself: executions and enforcements listed by trigger
        instance are found through an index, not a scan.
        """
        conn = sqlite3.connect(":memory:")
        self.addCleanup(conn.close)
        for statement in schemaStatements():
            conn.execute(statement)
        plan = self.plan(conn, "executions", {execution_routes.FILTERS["trigger_instance"]: "x"}, EXECUTION_SORT)
        self.assertIn("USING INDEX executions_ix_trigger_instance_id", plan[0])
        plan = self.plan(conn, "ruleenforcements", {"trigger_instance_id": "x"}, ENFORCEMENT_SORT)
        self.assertIn("USING INDEX ruleenforcements_ix_trigger_instance_id", plan[0])

    async def test_mongoHasEveryDeclaredIndex(self):
        """
        MongoDB gets the same indexes, under the same names and keys, and
        no retired one.
        """
        store = MongoStore(await mongoURL(self), reactor)
        await store.start()
        self.addCleanup(store.stop)
        for schema in COLLECTIONS.values():
            info: Dict[str, Any] = await store._db[schema.name].index_information(timeout=10)
            for unique, keys in ((False, schema.indexes), (True, schema.unique)):
                for key in keys:
                    name = indexName(key, unique)
                    self.assertIn(name, info, schema.name)
                    self.assertEqual(list(info[name]["key"]), list(key), name)
            for key in schema.retired:
                self.assertNotIn(indexName(key, False), info)

    async def test_mongoDropsRetiredIndexes(self):
        """
        An index the schema retired, made by an older bwcd, is dropped when
        the store starts.
        """
        url = await mongoURL(self)
        store = MongoStore(url, reactor)
        await store.start()
        old = ("action.ref",)
        await store._ensureIndex("executions", old, False)
        await store.stop()
        store = MongoStore(url, reactor)
        await store.start()
        self.addCleanup(store.stop)
        info: Optional[Dict[str, Any]] = await store._db["executions"].index_information(timeout=10)
        self.assertNotIn(indexName(old, False), info)
