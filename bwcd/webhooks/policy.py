# -*- test-case-name: tests.test_webhook_policies -*-
"""
Webhook policies: what one hook url demands of the requests it receives
(a sender's signature, a delivery id to deduplicate on, admission limits).

Parsing is pure and strict: every key is known and every value checked, and
a problem names the key (C{verify.preset}), because a policy guards a door
to the daemon and a typo must not silently leave it open.  A policy only
I{references} its secrets (a file bwcd reads, or a datastore key), so the
stored document holds nothing secret.
"""

from __future__ import annotations

import math
import os
from typing import Any, Dict, Mapping, Optional, Tuple

import attrs

__all__ = [
    "DEFAULT_DEDUP_WINDOW",
    "DELIVERY_SOURCES",
    "Dedup",
    "Limits",
    "MASK",
    "Policy",
    "PolicyError",
    "PRESETS",
    "Verify",
    "normaliseUrl",
    "parsePolicy",
    "publicPolicy",
]

PRESETS = ("github", "gitlab", "slack", "stripe", "standard-webhooks", "hmac")
ALGORITHMS = ("sha1", "sha256", "sha512")
ENCODINGS = ("hex", "base64")
DEFAULT_DEDUP_WINDOW = 24 * 3600
MASK = "********"

#: where each preset's senders put the delivery id: ("header", name) or ("body", dotted path)
DELIVERY_SOURCES: Mapping[str, Tuple[str, str]] = {
    "github": ("header", "X-GitHub-Delivery"),
    "gitlab": ("header", "X-Gitlab-Event-UUID"),
    "standard-webhooks": ("header", "webhook-id"),
    "stripe": ("body", "id"),
    "slack": ("body", "event_id"),
}

_TOP_KEYS = frozenset({"url", "verify", "dedup", "limits", "description"})
_VERIFY_KEYS = frozenset(
    {"preset", "secret_file", "secret_key", "previous_secret_file", "previous_secret_key", "header", "algorithm", "encoding", "prefix"}
)
_HMAC_ONLY = ("header", "algorithm", "encoding", "prefix")
_DEDUP_KEYS = frozenset({"header", "body", "window"})
_LIMIT_KEYS = frozenset({"max_body_bytes", "content_types", "rate"})
_RATE_KEYS = frozenset({"per_second", "burst"})


class PolicyError(ValueError):
    """
    A policy document that cannot be used; C{field} names the key.
    """

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


def normaliseUrl(url: str) -> str:
    """
    A hook url as hooks are matched: leading and trailing C{/} stripped.
    """
    return url.strip("/")


@attrs.frozen
class Verify:
    """
    How a sender proves itself.  C{secretFile}/C{secretKey} and their
    C{previous} twins are references, resolved by the policy index.
    """

    preset: str
    secretFile: Optional[str] = None
    secretKey: Optional[str] = None
    previousSecretFile: Optional[str] = None
    previousSecretKey: Optional[str] = None
    header: Optional[str] = None
    algorithm: str = "sha256"
    encoding: str = "hex"
    prefix: str = ""


@attrs.frozen
class Dedup:
    """
    Where the delivery id is (C{source} C{"header"} or C{"body"}, C{name} a
    header name or a dotted body path) and how long a repeat is refused.
    """

    source: str
    name: str
    window: float = DEFAULT_DEDUP_WINDOW


@attrs.frozen
class Limits:
    maxBodyBytes: Optional[int] = None
    contentTypes: Optional[Tuple[str, ...]] = None
    perSecond: Optional[float] = None
    burst: Optional[int] = None


@attrs.frozen
class Policy:
    url: str
    verify: Optional[Verify] = None
    dedup: Optional[Dedup] = None
    limits: Limits = Limits()
    document: Mapping[str, Any] = attrs.Factory(dict)


def _mapping(value: Any, field: str, keys: frozenset) -> Mapping[str, Any]:
    if not isinstance(value, dict):
        raise PolicyError(field, "must be a mapping")
    for key in value:
        if key not in keys:
            raise PolicyError(f"{field}.{key}" if field else str(key), f"unknown key (known: {', '.join(sorted(keys))})")
    return value


def _string(value: Any, field: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise PolicyError(field, "must be a non-empty string")
    return value


def _number(value: Any, field: str, integer: bool = False, minimum: float = 0, strictlyAbove: bool = True) -> Any:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (integer and not isinstance(value, int)):
        raise PolicyError(field, "must be a whole number" if integer else "must be a number")
    if not math.isfinite(value) or value < minimum or (strictlyAbove and value == minimum):
        raise PolicyError(field, f"must be {'above' if strictlyAbove else 'at least'} {minimum:g}")
    return value


def _secretPath(value: Any, field: str) -> str:
    path = _string(value, field)
    if not os.path.isabs(path):
        raise PolicyError(field, "must be an absolute path")
    return path


def _verify(value: Any) -> Verify:
    data = _mapping(value, "verify", _VERIFY_KEYS)
    preset = data.get("preset")
    if preset not in PRESETS:
        raise PolicyError("verify.preset", f"must be one of {', '.join(PRESETS)}")
    if ("secret_file" in data) == ("secret_key" in data):
        raise PolicyError("verify.secret_file", "give exactly one of secret_file and secret_key")
    if "previous_secret_file" in data and "previous_secret_key" in data:
        raise PolicyError("verify.previous_secret_file", "give at most one of previous_secret_file and previous_secret_key")
    kwargs: Dict[str, Any] = {"preset": preset}
    for key, attr in (("secret_file", "secretFile"), ("previous_secret_file", "previousSecretFile")):
        if key in data:
            kwargs[attr] = _secretPath(data[key], f"verify.{key}")
    for key, attr in (("secret_key", "secretKey"), ("previous_secret_key", "previousSecretKey")):
        if key in data:
            kwargs[attr] = _string(data[key], f"verify.{key}")
    if preset != "hmac":
        for key in _HMAC_ONLY:
            if key in data:
                raise PolicyError(f"verify.{key}", "is only for preset hmac")
        return Verify(**kwargs)
    kwargs["header"] = _string(data.get("header"), "verify.header")
    algorithm = data.get("algorithm", "sha256")
    if algorithm not in ALGORITHMS:
        raise PolicyError("verify.algorithm", f"must be one of {', '.join(ALGORITHMS)}")
    encoding = data.get("encoding", "hex")
    if encoding not in ENCODINGS:
        raise PolicyError("verify.encoding", f"must be one of {', '.join(ENCODINGS)}")
    prefix = data.get("prefix", "")
    if not isinstance(prefix, str):
        raise PolicyError("verify.prefix", "must be a string")
    return Verify(algorithm=algorithm, encoding=encoding, prefix=prefix, **kwargs)


def _dedup(value: Any, verify: Optional[Verify]) -> Optional[Dedup]:
    if value is False or value is None:
        return None
    preset = DELIVERY_SOURCES.get(verify.preset) if verify is not None else None
    if value is True:
        if preset is None:
            raise PolicyError("dedup", "this hook's senders have no known delivery id: give {header: NAME} or {body: PATH}")
        return Dedup(*preset)
    data = _mapping(value, "dedup", _DEDUP_KEYS)
    if "header" in data and "body" in data:
        raise PolicyError("dedup.header", "give at most one of header and body")
    window = _number(data.get("window", DEFAULT_DEDUP_WINDOW), "dedup.window")
    if "header" in data:
        return Dedup("header", _string(data["header"], "dedup.header"), float(window))
    if "body" in data:
        path = _string(data["body"], "dedup.body")
        if any(not part for part in path.split(".")):
            raise PolicyError("dedup.body", "must be a dotted path such as id or data.id")
        return Dedup("body", path, float(window))
    if preset is None:
        raise PolicyError("dedup", "this hook's senders have no known delivery id: give header or body")
    return Dedup(preset[0], preset[1], float(window))


def _limits(value: Any) -> Limits:
    if value is None:
        return Limits()
    data = _mapping(value, "limits", _LIMIT_KEYS)
    maxBody = data.get("max_body_bytes")
    if maxBody is not None:
        maxBody = _number(maxBody, "limits.max_body_bytes", integer=True)
    types = data.get("content_types")
    if types is not None:
        if not isinstance(types, list) or not types:
            raise PolicyError("limits.content_types", "must be a non-empty list of media types")
        checked = []
        for i, t in enumerate(types):
            t = _string(t, f"limits.content_types[{i}]").strip().lower()
            kind, slash, sub = t.partition("/")
            if not (kind and slash and sub) or ";" in t or " " in t:
                raise PolicyError(f"limits.content_types[{i}]", f"{t!r} is not a media type such as application/json")
            checked.append(t)
        types = tuple(checked)
    perSecond = burst = None
    if "rate" in data:
        rate = _mapping(data["rate"], "limits.rate", _RATE_KEYS)
        perSecond = float(_number(rate.get("per_second"), "limits.rate.per_second"))
        burst = _number(rate.get("burst", max(1, math.ceil(perSecond))), "limits.rate.burst", integer=True)
    return Limits(maxBody, types, perSecond, burst)


def parsePolicy(data: Any, url: Optional[str] = None) -> Policy:
    """
    Check a policy document (YAML from a pack, JSON from the API).

    @param url: the hook url from the API path; the document's own C{url},
        when present, must name the same hook.
    @raise PolicyError: naming the first bad key.
    """
    data = _mapping(data, "", _TOP_KEYS)
    docUrl = data.get("url")
    if docUrl is not None:
        docUrl = normaliseUrl(_string(docUrl, "url"))
    if url is not None:
        url = normaliseUrl(url)
        if docUrl is not None and docUrl != url:
            raise PolicyError("url", f"is {docUrl!r} but the request is for {url!r}")
        docUrl = url
    if not docUrl:
        raise PolicyError("url", "is required")
    if "description" in data and not isinstance(data["description"], str):
        raise PolicyError("description", "must be a string")
    verify = _verify(data["verify"]) if data.get("verify") is not None else None
    dedup = _dedup(data.get("dedup"), verify)
    limits = _limits(data.get("limits"))
    document = {k: v for k, v in data.items() if v is not None}
    document["url"] = docUrl
    return Policy(docUrl, verify, dedup, limits, document)


def publicPolicy(doc: Mapping[str, Any]) -> Dict[str, Any]:
    """
    A stored policy as the API shows it: any inline secret value masked
    (policies reference secrets, but a document written by hand might still
    carry one under a key such as C{secret}).
    """

    def mask(value: Any) -> Any:
        if isinstance(value, dict):
            return {
                k: (MASK if ("secret" in k and not k.endswith(("_file", "_key"))) else mask(v)) for k, v in value.items()
            }
        return value

    return mask(dict(doc))
