# -*- test-case-name: tests.test_store_health -*-
"""
Whether the store is up, learnt from the operations themselves.

Without this, every request made while the database is gone waits for its
own operation timeout before its 503, so a load balancer sees a slow node
rather than a down one, and requests pile up.  L{StoreHealth} wraps the one
L{IStore} the daemon builds and hands it to every consumer: the first
operation that fails with L{StoreUnavailable} marks the store down, and from
then on operations fail at once with L{StoreDown} (a L{StoreUnavailable},
so callers answer 503 with C{Retry-After} as before), until a probe (a
C{ping} bounded in time, repeated on the injected clock) succeeds.

Other errors (a duplicate key, a bad filter) say nothing about the store's
health and pass through untouched.
"""

from __future__ import annotations

from typing import Any, Callable, Optional

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from bwcd.store.interface import IStore, StoreUnavailable

log = Logger(namespace="bwcd.store")

#: seconds between probes while the store is down
PROBE_INTERVAL = 1.0
#: seconds a probe (or a health check's ping) may take
PING_TIMEOUT = 0.8


class StoreDown(StoreUnavailable):
    """
    An operation refused without trying, because the store is known down.
    """

    #: it never reached the store, so retrying it cannot have stored
    #: anything twice (L{bwcd.rules.acceptance})
    definite = True


def boundedPing(store: IStore, clock: IReactorTime, timeout: float) -> Deferred[bool]:
    """
    Whether C{store} answers a ping within C{timeout} seconds; never fails.
    """
    try:
        d: Deferred = store.ping()
    except Exception:
        log.failure("Store ping raised")
        return succeed(False)
    d.addTimeout(timeout, clock)
    return d.addCallbacks(bool, lambda f: False)


@implementer(IStore)
class StoreHealth:
    """
    An L{IStore} that forwards to C{store} and keeps track of its health.

    @ivar down: whether operations are refused right now.
    @ivar reason: why the store was marked down (the failed operation's
        error), or C{None} while it is up.
    @param onChange: called with C{(down, reason)} at each change (metrics,
        tests).
    """

    def __init__(
        self,
        store: IStore,
        clock: IReactorTime,
        probeInterval: float = PROBE_INTERVAL,
        pingTimeout: float = PING_TIMEOUT,
        onChange: Optional[Callable[[bool, Optional[str]], None]] = None,
    ) -> None:
        self.store = store
        self._clock = clock
        self._probeInterval = probeInterval
        self.pingTimeout = pingTimeout
        self._onChange = onChange
        self.down = False
        self.reason: Optional[str] = None
        self._probe: Optional[LoopingCall] = None
        self._probing = False
        self._stopped = False

    @property
    def name(self) -> str:  # type: ignore[override]
        return self.store.name

    def __getattr__(self, name: str) -> Any:
        # backend-specific attributes (a SQLite path, a Mongo database name)
        # stay reachable for logs and tests
        if name == "store":
            raise AttributeError(name)
        return getattr(self.store, name)

    def __repr__(self) -> str:
        return f"<StoreHealth {'down' if self.down else 'up'} {self.store!r}>"

    # -- the state ------------------------------------------------------------------

    def markDown(self, reason: str) -> None:
        """
        Refuse operations from now on and probe until the store answers.
        """
        if self.down or self._stopped:
            return
        self.down, self.reason = True, reason
        log.error("Store {name} is down ({reason}); refusing operations until it answers", name=self.name, reason=reason)
        self._notify()
        probe = self._probe = LoopingCall(self._probeOnce)
        probe.clock = self._clock
        probe.start(self._probeInterval, now=False).addErrback(
            lambda f: log.failure("Store probe loop failed", f)
        )

    def markUp(self) -> None:
        """
        Accept operations again (a probe answered).
        """
        self._stopProbe()
        if not self.down:
            return
        log.info("Store {name} answers again after: {reason}", name=self.name, reason=self.reason)
        self.down, self.reason = False, None
        self._notify()

    def _notify(self) -> None:
        if self._onChange is not None:
            try:
                self._onChange(self.down, self.reason)
            except Exception:
                log.failure("Store health listener failed")

    def _stopProbe(self) -> None:
        probe, self._probe = self._probe, None
        if probe is not None and probe.running:
            probe.stop()

    def _probeOnce(self) -> Optional[Deferred]:
        if self._probing:
            return None  # the previous probe is still out (cannot happen with pingTimeout < interval)
        self._probing = True

        def done(answers: bool) -> None:
            self._probing = False
            if answers and self.down:
                self.markUp()

        return boundedPing(self.store, self._clock, self.pingTimeout).addCallback(done)

    def check(self) -> Deferred[Optional[str]]:
        """
        For health checks: C{None} when the store is up and answers a ping
        within C{pingTimeout}, else why not.  A failed ping marks the store
        down; it is never slower than C{pingTimeout}.
        """
        if self.down:
            return succeed(self.reason)

        def answered(ok: bool) -> Optional[str]:
            if ok:
                return None
            reason = f"{self.name} did not answer a ping within {self.pingTimeout}s"
            self.markDown(reason)
            return self.reason if self.down else reason

        return boundedPing(self.store, self._clock, self.pingTimeout).addCallback(answered)

    # -- forwarding -----------------------------------------------------------------

    def _call(self, method: str, *args: Any, **kwargs: Any) -> Deferred:
        if self.down:
            return fail(StoreDown(f"Storage is down: {self.reason}"))
        try:
            d = getattr(self.store, method)(*args, **kwargs)
        except Exception:
            return fail(Failure())
        return d.addErrback(self._observe)

    def _observe(self, failure: Failure) -> Failure:
        if failure.check(StoreUnavailable) and not failure.check(StoreDown):
            self.markDown(str(failure.value) or type(failure.value).__name__)
        return failure

    def start(self) -> Deferred[None]:
        self._stopped = False
        return self.store.start()

    def stop(self) -> Deferred[None]:
        self._stopped = True
        self._stopProbe()
        return self.store.stop()

    def ping(self) -> Deferred[bool]:
        return self.store.ping()

    def insert(self, collection, doc):
        return self._call("insert", collection, doc)

    def get(self, collection, docId):
        return self._call("get", collection, docId)

    def findOne(self, collection, filter, sort=()):
        return self._call("findOne", collection, filter, sort)

    def find(self, collection, filter, sort=(), limit=None, offset=0):
        return self._call("find", collection, filter, sort, limit, offset)

    def count(self, collection, filter):
        return self._call("count", collection, filter)

    def update(self, collection, filter, set=None, push=None, sort=(), currentDate=()):
        return self._call("update", collection, filter, set, push, sort, currentDate)

    def replace(self, collection, doc):
        return self._call("replace", collection, doc)

    def delete(self, collection, filter):
        return self._call("delete", collection, filter)

    def deleteOne(self, collection, docId):
        return self._call("deleteOne", collection, docId)


__all__ = ["PING_TIMEOUT", "PROBE_INTERVAL", "StoreDown", "StoreHealth", "boundedPing"]
