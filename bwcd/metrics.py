# -*- test-case-name: tests.test_health_metrics -*-
"""
Prometheus metrics.

Counters are bumped where things happen (requests, webhooks); gauges that
describe stored state (trigger instances and executions by status, queue
depth) are read from the store when C{/metrics} is scraped, so they are right
on every node sharing a MongoDB, not just the one that did the work.

Each daemon owns its own registry, which keeps tests that start several
services in one process independent.
"""

from __future__ import annotations

from typing import Any, Callable, Dict

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

#: first path segments that name a route family; anything else is "other"
_ROUTES = frozenset(
    {
        "executions", "actionexecutions", "actions", "runnertypes", "webhooks", "rules", "triggertypes",
        "triggers", "triggerinstances", "ruleenforcements", "apikeys", "tokens", "health", "openapi.json",
    }
)

#: methods that get their own label; anything a client makes up is "other",
#: so requests without credentials cannot add series without bound
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})

EXECUTION_STATUSES = ("requested", "scheduled", "running", "succeeded", "failed", "timeout", "canceled", "abandoned")
INSTANCE_STATUSES = ("pending", "processing", "processed", "processing_failed")


def routeLabel(path: bytes) -> str:
    """
    A bounded label for a request path: C{/v1/executions/abc} becomes
    C{/v1/executions}; unknown paths become C{other}.
    """
    parts = [p for p in path.split(b"?", 1)[0].decode("utf-8", "replace").split("/") if p]
    if parts and parts[0] in ("api", "auth"):
        parts = parts[1:]
    if parts and parts[0] == "v1":
        parts = parts[1:]
    if parts and parts[0] in _ROUTES:
        return "/v1/" + parts[0]
    if parts == ["metrics"]:
        return "/metrics"
    return "other"


def methodLabel(method: bytes) -> str:
    """
    A bounded label for a request method: a known method, else C{other}.
    """
    text = method.decode("latin-1")
    return text if text in _METHODS else "other"


def statusLabel(code: object) -> str:
    """
    A bounded label for a response status: a three-digit code, else C{other}.
    """
    return str(code) if isinstance(code, int) and 100 <= code <= 599 else "other"


class Metrics:
    """
    The daemon's metrics registry.
    """

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("bwcd_http_requests_total", "HTTP requests answered", ["route", "method", "status"], registry=self.registry)
        self.latency = Histogram(
            "bwcd_http_request_duration_seconds", "Time to answer HTTP requests", ["route", "method"], registry=self.registry,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
        )
        self.webhooks = Counter("bwcd_webhooks_total", "Webhook requests by outcome", ["result"], registry=self.registry)
        # hook labels come only from configured webhook policies (bounded)
        self.webhookRefusals = Counter(
            "bwcd_webhook_refusals_total", "Webhook requests refused by their hook's policy", ["hook", "reason"], registry=self.registry
        )
        self.instances = Gauge("bwcd_trigger_instances", "Stored trigger instances by status", ["status"], registry=self.registry)
        self.executions = Gauge("bwcd_executions", "Stored executions by status", ["status"], registry=self.registry)
        self.queueDepth = Gauge("bwcd_execution_queue_depth", "Executions waiting for a runner slot", registry=self.registry)
        self.children = Gauge("bwcd_running_children", "Child processes running on this node", registry=self.registry)

    def observeRequest(self, request: Any, seconds: float) -> None:
        route = routeLabel(request.path or b"")
        method = methodLabel(request.method or b"")
        self.requests.labels(route, method, statusLabel(request.code)).inc()
        self.latency.labels(route, method).observe(seconds)
        if route == "/v1/webhooks" and method == "POST":
            self.webhooks.labels("accepted" if 200 <= request.code < 300 else "rejected").inc()
        refusal = getattr(request, "bwcdWebhookRefusal", None)
        if refusal is not None:
            self.webhookRefusals.labels(*refusal).inc()

    async def refresh(self, count: Callable[[str, Dict[str, Any]], Any], runningChildren: int) -> None:
        """
        Read the state gauges from the store (C{count(collection, filter)}).
        """
        for status in INSTANCE_STATUSES:
            self.instances.labels(status).set(await count("triggerinstances", {"status": status}))
        for status in EXECUTION_STATUSES:
            value = await count("executions", {"status": status})
            self.executions.labels(status).set(value)
            if status == "requested":
                self.queueDepth.set(value)
        self.children.set(runningChildren)

    def render(self) -> bytes:
        return generate_latest(self.registry)

    contentType = CONTENT_TYPE_LATEST
