# -*- test-case-name: tests.test_jsontext -*-
"""
The one JSON parser for everything a client sends.

Python's C{json} accepts more than JSON (RFC 8259) and more than bwcd can
store or answer with: C{NaN}, C{Infinity} and C{1e309} become floats that
cannot be written back as JSON; C{"\\ud800"} becomes a lone surrogate that
cannot be encoded as UTF-8; bytes are decoded with C{surrogatepass}; and a
body of ten thousand C{[} ends in C{RecursionError}.  Each of those used to
surface later as a 500.  Here each is a L{JsonError}, which every route turns
into a 400 before anything is stored.

The checks cost almost nothing on ordinary bodies: the depth walk runs only
when the body holds more than L{MAX_DEPTH} brackets, and the surrogate walk
only when it holds a C{\\ud8xx}-style escape.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any, List, Tuple

__all__ = ["JsonError", "MAX_DEPTH", "loadJson"]

#: deeper documents are refused; no real event nests this far, and the
#: store and the templating walk documents recursively
MAX_DEPTH = 64

_SURROGATE_ESCAPE = re.compile(rb"\\[uU][dD][89a-fA-F]")


class JsonError(ValueError):
    """
    Not acceptable JSON; C{str(error)} says why, for the 400's faultstring.
    """


def _constant(name: str) -> Any:
    raise JsonError(f"{name} is not valid JSON")


def _finiteFloat(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise JsonError(f"number {text[:40]} is out of range")
    return value


_INT64_MAX = 2**63 - 1


def _int64(text: str) -> int:
    value = int(text)
    if not -_INT64_MAX - 1 <= value <= _INT64_MAX:
        # MongoDB (BSON) stores at most 64-bit integers; refusing them here
        # keeps both stores answering alike instead of one failing later
        raise JsonError(f"integer {text[:40]} is out of range (64-bit)")
    return value


def _tooDeep(value: Any, limit: int) -> bool:
    stack: List[Tuple[Any, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > limit:
            return True
        if isinstance(node, dict):
            stack.extend((v, depth + 1) for v in node.values() if isinstance(v, (dict, list)))
        elif isinstance(node, list):
            stack.extend((v, depth + 1) for v in node if isinstance(v, (dict, list)))
    return False


def _hasLoneSurrogate(value: Any) -> bool:
    stack: List[Any] = [value]
    while stack:
        node = stack.pop()
        if isinstance(node, str):
            try:
                node.encode("utf-8")
            except UnicodeEncodeError:
                return True
        elif isinstance(node, dict):
            stack.extend(node.keys())
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return False


def loadJson(raw: bytes, maxDepth: int = MAX_DEPTH) -> Any:
    """
    Parse a request body as strict JSON.

    @param raw: the body bytes, which must be UTF-8.
    @raise JsonError: for invalid UTF-8, invalid JSON, C{NaN}/C{Infinity},
        numbers too large for a float or a 64-bit integer, lone surrogates and nesting deeper
        than C{maxDepth}.
    """
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise JsonError(f"body is not valid UTF-8 (byte {e.start})") from None
    if text.startswith("\ufeff"):
        raise JsonError("a byte order mark is not allowed in JSON")
    try:
        value = json.loads(text, parse_constant=_constant, parse_float=_finiteFloat, parse_int=_int64)
    except RecursionError:
        raise JsonError(f"nested deeper than {maxDepth} levels") from None
    except JsonError:
        raise
    except ValueError as e:
        raise JsonError(str(e)) from None
    if raw.count(b"[") + raw.count(b"{") > maxDepth and _tooDeep(value, maxDepth):
        raise JsonError(f"nested deeper than {maxDepth} levels")
    if _SURROGATE_ESCAPE.search(raw) and _hasLoneSurrogate(value):
        raise JsonError("a string holds a lone surrogate (not valid Unicode)")
    return value
