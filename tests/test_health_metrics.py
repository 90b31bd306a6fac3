"""
C{/v1/health} and C{/metrics} on a running daemon, and the pure helpers
behind them.
"""

import re

import treq
from twisted.internet import reactor
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web.server import Site

from bwcd.api.framework import Api
from bwcd.api.health_routes import installHealthRoutes
from bwcd.metrics import Metrics, routeLabel
from bwcd.store.sqlite import SQLiteStore
from tests.daemon import startDaemon  # also makes treq's pool one-shot


def sample(text: str, name: str, **labels) -> float:
    """
    The value of one sample in Prometheus text format (0 when absent).
    """
    for line in text.splitlines():
        if not line.startswith(name):
            continue
        match = re.match(r"^([a-zA-Z_:]+)(\{(.*)\})? (\S+)$", line)
        if not match or match.group(1) != name:
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', match.group(3) or ""))
        if all(found.get(k) == v for k, v in labels.items()):
            return float(match.group(4))
    return 0.0


class RouteLabelTests(SynchronousTestCase):
    def test_bounded(self):
        """
        Request paths map onto a small fixed set of route labels, whatever ids
        or hook names they carry.
        """
        self.assertEqual(routeLabel(b"/v1/executions/abc?x=1"), "/v1/executions")
        self.assertEqual(routeLabel(b"/api/v1/webhooks/a/b/c"), "/v1/webhooks")
        self.assertEqual(routeLabel(b"/auth/v1/tokens"), "/v1/tokens")
        self.assertEqual(routeLabel(b"/metrics"), "/metrics")
        self.assertEqual(routeLabel(b"/etc/passwd"), "other")


class HealthMetricsTests(TestCase):
    timeout = 60

    async def test_healthAndMetrics(self):
        """
        Health answers 200 without credentials while the store answers;
        metrics count requests by route and status and report executions by
        status.
        """
        d = await startDaemon(self)
        response = await treq.get(d.apiURL + "/v1/health")
        body = await response.json()
        self.assertEqual((response.code, body["status"], body["storage"]), (200, "ok", "sqlite"))
        response, created = await d.post("/v1/executions", {"action": "core.local", "parameters": {"cmd": "true"}})
        await d.waitFor(created["id"])
        await treq.get(d.apiURL + "/v1/executions")
        response = await treq.get(d.apiURL + "/metrics")
        self.assertEqual(response.code, 200)
        text = (await response.content()).decode()
        self.assertEqual(sample(text, "bwcd_http_requests_total", route="/v1/executions", method="POST", status="201"), 1.0)
        self.assertEqual(sample(text, "bwcd_http_requests_total", route="/v1/executions", method="GET", status="401"), 1.0)
        self.assertEqual(sample(text, "bwcd_executions", status="succeeded"), 1.0)
        self.assertEqual(sample(text, "bwcd_running_children"), 0.0)
        self.assertIn("bwcd_http_request_duration_seconds_bucket", text)
        self.assertEqual(sample(text, "bwcd_webhooks_total", result="accepted"), 0.0)

        rule = {
            "name": "m", "pack": "metrics", "enabled": True,
            "trigger": {"type": "core.st2.webhook", "parameters": {"url": "counted"}},
            "criteria": {"trigger.body.x": {"type": "equals", "pattern": "never"}},
            "action": {"ref": "core.noop"},
        }
        response, _ = await d.post("/v1/rules", rule)
        self.assertEqual(response.code, 201)
        for _ in range(3):
            response, _ = await d.post("/v1/webhooks/counted", {"x": 1})
            self.assertEqual(response.code, 202)
        response, _ = await d.post("/v1/webhooks/unknown", {"x": 1})
        self.assertEqual(response.code, 404)
        response = await treq.get(d.apiURL + "/metrics")
        text = (await response.content()).decode()
        self.assertEqual(sample(text, "bwcd_webhooks_total", result="accepted"), 3.0)
        self.assertEqual(sample(text, "bwcd_webhooks_total", result="rejected"), 1.0)
        # the three webhooks, and the core.st2.generic.actiontrigger emitted
        # when the first execution completed
        self.assertEqual(sample(text, "bwcd_trigger_instances", status="processed"), 4.0)


class HealthUnavailableTests(TestCase):
    async def test_storeDown(self):
        """
        Health answers 503 with a faultstring when the store does not answer,
        and 503 before the daemon is ready.
        """
        store = SQLiteStore(self.mktemp() + ".sqlite", reactor)
        await store.start()
        api = Api(authenticate=None)
        installHealthRoutes(api, store, reactor, Metrics(), lambda: 0)
        port = reactor.listenTCP(0, Site(api.resource()), interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        url = f"http://127.0.0.1:{port.getHost().port}/v1/health"
        response = await treq.get(url)
        self.assertEqual(response.code, 503)
        self.assertEqual((await response.json())["faultstring"], "bwcd is starting")
        api.ready = True
        response = await treq.get(url)
        self.assertEqual(response.code, 200)
        await store.stop()
        response = await treq.get(url)
        self.assertEqual(response.code, 503)
        self.assertEqual((await response.json())["faultstring"], "Storage does not answer.")
