# -*- test-case-name: tests.test_security -*-
"""
Regular expressions from rule authors and payloads, compiled with RE2.

Criteria operators and the Jinja C{regex_*} filters both run on the reactor
thread with patterns and subjects that may come from a webhook body.  RE2
matches in linear time, so a pattern like C{(a+)+$} cannot freeze the
daemon.  What RE2 cannot take (backreferences, lookaround, possessive or
atomic groups) is a L{RegexError} naming the pattern.  Python's C{\\Z} is
accepted (RE2 spells it C{\\z}).  Small differences from C{re} remain:
C{$} matches only at the very end (Python also before a final newline), and
C{\\d}, C{\\w}, C{\\s}, C{\\b} are ASCII-only.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Any

import re2

__all__ = ["RegexError", "compileRegex"]


class RegexError(re.error):
    """
    A criteria pattern that RE2 cannot compile: a syntax error, or a feature
    only a backtracking engine has.  A subclass of C{re.error}, so callers
    that caught C{re}'s errors still catch it.
    """


def _toRE2(pattern: str) -> str:
    # Python's end-of-text \Z is RE2's \z; every other escape passes as is.
    if "\\Z" not in pattern:
        return pattern
    out = []
    i = 0
    while i < len(pattern):
        c = pattern[i]
        if c == "\\" and i + 1 < len(pattern):
            nxt = pattern[i + 1]
            out.append("\\z" if nxt == "Z" else c + nxt)
            i += 2
            continue
        out.append(c)
        i += 1
    return "".join(out)


@lru_cache(maxsize=1024)
def _compile(pattern: str, ignoreCase: bool, dotAll: bool) -> Any:
    options = re2.Options()
    options.log_errors = False
    options.case_sensitive = not ignoreCase
    options.dot_nl = dotAll
    try:
        return re2.compile(_toRE2(pattern), options)
    except re2.error as e:
        reason = e.args[0] if e.args else e
        if isinstance(reason, bytes):
            reason = reason.decode("utf-8", "replace")
        raise RegexError(
            "Regular expression %r cannot be used: %s (bwcd matches with RE2, which has no "
            "backreferences or lookaround)" % (pattern, reason)
        ) from None


def compileRegex(pattern: Any, *, ignoreCase: bool = False, dotAll: bool = False) -> Any:
    """
    Compile a criteria regex with RE2 (cached).

    @raise RegexError: RE2 cannot take the pattern.
    @raise TypeError: the pattern is not a string.
    """
    if isinstance(pattern, bytes):
        pattern = pattern.decode("utf-8")
    if not isinstance(pattern, str):
        raise TypeError("first argument must be string or compiled pattern")
    return _compile(pattern, ignoreCase, dotAll)


