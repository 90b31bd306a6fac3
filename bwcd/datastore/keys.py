# -*- test-case-name: tests.test_datastore_keys -*-
"""
StackStorm's key-value pairs (st2-api-more.md section 10) over the store.

The rules that matter, and why they live here rather than in the routes:

  - Scopes: stored items are C{st2kv.system} or C{st2kv.user}; a user item is
    stored under C{"<user>:<name>"} (st2's C{UserKeyReference}), so its name
    carries its owner and every query for user items is rewritten to the
    requester's own prefix: nobody can list another user's items by a
    crafted C{prefix}.  Without RBAC (bwcd has none) a C{user} that is not
    the requester is refused, as st2's no-op RBAC backend does.
  - Secrets: C{secret: true} values are encrypted before they reach the
    store and are shown as ciphertext unless decryption is asked for.  No
    plaintext secret is logged or kept anywhere but in the answer.
  - Expiry: C{ttl} gives C{expire_timestamp}.  st2 leaves expiry to a
    MongoDB TTL index (swept about once a minute); here every read excludes
    expired items, so an expired key is gone the moment it expires, and
    expired documents are deleted as reads and writes pass (or by
    L{KeyService.purgeExpired} on a timer).  Documents carry C{live_until}
    (the expiry, or C{"never"}, which sorts after every timestamp) so that
    "not expired" is one indexed range condition in the store's language.

Collection C{keys}, declared in L{bwcd.store.schema} (unique (scope, name), an expiry index).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Tuple

from jsonschema import Draft4Validator
from jsonschema.exceptions import best_match
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from bwcd.datastore.crypto import AESKey, CryptoError, decrypt, encrypt
from bwcd.errors import Invalid, NotFound, Refused
from bwcd.store.interface import DuplicateKey, IStore, newId
from bwcd.timeutil import isoformat, utcnow

log = Logger()

COLLECTION = "keys"

SYSTEM_SCOPE = "st2kv.system"
USER_SCOPE = "st2kv.user"
ALL_SCOPE = "all"
ALLOWED_SCOPES = ["system", "user", SYSTEM_SCOPE, USER_SCOPE]
USER_SEPARATOR = ":"
NEVER = "never"

TRIGGER_CREATE = "core.st2.key_value_pair.create"
TRIGGER_UPDATE = "core.st2.key_value_pair.update"
TRIGGER_VALUE_CHANGE = "core.st2.key_value_pair.value_change"
TRIGGER_DELETE = "core.st2.key_value_pair.delete"

USER_PARAMETER_REFUSED = '"user" attribute can only be provided by admins when RBAC is enabled'
DECRYPT_REFUSED = "Decrypt option requires administrator access"
PRE_ENCRYPTED_REFUSED = "Pre-encrypted option requires administrator access"

#: st2's openapi C{KeyValuePairRequest}
REQUEST_SCHEMA: Dict[str, Any] = {
    "type": "object",
    "required": ["name", "value"],
    "properties": {
        "id": {"type": "string"},
        "name": {"type": "string"},
        "description": {"type": "string"},
        "value": {"type": "string"},
        "secret": {"type": "boolean"},
        "encrypted": {"type": "boolean"},
        "scope": {"type": "string"},
        "ttl": {"type": "integer"},
        "user": {"type": ["string", "null"]},
    },
}
_VALIDATOR = Draft4Validator(REQUEST_SCHEMA)

Emit = Callable[[str, Dict[str, Any]], Any]


# -- pure rules --------------------------------------------------------------


def fullScope(scope: str) -> str:
    """
    st2's C{get_datastore_full_scope}: C{all} stays, anything containing
    C{st2kv} stays, anything else gets C{st2kv.} in front (C{system} ->
    C{st2kv.system}, C{foo} -> C{st2kv.foo}, which validation then refuses).
    """
    if scope == ALL_SCOPE or "st2kv" in scope:
        return scope
    return f"st2kv.{scope}"


def checkScope(scope: str) -> None:
    """
    @raise Invalid: st2's C{Scope <scope> is not in allowed scopes list: ...}.
    """
    if scope not in ALLOWED_SCOPES:
        raise Invalid(f"Scope {scope} is not in allowed scopes list: {ALLOWED_SCOPES}.")


def storedName(scope: str, name: str, user: Optional[str]) -> str:
    """
    The name an item is stored under: C{<user>:<name>} in the user scope.
    """
    return f"{user}{USER_SEPARATOR}{name}" if scope == USER_SCOPE else name


def uidOf(scope: str, stored: str) -> str:
    return f"key_value_pair:{scope}:{stored}"


def notFound(stored: str) -> NotFound:
    return NotFound(f'The key "{stored}" does not exist in the StackStorm datastore.')


def noCryptoKey(keyPath: str, stored: str) -> Invalid:
    return Invalid(f"Crypto key not found in {keyPath}. Unable to encrypt / decrypt value for key {stored}.")


def checkUserParameter(user: Optional[str], requester: str) -> None:
    """
    st2's no-op RBAC rule: naming a user other than yourself needs RBAC.

    @raise Refused: when C{user} is given and is not C{requester}.
    """
    if user and user != requester:
        raise Refused(USER_PARAMETER_REFUSED)


def prefixRange(prefix: str) -> Dict[str, str]:
    """
    A store condition matching exactly the strings that start with
    C{prefix}: C{[prefix, successor)}, where the successor increments the
    last code point that can be incremented.  Both backends compare strings
    by UTF-8 bytes, which is code point order, so the range is exact.
    """
    chars = list(prefix)
    while chars:
        last = ord(chars.pop()) + 1
        if last == 0xD800:
            last = 0xE000
        if last <= 0x10FFFF:
            return {"$gte": prefix, "$lt": "".join(chars) + chr(last)}
    return {"$gte": prefix}


def presentDocument(doc: Mapping[str, Any], value: Optional[str] = None) -> Dict[str, Any]:
    """
    st2's C{KeyValuePairAPI.from_model}: the stored item as the API shows it.
    C{value} replaces the stored value (the decrypted plaintext), which also
    makes C{encrypted} false.  None-valued fields are left out; a user item
    shows its short name and its C{user}.
    """
    stored = doc["name"]
    out: Dict[str, Any] = {"id": doc["id"], "uid": doc.get("uid") or uidOf(doc["scope"], stored)}
    name, user = stored, None
    if doc["scope"] == USER_SCOPE and USER_SEPARATOR in stored:
        user, name = stored.split(USER_SEPARATOR, 1)
    secret = bool(doc.get("secret", False))
    out.update(
        name=name,
        scope=doc["scope"],
        value=doc.get("value") if value is None else value,
        secret=secret,
        encrypted=secret and value is None,
    )
    if user is not None:
        out["user"] = user
    for field in ("expire_timestamp", "description"):
        if doc.get(field) is not None:
            out[field] = doc[field]
    return {k: v for k, v in out.items() if v is not None}


def validateRequest(body: Any) -> Dict[str, Any]:
    """
    @raise Invalid: with jsonschema's message, as st2's router answers.
    """
    error = best_match(_VALIDATOR.iter_errors(body))
    if error is not None:
        raise Invalid(error.message)
    return dict(body)


# -- the service ---------------------------------------------------------------


class KeyService:
    """
    The datastore's operations, each as the API route with the same name
    does it, raising L{bwcd.errors} kinds with st2's faultstrings.

    @param store: an L{IStore}.
    @param clock: for C{ttl} and expiry.
    @param cryptoKey: the datastore key, or None when none could be read
        (secret writes and decrypting reads then fail with st2's 400).
    @param keyPath: the key file's path, for st2's "Crypto key not found in"
        message.
    @param emit: called with (trigger type, payload) after every change,
        for st2's C{core.st2.key_value_pair.*} internal triggers; payloads
        hold the masked documents, never a plaintext secret.
    @param purgeInterval: least seconds between two purges run by reads.
    """

    def __init__(
        self,
        store: IStore,
        clock: IReactorTime,
        cryptoKey: Optional[AESKey],
        keyPath: str = "",
        emit: Optional[Emit] = None,
        purgeInterval: float = 5.0,
    ) -> None:
        self._store = store
        self._clock = clock
        self.cryptoKey = cryptoKey
        self.keyPath = keyPath
        self._emit = emit
        self._purgeInterval = purgeInterval
        self._lastPurge: Optional[float] = None

    # -- helpers --------------------------------------------------------

    def _now(self) -> str:
        return isoformat(utcnow(self._clock))

    def _live(self) -> Dict[str, Any]:
        return {"live_until": {"$gt": self._now()}}

    async def _maybePurge(self) -> None:
        now = self._clock.seconds()
        if self._lastPurge is None or now - self._lastPurge >= self._purgeInterval:
            self._lastPurge = now
            await self.purgeExpired()

    async def purgeExpired(self) -> int:
        """
        Delete every expired item; how many were deleted.
        """
        removed = await self._store.delete(COLLECTION, {"live_until": {"$lte": self._now()}})
        if removed:
            log.debug("Purged {count} expired datastore items", count=removed)
        return removed

    def _decrypted(self, doc: Mapping[str, Any]) -> str:
        if self.cryptoKey is None:
            raise noCryptoKey(self.keyPath, doc["name"])
        try:
            return decrypt(self.cryptoKey, doc.get("value") or "")
        except CryptoError as e:
            raise Invalid(f'Failed to decrypt the value of key "{doc["name"]}": {e}') from None

    def _present(self, doc: Mapping[str, Any], decryptIt: bool) -> Dict[str, Any]:
        if decryptIt and doc.get("secret"):
            return presentDocument(doc, self._decrypted(doc))
        return presentDocument(doc)

    async def _findLive(self, scope: str, stored: str) -> Optional[Dict[str, Any]]:
        return await self._store.findOne(COLLECTION, dict(self._live(), scope=scope, name=stored))

    def _fire(self, trigger: str, payload: Dict[str, Any]) -> None:
        if self._emit is None:
            return
        try:
            self._emit(trigger, payload)
        except Exception:
            log.failure("Could not emit {trigger}", trigger=trigger)

    # -- reads ----------------------------------------------------------

    async def list(
        self,
        requester: str,
        scope: Optional[str] = None,
        prefix: Optional[str] = None,
        user: Optional[str] = None,
        decrypt: bool = False,
        limit: Optional[int] = 100,
        offset: int = 0,
        name: Optional[str] = None,
        isAdmin: bool = True,
    ) -> List[Dict[str, Any]]:
        """
        C{GET /v1/keys}: system items by default; C{user} or a user scope
        gives the requester's own user items; C{all} gives system items then
        the requester's user items, each query with its own limit and offset.

        @raise Invalid: C{Invalid scope: <scope>}.
        @raise Refused: another C{user}, or C{decrypt} of system items by a
            non-admin (with no RBAC every caller is an admin).
        """
        scope = fullScope(scope) if scope else SYSTEM_SCOPE
        if user:
            scope = USER_SCOPE
        if scope not in (SYSTEM_SCOPE, USER_SCOPE, ALL_SCOPE):
            raise Invalid(f"Invalid scope: {scope}")
        checkUserParameter(user, requester)
        if decrypt and scope != USER_SCOPE and not isAdmin:
            raise Refused(DECRYPT_REFUSED)
        owner = user or requester
        await self._maybePurge()
        scopes = [SYSTEM_SCOPE, USER_SCOPE] if scope == ALL_SCOPE else [scope]
        result: List[Dict[str, Any]] = []
        for each in scopes:
            filter: Dict[str, Any] = dict(self._live(), scope=each)
            head = f"{owner}{USER_SEPARATOR}" if each == USER_SCOPE else ""
            if name is not None:
                filter["name"] = head + name
            elif prefix or head:
                filter["name"] = prefixRange(head + (prefix or ""))
            docs = await self._store.find(COLLECTION, filter, sort=[("name", 1)], limit=limit, offset=offset)
            result.extend(self._present(doc, decrypt) for doc in docs)
        return result

    async def get(
        self,
        requester: str,
        name: str,
        scope: Optional[str] = None,
        user: Optional[str] = None,
        decrypt: bool = False,
    ) -> Dict[str, Any]:
        """
        C{GET /v1/keys/<name>}: a missing scope or C{all} means system; a
        C{user} means that user's item (only yourself without RBAC).
        C{decrypt} on a non-secret item returns it as it is.

        @raise Invalid: for a scope outside st2's list.
        @raise Refused: for another C{user}.
        @raise NotFound: C{The key "<stored name>" does not exist in the
            StackStorm datastore.}
        """
        scope, stored = self._address(requester, name, scope, user)
        await self._maybePurge()
        doc = await self._findLive(scope, stored)
        if doc is None:
            raise notFound(stored)
        return self._present(doc, decrypt)

    def _address(self, requester: str, name: str, scope: Optional[str], user: Optional[str]) -> Tuple[str, str]:
        scope = SYSTEM_SCOPE if not scope or scope == ALL_SCOPE else fullScope(scope)
        if user:
            scope = USER_SCOPE
        checkScope(scope)
        checkUserParameter(user, requester)
        return scope, storedName(scope, name, user or requester)

    async def lookup(self, scope: str, user: Optional[str], names: Iterable[str]) -> Dict[str, Dict[str, Any]]:
        """
        The live items named C{names} (short names) in C{scope}
        (C{st2kv.system} or C{st2kv.user} for C{user}), as stored: secrets
        stay ciphertext.  Missing names are absent from the answer.  For
        template rendering, which must not see another user's items and
        reads as a given user, not as a requester.
        """
        wanted = {storedName(scope, n, user): n for n in names}
        if not wanted:
            return {}
        docs = await self._store.find(COLLECTION, dict(self._live(), scope=scope, name={"$in": sorted(wanted)}))
        return {wanted[doc["name"]]: doc for doc in docs if doc["name"] in wanted}

    def decryptValue(self, ciphertext: str, reference: str = "") -> str:
        """
        Decrypt a stored secret with the datastore key (the C{decrypt_kv}
        filter's work).

        @raise Invalid: when there is no key.
        @raise CryptoError: when C{ciphertext} is not this key's ciphertext.
        """
        if self.cryptoKey is None:
            raise noCryptoKey(self.keyPath, reference)
        return decrypt(self.cryptoKey, ciphertext)

    # -- writes ---------------------------------------------------------

    async def set(self, requester: str, name: str, body: Any, isAdmin: bool = True) -> Dict[str, Any]:
        """
        C{PUT /v1/keys/<name>}: create or replace the item (the path name
        wins over the body's); answers the stored item, a secret as its
        ciphertext.  A write without C{ttl} clears an earlier expiry, as in
        st2, where the whole document is rebuilt.

        @raise Invalid: schema violations (jsonschema's text), a bad scope,
            no crypto key, or a pre-encrypted value this key cannot decrypt.
        @raise Refused: for another C{user}.
        """
        request = validateRequest(body)
        scope = fullScope(request.get("scope") or SYSTEM_SCOPE)
        checkScope(scope)
        user = request.get("user")
        checkUserParameter(user, requester)
        stored = storedName(scope, name, user or requester)
        value: str = request["value"]
        secret = bool(request.get("secret", False))
        if request.get("encrypted"):
            if not isAdmin:
                raise Refused(PRE_ENCRYPTED_REFUSED)
            if self.cryptoKey is None:
                raise noCryptoKey(self.keyPath, stored)
            try:
                decrypt(self.cryptoKey, value)
            except CryptoError:
                raise Invalid(
                    f'Failed to verify the integrity of the provided value for key "{stored}". '
                    "Ensure that the value is encrypted with the correct key and not corrupted."
                ) from None
            secret = True
        elif secret:
            if self.cryptoKey is None:
                raise noCryptoKey(self.keyPath, stored)
            value = encrypt(self.cryptoKey, value)
        doc: Dict[str, Any] = {
            "uid": uidOf(scope, stored),
            "name": stored,
            "scope": scope,
            "value": value,
            "secret": secret,
            "live_until": NEVER,
        }
        ttl = request.get("ttl")
        if ttl:
            try:
                expiry = isoformat(utcnow(self._clock) + timedelta(seconds=ttl))
            except OverflowError:
                raise Invalid(f"ttl {ttl} is out of range") from None
            doc["expire_timestamp"] = doc["live_until"] = expiry
        if isinstance(request.get("description"), str):
            doc["description"] = request["description"]

        await self.purgeExpired()
        saved, old = await self._save(doc)
        log.info("Datastore item {uid} {action} by {requester}", uid=saved["uid"], action="updated" if old else "created", requester=requester)
        shown = presentDocument(saved)
        if old is None:
            self._fire(TRIGGER_CREATE, shown)
        else:
            self._fire(TRIGGER_UPDATE, shown)
            if old.get("value") != saved.get("value"):
                self._fire(TRIGGER_VALUE_CHANGE, {"old_object": presentDocument(old), "new_object": shown})
        return shown

    async def _save(self, doc: Dict[str, Any]) -> Tuple[Dict[str, Any], Optional[Dict[str, Any]]]:
        """
        Insert, or replace the existing item keeping its id; a concurrent
        creator of the same key makes the insert fail, and the write then
        becomes a replace of what it created.
        """
        for _ in range(5):
            existing = await self._store.findOne(COLLECTION, {"scope": doc["scope"], "name": doc["name"]})
            if existing is not None:
                replaced = await self._store.replace(COLLECTION, dict(doc, id=existing["id"]))
                if replaced is not None:
                    return replaced, existing
                continue
            try:
                return await self._store.insert(COLLECTION, dict(doc, id=newId())), None
            except DuplicateKey:
                continue
        raise Invalid(f'Could not save key "{doc["name"]}": it keeps changing concurrently')

    async def delete(self, requester: str, name: str, scope: Optional[str] = None, user: Optional[str] = None) -> None:
        """
        C{DELETE /v1/keys/<name>}, addressed as L{get} does.

        @raise NotFound: st2's "does not exist" text.
        """
        scope, stored = self._address(requester, name, scope, user)
        doc = await self._findLive(scope, stored)
        if doc is None or not await self._store.deleteOne(COLLECTION, doc["id"]):
            raise notFound(stored)
        log.info("Datastore item {uid} deleted by {requester}", uid=doc.get("uid"), requester=requester)
        self._fire(TRIGGER_DELETE, presentDocument(doc))


__all__ = [
    "ALLOWED_SCOPES",
    "COLLECTION",
    "KeyService",
    "REQUEST_SCHEMA",
    "SYSTEM_SCOPE",
    "USER_SCOPE",
    "checkScope",
    "fullScope",
    "prefixRange",
    "presentDocument",
    "storedName",
]
