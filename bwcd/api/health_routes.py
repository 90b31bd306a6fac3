# -*- test-case-name: tests.test_health_metrics -*-
"""
C{/v1/health} and C{/metrics}: what load balancers and Prometheus ask.

Both answer without credentials: a health probe has none, and C{/metrics}
is kept off the public nginx site instead (see etc/nginx/bwcd.conf).
"""

from __future__ import annotations

from typing import Any, Callable

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from bwcd.api.framework import Api, Reply
from bwcd.metrics import Metrics
from bwcd.store.interface import IStore

PING_TIMEOUT = 5.0

log = Logger(namespace="bwcd.api")


async def storeAnswers(store: IStore, clock: IReactorTime, timeout: float = PING_TIMEOUT) -> bool:
    """
    Whether the store answers a trivial read within C{timeout} seconds.
    """
    d: Deferred = store.ping()
    d.addTimeout(timeout, clock)
    try:
        return bool(await d)
    except Exception:
        return False


def installHealthRoutes(api: Api, store: IStore, clock: IReactorTime, metrics: Metrics, runningChildren: Callable[[], int], metricsEnabled: bool = True) -> None:
    @api.route(["/v1/health", "/health"], ["GET"], auth=False, needsStore=False)
    async def health(request, principal: Any):
        ok = api.ready and await storeAnswers(store, clock)
        body = {"status": "ok" if ok else "unavailable", "storage": getattr(store, "name", "unknown"), "ready": api.ready}
        if not ok:
            body["faultstring"] = "bwcd is starting" if not api.ready else "Storage does not answer."
        return Reply(body, 200 if ok else 503)

    if not metricsEnabled:
        return

    @api.route("/metrics", ["GET"], auth=False, needsStore=False)
    async def scrape(request, principal: Any):
        if api.ready:
            try:
                await metrics.refresh(store.count, runningChildren())
            except Exception:
                # the counters are still worth serving when the store is down
                log.failure("Reading state gauges for /metrics failed")
        return Reply(raw=metrics.render(), contentType=metrics.contentType)
