# -*- test-case-name: tests.test_store_contract -*-
"""
The collections bwcd keeps and the indexes each one needs, declared once so
that the SQLite and MongoDB backends build the same unique constraints (which
are part of the behaviour: a second rule with the same ref is a 409) and the
same lookup indexes.

Also here: the checks of the filter and update language from
L{bwcd.store.interface} that both backends share, so that a query one backend
refuses is refused by the other too.

Unique keys must be present (and not null) in every document of their
collection: SQLite lets any number of documents lack a unique key while
MongoDB allows only one, so documents missing one would behave differently.
"""

from __future__ import annotations

import re
from types import MappingProxyType
from typing import Any, Iterable, Mapping, Optional, Tuple

from attrs import frozen

SCHEMA_VERSION = 1
"""
The SQLite schema version this code writes (C{PRAGMA user_version}); one
migration per version in L{bwcd.store.sqlite_file.MIGRATIONS}.
"""

Key = Tuple[str, ...]


@frozen
class CollectionSchema:
    """
    One collection's declarations.

    @ivar name: the collection (SQLite table) name.
    @ivar indexes: non-unique indexes, each a tuple of dotted paths.
    @ivar unique: unique indexes, each a tuple of dotted paths (a compound
        key when longer than one).
    @ivar retired: non-unique indexes once declared and now dropped (a
        longer key starting with the same paths serves their filters), so
        that databases made by an older bwcd do not keep paying for them.
    """

    name: str
    indexes: Tuple[Key, ...] = ()
    unique: Tuple[Key, ...] = ()
    retired: Tuple[Key, ...] = ()


def _declare(*schemas: CollectionSchema) -> Mapping[str, CollectionSchema]:
    return MappingProxyType({s.name: s for s in schemas})


#: Every filter the API offers is backed by an index (tests.test_query
#: checks the plans).  A listing filters on one field and sorts by a
#: timestamp, so filters on fields that many documents share (user, action,
#: runner, status) get a compound index ending with that timestamp: the
#: store walks the index in order and stops after one page, instead of
#: reading and sorting every match.
COLLECTIONS: Mapping[str, CollectionSchema] = _declare(
    CollectionSchema("actions", indexes=(("pack", "name"), ("name",)), unique=(("ref",),), retired=(("pack",),)),
    CollectionSchema("runnertypes", unique=(("name",),)),
    CollectionSchema(
        "executions",
        indexes=(
            ("status",),
            # the executor's claim: oldest requested first, without a sort of the backlog
            ("status", "start_timestamp"),
            ("start_timestamp",),
            # retention: completed executions older than a cutoff
            ("end_timestamp",),
            ("context.user",),
            ("context.user", "start_timestamp"),
            ("action.ref", "start_timestamp"),
            ("rule.name", "start_timestamp"),
            ("runner.name", "start_timestamp"),
            ("trigger.name", "start_timestamp"),
            ("trigger_type.name", "start_timestamp"),
            ("parent", "start_timestamp"),
            ("trigger_instance.id",),
            ("liveaction.id",),
            ("context.rule.name",),
            ("context.trigger_instance.id",),
            # the event stream's poll for other processes' changes
            ("_updated_at",),
        ),
        retired=(("action.ref",), ("rule.name",)),
    ),
    CollectionSchema("execution_output", indexes=(("execution_id",), ("timestamp",))),
    CollectionSchema("apikeys", indexes=(("user",),), unique=(("key_hash",),)),
    CollectionSchema("tokens", indexes=(("expiry",),), unique=(("token_hash",),)),
    CollectionSchema("users", unique=(("name",),)),
    CollectionSchema(
        "rules",
        indexes=(
            ("trigger.ref",),
            ("trigger.type",),
            ("enabled",),
            ("pack", "name"),
            ("name",),
            ("action.ref",),
            ("context.user",),
        ),
        unique=(("ref",),),
    ),
    CollectionSchema("triggertypes", indexes=(("pack", "name"), ("name",)), unique=(("ref",),)),
    CollectionSchema("triggers", indexes=(("type",), ("pack", "name"), ("name",)), unique=(("ref",),)),
    CollectionSchema(
        "triggerinstances",
        indexes=(("status", "occurrence_time"), ("trigger", "occurrence_time"), ("occurrence_time",)),
        retired=(("status",), ("trigger",)),
    ),
    CollectionSchema(
        "ruleenforcements",
        indexes=(
            ("enforced_at",),
            ("execution_id",),
            ("rule.ref", "enforced_at"),
            ("rule.id", "enforced_at"),
            ("trigger_instance_id",),
        ),
        unique=(("rule.id", "trigger_instance_id"),),
    ),
    CollectionSchema("kv", unique=(("name",),)),
    CollectionSchema("keys", indexes=(("live_until",),), unique=(("scope", "name"),)),
    # webhook policies by hook url, and deliveries already received (the
    # unique (hook, delivery_id) is what deduplicates across processes)
    CollectionSchema("webhookpolicies", unique=(("url",),)),
    CollectionSchema("webhookdeliveries", indexes=(("expires_at",),), unique=(("hook", "delivery_id"),)),
)


def isCollection(name: str) -> bool:
    """
    Whether C{name} is one of the declared collections.
    """
    return name in COLLECTIONS


def collectionSchema(name: str) -> CollectionSchema:
    """
    The declarations of collection C{name}.

    @raise ValueError: for an undeclared name; that is a programming error,
        never a runtime condition, so it is raised rather than reported as a
        L{bwcd.store.interface.StoreError}.
    """
    try:
        return COLLECTIONS[name]
    except KeyError:
        raise ValueError(f"unknown collection {name!r}") from None


def indexName(key: Key, unique: bool) -> str:
    """
    The name an index gets in both backends (C{ix_action_ref},
    C{ux_rule_id__trigger_instance_id}).  SQLite index names are global, so
    the SQLite backend prefixes the table name.
    """
    return ("ux_" if unique else "ix_") + "__".join(p.replace(".", "_") for p in key)


# -- paths -----------------------------------------------------------------

_SEGMENT = re.compile(r"[A-Za-z0-9_-]+\Z")
_DIGITS = re.compile(r"[0-9]+\Z")


def splitPath(path: str) -> Tuple[str, ...]:
    """
    Check a dotted path and split it into its keys.

    Keys are letters, digits, C{_} and C{-}; a key made only of digits is
    refused because MongoDB would read it as an array index and SQLite as an
    object key.  C{_id} is refused at the top because the backends spell the
    id C{id}.

    @raise ValueError: for a path outside that language.
    """
    if not isinstance(path, str):
        raise ValueError(f"path must be a string, not {path!r}")
    parts = tuple(path.split("."))
    for part in parts:
        if not _SEGMENT.match(part) or _DIGITS.match(part):
            raise ValueError(f"unsupported document path {path!r}")
    if parts[0] == "_id":
        raise ValueError("use 'id', not '_id'")
    return parts


def getPath(doc: Mapping[str, Any], path: str) -> Tuple[bool, Any]:
    """
    Look C{path} up in C{doc}: C{(True, value)} when present, else
    C{(False, None)}.
    """
    node: Any = doc
    for part in path.split("."):
        if not isinstance(node, dict) or part not in node:
            return False, None
        node = node[part]
    return True, node


def _isJSON(value: Any) -> bool:
    return value is None or isinstance(value, (str, int, float, bool, list, tuple, dict))


RANGE_OPERATORS = ("$gt", "$gte", "$lt", "$lte")
OPERATORS = RANGE_OPERATORS + ("$ne", "$in", "$exists")


def isOperatorCondition(condition: Any) -> bool:
    """
    Whether C{condition} is an operator dict (C{{"$gt": 1}}) rather than a
    value to compare with.  A non-empty dict whose keys all start with C{$}
    is one; any other value, including a plain dict, means equality.
    """
    return (
        isinstance(condition, dict)
        and bool(condition)
        and all(isinstance(k, str) and k.startswith("$") for k in condition)
    )


def checkFilter(filter: Mapping[str, Any]) -> None:
    """
    Refuse filters outside the language of L{bwcd.store.interface}.

    An operator dict may hold several operators, all of which must hold
    (C{{"$gte": a, "$lt": b}}); range operators take a string or a number.

    @raise ValueError: for anything else.
    """
    if not isinstance(filter, Mapping):
        raise ValueError(f"filter must be a dict, not {filter!r}")
    for path, condition in filter.items():
        splitPath(path)
        if isinstance(condition, dict) and any(isinstance(k, str) and k.startswith("$") for k in condition):
            if not isOperatorCondition(condition):
                raise ValueError(f"{path}: cannot mix operators and fields in {condition!r}")
            for op, arg in condition.items():
                if op in RANGE_OPERATORS:
                    if isinstance(arg, bool) or not isinstance(arg, (str, int, float)):
                        raise ValueError(f"{path}: {op} needs a string or a number, not {arg!r}")
                elif op == "$in":
                    if not isinstance(arg, (list, tuple)) or not all(_isJSON(v) for v in arg):
                        raise ValueError(f"{path}: $in needs a list, not {arg!r}")
                elif op == "$exists":
                    if not isinstance(arg, bool):
                        raise ValueError(f"{path}: $exists needs a bool, not {arg!r}")
                elif op == "$ne":
                    if not _isJSON(arg):
                        raise ValueError(f"{path}: $ne needs a JSON value, not {arg!r}")
                else:
                    raise ValueError(f"{path}: unsupported operator {op!r}")
        elif not _isJSON(condition):
            raise ValueError(f"{path}: cannot compare with {condition!r}")


def checkSort(sort: Iterable[Tuple[str, int]]) -> Tuple[Tuple[str, int], ...]:
    """
    Check a sort specification and return it as a tuple.

    @raise ValueError: for a bad path or a direction other than 1 or -1.
    """
    checked = []
    for item in sort:
        try:
            path, direction = item
        except (TypeError, ValueError):
            raise ValueError(f"sort items are (path, 1|-1) pairs, not {item!r}") from None
        splitPath(path)
        if direction not in (1, -1) or isinstance(direction, bool):
            raise ValueError(f"sort direction for {path!r} must be 1 or -1, not {direction!r}")
        checked.append((path, direction))
    return tuple(checked)


def checkPage(limit: Optional[int], offset: int) -> None:
    """
    Check C{find}'s C{limit} (C{None} or C{>= 0}) and C{offset} (C{>= 0}).

    @raise ValueError: for anything else.
    """
    if limit is not None and (not isinstance(limit, int) or limit < 0):
        raise ValueError(f"limit must be None or >= 0, not {limit!r}")
    if not isinstance(offset, int) or offset < 0:
        raise ValueError(f"offset must be >= 0, not {offset!r}")


def checkUpdate(set: Optional[Mapping[str, Any]], push: Optional[Mapping[str, Any]]) -> None:
    """
    Check the C{set} and C{push} arguments of C{update}.

    @raise ValueError: when both are empty, when a path is bad, or when one
        would change the id.
    """
    if not set and not push:
        raise ValueError("update needs set or push")
    for changes in (set or {}, push or {}):
        if not isinstance(changes, Mapping):
            raise ValueError(f"update changes must be a dict, not {changes!r}")
        for path in changes:
            if splitPath(path)[0] == "id":
                raise ValueError("update cannot change the id")


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


def applyUpdate(doc: dict, set: Optional[Mapping[str, Any]], push: Optional[Mapping[str, Any]]) -> dict:
    """
    Change C{doc} in place as MongoDB's C{$set} and C{$push} would, and
    return it; the backends that cannot hand the update to their database
    apply it with this.  Missing intermediate objects are created; pushing
    to a missing field creates a one-element list.

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


def checkDocument(doc: Mapping[str, Any]) -> None:
    """
    Refuse documents the backends would store differently.

    @raise ValueError: when C{doc} is not a dict, has an C{_id} or a
        non-string C{id}.
    """
    if not isinstance(doc, dict):
        raise ValueError(f"documents are dicts, not {doc!r}")
    if "_id" in doc:
        raise ValueError("documents carry 'id', not '_id'")
    if "id" in doc and not isinstance(doc["id"], str):
        raise ValueError(f"document id must be a string, not {doc['id']!r}")


__all__ = [
    "COLLECTIONS",
    "CollectionSchema",
    "Key",
    "OPERATORS",
    "RANGE_OPERATORS",
    "SCHEMA_VERSION",
    "applyUpdate",
    "checkDocument",
    "checkFilter",
    "checkPage",
    "checkSort",
    "checkUpdate",
    "collectionSchema",
    "getPath",
    "indexName",
    "isCollection",
    "isOperatorCondition",
    "splitPath",
]
