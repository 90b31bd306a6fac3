"""
core.http end to end: a real daemon (L{tests.daemon.startDaemon}) runs
executions of C{core.http} against a test HTTP server listening on a free
loopback port in this process.
"""

from __future__ import annotations

import json
import os
from typing import Any, Dict, List

import treq
import yaml
from twisted.internet import reactor
from twisted.internet.defer import Deferred, DeferredList
from twisted.trial.unittest import TestCase
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request, Site

from tests.daemon import REPO, startDaemon


class Upstream(Resource):
    """
    The service core.http calls: JSON answers, an echo of what was posted,
    a 500, a redirect, and an answer that never comes.
    """

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.seen: List[Dict[str, Any]] = []
        #: fires with each request to /slow when it arrives
        self.slowArrived: Deferred = Deferred()

    def render(self, request: Request) -> Any:
        body = request.content.read()
        self.seen.append({
            "method": request.method.decode(),
            "uri": request.uri.decode(),
            "headers": {k.decode().lower(): v[0].decode() for k, v in request.requestHeaders.getAllRawHeaders()},
            "body": body.decode(),
        })
        path = request.path
        if path == b"/slow":
            self.slowArrived.callback(None)
            return NOT_DONE_YET
        if path == b"/redirect":
            request.redirect(b"/items?from=redirect")
            return b""
        if path == b"/error":
            request.setResponseCode(500)
            request.setHeader("Content-Type", "application/json")
            return b'{"faultstring": "upstream broke"}'
        request.setHeader("Content-Type", "application/json")
        if path == b"/echo":
            return json.dumps({"method": request.method.decode(), "received": json.loads(body)}).encode()
        return json.dumps({"items": [1, 2], "query": request.uri.decode()}).encode()


class TrackingSite(Site):
    """
    A Site that can close every connection it still has at clean-up, so
    the reactor is left clean whatever the daemon did.
    """

    def __init__(self, resource: Resource) -> None:
        super().__init__(resource)
        self.open: Dict[Any, Deferred] = {}

    def buildProtocol(self, addr: Any) -> Any:
        protocol = super().buildProtocol(addr)
        lost: Deferred = Deferred()
        self.open[protocol] = lost
        original = protocol.connectionLost

        def connectionLost(reason: Any) -> None:
            self.open.pop(protocol, None)
            original(reason)
            lost.callback(None)

        protocol.connectionLost = connectionLost
        return protocol

    def closeAll(self) -> Deferred:
        waits = list(self.open.values())
        for protocol in list(self.open):
            protocol.transport.abortConnection()
        return DeferredList(waits)


class HttpActionTests(TestCase):
    timeout = 120

    async def setUpUpstream(self) -> str:
        self.upstream = Upstream()
        site = TrackingSite(self.upstream)
        port = reactor.listenTCP(0, site, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        self.addCleanup(site.closeAll)
        return f"http://127.0.0.1:{port.getHost().port}"

    async def run_http(self, d: Any, params: Dict[str, Any]) -> Dict[str, Any]:
        response, doc = await d.post("/v1/executions", {"action": "core.http", "parameters": params})
        self.assertEqual(response.code, 201, doc)
        return await d.waitFor(doc["id"])

    async def test_coreHttp(self) -> None:
        """
        core.http through the daemon: a GET and a JSON POST succeed with
        st2's result document, a 500 fails with it, a redirect is followed
        when allowed, and a server that does not answer in time ends the
        execution as timeout.
        """
        base = await self.setUpUpstream()
        d = await startDaemon(self)

        got = await self.run_http(d, {"url": base + "/items", "params": {"q": "x"}})
        self.assertEqual(got["status"], "succeeded", got)
        self.assertEqual(got["result"]["status_code"], 200)
        self.assertEqual(got["result"]["body"], {"items": [1, 2], "query": "/items?q=x"})
        self.assertIs(got["result"]["parsed"], True)
        self.assertEqual(got["result"]["headers"]["Content-Type"], "application/json")
        self.assertEqual(self.upstream.seen[-1]["headers"]["x-stanley-action"], "http")

        posted = await self.run_http(d, {
            "url": base + "/echo", "method": "POST", "headers": {"Content-Type": "application/json"},
            "body": '{"text": "deploy done", "channel": "#ops"}',
        })
        self.assertEqual(posted["status"], "succeeded", posted)
        self.assertEqual(posted["result"]["body"], {"method": "POST", "received": {"text": "deploy done", "channel": "#ops"}})
        self.assertEqual(self.upstream.seen[-1]["body"], '{"text":"deploy done","channel":"#ops"}')

        broken = await self.run_http(d, {"url": base + "/error"})
        self.assertEqual(broken["status"], "failed")
        self.assertEqual(broken["result"]["status_code"], 500)
        self.assertEqual(broken["result"]["body"], {"faultstring": "upstream broke"})

        moved = await self.run_http(d, {"url": base + "/redirect", "allow_redirects": True})
        self.assertEqual(moved["status"], "succeeded", moved)
        self.assertEqual(moved["result"]["body"]["query"], "/items?from=redirect")
        unfollowed = await self.run_http(d, {"url": base + "/redirect"})
        self.assertEqual((unfollowed["status"], unfollowed["result"]["status_code"]), ("failed", 302))

        slow = await self.run_http(d, {"url": base + "/slow", "timeout": 1})
        self.assertEqual(slow["status"], "timeout", slow)
        self.assertEqual(
            slow["result"], {"error": f"HTTPConnectionPool(host='127.0.0.1', port={base.rsplit(':', 1)[1]}): Read timed out. (read timeout=1.0)"}
        )
        self.assertTrue(self.upstream.slowArrived.called)

    async def test_readmeSlackRule(self) -> None:
        """
        The README's Slack rule, as written there: a failed deploy posted to
        its webhook makes core.http post the message as JSON to the URL kept
        as a secret in the datastore.
        """
        base = await self.setUpUpstream()
        d = await startDaemon(self)
        with open(os.path.join(REPO, "README.md"), encoding="utf-8") as f:
            rule = yaml.safe_load(f.read().split("# notify_slack.yaml\n", 1)[1].split("```", 1)[0])
        response = await treq.put(
            d.apiURL + "/v1/keys/slack_webhook_url", json={"name": "slack_webhook_url", "value": base + "/echo", "secret": True},
            headers=d.headers,
        )
        self.assertEqual(response.code, 200, await response.text())
        response, created = await d.post("/v1/rules", rule)
        self.assertEqual(response.code, 201, created)
        response, _ = await d.post("/v1/webhooks/deploys", {"status": "failed", "service": 'api "v2"'})
        self.assertEqual(response.code, 202)
        [instance] = response.headers.getRawHeaders("X-BWC-Trigger-Instance")
        [execId] = await d.ruleExecutions(instance, 1)
        done = await d.waitFor(execId)
        self.assertEqual(done["status"], "succeeded", done)
        self.assertEqual(done["result"]["body"], {"method": "POST", "received": {"text": 'Deploy of api "v2" failed'}})
        # as in StackStorm, only parameters marked secret are masked in the
        # execution; the rendered url shows
        self.assertEqual(done["parameters"]["url"], base + "/echo")
