# -*- test-case-name: tests.test_rules_engine -*-
"""
The in-memory view of rules, triggers and trigger types that the webhook
path and the rules engine read for every event.

Reading the store per event would cost a round trip per webhook and make
matching cost grow with the number of rules; instead every process keeps:

  - trigger ref -> the enabled rules for it (standard and backstop), with
    their criteria compiled, so an event only ever looks at its own rules;
  - hook name -> the webhook triggers registered under it;
  - every trigger and trigger type by ref.

Keeping it current:

  - a change made through this process is applied here before the API
    answers, so the very next event sees it;
  - every change also rewrites a small change marker in the store, and each
    process reads that marker every C{pollInterval} seconds and reloads
    everything when it differs from the one its last reload saw, so other
    processes sharing the database follow within about a second;
  - reloads and local changes are serialised by one lock, so a reload that
    started before a local change cannot overwrite it with older data.
"""

from __future__ import annotations

import json
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple

import attrs
from twisted.application.service import Service
from twisted.internet.defer import Deferred, DeferredLock, ensureDeferred
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from bwcd.rules.criteria import CompiledCriteria, compileCriteria
from bwcd.rules.triggers import webhookUrl
from bwcd.store.interface import IStore, StoreError, newId
from bwcd.store.kv import readValue, replaceValue, writeValue

log = Logger(namespace="bwcd.rules.index")

#: the C{kv} document whose C{value} changes whenever rules, triggers or
#: trigger types change (the kv API should hide names starting with C{__bwcd})
MARKER_NAME = "__bwcd.rules.revision"


_encode = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


@attrs.frozen
class IndexedRule:
    """
    A rule as the index keeps it: what matching needs, with the whole
    document kept as compact JSON and decoded only when the rule is
    enforced.  (Ten thousand rules as decoded dicts cost about 40 MB;
    this way they cost a few.)
    """

    id: str
    ref: str
    name: str
    uid: str
    pack: str
    enabled: bool
    triggerRef: Optional[str]
    backstop: bool
    criteria: Optional[CompiledCriteria]
    raw: bytes

    @classmethod
    def fromDocument(cls, doc: Mapping[str, Any]) -> "IndexedRule":
        enabled = bool(doc.get("enabled"))
        return cls(
            id=doc["id"],
            ref=doc.get("ref", ""),
            name=doc.get("name", ""),
            uid=doc.get("uid", ""),
            pack=doc.get("pack", ""),
            enabled=enabled,
            triggerRef=(doc.get("trigger") or {}).get("ref"),
            backstop=(doc.get("type") or {}).get("ref") == "backstop",
            criteria=compileCriteria(doc.get("criteria") or {}) if enabled else None,
            raw=_encode(doc).encode("utf-8"),
        )

    @property
    def doc(self) -> Dict[str, Any]:
        """
        The stored rule document (a new copy on every access).
        """
        return json.loads(self.raw)


@attrs.frozen
class RuleSet:
    """
    The enabled rules of one trigger, standard ones first evaluated.
    """

    standard: Tuple[IndexedRule, ...] = ()
    backstop: Tuple[IndexedRule, ...] = ()


EMPTY = RuleSet()


def _sortKey(rule: IndexedRule) -> Tuple[str, str]:
    return (rule.pack, rule.name)


class _Snapshot:
    """
    Everything the index holds; replaced whole by a reload.
    """

    def __init__(self) -> None:
        self.rules: Dict[str, IndexedRule] = {}  # id -> rule
        self.ruleIds: Dict[Optional[str], set] = {}  # trigger ref -> ids of its rules
        self.triggers: Dict[str, Dict[str, Any]] = {}  # ref -> doc
        self.triggerTypes: Dict[str, Dict[str, Any]] = {}  # ref -> doc
        self.byTrigger: Dict[Optional[str], RuleSet] = {}
        self.hooks: Dict[str, List[Dict[str, Any]]] = {}

    def addRule(self, rule: IndexedRule) -> None:
        self.rules[rule.id] = rule
        self.ruleIds.setdefault(rule.triggerRef, set()).add(rule.id)

    def dropRule(self, ruleId: str) -> Optional[IndexedRule]:
        rule = self.rules.pop(ruleId, None)
        if rule is not None:
            self.ruleIds.get(rule.triggerRef, set()).discard(ruleId)
        return rule

    def rebuildTrigger(self, triggerRef: Optional[str]) -> None:
        rules = sorted((self.rules[i] for i in self.ruleIds.get(triggerRef, ()) if self.rules[i].enabled), key=_sortKey)
        standard = tuple(r for r in rules if not r.backstop)
        backstop = tuple(r for r in rules if r.backstop)
        if standard or backstop:
            self.byTrigger[triggerRef] = RuleSet(standard, backstop)
        else:
            self.byTrigger.pop(triggerRef, None)

    def rebuildAll(self) -> None:
        self.byTrigger = {}
        for ref in list(self.ruleIds):
            self.rebuildTrigger(ref)
        self.hooks = {}
        for trigger in self.triggers.values():
            url = webhookUrl(trigger)
            if url is not None:
                self.hooks.setdefault(url, []).append(trigger)

    def rebuildHook(self, url: str) -> None:
        triggers = [t for t in self.triggers.values() if webhookUrl(t) == url]
        if triggers:
            self.hooks[url] = triggers
        else:
            self.hooks.pop(url, None)


class RuleIndex(Service):
    """
    As a service: starting it loads the index and polls for other
    processes' changes; stopping it stops the polling.

    @param pollInterval: seconds between reads of the change marker.
    """

    def __init__(self, store: IStore, clock: IReactorTime, pollInterval: float = 1.0) -> None:
        self._store = store
        self._clock = clock
        self._pollInterval = pollInterval
        self._snapshot = _Snapshot()
        self._lock = DeferredLock()
        self._seenMarker: Optional[str] = None
        self._loop: Optional[LoopingCall] = None
        self._loopDone: Optional[Deferred] = None
        self._listeners: List[Callable[[], None]] = []
        self.loaded = False

    # -- reads (per event; no I/O) ------------------------------------------

    def rulesFor(self, triggerRef: str) -> RuleSet:
        """
        The enabled rules whose trigger is C{triggerRef}.
        """
        return self._snapshot.byTrigger.get(triggerRef, EMPTY)

    def hooksFor(self, url: str) -> List[Dict[str, Any]]:
        """
        The webhook triggers registered under C{url} (leading and trailing
        C{/} ignored).
        """
        return self._snapshot.hooks.get(url.strip("/"), [])

    def hooks(self) -> List[Dict[str, Any]]:
        """
        Every webhook trigger, sorted by hook name.
        """
        snapshot = self._snapshot
        return [t for url in sorted(snapshot.hooks) for t in snapshot.hooks[url]]

    def trigger(self, ref: str) -> Optional[Dict[str, Any]]:
        return self._snapshot.triggers.get(ref)

    def triggerType(self, ref: str) -> Optional[Dict[str, Any]]:
        return self._snapshot.triggerTypes.get(ref)

    def ruleCount(self) -> int:
        return len(self._snapshot.rules)

    def allTriggers(self) -> List[Dict[str, Any]]:
        """
        Every trigger (the timer service picks its timers from them).
        """
        return list(self._snapshot.triggers.values())

    # -- change listeners ------------------------------------------------------

    def addChangeListener(self, listener: Callable[[], None]) -> None:
        """
        Call C{listener} (no arguments, synchronously) after every reload
        and local change, so a view derived from the index (the timers)
        follows it.  It must not change the index.
        """
        self._listeners.append(listener)

    def _changed(self) -> None:
        for listener in list(self._listeners):
            try:
                listener()
            except Exception:
                log.failure("Rule index change listener {listener} failed", listener=listener)

    # -- loading -------------------------------------------------------------

    async def _readMarker(self) -> Optional[str]:
        return await readValue(self._store, MARKER_NAME)

    async def _pages(self, collection: str, pageSize: int = 1000):
        """
        Every document of C{collection}, read a page at a time (by id) so a
        reload never holds all of them decoded at once.
        """
        last: Optional[str] = None
        while True:
            filter = {} if last is None else {"id": {"$gt": last}}
            page = await self._store.find(collection, filter, sort=[("id", 1)], limit=pageSize)
            for doc in page:
                yield doc
            if len(page) < pageSize:
                return
            last = page[-1]["id"]

    async def reload(self) -> None:
        """
        Read everything from the store and replace the index at once.
        """
        await self._lock.acquire()
        try:
            marker = await self._readMarker()
            snapshot = _Snapshot()
            async for doc in self._pages("rules"):
                snapshot.addRule(IndexedRule.fromDocument(doc))
            async for doc in self._pages("triggers"):
                snapshot.triggers[doc["ref"]] = doc
            async for doc in self._pages("triggertypes"):
                snapshot.triggerTypes[doc["ref"]] = doc
            snapshot.rebuildAll()
            self._snapshot = snapshot
            self._seenMarker = marker
            self.loaded = True
        finally:
            self._lock.release()
        log.debug("Rule index loaded: {rules} rules, {hooks} webhooks", rules=len(snapshot.rules), hooks=len(snapshot.hooks))
        self._changed()

    async def poll(self) -> bool:
        """
        Reload when another process (or this one) changed something since
        the last reload; fire with whether it reloaded.
        """
        marker = await self._readMarker()
        if marker == self._seenMarker and self.loaded:
            return False
        await self.reload()
        return True

    def startService(self) -> Deferred:  # type: ignore[override]
        super().startService()

        async def loadAndPoll() -> None:
            await self.reload()
            if self.running:
                self.start()

        return ensureDeferred(loadAndPoll())

    def stopService(self) -> None:
        super().stopService()
        self.stop()

    def start(self) -> None:
        """
        Poll the change marker every C{pollInterval} seconds.  Call after a
        first L{reload}.
        """
        if self._loop is not None:
            return

        def tick() -> Deferred:
            d = ensureDeferred(self.poll())
            d.addErrback(self._pollFailed)
            return d

        self._loop = LoopingCall(tick)
        self._loop.clock = self._clock
        self._loopDone = self._loop.start(self._pollInterval, now=False)

    def _pollFailed(self, failure: Any) -> None:
        if failure.check(StoreError):
            log.warn("Could not check for rule changes: {error}", error=failure.getErrorMessage())
        else:
            log.failure("Could not check for rule changes", failure)

    def stop(self) -> None:
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        self._loop = None

    # -- local changes ---------------------------------------------------------

    async def lock(self) -> None:
        """
        Take the lock that serialises changes and reloads; pair with
        L{unlock}.  API handlers hold it from their store write until the
        index reflects it.
        """
        await self._lock.acquire()

    def unlock(self) -> None:
        self._lock.release()

    def putRule(self, doc: Dict[str, Any], previous: Optional[Mapping[str, Any]] = None) -> None:
        """
        Add or replace a rule (by id).
        """
        snapshot = self._snapshot
        old = snapshot.dropRule(doc["id"])
        rule = IndexedRule.fromDocument(doc)
        snapshot.addRule(rule)
        refs = {rule.triggerRef}
        if old is not None:
            refs.add(old.triggerRef)
        elif previous is not None:
            refs.add((previous.get("trigger") or {}).get("ref"))
        for ref in refs:
            snapshot.rebuildTrigger(ref)
        self._changed()

    def removeRule(self, doc: Mapping[str, Any]) -> None:
        snapshot = self._snapshot
        old = snapshot.dropRule(doc["id"])
        snapshot.rebuildTrigger(old.triggerRef if old is not None else (doc.get("trigger") or {}).get("ref"))
        self._changed()

    def putTrigger(self, doc: Dict[str, Any]) -> None:
        snapshot = self._snapshot
        old = snapshot.triggers.get(doc["ref"])
        snapshot.triggers[doc["ref"]] = doc
        for trigger in (old, doc):
            url = webhookUrl(trigger) if trigger else None
            if url is not None:
                snapshot.rebuildHook(url)
        self._changed()

    def removeTrigger(self, ref: str) -> None:
        snapshot = self._snapshot
        old = snapshot.triggers.pop(ref, None)
        url = webhookUrl(old) if old else None
        if url is not None:
            snapshot.rebuildHook(url)
        self._changed()

    def putTriggerType(self, doc: Dict[str, Any]) -> None:
        self._snapshot.triggerTypes[doc["ref"]] = doc

    async def publish(self) -> None:
        """
        Tell every process sharing the store that something changed.

        When the marker is still the one this process last saw (a
        conditional update, atomic in the store), no other process changed
        anything meanwhile and this index, which already holds the local
        change, stays as it is.  Otherwise the marker this process saw is
        left as it was, so its own next poll reloads everything, other
        processes' changes included.
        """
        value = newId()
        if self.loaded and self._seenMarker is not None:
            if await replaceValue(self._store, MARKER_NAME, self._seenMarker, value):
                self._seenMarker = value
                return
        await writeValue(self._store, MARKER_NAME, value)


__all__ = ["EMPTY", "IndexedRule", "MARKER_NAME", "RuleIndex", "RuleSet"]
