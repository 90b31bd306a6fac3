# -*- test-case-name: tests.test_security -*-
"""
Limits on password logins.

A login costs a quarter of a second of bcrypt on a pool thread, and it needs
no credentials to ask for; so without limits a flood of logins fills the
thread pool's queue and every other request that needs a thread (store
reads, other logins) waits behind it, and one address may guess passwords as
fast as the CPU allows.  Two limits answer this, both refusing with
L{bwcd.errors.TooMany} (429 with C{Retry-After}) instead of queueing:

  - L{RateLimiter}: a token bucket per client address;
  - L{BoundedGate}: at most so many checks running and so many waiting.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from typing import Callable, Optional, TypeVar

import attrs
from twisted.internet.defer import Deferred, DeferredSemaphore
from twisted.internet.interfaces import IReactorTime

from bwcd.errors import TooMany

__all__ = ["BoundedGate", "Bucket", "RateLimiter", "tooMany"]

T = TypeVar("T")

MSG_TOO_MANY_LOGINS = "Too many login attempts; try again later."
MSG_LOGINS_BUSY = "Too many logins in progress; try again shortly."


def tooMany(retryAfter: float, message: str = MSG_TOO_MANY_LOGINS) -> TooMany:
    """
    The 429 error, with C{Retry-After} in whole seconds (at least 1).
    """
    return TooMany(message, headers={"Retry-After": str(max(1, math.ceil(retryAfter)))})


@attrs.define
class Bucket:
    """
    One client's tokens as of C{stamp}.
    """

    tokens: float
    stamp: float


class RateLimiter:
    """
    A token bucket per key (a client address): C{burst} attempts at once,
    then one more every C{1 / rate} seconds.

    At most C{maxKeys} buckets are kept; beyond that the least recently used
    one is forgotten (a forgotten client starts again with a full bucket),
    so a flood from many addresses cannot grow memory without bound.

    @param clock: gives the time (C{seconds()}); the reactor in the daemon,
        a L{twisted.internet.task.Clock} in tests.
    """

    def __init__(self, clock: IReactorTime, rate: float = 0.5, burst: int = 20, maxKeys: int = 10000) -> None:
        if rate <= 0 or burst < 1 or maxKeys < 1:
            raise ValueError("rate must be positive, burst and maxKeys at least 1")
        self._clock = clock
        self.rate = rate
        self.burst = burst
        self.maxKeys = maxKeys
        self._buckets: "OrderedDict[str, Bucket]" = OrderedDict()

    def _bucket(self, key: str, now: float) -> Bucket:
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = Bucket(float(self.burst), now)
            self._buckets[key] = bucket
            while len(self._buckets) > self.maxKeys:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(key)
            bucket.tokens = min(float(self.burst), bucket.tokens + (now - bucket.stamp) * self.rate)
            bucket.stamp = now
        return bucket

    def take(self, key: str) -> Optional[float]:
        """
        Spend one token of C{key}'s bucket.

        @return: C{None} when allowed, else the seconds until a token is back.
        """
        now = self._clock.seconds()
        bucket = self._bucket(key, now)
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return None
        return (1.0 - bucket.tokens) / self.rate

    def check(self, key: str) -> None:
        """
        Like L{take}, raising instead of answering.

        @raise TooMany: the bucket is empty.
        """
        wait = self.take(key)
        if wait is not None:
            raise tooMany(wait)

    def __len__(self) -> int:
        return len(self._buckets)


class BoundedGate:
    """
    At most C{running} calls at once and at most C{waiting} more queued;
    a call beyond both is refused at once.
    """

    def __init__(self, running: int = 2, waiting: int = 32, retryAfter: float = 1.0, message: str = MSG_LOGINS_BUSY) -> None:
        if running < 1 or waiting < 0:
            raise ValueError("running must be at least 1, waiting at least 0")
        self._semaphore = DeferredSemaphore(running)
        self.waiting = waiting
        self.retryAfter = retryAfter
        self.message = message

    @property
    def queued(self) -> int:
        """
        Calls waiting for a slot.
        """
        return len(self._semaphore.waiting)

    @property
    def busy(self) -> int:
        """
        Calls running now.
        """
        return self._semaphore.limit - self._semaphore.tokens

    def run(self, f: Callable[[], Deferred[T]]) -> Deferred[T]:
        """
        Call C{f} when a slot is free and fire with its result.

        @raise TooMany: every slot is taken and the queue is full.
        """
        if self._semaphore.tokens == 0 and self.queued >= self.waiting:
            raise tooMany(self.retryAfter, self.message)
        return self._semaphore.run(f)
