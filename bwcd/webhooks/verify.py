# -*- test-case-name: tests.test_webhook_verify -*-
"""
Checking a sender's signature over the exact bytes it sent.

Each preset follows the sender's published scheme.  Everything here is pure
(secrets, headers, body and the current time in, a verdict out) so every
vector can be tested without a daemon, and every comparison of something
the sender controls with something derived from the secret goes through
L{hmac.compare_digest}, so timing tells an attacker nothing.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from typing import Callable, List, Optional, Sequence

from bwcd.webhooks.policy import Verify

__all__ = [
    "MISSING",
    "MISMATCH",
    "STALE",
    "TOLERANCE",
    "UNAVAILABLE",
    "VerifyFailed",
    "standardWebhooksKey",
    "verifyRequest",
]

#: seconds a signed timestamp may differ from now (Slack, Stripe, Standard Webhooks)
TOLERANCE = 300.0

# reasons (metric labels; bounded)
MISSING = "missing_signature"
MISMATCH = "signature_mismatch"
STALE = "timestamp_outside_tolerance"
UNAVAILABLE = "secret_unavailable"

_MESSAGES = {
    MISSING: "Webhook signature is missing: {detail}",
    MISMATCH: "Webhook signature does not match: {detail}",
    STALE: "Webhook timestamp is outside the tolerance of 300 seconds: {detail}",
    UNAVAILABLE: "Webhook signature cannot be checked: {detail}",
}

Headers = Callable[[str], Optional[str]]


class VerifyFailed(Exception):
    """
    A request that does not prove its sender; C{reason} is one of the
    module's reason constants, C{faultstring} says which check failed.
    """

    def __init__(self, reason: str, detail: str) -> None:
        self.reason = reason
        self.faultstring = _MESSAGES[reason].format(detail=detail)
        super().__init__(self.faultstring)


def _same(a: bytes, b: bytes) -> bool:
    return hmac.compare_digest(a, b)


def _mac(secret: bytes, message: bytes, algorithm: str = "sha256") -> bytes:
    return hmac.new(secret, message, getattr(hashlib, algorithm)).digest()


def _required(headers: Headers, name: str) -> str:
    value = headers(name)
    if value is None or not value.strip():
        raise VerifyFailed(MISSING, f"no {name} header")
    return value.strip()


def _timestamp(text: str, now: float, name: str) -> float:
    try:
        value = float(int(text.strip()))
    except ValueError:
        raise VerifyFailed(STALE, f"{name} is not a number of seconds") from None
    return value


def _fresh(ts: float, now: float, name: str) -> None:
    if abs(now - ts) > TOLERANCE:
        raise VerifyFailed(STALE, f"{name} is {int(now - ts)} seconds from now")


def standardWebhooksKey(secret: bytes) -> bytes:
    """
    The HMAC key of a Standard Webhooks secret C{whsec_<base64>}.

    @raise ValueError: not base64.
    """
    text = secret.strip()
    if text.startswith(b"whsec_"):
        text = text[len(b"whsec_"):]
    try:
        return base64.b64decode(text, validate=True)
    except binascii.Error:
        raise ValueError("a standard-webhooks secret is whsec_ followed by base64") from None


def _github(secrets: Sequence[bytes], headers: Headers, body: bytes, now: float) -> None:
    sent = _required(headers, "X-Hub-Signature-256").encode("latin-1").lower()
    for secret in secrets:
        if _same(sent, b"sha256=" + _mac(secret, body).hex().encode()):
            return
    raise VerifyFailed(MISMATCH, "X-Hub-Signature-256")


def _gitlab(secrets: Sequence[bytes], headers: Headers, body: bytes, now: float) -> None:
    sent = _required(headers, "X-Gitlab-Token").encode("utf-8", "replace")
    matched = False
    for secret in secrets:
        matched |= _same(sent, secret)
    if not matched:
        raise VerifyFailed(MISMATCH, "X-Gitlab-Token")


def _slack(secrets: Sequence[bytes], headers: Headers, body: bytes, now: float) -> None:
    sent = _required(headers, "X-Slack-Signature").encode("latin-1").lower()
    stamp = _required(headers, "X-Slack-Request-Timestamp")
    ts = _timestamp(stamp, now, "X-Slack-Request-Timestamp")
    message = b"v0:" + stamp.encode("latin-1") + b":" + body
    if not any(_same(sent, b"v0=" + _mac(s, message).hex().encode()) for s in secrets):
        raise VerifyFailed(MISMATCH, "X-Slack-Signature")
    _fresh(ts, now, "X-Slack-Request-Timestamp")


def _stripe(secrets: Sequence[bytes], headers: Headers, body: bytes, now: float) -> None:
    header = _required(headers, "Stripe-Signature")
    stamp: Optional[str] = None
    signatures: List[bytes] = []
    for item in header.split(","):
        key, _, value = item.strip().partition("=")
        if key == "t":
            stamp = value.strip()
        elif key == "v1":
            signatures.append(value.strip().lower().encode("latin-1"))
    if stamp is None:
        raise VerifyFailed(MISSING, "no t= in Stripe-Signature")
    if not signatures:
        raise VerifyFailed(MISSING, "no v1= in Stripe-Signature")
    ts = _timestamp(stamp, now, "Stripe-Signature t")
    message = stamp.encode("latin-1") + b"." + body
    expected = [_mac(s, message).hex().encode() for s in secrets]
    if not any(_same(sent, e) for sent in signatures for e in expected):
        raise VerifyFailed(MISMATCH, "Stripe-Signature")
    _fresh(ts, now, "Stripe-Signature t")


def _standard(secrets: Sequence[bytes], headers: Headers, body: bytes, now: float) -> None:
    msgId = _required(headers, "webhook-id")
    stamp = _required(headers, "webhook-timestamp")
    header = _required(headers, "webhook-signature")
    ts = _timestamp(stamp, now, "webhook-timestamp")
    message = msgId.encode("latin-1") + b"." + stamp.encode("latin-1") + b"." + body
    sent = []
    for item in header.split():
        version, _, value = item.partition(",")
        if version == "v1" and value:
            sent.append(value.encode("latin-1"))
    if not sent:
        raise VerifyFailed(MISSING, "no v1 signature in webhook-signature")
    expected = []
    for secret in secrets:
        try:
            expected.append(base64.b64encode(_mac(standardWebhooksKey(secret), message)))
        except ValueError as e:
            raise VerifyFailed(UNAVAILABLE, str(e)) from None
    if not any(_same(s, e) for s in sent for e in expected):
        raise VerifyFailed(MISMATCH, "webhook-signature")
    _fresh(ts, now, "webhook-timestamp")


def _generic(config: Verify) -> Callable[[Sequence[bytes], Headers, bytes, float], None]:
    assert config.header is not None
    name = config.header
    prefix = config.prefix.encode("latin-1", "replace")

    def check(secrets: Sequence[bytes], headers: Headers, body: bytes, now: float) -> None:
        sent = _required(headers, name).encode("latin-1", "replace")
        if config.encoding == "hex":
            sent = sent.lower()

        def encode(digest: bytes) -> bytes:
            return digest.hex().encode() if config.encoding == "hex" else base64.b64encode(digest)

        if not any(_same(sent, prefix + encode(_mac(s, body, config.algorithm))) for s in secrets):
            raise VerifyFailed(MISMATCH, name)

    return check


_PRESETS = {"github": _github, "gitlab": _gitlab, "slack": _slack, "stripe": _stripe, "standard-webhooks": _standard}


def verifyRequest(config: Verify, secrets: Sequence[bytes], headers: Headers, body: bytes, now: float) -> None:
    """
    Check one request.

    @param secrets: the current secret, then the previous one (rotation);
        empty when none could be read.
    @param headers: a header's value by name (case-insensitive), or None.
    @param body: the raw body, exactly as received.
    @param now: the time, in seconds since the epoch.
    @raise VerifyFailed: saying which check failed.
    """
    if not secrets:
        raise VerifyFailed(UNAVAILABLE, "the hook's secret could not be read; see bwcd's log")
    check = _PRESETS.get(config.preset) or _generic(config)
    check(secrets, headers, body, now)
