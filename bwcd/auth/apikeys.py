# -*- test-case-name: tests.test_auth -*-
"""
API keys: long-lived credentials for webhooks and scripts.

Hashing follows st2 exactly (SHA-512 over a fixed salt plus the key), so that
keys can be moved between st2 and bwcd by their C{key_hash} and the 401 for an
unknown key names the same hash st2 would.  The plaintext key exists only in
the answer to the request that created it.

A key may carry scopes (L{bwcd.auth.principal}): a list of
C{webhooks:<url glob>} limiting it to sending events to those hooks.  A key
without scopes is a full-access credential, as every st2 key is.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
from typing import Any, Mapping, Optional, Sequence, Tuple

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from bwcd.auth.credentials import CACHE_SECONDS, DisabledApiKey, UnknownApiKey, ValidationCache, sameHash
from bwcd.auth.principal import parseScopes
from bwcd.errors import Invalid, NotFound
from bwcd.store.interface import IStore, newId
from bwcd.timeutil import isoformat, utcnow

log = Logger(namespace="bwcd.auth")

APIKEYS = "apikeys"

#: st2common/util/hash.py FIXED_SALT
FIXED_SALT = "saltnpepper"

#: what st2 shows instead of a secret (st2common/constants/secrets.py)
MASKED_ATTRIBUTE_VALUE = "********"

#: document ids are ObjectIds in hex; anything else is not worth a lookup by id
_ID = re.compile(r"^[0-9a-f]{24}$")


class ApiKeyNotFound(NotFound, LookupError):
    """
    No key has this id, and none hashes to this value.
    """

    def __init__(self, idOrKey: str) -> None:
        super().__init__(f"ApiKey matching {idOrKey} for reference and id not found.")
        self.idOrKey = idOrKey

    def __str__(self) -> str:
        return self.faultstring


class KeyHashChange(Invalid, ValueError):
    """
    An update tries to change a key's hash, which st2 refuses.
    """

    def __init__(self) -> None:
        super().__init__("Update of key_hash is not allowed.")

    def __str__(self) -> str:
        return self.faultstring


def hashKey(key: str) -> str:
    """
    st2's C{hash_utils.hash}: SHA-512 hex of the fixed salt and the key.
    """
    return hashlib.sha512((FIXED_SALT + key).encode("utf-8")).hexdigest()


def generateKey() -> str:
    """
    A new key shaped like st2's: base64 of the hex SHA-256 of 256 random
    bytes, padding stripped (86 characters).
    """
    digest = hashlib.sha256(os.urandom(256)).hexdigest()
    return base64.b64encode(digest.encode("ascii")).decode("ascii").rstrip("=")


def uidFor(keyHash: str) -> str:
    return f"api_key:{keyHash}"


def publicView(doc: Mapping[str, Any], showSecrets: bool = False) -> dict:
    """
    A stored key as C{GET /v1/apikeys} shows it: C{key_hash} and C{uid}
    masked unless secrets were asked for.
    """
    keyHash = doc.get("key_hash")
    return {
        "id": doc["id"],
        "uid": uidFor(keyHash) if showSecrets else MASKED_ATTRIBUTE_VALUE,
        "user": doc.get("user"),
        "key_hash": keyHash if showSecrets else MASKED_ATTRIBUTE_VALUE,
        "metadata": doc.get("metadata") or {},
        "created_at": doc.get("created_at"),
        "enabled": bool(doc.get("enabled", True)),
        "scopes": list(doc.get("scopes") or []),
    }


class ApiKeys:
    """
    CRUD and checks over the C{apikeys} collection.
    """

    def __init__(self, store: IStore, clock: IReactorTime, cacheSeconds: float = CACHE_SECONDS) -> None:
        self._store = store
        self._clock = clock
        self._cache = ValidationCache(clock, cacheSeconds)

    async def create(
        self,
        user: str,
        metadata: Optional[dict] = None,
        enabled: bool = True,
        keyHash: Optional[str] = None,
        scopes: Optional[Sequence[Any]] = None,
    ) -> Tuple[dict, Optional[str]]:
        """
        Store a new key for C{user}, or import one by its C{keyHash}.

        @param scopes: C{webhooks:<url glob>} strings; none (or an empty
            list) makes a full-access key.
        @return: the stored document and the plaintext key (C{None} when
            imported).
        @raise bwcd.auth.principal.BadScope: a scope is not valid (before
            anything is stored).
        @raise bwcd.store.interface.DuplicateKey: C{keyHash} is taken.
        """
        canonicalScopes = parseScopes(scopes)
        key: Optional[str] = None
        if not keyHash:
            key = generateKey()
            keyHash = hashKey(key)
        doc = {
            "id": newId(),
            "uid": uidFor(keyHash),
            "user": user,
            "key_hash": keyHash,
            "metadata": dict(metadata or {}),
            "created_at": isoformat(utcnow(self._clock)),
            "enabled": bool(enabled),
        }
        if canonicalScopes:
            doc["scopes"] = list(canonicalScopes)
        doc = await self._store.insert(APIKEYS, doc)
        log.info("Created API key {id} for user {user} (scopes: {scopes})", id=doc["id"], user=user, scopes=",".join(canonicalScopes) or "none, full access")
        return doc, key

    async def list(self, limit: Optional[int] = None, offset: int = 0, user: Optional[str] = None) -> Tuple[list, int]:
        """
        Stored keys sorted by user, and how many there are in all.
        """
        query = {} if user is None else {"user": user}
        docs = await self._store.find(APIKEYS, query, sort=[("user", 1), ("id", 1)], limit=limit, offset=offset)
        total = await self._store.count(APIKEYS, query)
        return docs, total

    async def get(self, idOrKey: str) -> dict:
        """
        The key whose plaintext is C{idOrKey}, else the one with that id
        (st2's C{get_by_key_or_id}).

        @raise ApiKeyNotFound: neither.
        """
        doc = await self._store.findOne(APIKEYS, {"key_hash": hashKey(idOrKey)})
        if doc is None and _ID.match(idOrKey):
            doc = await self._store.get(APIKEYS, idOrKey)
        if doc is None:
            raise ApiKeyNotFound(idOrKey)
        return doc

    async def update(self, idOrKey: str, changes: Mapping[str, Any]) -> dict:
        """
        Change C{user}, C{metadata}, C{enabled} and/or C{scopes}; fields not
        given (or C{scopes: null}) stay.  C{scopes: []} makes the key
        full-access again.

        A C{key_hash} that is absent, empty, masked or equal to the stored one
        is no change (st2 clients send back what they read); anything else is
        refused.

        @raise ApiKeyNotFound: no such key.
        @raise KeyHashChange: C{changes} tries to change the hash.
        @raise bwcd.auth.principal.BadScope: a scope is not valid.
        """
        newScopes = None if changes.get("scopes") is None else parseScopes(changes["scopes"])
        doc = await self.get(idOrKey)
        newHash = changes.get("key_hash")
        if newHash and newHash != MASKED_ATTRIBUTE_VALUE and newHash != doc["key_hash"]:
            raise KeyHashChange()
        update = {}
        if changes.get("user"):
            update["user"] = changes["user"]
        if "metadata" in changes:
            update["metadata"] = dict(changes["metadata"] or {})
        if "enabled" in changes:
            update["enabled"] = bool(changes["enabled"])
        if newScopes is not None and list(newScopes) != list(doc.get("scopes") or []):
            update["scopes"] = list(newScopes)
        self._cache.forget(doc["key_hash"])
        if not update:
            return doc
        updated = await self._store.update(APIKEYS, {"id": doc["id"]}, set=update)
        if updated is None:
            raise ApiKeyNotFound(idOrKey)
        self._cache.forget(doc["key_hash"])
        log.info("Updated API key {id}: {fields}", id=doc["id"], fields=sorted(update))
        return updated

    async def delete(self, idOrKey: str) -> dict:
        """
        Delete a key; the document it had.

        @raise ApiKeyNotFound: no such key.
        """
        doc = await self.get(idOrKey)
        self._cache.forget(doc["key_hash"])
        if not await self._store.deleteOne(APIKEYS, doc["id"]):
            raise ApiKeyNotFound(idOrKey)
        self._cache.forget(doc["key_hash"])
        log.info("Deleted API key {id}", id=doc["id"])
        return doc

    async def lookup(self, key: str) -> dict:
        """
        The enabled key C{key}, for authentication.

        @raise UnknownApiKey: no key hashes to this.
        @raise DisabledApiKey: it is disabled.
        """
        keyHash = hashKey(key)
        doc = self._cache.get(keyHash)
        if doc is None:
            doc = await self._store.findOne(APIKEYS, {"key_hash": keyHash})
            if doc is None or not sameHash(doc.get("key_hash", ""), keyHash):
                raise UnknownApiKey(keyHash)
            if not doc.get("enabled", True):
                raise DisabledApiKey()
            self._cache.put(keyHash, doc)
        return doc


__all__ = [
    "APIKEYS",
    "ApiKeyNotFound",
    "ApiKeys",
    "FIXED_SALT",
    "KeyHashChange",
    "MASKED_ATTRIBUTE_VALUE",
    "generateKey",
    "hashKey",
    "publicView",
    "uidFor",
]
