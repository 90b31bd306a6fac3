# -*- test-case-name: tests.test_spawn_paths -*-
"""
Keeping an execution's result small enough to store.

A result is part of the execution document, and MongoDB refuses a document
over 16 MiB: an execution whose result cannot be stored would stay
C{running} forever.  So the executor caps every result at
C{runner.result_max_bytes} (its JSON size, which is never smaller than its
BSON size for the strings that make results big) before the final write,
on SQLite as well, so that both stores keep the same results.  What is
cut is said in the result: C{"truncated": true}.
"""

from __future__ import annotations

import json
from typing import Any, Dict, Mapping

#: the default cap: room under MongoDB's 16 MiB for the rest of the
#: execution document (action, parameters, log)
DEFAULT_RESULT_MAX_BYTES = 12 * 1024 * 1024

_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode

#: fields of a result worth keeping when the rest cannot be stored
_SCALARS = (int, float, bool, type(None))


def _size(value: Any) -> int:
    return len(_dumps(value).encode("utf-8"))


def capResult(result: Mapping[str, Any], maxBytes: int) -> Dict[str, Any]:
    """
    C{result} if its JSON text is at most C{maxBytes} long; otherwise a copy
    with its largest fields cut (a value that is not a string is cut as its
    JSON text) and C{"truncated": true}.
    """
    size = _size(result)
    if size <= maxBytes:
        return dict(result)
    out: Dict[str, Any] = dict(result)
    out["truncated"] = True
    for _ in range(32):
        size = _size(out)
        if size <= maxBytes:
            return out
        sizes = {k: _size(v) for k, v in out.items() if k != "truncated"}
        if not sizes or max(sizes.values()) <= 2:
            break
        key = max(sizes, key=sizes.__getitem__)
        value = out[key]
        text = value if isinstance(value, str) else _dumps(value)
        target = sizes[key] - (size - maxBytes)
        if target <= 2:
            out[key] = ""
            continue
        # cut in proportion to the JSON size (escapes make a character
        # longer than one byte); the loop takes what is still over
        keep = max(0, min(len(text) - 1, len(text) * target // sizes[key]))
        out[key] = text[:keep]
    return minimalResult(result, "The result was too large to store")


def minimalResult(result: Mapping[str, Any], error: str) -> Dict[str, Any]:
    """
    What is left of C{result} when it cannot be stored at all: its scalar
    fields (return code, succeeded, failed), C{error} and
    C{"truncated": true}.
    """
    out: Dict[str, Any] = {k: v for k, v in result.items() if isinstance(v, _SCALARS) and _isFinite(v)}
    out["error"] = error
    out["truncated"] = True
    return out


def _isFinite(value: Any) -> bool:
    return not isinstance(value, float) or value == value and value not in (float("inf"), float("-inf"))


__all__ = ["DEFAULT_RESULT_MAX_BYTES", "capResult", "minimalResult"]
