# -*- test-case-name: tests.test_webhook_policies -*-
"""
The webhook policies in force: stored in the store (from packs and from the
API), held in memory for the webhook path, kept current across processes.

As with the rule index, the webhook path reads no store: the policies, their
secrets (read from their files or the datastore when policies are loaded)
and each hook's rate bucket are in memory.  A change made anywhere rewrites
a change marker in the store; every process reads it every C{pollInterval}
seconds and reloads when it differs (and re-reads secrets every
C{secretRefresh} seconds anyway, so a rotated secret file or datastore key
takes effect without a restart).  A policy whose secret cannot be read
stays in force with no secret: its hook refuses everything (fail closed)
until the secret is readable.
"""

from __future__ import annotations

from typing import Any, Dict, List, Mapping, Optional, Tuple
from urllib.parse import unquote

import attrs
from twisted.application.service import Service
from twisted.internet.defer import Deferred, DeferredLock, ensureDeferred
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from bwcd.auth.limits import RateLimiter
from bwcd.store.interface import IStore, StoreError, newId
from bwcd.store.kv import readValue, writeValue
from bwcd.webhooks.dedup import Deliveries
from bwcd.webhooks.policy import Policy, PolicyError, normaliseUrl, parsePolicy

__all__ = ["ActivePolicy", "COLLECTION", "MARKER_NAME", "PolicyIndex", "SecretError", "readSecretFile"]

log = Logger(namespace="bwcd.webhooks.policies")

COLLECTION = "webhookpolicies"
MARKER_NAME = "__bwcd.webhookpolicies.revision"
WEBHOOK_PREFIXES = (b"/v1/webhooks/", b"/api/v1/webhooks/")


class SecretError(Exception):
    """
    A secret that cannot be read; C{field} names the policy key.
    """

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field


def readSecretFile(path: str, field: str = "verify.secret_file") -> bytes:
    """
    The secret in file C{path}, surrounding whitespace (a trailing newline)
    stripped.

    @raise SecretError: unreadable or empty.
    """
    try:
        with open(path, "rb") as f:
            value = f.read().strip()
    except OSError as e:
        raise SecretError(field, f"cannot read {path}: {e.strerror or e}") from None
    if not value:
        raise SecretError(field, f"{path} is empty")
    return value


@attrs.define
class ActivePolicy:
    """
    A policy with what the webhook path needs at hand.
    """

    policy: Policy
    secrets: Tuple[bytes, ...] = ()
    limiter: Optional[RateLimiter] = None
    #: the stored document
    doc: Mapping[str, Any] = attrs.Factory(dict)


class PolicyIndex(Service):
    """
    As a service: starting it loads the policies and follows changes;
    stopping it stops following.

    @param keys: the datastore's L{bwcd.datastore.keys.KeyService}, for
        C{secret_key} (None: such policies have no secret).
    """

    def __init__(
        self, store: IStore, clock: IReactorTime, keys: Any = None, pollInterval: float = 1.0, secretRefresh: float = 60.0
    ) -> None:
        self._store = store
        self._clock = clock
        self._keys = keys
        self._pollInterval = pollInterval
        self._secretRefresh = secretRefresh
        self._active: Dict[str, ActivePolicy] = {}
        self._lock = DeferredLock()
        self._seenMarker: Optional[str] = None
        self._lastLoad = 0.0
        self._loop: Optional[LoopingCall] = None
        self._purgeLoop: Optional[LoopingCall] = None
        self.deliveries = Deliveries(store, clock)
        self.loaded = False

    # -- reads (per request; no I/O) -----------------------------------------

    def get(self, url: str) -> Optional[ActivePolicy]:
        return self._active.get(normaliseUrl(url))

    def all(self) -> List[ActivePolicy]:
        return [self._active[u] for u in sorted(self._active)]

    def bodyLimit(self, method: Optional[bytes], uri: Optional[bytes]) -> Optional[Tuple[str, int]]:
        """
        The hook and its C{max_body_bytes} for a request known so far by
        its method and raw URI (before its body arrives), or None.
        """
        if method != b"POST" or not uri or not self._active:
            return None
        path = uri.split(b"?", 1)[0]
        for prefix in WEBHOOK_PREFIXES:
            if path.startswith(prefix):
                active = self.get(unquote(path[len(prefix):].decode("utf-8", "replace")))
                if active is not None and active.policy.limits.maxBodyBytes is not None:
                    return active.policy.url, active.policy.limits.maxBodyBytes
                return None
        return None

    # -- secrets ----------------------------------------------------------------

    async def resolveSecret(self, fileField: str, path: Optional[str], keyField: str, name: Optional[str]) -> Optional[bytes]:
        """
        One secret by reference (a file or a datastore key), or None when
        not referenced.

        @raise SecretError: referenced but unreadable.
        """
        if path is not None:
            return readSecretFile(path, fileField)
        if name is None:
            return None
        if self._keys is None:
            raise SecretError(keyField, "the datastore is not available")
        found = (await self._keys.lookup("st2kv.system", None, [name])).get(name)
        if found is None:
            raise SecretError(keyField, f"no datastore key {name!r} (system scope)")
        value = found.get("value")
        if found.get("secret"):
            try:
                value = self._keys.decryptValue(value, name)
            except Exception as e:
                raise SecretError(keyField, f"cannot decrypt datastore key {name!r}: {getattr(e, 'faultstring', e)}") from None
        if not isinstance(value, str) or not value.strip():
            raise SecretError(keyField, f"datastore key {name!r} is empty")
        return value.strip().encode("utf-8")

    async def secretsOf(self, policy: Policy) -> Tuple[bytes, ...]:
        """
        The current and previous secrets of C{policy}'s C{verify}.

        @raise SecretError: the current one is unreadable (a previous one
            that is unreadable is left out, and logged).
        """
        v = policy.verify
        if v is None:
            return ()
        current = await self.resolveSecret("verify.secret_file", v.secretFile, "verify.secret_key", v.secretKey)
        secrets = [current] if current else []
        try:
            previous = await self.resolveSecret("verify.previous_secret_file", v.previousSecretFile, "verify.previous_secret_key", v.previousSecretKey)
        except SecretError as e:
            log.warn("Webhook policy {url}: previous secret ignored: {error}", url=policy.url, error=str(e))
            previous = None
        if previous:
            secrets.append(previous)
        return tuple(secrets)

    # -- loading --------------------------------------------------------------------

    async def _readMarker(self) -> Optional[str]:
        return await readValue(self._store, MARKER_NAME)

    async def reload(self) -> None:
        """
        Read every policy and its secrets, and replace what is in force.
        """
        await self._lock.acquire()
        try:
            marker = await self._readMarker()
            docs = await self._store.find(COLLECTION, {}, sort=[("url", 1)])
            active: Dict[str, ActivePolicy] = {}
            for doc in docs:
                try:
                    policy = parsePolicy({k: v for k, v in doc.items() if k not in ("id", "pack", "metadata_file")})
                except PolicyError as e:
                    log.error("Stored webhook policy {url} ignored: {error}", url=doc.get("url"), error=str(e))
                    continue
                try:
                    secrets = await self.secretsOf(policy)
                except SecretError as e:
                    log.error("Webhook policy {url}: {error}; the hook refuses every request until it can be read", url=policy.url, error=str(e))
                    secrets = ()
                previous = self._active.get(policy.url)
                active[policy.url] = ActivePolicy(policy, secrets, self._limiterFor(policy, previous), doc)
            self._active = active
            self._seenMarker = marker
            self._lastLoad = self._clock.seconds()
            self.loaded = True
        finally:
            self._lock.release()
        log.info("Webhook policies loaded: {count}", count=len(active))

    def _limiterFor(self, policy: Policy, previous: Optional[ActivePolicy]) -> Optional[RateLimiter]:
        limits = policy.limits
        if limits.perSecond is None:
            return None
        old = previous.limiter if previous is not None else None
        if old is not None and old.rate == limits.perSecond and old.burst == limits.burst:
            return old
        return RateLimiter(self._clock, rate=limits.perSecond, burst=limits.burst or 1, maxKeys=1)

    async def poll(self) -> bool:
        """
        Reload when the marker changed, or when secrets are due a re-read.
        """
        marker = await self._readMarker()
        if marker == self._seenMarker and self.loaded and self._clock.seconds() - self._lastLoad < self._secretRefresh:
            return False
        await self.reload()
        return True

    async def publish(self) -> None:
        """
        Tell every process sharing the store that the policies changed.
        """
        await writeValue(self._store, MARKER_NAME, newId())

    # -- writes ------------------------------------------------------------------------

    async def put(self, policy: Policy, pack: Optional[str] = None, metadataFile: Optional[str] = None) -> Tuple[Dict[str, Any], bool]:
        """
        Store C{policy} (replacing the one for its url), publish, reload.

        @return: the stored document and whether it was created.
        """
        doc: Dict[str, Any] = dict(policy.document)
        if pack is not None:
            doc["pack"] = pack
        if metadataFile is not None:
            doc["metadata_file"] = metadataFile
        previous = await self._store.findOne(COLLECTION, {"url": policy.url})
        if previous is not None:
            doc["id"] = previous["id"]
            if previous == doc:
                return doc, False
            await self._store.replace(COLLECTION, doc)
        else:
            doc["id"] = newId()
            await self._store.insert(COLLECTION, doc)
        await self._changed()
        return doc, previous is None

    async def delete(self, url: str) -> bool:
        doc = await self._store.findOne(COLLECTION, {"url": normaliseUrl(url)})
        if doc is None:
            return False
        await self._store.deleteOne(COLLECTION, doc["id"])
        await self._changed()
        return True

    async def stored(self, url: Optional[str] = None) -> List[Dict[str, Any]]:
        """
        The stored documents (of one url, or all), by url.
        """
        filter = {} if url is None else {"url": normaliseUrl(url)}
        return await self._store.find(COLLECTION, filter, sort=[("url", 1)])

    async def _changed(self) -> None:
        try:
            await self.publish()
        except StoreError as e:
            log.warn("Could not publish webhook policy changes: {error}", error=str(e))
        if self.loaded:
            await self.reload()

    # -- service ------------------------------------------------------------------------

    def startService(self) -> Deferred:  # type: ignore[override]
        super().startService()

        async def loadAndFollow() -> None:
            await self.reload()
            if self.running:
                self._startLoops()

        return ensureDeferred(loadAndFollow())

    def _startLoops(self) -> None:
        def tick() -> Deferred:
            d = ensureDeferred(self.poll())
            d.addErrback(lambda f: log.warn("Could not check for webhook policy changes: {error}", error=f.getErrorMessage()))
            return d

        def purge() -> Deferred:
            d = ensureDeferred(self.deliveries.purgeExpired())
            d.addErrback(lambda f: log.warn("Could not purge expired delivery records: {error}", error=f.getErrorMessage()))
            return d

        self._loop = LoopingCall(tick)
        self._loop.clock = self._clock
        self._loop.start(self._pollInterval, now=False)
        self._purgeLoop = LoopingCall(purge)
        self._purgeLoop.clock = self._clock
        self._purgeLoop.start(3600, now=False)

    def stopService(self) -> None:  # type: ignore[override]
        super().stopService()
        for loop in (self._loop, self._purgeLoop):
            if loop is not None and loop.running:
                loop.stop()
        self._loop = self._purgeLoop = None
