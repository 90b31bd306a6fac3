# -*- test-case-name: tests.test_payload -*-
"""
Resolving rule criteria keys against a trigger payload.

A criteria key is a JSONPath expression (st2 uses jsonpath_rw; jsonpath-ng
parses the same grammar) evaluated against a context such as
C{{"trigger": payload}}.  st2 semantics kept here:

  - everything after the first C{#} is dropped first, so C{trigger.x#1} and
    C{trigger.x#2} are two criteria on the same key;
  - when several nodes match, the first one's value is used;
  - no match gives C{None} (indistinguishable from a present C{null}).

Parsing a JSONPath costs far more than evaluating it (jsonpath-ng builds a
ply parser), and the same few keys are looked up for every trigger instance,
so compiled lookups are kept in an LRU cache.  Plain dotted keys, by far the
most common form, skip jsonpath-ng entirely; the shortcut mirrors exactly
what jsonpath-ng's C{Fields} does (C{value.get(name)}, treating a
C{TypeError}/C{AttributeError} as no match) so both paths agree.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Any, Callable, Mapping, Tuple

from jsonpath_ng import parse as _parseJsonPath

__all__ = ["lookup", "compileLookup", "stripSuffix", "Getter"]

Getter = Callable[[Any], Any]

_MISSING = object()

# Identifiers the fast path accepts.  jsonpath-ng's lexer also accepts '-',
# '@' and some non-ASCII characters inside identifiers, but those keys are
# rare and simply take the slow path, which is always correct.
_PLAIN_DOTTED = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*\Z")

# Identifiers the jsonpath-ng lexer turns into keywords rather than fields.
_RESERVED = frozenset(["where", "wherenot"])


def stripSuffix(key: str) -> str:
    """
    Drop the C{#...} suffix that lets one payload key carry several criteria.
    """
    return key.split("#", 1)[0]


def _dottedGetter(parts: Tuple[str, ...]) -> Getter:
    def get(context: Any) -> Any:
        current = context
        for part in parts:
            try:
                current = current.get(part, _MISSING)
            except (TypeError, AttributeError):
                return None
            if current is _MISSING:
                return None
        return current

    return get


def _jsonPathGetter(expression: str) -> Getter:
    parsed = _parseJsonPath(expression)

    def get(context: Any) -> Any:
        matches = parsed.find(context)
        if not matches:
            return None
        return matches[0].value

    return get


@lru_cache(maxsize=2048)
def _compile(expression: str, allowFastPath: bool) -> Getter:
    if allowFastPath and _PLAIN_DOTTED.match(expression):
        parts = tuple(expression.split("."))
        if not _RESERVED.intersection(parts):
            return _dottedGetter(parts)
    return _jsonPathGetter(expression)


def compileLookup(key: str) -> Getter:
    """
    Return a function that resolves C{key} against a context mapping.

    @param key: a criteria key, optionally with a C{#suffix}.
    @return: a one-argument callable giving the first match's value or
        C{None}.
    @raise Exception: whatever jsonpath-ng raises for a malformed key
        (lexer or parser errors); callers report it as a failed criteria
        key transformation.
    """
    return _compile(stripSuffix(key), True)


def lookup(context: Mapping[str, Any], key: str) -> Any:
    """
    Resolve a criteria key against C{context} (for example
    C{{"trigger": payload}}) the way st2's C{PayloadLookup} does.

    @return: the first matching value, or C{None} when nothing matches.
    """
    return _compile(stripSuffix(key), True)(context)


def _lookupWithoutFastPath(context: Mapping[str, Any], key: str) -> Any:
    # Reference behaviour for tests: always go through jsonpath-ng.
    return _compile(stripSuffix(key), False)(context)
