# -*- test-case-name: tests.test_store_contract -*-
"""
MongoDB's matching and ordering rules as pure functions, for
L{bwcd.testing.MemoryStore}: equality across numbers (C{1 == 1.0},
C{True != 1}), order across types (null, numbers, strings, objects, arrays,
booleans), and the filter operators the store interface allows.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, List, Tuple

from bwcd.store.interface import Document, Filter, Sort
from bwcd.store.schema import checkSort, getPath, isOperatorCondition

__all__ = ["valuesEqual", "matches", "sortKey", "sortDocuments"]


def _isNumber(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _rank(value: Any) -> int:
    """
    MongoDB's order of types, which is also what makes values of different
    types never equal and never comparable by a range operator.
    """
    if value is None:
        return 0
    if _isNumber(value):
        return 1
    if isinstance(value, str):
        return 2
    if isinstance(value, dict):
        return 3
    if isinstance(value, (list, tuple)):
        return 4
    if isinstance(value, bool):
        return 5
    raise ValueError(f"not a JSON value: {value!r}")


def valuesEqual(a: Any, b: Any) -> bool:
    """
    Equality as the store compares values: C{1 == 1.0}, C{True != 1}, and
    objects equal only with the same keys in the same order (MongoDB
    compares embedded documents field by field, SQLite as JSON text).
    """
    rank = _rank(a)
    if rank != _rank(b):
        return False
    if rank == 3:
        return list(a) == list(b) and all(valuesEqual(a[k], b[k]) for k in a)
    if rank == 4:
        return len(a) == len(b) and all(valuesEqual(x, y) for x, y in zip(a, b))
    return bool(a == b)


def _equals(present: bool, value: Any, wanted: Any) -> bool:
    if wanted is None:
        return value is None
    return present and valuesEqual(value, wanted)


_RANGES: Dict[str, Callable[[Any, Any], bool]] = {
    "$gt": lambda a, b: a > b,
    "$gte": lambda a, b: a >= b,
    "$lt": lambda a, b: a < b,
    "$lte": lambda a, b: a <= b,
}


def _holds(present: bool, value: Any, condition: Any) -> bool:
    if not isOperatorCondition(condition):
        return _equals(present, value, condition)
    for op, arg in condition.items():
        if op in _RANGES:
            if not present or _rank(value) != _rank(arg) or not _RANGES[op](value, arg):
                return False
        elif op == "$ne":
            if _equals(present, value, arg):
                return False
        elif op == "$in":
            if not any(_equals(present, value, v) for v in arg):
                return False
        elif op == "$exists":
            if present != arg:
                return False
        else:  # pragma: no cover - checkFilter refuses it first
            raise ValueError(f"unsupported operator {op!r}")
    return True


def matches(doc: Document, filter: Filter) -> bool:
    """
    Whether C{doc} satisfies C{filter} (already checked by
    L{bwcd.store.schema.checkFilter}).
    """
    for path, condition in filter.items():
        present, value = getPath(doc, path)
        if not _holds(present, value, condition):
            return False
    return True


def sortKey(value: Any) -> Tuple[int, Any]:
    """
    A key ordering values as MongoDB does: null (and missing) first, then
    numbers, strings, objects, arrays, booleans.
    """
    rank = _rank(value)
    if rank == 0:
        return (0, 0)
    if rank == 3:
        return (3, tuple((k, sortKey(v)) for k, v in value.items()))
    if rank == 4:
        return (4, tuple(sortKey(v) for v in value))
    return (rank, value)


def sortDocuments(docs: List[Document], sort: Sort) -> List[Document]:
    """
    C{docs} in C{sort} order (stable: ties keep their order).
    """
    out = list(docs)
    for path, direction in reversed(checkSort(sort)):
        out.sort(key=lambda doc: sortKey(getPath(doc, path)[1]), reverse=direction == -1)
    return out


# -- the store -------------------------------------------------------------------
