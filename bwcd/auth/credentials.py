# -*- test-case-name: tests.test_auth -*-
"""
Who is calling: the credential check that guards every C{/v1/*} route.

The order in which credentials are looked for, and the exact 401 messages,
are StackStorm's, because st2 clients and scripts branch on them.  The check
sits on the webhook hot path, so successful validations are remembered for a
short time (L{ValidationCache}); the cache is keyed by the credential's hash
so that no plaintext secret is ever kept beyond the request that carried it.
"""

from __future__ import annotations

import hmac
from typing import Any, Dict, Optional, Protocol, Tuple

from twisted.internet.interfaces import IReactorTime

from bwcd.auth.principal import Principal
from bwcd.errors import Unauthenticated

#: (where, name) in the order st2's router tries them; the first non-empty wins
CREDENTIAL_SOURCES: Tuple[Tuple[str, str, str], ...] = (
    ("header", "X-Auth-Token", "token"),
    ("header", "St2-Api-Key", "apikey"),
    ("query", "x-auth-token", "token"),
    ("query", "st2-api-key", "apikey"),
)

#: how long a successful validation may be reused (seconds)
CACHE_SECONDS = 2.0

MSG_MISSING = "Unauthorized - One of Token or API key required."
MSG_TOKEN_UNKNOWN = "Unauthorized"
MSG_TOKEN_EXPIRED = "Unauthorized - Token has expired."
MSG_APIKEY_DISABLED = "Unauthorized - API key is disabled."


def msgApiKeyUnknown(keyHash: str) -> str:
    return f"Unauthorized - ApiKey with key_hash={keyHash} not found."


class CredentialRefused(Exception):
    """
    A presented credential is not good; C{str()} is never shown to clients.
    """


class UnknownToken(CredentialRefused):
    pass


class ExpiredToken(CredentialRefused):
    pass


class UnknownApiKey(CredentialRefused):
    """
    @ivar keyHash: the hash of the presented key (st2 shows it in the 401).
    """

    def __init__(self, keyHash: str) -> None:
        super().__init__(keyHash)
        self.keyHash = keyHash


class DisabledApiKey(CredentialRefused):
    pass


def sameHash(a: str, b: str) -> bool:
    """
    Compare two hex digests without leaking, through timing, how much of them
    matched.
    """
    return hmac.compare_digest(a.encode("ascii", "replace"), b.encode("ascii", "replace"))


class ValidationCache:
    """
    Successful validations, each good for at most C{seconds}.

    Keyed by the credential's hash.  Entries are also dropped at once through
    L{forget} when this process changes the credential, so that only changes
    made by another process (or by hand in the database) wait out the delay.
    """

    _SWEEP_AT = 1024

    def __init__(self, clock: IReactorTime, seconds: float = CACHE_SECONDS) -> None:
        self._clock = clock
        self._seconds = seconds
        self._entries: Dict[str, Tuple[float, dict]] = {}

    def get(self, key: str) -> Optional[dict]:
        entry = self._entries.get(key)
        if entry is None:
            return None
        until, doc = entry
        if self._clock.seconds() >= until:
            del self._entries[key]
            return None
        return doc

    def put(self, key: str, doc: dict) -> None:
        if self._seconds <= 0:
            return
        now = self._clock.seconds()
        if len(self._entries) >= self._SWEEP_AT:
            self._entries = {k: e for k, e in self._entries.items() if e[0] > now}
        self._entries[key] = (now + self._seconds, doc)

    def forget(self, key: str) -> None:
        self._entries.pop(key, None)

    def __len__(self) -> int:
        return len(self._entries)


class TokenChecker(Protocol):
    async def lookup(self, token: str) -> dict: ...


class ApiKeyChecker(Protocol):
    async def lookup(self, key: str) -> dict: ...


def findCredential(request: Any) -> Optional[Tuple[str, str, str]]:
    """
    The credential a request carries as C{(kind, source, value)}, where kind
    is C{"token"} or C{"apikey"} and source names where it was found
    (C{"header X-Auth-Token"}), or C{None}.

    Header names are matched case-insensitively (by Twisted); query names
    exactly, as in st2.  An empty value counts as absent.
    """
    for where, name, kind in CREDENTIAL_SOURCES:
        if where == "header":
            value = request.getHeader(name.encode("latin-1"))
            if isinstance(value, bytes):
                value = value.decode("latin-1")
        else:
            values = (request.args or {}).get(name.encode("latin-1")) or []
            value = values[0].decode("utf-8", "replace") if values else None
        if value:
            return kind, f"{where} {name}", value
    return None


class Authenticator:
    """
    Turns a request into a L{Principal} or a 401.

    Give C{authenticate} to the API (L{bwcd.api.framework.Api}), which
    answers L{Unauthenticated} with a 401.
    """

    def __init__(self, tokens: TokenChecker, apikeys: ApiKeyChecker, enabled: bool, system_user: str) -> None:
        self._tokens = tokens
        self._apikeys = apikeys
        self.enabled = enabled
        self.systemUser = system_user

    async def authenticate(self, request: Any) -> Principal:
        """
        Check the request's credential.  A scoped API key yields a
        L{Principal} with its C{scopes} and C{admin=False}.

        @raise Unauthenticated: with st2's faultstring, when it is missing
            or not good.
        """
        if not self.enabled:
            return Principal(user=self.systemUser, method="none")
        found = findCredential(request)
        if found is None:
            raise Unauthenticated(MSG_MISSING)
        kind, _source, value = found
        if kind == "token":
            try:
                doc = await self._tokens.lookup(value)
            except ExpiredToken:
                raise Unauthenticated(MSG_TOKEN_EXPIRED) from None
            except UnknownToken:
                raise Unauthenticated(MSG_TOKEN_UNKNOWN) from None
            return Principal(user=doc["user"], method="token", credentialId=doc.get("id"))
        try:
            doc = await self._apikeys.lookup(value)
        except DisabledApiKey:
            raise Unauthenticated(MSG_APIKEY_DISABLED) from None
        except UnknownApiKey as e:
            raise Unauthenticated(msgApiKeyUnknown(e.keyHash)) from None
        scopes = tuple(doc.get("scopes") or ())
        # A scoped key is never an admin (issue 10): it may only send events
        # to its hooks, which the API's route wrapper enforces.
        return Principal(user=doc["user"], method="apikey", credentialId=doc.get("id"), admin=not scopes, scopes=scopes)


__all__ = [
    "Authenticator",
    "CACHE_SECONDS",
    "CREDENTIAL_SOURCES",
    "CredentialRefused",
    "DisabledApiKey",
    "ExpiredToken",
    "MSG_APIKEY_DISABLED",
    "MSG_MISSING",
    "MSG_TOKEN_EXPIRED",
    "MSG_TOKEN_UNKNOWN",
    "Principal",
    "UnknownApiKey",
    "UnknownToken",
    "ValidationCache",
    "findCredential",
    "msgApiKeyUnknown",
    "sameHash",
]
