# -*- test-case-name: tests.test_cli_format -*-
"""
What the CLI prints: st2's tables, its C{attr: value} execution view, and
the C{-j}/C{-y} documents.

Everything here is a pure function of the data (plus the terminal width and
"now" passed in), so the exact text can be tested without a server.
"""

from __future__ import annotations

import ast
import json
import re
import textwrap
from datetime import datetime, timezone
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Sequence

#: statuses that have an end_timestamp (st2 LIVEACTION_COMPLETED_STATES)
COMPLETED_STATES = ("succeeded", "failed", "timeout", "canceled", "abandoned")

#: the id column is never wrapped and at least this wide (st2 MIN_ID_COL_WIDTH)
MIN_ID_COL_WIDTH = 26
MIN_COL_WIDTH = 5

RED = "\033[91m"
GREEN = "\033[92m"
YELLOW = "\033[93m"
BLUE = "\033[94m"
ENDC = "\033[0m"

STATUS_COLORS = {"succeeded": GREEN, "delayed": BLUE, "failed": RED}

_ANSI = re.compile(r"\x1b\[[0-9;]*m")

Transform = Callable[[Any], Any]

#: the rows a property table starts with when present
PROPERTY_ORDER = ("id", "name", "pack", "description")

_MISSING = object()


# ---------------------------------------------------------------------------
# values


def _lookup(doc: Any, path: str) -> Any:
    """
    C{doc["a"]["b"]} for C{"a.b"}, or L{_MISSING}: a stored None and a
    missing key differ for L{selectAttributes}.
    """
    value = doc
    for name in path.split("."):
        if not isinstance(value, Mapping) or name not in value:
            return _MISSING
        value = value[name]
    return value


def getValue(doc: Any, path: str) -> Any:
    """
    C{doc["a"]["b"]} for C{"a.b"}; None when any step is missing.
    """
    value = _lookup(doc, path)
    return None if value is _MISSING else value


def _transformed(doc: Any, path: str, transforms: Mapping[str, Transform]) -> Any:
    value = getValue(doc, path)
    transform = transforms.get(path)
    return value if transform is None else transform(value)


def _wantsAll(attributes: Optional[Sequence[str]]) -> bool:
    """
    st2's C{-a}: no attributes, or C{all} among them, means every one.
    """
    return not attributes or "all" in attributes


def selectAttributes(doc: Mapping[str, Any], attributes: Optional[Sequence[str]]) -> Dict[str, Any]:
    """
    The part of C{doc} named by C{attributes} (dotted names keep their
    nesting, as st2's jsutil.get_kvps); everything when C{attributes} is
    empty or contains C{all}.
    """
    if _wantsAll(attributes):
        return dict(doc)
    result: Dict[str, Any] = {}
    for attribute in attributes:
        value = _lookup(doc, attribute)
        if value is _MISSING:
            continue
        names = attribute.split(".")
        target = result
        for name in names[:-1]:
            target = target.setdefault(name, {})
        target[names[-1]] = value
    return result


def _selected(subject: Any, attributes: Optional[Sequence[str]]) -> Any:
    """
    What C{-j} and C{-y} print: the selection of each document in a list,
    of a single document, or anything else as it is.
    """
    if isinstance(subject, list):
        return [selectAttributes(item, attributes) if isinstance(item, Mapping) else item for item in subject]
    if isinstance(subject, Mapping):
        return selectAttributes(subject, attributes)
    return subject


def formatJSON(subject: Any, attributes: Optional[Sequence[str]] = None) -> str:
    """
    C{-j}: st2's JSON formatter (4-space indent, sorted keys).
    """
    return json.dumps(_selected(subject, attributes), indent=4, sort_keys=True, ensure_ascii=False, separators=(",", ": "))


def formatYAML(subject: Any, attributes: Optional[Sequence[str]] = None) -> str:
    """
    C{-y}: the same selection as L{formatJSON}, as block YAML.
    """
    import yaml

    return yaml.safe_dump(_selected(subject, attributes), default_flow_style=False, allow_unicode=True).rstrip("\n")


def parseTimestamp(value: str) -> Optional[datetime]:
    """
    An aware datetime for the API's ISO timestamps (C{...Z}, offsets, or
    none meaning UTC); None when the text is not a timestamp.
    """
    text = value.strip()
    if not text:
        return None
    if text.endswith("Z"):
        text = text[:-1] + "+00:00"
    try:
        parsed = datetime.fromisoformat(text.replace(" ", "T", 1))
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=timezone.utc)
    return parsed


def _zone(name: str):
    if not name or name.upper() == "UTC":
        return timezone.utc
    try:
        from zoneinfo import ZoneInfo

        return ZoneInfo(name)
    except Exception:
        return timezone.utc


def formatTimestamp(value: Any, tz: str = "UTC") -> str:
    """
    st2's human form C{Fri, 31 Mar 2017 08:21:19 UTC} in the C{[cli]
    timezone}; empty for no value, unchanged when not a timestamp.
    """
    if not value:
        return ""
    if not isinstance(value, str):
        return str(value)
    parsed = parseTimestamp(value)
    if parsed is None:
        return value
    local = parsed.astimezone(_zone(tz))
    return local.strftime("%a, %d %b %Y %H:%M:%S %Z")


def _seconds(value: Any) -> Optional[int]:
    parsed = parseTimestamp(value) if isinstance(value, str) else None
    if parsed is None:
        return None
    return int(parsed.replace(microsecond=0).timestamp())


def statusWithElapsed(execution: Mapping[str, Any], now: float) -> str:
    """
    C{running (3s elapsed)} or C{succeeded (1s elapsed)}: whole seconds,
    counted like st2 (both timestamps truncated to the second).
    """
    status = str(execution.get("status", ""))
    start = _seconds(execution.get("start_timestamp"))
    end = _seconds(execution.get("end_timestamp"))
    if status == "running" and start is not None:
        return f"{status} ({int(now) - start}s elapsed)"
    if status in COMPLETED_STATES and start is not None and end is not None:
        return f"{status} ({end - start}s elapsed)"
    return status


def colorize(text: str, color: str, enabled: bool) -> str:
    if not enabled or not color:
        return text
    return f"{color}{text}{ENDC}"


def colorStatus(value: str, enabled: bool) -> str:
    """
    Colour only the status word of C{succeeded (1s elapsed)}.
    """
    status, sep, rest = value.partition(" (")
    color = STATUS_COLORS.get(status, YELLOW)
    result = colorize(status, color, enabled)
    return result + (" (" + rest if sep else "")


def visibleLength(text: str) -> int:
    return len(_ANSI.sub("", text))


def cellText(value: Any) -> str:
    """
    How a value looks in a multi-column cell: lists of strings joined by
    C{, }, other containers as JSON, None as nothing.
    """
    if value is None:
        return ""
    if isinstance(value, (list, tuple)):
        if not value:
            return ""
        if all(isinstance(v, str) for v in value):
            return ", ".join(value)
        return json.dumps(value)
    if isinstance(value, dict):
        return json.dumps(value) if value else ""
    return str(value).replace("\r", "")


# ---------------------------------------------------------------------------
# execution view


def _maybeStructured(value: Any) -> Any:
    if isinstance(value, str) and len(value) > 1 and value[0] in "{[" and value[-1] in "}]":
        for loader in (json.loads, ast.literal_eval):
            try:
                decoded = loader(value)
            except Exception:
                continue
            if isinstance(decoded, (dict, list)):
                return decoded
    return value


def formatExecutionResult(
    doc: Mapping[str, Any],
    attributes: Sequence[str],
    transforms: Optional[Mapping[str, Transform]] = None,
    color: bool = False,
) -> str:
    """
    st2's C{ExecutionResult}: one C{attr: value} per attribute; dicts and
    lists as indented YAML under the attribute.
    """
    import yaml

    transforms = transforms or {}
    if _wantsAll(attributes):
        attributes = sorted(doc.keys())
    lines = []
    for attribute in attributes:
        value = _maybeStructured(getValue(doc, attribute))
        if isinstance(value, str):
            value = value.replace("\r", "")
        if isinstance(value, (dict, list)):
            dumped = yaml.safe_dump({attribute: value}, default_flow_style=False, width=2**31 - 1, indent=2, allow_unicode=True)
            formatted = dumped[len(attribute) + 2 : -1]
            if isinstance(value, dict):
                formatted = "\n" + formatted
            while "\n\n" in formatted:
                formatted = formatted.replace("\n\n", "\n")
            value = formatted
        transform = transforms.get(attribute)
        if transform is not None:
            value = transform(value)
        if value is None:
            value = ""
        lines.append(f"{colorize(attribute, BLUE, color)}: {value}")
    return "\n".join(lines)


# ---------------------------------------------------------------------------
# tables


def _wrapCell(text: str, width: int) -> List[str]:
    lines: List[str] = []
    for line in text.split("\n"):
        if visibleLength(line) <= width or _ANSI.search(line):
            lines.append(line)
            continue
        wrapped = textwrap.wrap(line, width=width, break_long_words=True, break_on_hyphens=False, replace_whitespace=False, drop_whitespace=True)
        lines.extend(wrapped or [""])
    return lines or [""]


def allocateWidths(natural: Sequence[int], available: int, fixed: Iterable[int] = ()) -> List[int]:
    """
    Column widths that fit C{available} characters of content: fixed
    columns keep their natural width, the others are capped at a common
    width (never below L{MIN_COL_WIDTH}) so the narrow ones stay whole.
    """
    widths = list(natural)
    if sum(widths) <= available:
        return widths
    fixedSet = set(fixed)
    flexible = [i for i in range(len(widths)) if i not in fixedSet]
    budget = available - sum(widths[i] for i in fixedSet)
    remaining = budget
    count = len(flexible)
    cap = None
    for i in sorted(flexible, key=lambda i: widths[i]):
        if widths[i] * count <= remaining:
            remaining -= widths[i]
            count -= 1
            continue
        cap = remaining // count if count else 0
        break
    if cap is not None:
        cap = max(cap, MIN_COL_WIDTH)
        for i in flexible:
            widths[i] = min(widths[i], cap)
    return widths


def renderTable(header: Sequence[str], rows: Sequence[Sequence[str]], widths: Sequence[int], showHeader: bool = True) -> str:
    """
    A PrettyTable-style grid (left aligned, top aligned, padding 1).
    """
    border = "+" + "+".join("-" * (w + 2) for w in widths) + "+"

    def renderRow(cells: Sequence[str]) -> List[str]:
        wrapped = [_wrapCell(cell, w) for cell, w in zip(cells, widths)]
        height = max(len(c) for c in wrapped) if wrapped else 1
        out = []
        for lineNo in range(height):
            parts = []
            for cellLines, w in zip(wrapped, widths):
                text = cellLines[lineNo] if lineNo < len(cellLines) else ""
                parts.append(" " + text + " " * max(0, w - visibleLength(text)) + " ")
            out.append("|" + "|".join(parts) + "|")
        return out

    lines = [border]
    if showHeader:
        lines.extend(renderRow(header))
        lines.append(border)
    for row in rows:
        lines.extend(renderRow(row))
    if rows or not showHeader:
        lines.append(border)
    return "\n".join(lines)


def formatTable(
    entries: Sequence[Mapping[str, Any]],
    attributes: Sequence[str],
    termWidth: int = 80,
    widths: Optional[Sequence[int]] = None,
    transforms: Optional[Mapping[str, Transform]] = None,
) -> str:
    """
    st2's C{MultiColumnTable}: one column per attribute (dotted names reach
    into nested values), fitted to C{termWidth} unless C{widths} is given.
    """
    transforms = transforms or {}
    if _wantsAll(attributes):
        attributes = sorted(entries[0].keys()) if entries else []
    rows = [[cellText(_transformed(entry, attribute, transforms)) for attribute in attributes] for entry in entries]
    natural = []
    for index, attribute in enumerate(attributes):
        longest = max((visibleLength(line) for row in rows for line in row[index].split("\n")), default=0)
        natural.append(max(len(attribute), longest, 1))
    if widths:
        given = list(widths) if len(widths) == len(attributes) else [widths[0]] * len(attributes)
        final = [max(1, w) for w in given]
    else:
        fixed = [i for i, a in enumerate(attributes) if (a == "id" and i == 0) or a == "status"]
        available = termWidth - (3 * len(attributes) + 1)
        final = allocateWidths(natural, available, fixed)
    return renderTable(list(attributes), rows, final)


def formatPropertyTable(
    doc: Mapping[str, Any],
    attributes: Optional[Sequence[str]] = None,
    order: Sequence[str] = PROPERTY_ORDER,
    transforms: Optional[Mapping[str, Transform]] = None,
    termWidth: int = 80,
) -> str:
    """
    st2's C{PropertyValueTable}: a Property/Value grid; dicts and lists as
    4-space JSON, empty values blank, C{order} names first.
    """
    transforms = transforms or {}
    names = sorted(doc.keys()) if _wantsAll(attributes) else list(attributes)
    for name in reversed(list(order)):
        if name in names:
            names.remove(name)
            names.insert(0, name)
    rows = []
    for name in names:
        value = _transformed(doc, name, transforms)
        if value is None or (isinstance(value, (dict, list, str)) and len(value) == 0):
            text = ""
        elif isinstance(value, (dict, list)):
            text = json.dumps(value, indent=4)
        else:
            text = str(value).replace("\r", "")
        rows.append([name, text])
    propWidth = max([len("Property")] + [len(r[0]) for r in rows])
    propWidth = min(propWidth, 20)
    valueNatural = max([len("Value")] + [visibleLength(line) for r in rows for line in r[1].split("\n")])
    valueWidth = min(valueNatural, 60, max(MIN_COL_WIDTH, termWidth - propWidth - 7))
    return renderTable(["Property", "Value"], rows, [propWidth, valueWidth])


def noteBox(entity: str, limit: int) -> str:
    """
    The box st2 prints when more rows exist than C{-n} allowed.
    """
    if limit == 1:
        message = f"Note: Only one {entity[:-1]} is displayed. Use -n/--last flag for more results."
    else:
        message = f"Note: Only first {limit} {entity} are displayed. Use -n/--last flag for more results."
    return renderTable([""], [[message]], [len(message)], showHeader=False)
