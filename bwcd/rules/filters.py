# -*- test-case-name: tests.test_templating -*-
"""
The Jinja filters available to rule and parameter templates: StackStorm's
set (C{st2common/expressions/functions/*}: JSON, YAML, jsonpath, regex,
time and semantic-version filters, C{use_none}, C{basename}, C{dirname})
plus bwcd's C{shell_quote}, so that a C{cmd} can embed payload text as one
shell word.

They are plain functions of their arguments, kept apart from the rendering
machinery in L{bwcd.rules.templating} so that a new filter touches only
this module.
"""

from __future__ import annotations

import json
import os.path
import re
import shlex
from datetime import datetime, timedelta
from functools import lru_cache
from typing import Any, Callable, Dict, List, Optional, Tuple

import yaml
from jinja2 import Undefined
from jsonpath_ng import parse as _parseJsonPath

from bwcd.rules.regex import compileRegex

# What the use_none filter turns None into, so that None survives being
# rendered into a string; castValue and renderParameters turn it back.
NONE_MAGIC_VALUE = "%*****__%NONE%__*****%"


def _defined(value: Any) -> Any:
    # A serialising filter given an undefined value would report "Object of
    # type StrictUndefined is not JSON serializable"; raise Jinja's own
    # message ("'dict object' has no attribute 'x'") instead.
    if isinstance(value, Undefined):
        str(value)
    return value


def toJsonString(value: Any, indent: Optional[int] = None, sort_keys: bool = False,
                 separators: Optional[Tuple[str, str]] = (",", ": ")) -> str:
    options: Dict[str, Any] = {}
    if indent is not None:
        options["indent"] = indent
    if sort_keys is not None:
        options["sort_keys"] = sort_keys
    if separators is not None:
        options["separators"] = tuple(separators)
    return json.dumps(_defined(value), **options)


def fromJsonString(value: Any) -> Any:
    return json.loads(str(value))


def toYamlString(value: Any, indent: Optional[int] = None, allow_unicode: bool = True) -> str:
    options: Dict[str, Any] = {"default_flow_style": False}
    if indent is not None:
        options["indent"] = indent
    if allow_unicode is not None:
        options["allow_unicode"] = allow_unicode
    return yaml.safe_dump(_defined(value), **options)


def fromYamlString(value: Any) -> Any:
    return yaml.safe_load(str(value))


def jsonEscape(value: Any) -> str:
    # json.dumps does the escaping; the surrounding quotes are not wanted.
    return json.dumps(_defined(value)).strip('"')


@lru_cache(maxsize=256)
def _parsedJsonPath(query: str) -> Any:
    return _parseJsonPath(query)


def jsonpathQuery(value: Any, query: str) -> Optional[List[Any]]:
    matches = [match.value for match in _parsedJsonPath(query).find(value)]
    if not matches:
        return None
    return matches


def toComplex(value: Any) -> str:
    return json.dumps(_defined(value))


def _asText(value: Any) -> str:
    return value if isinstance(value, str) else str(value)


# The regex filters take patterns and subjects that may come from a payload,
# so they compile with RE2 like the criteria operators (bwcd.rules.regex).


def regexMatch(value: Any, pattern: str, ignorecase: bool = False) -> bool:
    return compileRegex(pattern, ignoreCase=ignorecase).match(_asText(value)) is not None


def regexReplace(value: Any, pattern: str, replacement: str, ignorecase: bool = False) -> str:
    return compileRegex(pattern, ignoreCase=ignorecase).sub(replacement, _asText(value))


def regexSearch(value: Any, pattern: str, ignorecase: bool = False) -> bool:
    return compileRegex(pattern, ignoreCase=ignorecase).search(_asText(value)) is not None


def regexSubstring(value: Any, pattern: str, result_index: int = 0, ignorecase: bool = False) -> Any:
    return compileRegex(pattern, ignoreCase=ignorecase).findall(_asText(value))[result_index]


def toHumanTimeFromSeconds(seconds: Any) -> Optional[str]:
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)):
        raise TypeError("to_human_time_from_seconds needs a number, got %s" % (type(seconds).__name__,))
    if seconds == 0:
        return "0s"
    if seconds < 1:
        return "%s\u03bcs" % (seconds,)
    if isinstance(seconds, float):
        seconds = int(round(seconds))
    offset = datetime(1, 1, 1) + timedelta(seconds=seconds)
    parts = [offset.year - 1, offset.day - 1, offset.hour, offset.minute, offset.second]
    first = next((i for i, part in enumerate(parts) if part), None)
    if first is None:
        return "0s"
    parts = parts[first:]
    formats = {1: "%ss", 2: "%sm%ss", 3: "%sh%sm%ss", 4: "%sd%sh%sm%ss", 5: "%sy%sd%sh%sm%ss"}
    return formats[len(parts)] % tuple(parts)


# Semantic versions, as the semver package parses them (no new dependency).
_SEMVER = re.compile(
    r"^(?P<major>\d+)\.(?P<minor>\d+)\.(?P<patch>\d+)"
    r"(?:-(?P<prerelease>[0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*))?"
    r"(?:\+(?P<build>[0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*))?$"
)


def _parseVersion(value: Any) -> Tuple[int, int, int, Optional[str]]:
    match = _SEMVER.match(str(value))
    if match is None:
        raise ValueError("%s is not valid SemVer string" % (value,))
    return (int(match.group("major")), int(match.group("minor")),
            int(match.group("patch")), match.group("prerelease"))


def _comparePrerelease(left: Optional[str], right: Optional[str]) -> int:
    # A release sorts after any of its prereleases (semver 2.0.0 §11).
    if left == right:
        return 0
    if left is None:
        return 1
    if right is None:
        return -1
    for a, b in zip(left.split("."), right.split(".")):
        if a == b:
            continue
        if a.isdigit() and b.isdigit():
            return -1 if int(a) < int(b) else 1
        if a.isdigit():
            return -1
        if b.isdigit():
            return 1
        return -1 if a < b else 1
    leftLength, rightLength = len(left.split(".")), len(right.split("."))
    return (leftLength > rightLength) - (leftLength < rightLength)


def versionCompare(value: Any, pattern: Any) -> int:
    left, right = _parseVersion(value), _parseVersion(pattern)
    if left[:3] != right[:3]:
        return -1 if left[:3] < right[:3] else 1
    return _comparePrerelease(left[3], right[3])


def versionMoreThan(value: Any, pattern: Any) -> bool:
    return versionCompare(value, pattern) == 1


def versionLessThan(value: Any, pattern: Any) -> bool:
    return versionCompare(value, pattern) == -1


def versionEqual(value: Any, pattern: Any) -> bool:
    return versionCompare(value, pattern) == 0


_MATCH_OUTCOMES = {">": (1,), "<": (-1,), "==": (0,), "!=": (-1, 1), ">=": (0, 1), "<=": (-1, 0)}


def versionMatch(value: Any, pattern: str) -> bool:
    prefix = pattern[:2]
    if prefix in (">=", "<=", "==", "!="):
        other = pattern[2:]
    elif prefix and prefix[0] in (">", "<"):
        prefix = prefix[0]
        other = pattern[1:]
    else:
        raise ValueError(
            "match_expr parameter should be in format <op><ver>, where <op> is one of "
            "['<', '>', '==', '<=', '>=', '!=']. You provided: %r" % (pattern,)
        )
    return versionCompare(value, other) in _MATCH_OUTCOMES[prefix]


def versionBumpMajor(value: Any) -> str:
    major, _, _, _ = _parseVersion(value)
    return "%d.0.0" % (major + 1,)


def versionBumpMinor(value: Any) -> str:
    major, minor, _, _ = _parseVersion(value)
    return "%d.%d.0" % (major, minor + 1)


def versionBumpPatch(value: Any) -> str:
    major, minor, patch, _ = _parseVersion(value)
    return "%d.%d.%d" % (major, minor, patch + 1)


def versionStripPatch(value: Any) -> str:
    major, minor, _, _ = _parseVersion(value)
    return "%d.%d" % (major, minor)


def useNone(value: Any) -> Any:
    if value is None:
        return NONE_MAGIC_VALUE
    return value


def shellQuote(value: Any) -> str:
    """
    Quote a value as one shell word, so payload text cannot inject commands.
    """
    return shlex.quote("" if value is None else _asText(value))


FILTERS: Dict[str, Callable[..., Any]] = {
    "from_json_string": fromJsonString,
    "from_yaml_string": fromYamlString,
    "json_escape": jsonEscape,
    "jsonpath_query": jsonpathQuery,
    "to_complex": toComplex,
    "to_json_string": toJsonString,
    "to_yaml_string": toYamlString,
    "regex_match": regexMatch,
    "regex_replace": regexReplace,
    "regex_search": regexSearch,
    "regex_substring": regexSubstring,
    "to_human_time_from_seconds": toHumanTimeFromSeconds,
    "version_compare": versionCompare,
    "version_more_than": versionMoreThan,
    "version_less_than": versionLessThan,
    "version_equal": versionEqual,
    "version_match": versionMatch,
    "version_bump_major": versionBumpMajor,
    "version_bump_minor": versionBumpMinor,
    "version_bump_patch": versionBumpPatch,
    "version_strip_patch": versionStripPatch,
    "use_none": useNone,
    "basename": os.path.basename,
    "dirname": os.path.dirname,
    "shell_quote": shellQuote,
}


__all__ = ["FILTERS", "NONE_MAGIC_VALUE", "shellQuote"]
