# -*- test-case-name: tests.test_auth -*-
"""
Auth tokens: issued after a password check, good until their expiry.

Only a SHA-256 of each token is stored (C{token_hash}), so a copy of the
database does not hand out working credentials.  A token is 122 random bits
(uuid4), so an unsalted fast hash is enough: there is nothing to guess.
"""

from __future__ import annotations

import hashlib
import uuid
from datetime import timedelta
from typing import Optional

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from bwcd.auth.credentials import CACHE_SECONDS, ExpiredToken, UnknownToken, ValidationCache, sameHash
from bwcd.errors import Invalid
from bwcd.store.interface import DuplicateKey, IStore, newId
from bwcd.timeutil import isoformat, parseIso, utcnow

log = Logger(namespace="bwcd.auth")

TOKENS = "tokens"
USERS = "users"


class TtlError(Invalid, ValueError):
    """
    A requested TTL is out of range; the message is st2's, shown as a 400.
    """

    def __str__(self) -> str:
        return self.faultstring


def hashToken(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def checkTtl(ttl: Optional[int], maxTtl: int) -> None:
    """
    @raise TtlError: C{ttl} is below 1 or above C{maxTtl}.
    """
    if ttl is None:
        return
    if isinstance(ttl, bool) or not isinstance(ttl, int):
        raise TtlError(f"{ttl!r} is not of type 'integer', 'null'")
    if ttl < 1:
        raise TtlError(f"{ttl} is less than the minimum of 1")
    if ttl > maxTtl:
        raise TtlError(f"TTL specified {ttl} is greater than max allowed {maxTtl}.")


async def recordUser(store: IStore, name: str) -> None:
    """
    Make sure C{users} has a record for C{name} (st2 creates it on first
    login); a concurrent first login is not an error.
    """
    if await store.findOne(USERS, {"name": name}) is not None:
        return
    try:
        await store.insert(USERS, {"id": newId(), "name": name, "is_service": False, "nicknames": {}})
    except DuplicateKey:
        pass


class Tokens:
    """
    Issue and check tokens kept in the C{tokens} collection.
    """

    def __init__(
        self,
        store: IStore,
        clock: IReactorTime,
        ttl: int = 86400,
        maxTtl: int = 86400,
        cacheSeconds: float = CACHE_SECONDS,
    ) -> None:
        self._store = store
        self._clock = clock
        self.ttl = ttl
        self.maxTtl = maxTtl
        self._cache = ValidationCache(clock, cacheSeconds)
        #: users known to have a record (nothing deletes one): every
        #: execution's child token would otherwise read C{users} again
        self._recorded: set = set()

    async def issue(self, user: str, ttl: Optional[int] = None, metadata: Optional[dict] = None) -> dict:
        """
        Create a token for C{user} (already authenticated) and record the user.

        @return: the client's view, the only place the plaintext token
            appears: C{{"user", "token", "expiry", "id", "metadata"}}.
        @raise TtlError: C{ttl} is out of range.
        """
        checkTtl(ttl, self.maxTtl)
        token = uuid.uuid4().hex
        expiry = isoformat(utcnow(self._clock) + timedelta(seconds=ttl or self.ttl))
        doc = {
            "id": newId(),
            "user": user,
            "token_hash": hashToken(token),
            "expiry": expiry,
            "metadata": dict(metadata or {}),
            "service": False,
        }
        if user not in self._recorded:
            await recordUser(self._store, user)
            if len(self._recorded) >= 10000:
                self._recorded.clear()
            self._recorded.add(user)
        doc = await self._store.insert(TOKENS, doc)
        log.info("Issued token {id} for user {user}, expiring {expiry}", id=doc["id"], user=user, expiry=expiry)
        return {"user": user, "token": token, "expiry": expiry, "id": doc["id"], "metadata": doc["metadata"]}

    def _expired(self, doc: dict) -> bool:
        try:
            return parseIso(doc["expiry"]) <= utcnow(self._clock)
        except (KeyError, ValueError):
            return True

    async def lookup(self, token: str) -> dict:
        """
        The stored token document for C{token}.

        @raise UnknownToken: no such token.
        @raise ExpiredToken: it has expired.
        """
        tokenHash = hashToken(token)
        doc = self._cache.get(tokenHash)
        if doc is None:
            doc = await self._store.findOne(TOKENS, {"token_hash": tokenHash})
            if doc is None or not sameHash(doc.get("token_hash", ""), tokenHash):
                raise UnknownToken()
            if not self._expired(doc):
                self._cache.put(tokenHash, doc)
        if self._expired(doc):
            self._cache.forget(tokenHash)
            raise ExpiredToken()
        return doc

    async def isValid(self, token: str) -> bool:
        """
        Whether C{token} exists and has not expired.
        """
        try:
            await self.lookup(token)
        except (UnknownToken, ExpiredToken):
            return False
        return True

    async def revoke(self, token: str) -> bool:
        """
        Delete C{token}; whether it existed.
        """
        tokenHash = hashToken(token)
        self._cache.forget(tokenHash)
        return bool(await self._store.delete(TOKENS, {"token_hash": tokenHash}))

    async def purgeExpired(self) -> int:
        """
        Delete every expired token (for a periodic timer); how many.
        """
        return await self._store.delete(TOKENS, {"expiry": {"$lte": isoformat(utcnow(self._clock))}})


__all__ = ["TOKENS", "USERS", "Tokens", "TtlError", "checkTtl", "hashToken", "recordUser"]
