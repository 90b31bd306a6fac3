# -*- test-case-name: tests.test_webhook_body -*-
"""
The body of a webhook request, parsed by its Content-Type the way
StackStorm's router does, with one deliberate difference: form bodies
(urlencoded and multipart) are parsed by real form parsers, and a field sent
once is a string while a repeated field is a list.  StackStorm runs
C{parse_qs} over both, so every value is a list and its own documented
criteria (C{trigger.body.key1 equals value1}) never match a form post
(st2#4853), and multipart bodies come out as garbage.

Everything here is pure: bytes and a header value in, a JSON-able value or a
L{BodyError} out.
"""

from __future__ import annotations

import base64
import io
from typing import Any, Dict, List, Optional, Tuple
from urllib.parse import parse_qsl

import multipart

from bwcd.jsontext import JsonError, loadJson

__all__ = ["BodyError", "parseBody", "mediaType", "FORM_TYPES", "JSON_TYPE"]

JSON_TYPE = "application/json"
URLENCODED_TYPE = "application/x-www-form-urlencoded"
MULTIPART_TYPE = "multipart/form-data"
TEXT_TYPE = "text/plain"
FORM_TYPES = frozenset({URLENCODED_TYPE, MULTIPART_TYPE})

#: the most parts a multipart body may have; far above any real form, low
#: enough that a body of tiny parts cannot make us build a huge dict
MAX_PARTS = 1000


class BodyError(ValueError):
    """
    The body cannot be used; C{faultstring} is the 400 answer.
    """

    def __init__(self, faultstring: str) -> None:
        super().__init__(faultstring)
        self.faultstring = faultstring


def mediaType(contentType: Optional[str]) -> Tuple[str, Dict[str, str]]:
    """
    The lower-cased media type of a Content-Type value and its parameters
    (C{("multipart/form-data", {"boundary": "xyz"})}); C{("", {})} when
    there is none.
    """
    if not contentType or not contentType.strip():
        return "", {}
    if ";" not in contentType:
        return contentType.strip().lower(), {}
    main, options = multipart.parse_options_header(contentType)
    return main.strip().lower(), {k.lower(): v for k, v in options.items()}


def _notObjectOrArray(value: Any) -> BodyError:
    # jsonschema's wording for the WebhookBody schema (type object|array),
    # which is what StackStorm answers for scalar bodies.
    return BodyError(f"{value!r} is not of type 'object', 'array'")


def _parseJson(raw: bytes) -> Any:
    if not raw:
        return {}
    try:
        value = loadJson(raw)
    except JsonError as e:
        raise BodyError(f"Failed to parse request body: {e}")
    if not isinstance(value, (dict, list)):
        raise _notObjectOrArray(value)
    return value


def _collect(pairs: List[Tuple[str, Any]]) -> Dict[str, Any]:
    """
    Fold form fields into a dict: once -> the value, repeated -> a list in
    the order sent.
    """
    grouped: Dict[str, List[Any]] = {}
    for name, value in pairs:
        grouped.setdefault(name, []).append(value)
    return {name: values[0] if len(values) == 1 else values for name, values in grouped.items()}


def _parseUrlencoded(raw: bytes, charset: str) -> Dict[str, Any]:
    try:
        text = raw.decode(charset, "replace")
    except LookupError:
        raise BodyError(f'Failed to parse request body: Unsupported charset: "{charset}"')
    pairs = parse_qsl(text, keep_blank_values=True, encoding=charset, errors="replace")
    return _collect(pairs)


def _filePart(part: Any) -> Dict[str, Any]:
    data = part.raw
    described: Dict[str, Any] = {"filename": part.filename, "content_type": part.content_type}
    try:
        described["content"] = data.decode("utf-8")
    except UnicodeDecodeError:
        described["content"] = base64.b64encode(data).decode("ascii")
        described["encoding"] = "base64"
    return described


def _parseMultipart(raw: bytes, options: Dict[str, str]) -> Dict[str, Any]:
    boundary = options.get("boundary")
    if not boundary:
        raise BodyError('Failed to parse request body: multipart/form-data without a "boundary" parameter')
    charset = options.get("charset") or "utf-8"
    limit = len(raw) + 1
    parser = multipart.MultipartParser(
        io.BytesIO(raw),
        boundary,
        content_length=len(raw),
        charset=charset,
        strict=True,
        part_limit=MAX_PARTS,
        spool_limit=limit,
        memory_limit=limit,
        disk_limit=0,
    )
    pairs: List[Tuple[str, Any]] = []
    try:
        for part in parser:
            if part.filename is not None:
                pairs.append((part.name, _filePart(part)))
            else:
                pairs.append((part.name, part.value))
    except (multipart.MultipartError, LookupError, UnicodeDecodeError) as e:
        raise BodyError(f"Failed to parse request body: {e}")
    return _collect(pairs)


def _decodeText(raw: bytes, charset: str) -> str:
    try:
        return raw.decode(charset, "replace")
    except LookupError:
        return raw.decode("utf-8", "replace")


def parseBody(raw: bytes, contentType: Optional[str]) -> Any:
    """
    Parse a webhook body.

    @param raw: the whole body (already limited to C{api.max_body_bytes}).
    @param contentType: the Content-Type header value, or C{None}.
    @return: a dict or list.
    @raise BodyError: with StackStorm's faultstring for unsupported types,
        invalid JSON and bodies that are not an object or an array.
    """
    kind, options = mediaType(contentType)
    if kind in ("", JSON_TYPE):
        return _parseJson(raw)
    charset = options.get("charset") or "utf-8"
    if kind == URLENCODED_TYPE:
        return _parseUrlencoded(raw, charset)
    if kind == MULTIPART_TYPE:
        return _parseMultipart(raw, options)
    if kind == TEXT_TYPE:
        # StackStorm keeps a text/plain body as a string, which then fails
        # the object|array schema.
        raise _notObjectOrArray(_decodeText(raw, charset))
    original = (contentType or "").split(";", 1)[0].strip()
    raise BodyError(f'Failed to parse request body: Unsupported Content-Type: "{original}"')
