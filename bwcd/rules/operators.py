# -*- test-case-name: tests.test_operators -*-
"""
Rule criteria operators, with st2's semantics (st2common/operators.py).

C{value} is the payload value found under the criteria key, C{pattern} the
rendered pattern.  st2's rules, kept on purpose because rule authors rely on
them:

  - every operator except C{exists}, C{nexists} and C{nequals} is C{False}
    when the pattern is C{None};
  - no type coercion: C{lessthan} on C{"5"} and C{3} raises C{TypeError},
    C{contains} on a missing (C{None}) value raises; the caller turns such
    exceptions into failed rule enforcements;
  - C{bytes} values and patterns are decoded as UTF-8 first by the string
    operators.

Nothing here reads the clock: the C{timediff} operators take C{now} (a
datetime, epoch seconds, or a callable giving either).

The regex operators compile with RE2 (L{bwcd.rules.regex}), so no pattern or
payload can stall the reactor.
"""

from __future__ import annotations

import fnmatch
from datetime import datetime, timezone
from typing import Any, Callable, Dict, Iterable, Mapping, Optional, Tuple, Union

from bwcd.rules.payload import lookup
from bwcd.rules.regex import RegexError, compileRegex

__all__ = [
    "OPERATORS",
    "ALLOWED_OPERATORS",
    "SEARCH",
    "TIMEDIFF_OPERATORS",
    "NO_NONE_GUARD",
    "UnrecognizedConditionError",
    "UnknownOperatorError",
    "RegexError",
    "REGEX_OPERATORS",
    "compileRegex",
    "Now",
    "CheckFunction",
    "getOperator",
    "applyOperator",
    "parseTimestamp",
    "resolveNow",
    "search",
]

Now = Union[None, datetime, float, int, Callable[[], Union[datetime, float, int]]]

# check(childKey, childCriterion, itemContext) -> bool, used by `search`.
CheckFunction = Callable[[str, Mapping[str, Any], Mapping[str, Any]], bool]


class UnrecognizedConditionError(ValueError):
    """
    A C{search} criterion has a condition other than any/all/any2any/all2any.
    """


class UnknownOperatorError(ValueError):
    """
    A criteria C{type} names no operator.
    """


def _subject(value: Any) -> str:
    # re raises TypeError for a non-string subject; RE2 would take some
    # buffers, so the check is made here to keep st2's behaviour.
    if not isinstance(value, str):
        raise TypeError("expected string or bytes-like object, got %r" % (type(value).__name__,))
    return value


def _decode(value: Any, pattern: Any) -> Tuple[Any, Any]:
    if isinstance(value, bytes):
        value = value.decode("utf-8")
    if isinstance(pattern, bytes):
        pattern = pattern.decode("utf-8")
    return value, pattern


def equals(value: Any, pattern: Any) -> bool:
    if pattern is None:
        return False
    value, pattern = _decode(value, pattern)
    return value == pattern


def nequals(value: Any, pattern: Any) -> bool:
    value, pattern = _decode(value, pattern)
    return value != pattern


def iequals(value: Any, pattern: Any) -> bool:
    if pattern is None:
        return False
    value, pattern = _decode(value, pattern)
    return value.lower() == pattern.lower()


def contains(value: Any, pattern: Any) -> bool:
    if pattern is None:
        return False
    value, pattern = _decode(value, pattern)
    return pattern in value


def ncontains(value: Any, pattern: Any) -> bool:
    if pattern is None:
        return False
    value, pattern = _decode(value, pattern)
    return pattern not in value


def icontains(value: Any, pattern: Any) -> bool:
    if pattern is None:
        return False
    value, pattern = _decode(value, pattern)
    return pattern.lower() in value.lower()


def incontains(value: Any, pattern: Any) -> bool:
    if pattern is None:
        return False
    value, pattern = _decode(value, pattern)
    return pattern.lower() not in value.lower()


def startswith(value: Any, pattern: Any) -> bool:
    if pattern is None:
        return False
    value, pattern = _decode(value, pattern)
    return value.startswith(pattern)


def istartswith(value: Any, pattern: Any) -> bool:
    if pattern is None:
        return False
    value, pattern = _decode(value, pattern)
    return value.lower().startswith(pattern.lower())


def endswith(value: Any, pattern: Any) -> bool:
    if pattern is None:
        return False
    value, pattern = _decode(value, pattern)
    return value.endswith(pattern)


def iendswith(value: Any, pattern: Any) -> bool:
    if pattern is None:
        return False
    value, pattern = _decode(value, pattern)
    return value.lower().endswith(pattern.lower())


def lessThan(value: Any, pattern: Any) -> bool:
    if pattern is None:
        return False
    return value < pattern


def greaterThan(value: Any, pattern: Any) -> bool:
    if pattern is None:
        return False
    return value > pattern


def matchWildcard(value: Any, pattern: Any) -> bool:
    if pattern is None:
        return False
    value, pattern = _decode(value, pattern)
    return fnmatch.fnmatch(value, pattern)


def matchRegex(value: Any, pattern: Any) -> bool:
    # Deprecated in st2 in favour of regex/iregex; anchored at the start.
    if pattern is None:
        return False
    value, pattern = _decode(value, pattern)
    return compileRegex(pattern, dotAll=True).match(_subject(value)) is not None


def regex(value: Any, pattern: Any) -> bool:
    if pattern is None:
        return False
    value, pattern = _decode(value, pattern)
    return compileRegex(pattern).search(_subject(value)) is not None


def iregex(value: Any, pattern: Any) -> bool:
    if pattern is None:
        return False
    value, pattern = _decode(value, pattern)
    return compileRegex(pattern, ignoreCase=True).search(_subject(value)) is not None


def exists(value: Any, pattern: Any) -> bool:
    return value is not None


def nexists(value: Any, pattern: Any) -> bool:
    return value is None


def inside(value: Any, pattern: Any) -> bool:
    if pattern is None:
        return False
    value, pattern = _decode(value, pattern)
    return value in pattern


def ninside(value: Any, pattern: Any) -> bool:
    if pattern is None:
        return False
    value, pattern = _decode(value, pattern)
    return value not in pattern


def _asUtc(moment: datetime) -> datetime:
    # Naive timestamps are taken as UTC, as st2's date_utils.parse does.
    if moment.tzinfo is None:
        return moment.replace(tzinfo=timezone.utc)
    return moment


def parseTimestamp(value: Any) -> datetime:
    """
    Parse an ISO 8601 timestamp (C{Z} suffix accepted) into an aware
    datetime; a naive one is taken as UTC.

    @raise ValueError: for a string that is not ISO 8601.
    @raise TypeError: for a value that is neither a string nor a datetime.
    """
    if isinstance(value, datetime):
        return _asUtc(value)
    if isinstance(value, bytes):
        value = value.decode("utf-8")
    if not isinstance(value, str):
        raise TypeError("Expected a timestamp string, got %s" % (type(value).__name__,))
    text = value.strip()
    if text[-1:] in ("Z", "z"):
        text = text[:-1] + "+00:00"
    return _asUtc(datetime.fromisoformat(text))


def resolveNow(now: Now) -> datetime:
    """
    Turn the C{now} given to the timediff operators into an aware datetime.
    """
    if callable(now):
        now = now()
    if isinstance(now, datetime):
        return _asUtc(now)
    if isinstance(now, (int, float)) and not isinstance(now, bool):
        return datetime.fromtimestamp(now, timezone.utc)
    raise ValueError("The current time is needed for the timediff operators")


def _secondsSince(value: Any, now: Now) -> float:
    return (resolveNow(now) - parseTimestamp(value)).total_seconds()


def timediffLessThan(value: Any, pattern: Any, now: Now) -> bool:
    if pattern is None:
        return False
    return _secondsSince(value, now) < float(pattern)


def timediffGreaterThan(value: Any, pattern: Any, now: Now) -> bool:
    if pattern is None:
        return False
    return _secondsSince(value, now) > float(pattern)


_CONDITIONS = ("any", "all", "any2any", "all2any")


def search(value: Any, pattern: Any, condition: Any, check: CheckFunction) -> bool:
    """
    Match a list in the payload against child criteria.

    C{pattern} maps child keys (C{item.<path>}) to criteria; each list
    element is checked through C{check(key, criterion, {"item": element})}.
    Conditions: C{any} (some element matches every child), C{all} (every
    element matches every child), C{any2any} (some element matches some
    child), C{all2any} (every element matches some child).  A dict value is
    treated as a one-element list.

    @raise UnrecognizedConditionError: for any other condition, including a
        missing one.
    """
    if pattern is None:
        return False
    if condition not in _CONDITIONS:
        raise UnrecognizedConditionError(
            "The '%s' search condition is not recognized, only 'any', 'all', 'any2any' and "
            "'all2any' are allowed" % (condition,)
        )
    if isinstance(value, dict):
        value = [value]
    children = list(pattern.items())

    def matchesAll(element: Any) -> bool:
        context = {"item": element}
        return all(check(key, criterion, context) for key, criterion in children)

    def matchesAny(element: Any) -> bool:
        context = {"item": element}
        return any(check(key, criterion, context) for key, criterion in children)

    items: Iterable[Any] = value
    if condition == "any":
        return any(matchesAll(element) for element in items)
    if condition == "all":
        return all(matchesAll(element) for element in items)
    if condition == "any2any":
        return any(matchesAny(element) for element in items)
    return all(matchesAny(element) for element in items)


SEARCH = "search"
#: operator names whose pattern is a regex, with the RE2 options each uses
REGEX_OPERATORS: Dict[str, Dict[str, bool]] = {
    "matchregex": {"dotAll": True},
    "regex": {},
    "iregex": {"ignoreCase": True},
}
TIMEDIFF_OPERATORS = frozenset(["td_lt", "timediff_lt", "td_gt", "timediff_gt"])

# Operators whose result is not forced to False by a None pattern.
NO_NONE_GUARD = frozenset(["exists", "nexists", "nequals", "neq"])

# Same names, same order as st2's operator table: the order shows in the
# "not in list of allowed operators" validation message.
OPERATORS: Dict[str, Callable[..., bool]] = {
    "matchwildcard": matchWildcard,
    "matchregex": matchRegex,
    "regex": regex,
    "iregex": iregex,
    "eq": equals,
    "equals": equals,
    "neq": nequals,
    "nequals": nequals,
    "ieq": iequals,
    "iequals": iequals,
    "contains": contains,
    "icontains": icontains,
    "ncontains": ncontains,
    "incontains": incontains,
    "startswith": startswith,
    "istartswith": istartswith,
    "endswith": endswith,
    "iendswith": iendswith,
    "lt": lessThan,
    "lessthan": lessThan,
    "gt": greaterThan,
    "greaterthan": greaterThan,
    "td_lt": timediffLessThan,
    "timediff_lt": timediffLessThan,
    "td_gt": timediffGreaterThan,
    "timediff_gt": timediffGreaterThan,
    "exists": exists,
    "nexists": nexists,
    "inside": inside,
    "in": inside,
    "ninside": ninside,
    "nin": ninside,
    "search": search,
}

ALLOWED_OPERATORS: Tuple[str, ...] = tuple(OPERATORS)


def getOperator(name: str) -> Callable[..., bool]:
    """
    Look an operator up case-insensitively, as st2 does at evaluation time
    (validation, by contrast, is case-sensitive).

    @raise UnknownOperatorError: C{Invalid operator: <name>}.
    """
    lowered = name.lower() if isinstance(name, str) else name
    try:
        return OPERATORS[lowered]
    except (KeyError, TypeError):
        raise UnknownOperatorError("Invalid operator: %s" % (lowered,)) from None


def _defaultCheck(now: Now) -> CheckFunction:
    # Child criteria without pattern rendering; the rules engine supplies its
    # own check (bwcd.rules.criteria) that renders and records failures.
    def check(key: str, criterion: Mapping[str, Any], context: Mapping[str, Any]) -> bool:
        if "type" not in criterion:
            return False
        return applyOperator(
            criterion["type"], lookup(context, key), criterion.get("pattern"),
            now=now, condition=criterion.get("condition"),
        )

    return check


def applyOperator(name: str, value: Any, pattern: Any, *, now: Now = None,
                  condition: Optional[str] = None, check: Optional[CheckFunction] = None) -> bool:
    """
    Run the operator C{name} on a payload value and a rendered pattern.

    @param now: the current time, for the timediff operators.
    @param condition: the C{search} condition.
    @param check: how C{search} checks one child criterion against one
        element; by default the child key is looked up and the child
        pattern used unrendered.
    @raise Exception: whatever the operator raises (type errors, bad
        regexes, bad timestamps, L{UnrecognizedConditionError},
        L{UnknownOperatorError}).
    """
    function = getOperator(name)
    lowered = name.lower()
    if lowered == SEARCH:
        return search(value, pattern, condition, check if check is not None else _defaultCheck(now))
    if lowered in TIMEDIFF_OPERATORS:
        return function(value, pattern, now)
    return function(value, pattern)
