# -*- test-case-name: tests.test_health_metrics -*-
"""
C{/v1/health} and C{/metrics}: what load balancers and Prometheus ask.

Both answer without credentials: a health probe has none, and C{/metrics}
is kept off the public nginx site instead (see etc/nginx/bwcd.conf).
"""

from __future__ import annotations

from typing import Any, Callable, Optional

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from bwcd.api.framework import Api, Reply
from bwcd.metrics import Metrics
from bwcd.store.health import PING_TIMEOUT, StoreHealth, boundedPing
from bwcd.store.interface import IStore

log = Logger(namespace="bwcd.api")


async def storeAnswers(store: IStore, clock: IReactorTime, timeout: float = PING_TIMEOUT) -> bool:
    """
    Whether the store answers a trivial read within C{timeout} seconds.
    """
    return await boundedPing(store, clock, timeout)


async def storeProblem(store: IStore, clock: IReactorTime) -> Optional[str]:
    """
    Why the store cannot serve requests (for the health answer's
    faultstring), or C{None}; known at once while L{StoreHealth} has it
    down, else from a ping bounded to L{PING_TIMEOUT}, so that a load
    balancer always gets its answer within a second.
    """
    if isinstance(store, StoreHealth):
        reason = await store.check()
        return None if reason is None else f"Storage is down: {reason}"
    return None if await storeAnswers(store, clock) else "Storage does not answer."


def installHealthRoutes(api: Api, store: IStore, clock: IReactorTime, metrics: Metrics, runningChildren: Callable[[], int], metricsEnabled: bool = True) -> None:
    @api.route(["/v1/health", "/health"], ["GET"], auth=False, needsStore=False)
    async def health(request, principal: Any):
        problem = "bwcd is starting" if not api.ready else await storeProblem(store, clock)
        body = {"status": "ok" if problem is None else "unavailable", "storage": getattr(store, "name", "unknown"), "ready": api.ready}
        if problem is None:
            return Reply(body, 200)
        body["faultstring"] = problem
        return Reply(body, 503, headers={"Retry-After": "2"})

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
