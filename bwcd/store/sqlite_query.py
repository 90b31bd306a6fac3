# -*- test-case-name: tests.test_store_contract -*-
"""
The store's filter, sort and index language written as SQLite SQL over
documents kept as JSON text.

Filters become SQL over C{json_extract(doc, '$.path')}, the same expressions
the indexes are built on, so the planner uses them.  C{json_extract} gives
JSON C{true} as 1 and an object as its JSON text, so every comparison also
checks C{json_type}; that keeps C{True} from matching C{1} and gives range
operators MongoDB's rule that strings and numbers never compare with each
other.

Everything here is pure: it turns values into SQL text and parameters and
never touches a connection.
"""

from __future__ import annotations

import json
import re
from functools import lru_cache
from typing import Any, List, Tuple

from bwcd.store.interface import Filter, Sort
from bwcd.store.schema import (
    COLLECTIONS,
    CollectionSchema,
    Key,
    checkFilter,
    checkSort,
    collectionSchema,
    indexName,
    isOperatorCondition,
    splitPath,
)

dumpJson = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode
"""
Compact JSON text of a document, as stored (no NaN, no ASCII escaping).
"""

_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


@lru_cache(maxsize=1024)
def jsonPath(path: str) -> str:
    """
    The SQLite JSON path for a dotted document path (C{$.a.b}; keys that are
    not identifiers are quoted).
    """
    return "$" + "".join("." + (p if _IDENT.match(p) else f'"{p}"') for p in splitPath(path))


@lru_cache(maxsize=1024)
def valueExpressions(path: str) -> Tuple[str, str]:
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
    params.append(dumpJson(value))
    kind = "object" if isinstance(value, dict) else "array"
    return f"({ve} = json(?) AND {te} = '{kind}')"


def _condition(path: str, condition: Any, params: List[Any]) -> str:
    ve, te = valueExpressions(path)
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
        f"{valueExpressions(path)[0]} {'ASC' if direction == 1 else 'DESC'}" for path, direction in items
    )


def compileSelect(what: str, collection: str, filter: Filter, sort: Sort, tail: str = "") -> Tuple[str, List[Any]]:
    """
    A C{SELECT} of C{what} from C{collection} with the filter and sort
    compiled, and C{tail} (a C{LIMIT} clause) appended.

    @raise ValueError: for an unknown collection or a bad filter or sort.
    """
    collectionSchema(collection)
    where, params = compileFilter(filter)
    return f'SELECT {what} FROM "{collection}" WHERE {where}{compileSort(sort)}{tail}', params


def _indexSQL(schema: CollectionSchema, key: Key, unique: bool) -> str:
    name = f"{schema.name}_{indexName(key, unique)}"
    columns = ", ".join(valueExpressions(path)[0] for path in key)
    kind = "UNIQUE INDEX" if unique else "INDEX"
    return f'CREATE {kind} IF NOT EXISTS "{name}" ON "{schema.name}" ({columns})'


def schemaStatements() -> List[str]:
    """
    The idempotent statements creating every declared table and index and
    dropping the indexes a collection has retired.
    """
    statements = []
    for schema in COLLECTIONS.values():
        statements.append(
            f'CREATE TABLE IF NOT EXISTS "{schema.name}" (id TEXT PRIMARY KEY NOT NULL, doc TEXT NOT NULL)'
        )
        statements.extend(_indexSQL(schema, key, False) for key in schema.indexes)
        statements.extend(_indexSQL(schema, key, True) for key in schema.unique)
        statements.extend(
            f'DROP INDEX IF EXISTS "{schema.name}_{indexName(key, False)}"' for key in schema.retired
        )
    return statements


__all__ = [
    "compileFilter",
    "compileSelect",
    "compileSort",
    "dumpJson",
    "jsonPath",
    "schemaStatements",
    "valueExpressions",
]
