"""
Hardening found by the fuzz and test work on issue 10, each case driven in
memory (StubTreq over the real route installers, the memory store, a fake
clock) except where a real store or engine is needed:

  - whatever Klein or Werkzeug would answer by itself (a non-UTF-8 path, a
    routing redirect) is a JSON faultstring, with no traceback logged;
  - the count of queued executions is never too low when a claim lands
    while it is being taken (so C{runner.max_queued} holds);
  - C{GET /v1/executions/<id>?wait=N} (or C{Prefer: wait=N}) answers once
    the execution has completed, or after N seconds (at most 300);
  - no log line carries request text that may be a secret: a refused
    login's unknown user name, a criteria error quoting the payload, the
    raw URI Twisted puts in a request's repr.

The raw-socket cases (413 from the headers, Twisted's own refusals as JSON)
are in tests/test_hostile_http.py.
"""

from __future__ import annotations

import base64
import json
import os
from typing import Any, Dict, List

from treq.testing import StubTreq
from twisted.internet.defer import ensureDeferred
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import formatEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase, TestCase

from bwcd.api.auth_routes import TOKEN_PATHS, installTokenRoutes
from bwcd.api.execution_routes import MAX_WAIT
from bwcd.api.framework import MSG_BAD_URL_ENCODING, Api
from bwcd.auth.htpasswd import Htpasswd, setPassword
from bwcd.auth.tokens import Tokens
from bwcd.config import ApiConfig, Config
from bwcd.execution.service import ExecutionService, QueueFull
from bwcd.testing import MemoryStore, startedStore
from tests.test_routes_memory import BASE, T0, RoutesTestsMixin, registered


def captureLog(testCase) -> List[str]:
    """
    Every log event from now to the end of the test, formatted, with its
    traceback when it carries one.
    """
    lines: List[str] = []

    def observe(event: Dict[str, Any]) -> None:
        lines.append(formatEvent(event) + (event["log_failure"].getTraceback() if "log_failure" in event else ""))

    globalLogPublisher.addObserver(observe)
    testCase.addCleanup(globalLogPublisher.removeObserver, observe)
    return lines


class EdgeAnswersTests(RoutesTestsMixin, SynchronousTestCase):
    """
    Answers Klein and Werkzeug would otherwise make themselves.
    """

    def test_nonUtf8PathIsJson400(self):
        """
        A path that is not UTF-8 once percent-decoded (on a route, under a
        prefix, or nowhere) is a 400 JSON faultstring, and nothing is
        logged as an error (Klein logged a traceback per request).
        """
        lines = captureLog(self)
        for path in ("/v1/actions/%ff", "/v1/executions/%ed%a0%80/output", "/v1/apikeys/%ff%fe", "/nowhere/%c0%af"):
            response, body = self.request("GET", path)
            self.assertEqual(response.code, 400, path)
            self.assertEqual(self.header(response, "Content-Type"), "application/json", path)
            self.assertEqual(body, {"faultstring": MSG_BAD_URL_ENCODING}, path)
        # HEAD: Twisted logs the raw URI of a HEAD whose render returns a body
        response, _ = self.request("HEAD", "/v1/actions/%ff?st2-api-key=not-for-logs")
        self.assertEqual(response.code, 400)
        self.assertEqual(self.flushLoggedErrors(), [])
        self.assertEqual([line for line in lines if "Traceback" in line or "encoding" in line or "not-for-logs" in line], [])

    def test_doubleSlashNotRedirected(self):
        """
        C{//} inside a path is not found (JSON 404), not an HTML 308
        redirect to a Location built from the client's Host header.
        """
        for path in ("/v1//actions", "/v1/actions//core.local"):
            response, body = self.request("GET", path)
            self.assertEqual(response.code, 404, path)
            self.assertEqual(body, {"faultstring": "The resource could not be found."}, path)
            self.assertIsNone(self.header(response, "Location"))

    def test_otherRoutingErrorsAreJson(self):
        """
        Any other Werkzeug routing answer (here the redirect of a rule that
        keeps strict slashes) is a JSON faultstring with its status and
        headers, not Werkzeug's HTML page.
        """
        self.api.app.route("/strict/", strict_slashes=True)(lambda request: b"never")
        d = self.http.request("GET", BASE + "/strict", allow_redirects=False)
        self.http.flush()
        response = self.successResultOf(d)
        self.assertEqual(response.code, 308)
        self.assertEqual(self.header(response, "Content-Type"), "application/json")
        self.assertEqual(json.loads(self.successResultOf(self.http.content(response))), {"faultstring": "Permanent Redirect."})
        self.assertTrue(self.header(response, "Location").endswith("/strict/"))


class QueueAccountingTests(SynchronousTestCase):
    """
    The queued count against claims that land while the store counts,
    interleaved with the memory store's L{MemoryStore.hold}/C{step}.
    """

    def setUp(self) -> None:
        self.clock = MemoryReactorClock()
        self.clock.advance(T0)
        self.store = startedStore(registered())
        self.service = ExecutionService(self.store, self.clock, "https://bwcd.example", maxQueued=1)
        for cmd in ("a", "b"):
            self.successResultOf(ensureDeferred(self.service.create("core.local", {"cmd": cmd}, None, "alice")))
        self.assertEqual(self.service.queued, 2)

    def claim(self):
        """
        Claim one execution as the executor does: a conditional update,
        then L{ExecutionService.noteClaimed} once it has landed.
        """
        d = self.store.update("executions", {"status": "requested"}, set={"status": "scheduled", "node": "n1"}, sort=[("start_timestamp", 1)])
        d.addCallback(lambda doc: self.service.noteClaimed(1 if doc is not None else 0))
        return d

    def waiting(self) -> int:
        return self.successResultOf(self.store.count("executions", {"status": "requested"}))

    def test_claimLandingBeforeTheCount(self):
        """
        A claim sent before a count but noted after it began is reflected
        in the count and not subtracted again: the queued count stays at
        what waits (1), so with runner.max_queued 1 the next request is
        refused (it was let through, the count reading 0).
        """
        self.store.hold()
        claimed = self.claim()
        counted = ensureDeferred(self.service.refreshQueued())
        self.assertEqual(self.store.held, ["update", "count"])
        self.store.step()
        self.successResultOf(claimed)
        self.store.step()
        self.assertEqual(self.successResultOf(counted), 1)
        self.store.release()
        self.assertEqual(self.waiting(), 1)
        self.assertEqual(self.service.queued, 1)
        self.assertRaises(QueueFull, self.service.checkCapacity)

    def test_claimLandingAfterTheCount(self):
        """
        A claim that lands after the count is subtracted from it.
        """
        self.store.hold()
        counted = ensureDeferred(self.service.refreshQueued())
        claimed = self.claim()
        self.store.step()
        self.assertEqual(self.successResultOf(counted), 2)
        self.assertEqual(self.service.queued, 2)
        self.store.step()
        self.successResultOf(claimed)
        self.store.release()
        self.assertEqual(self.service.queued, 1)
        self.assertEqual(self.waiting(), 1)

    def test_overlappingCounts(self):
        """
        Two counts in flight with a claim between them: each count replaces
        the estimate instead of subtracting what the other already did.
        """
        self.store.hold()
        first = ensureDeferred(self.service.refreshQueued())
        claimed = self.claim()
        second = ensureDeferred(self.service.refreshQueued())
        self.assertEqual(self.store.release(), 3)
        self.assertEqual((self.successResultOf(first), self.successResultOf(second)), (2, 1))
        self.successResultOf(claimed)
        self.assertEqual(self.service.queued, 1)
        self.assertEqual(self.waiting(), 1)

    def test_queuedDuringTheCountStillCounts(self):
        """
        An execution queued while a count runs is still counted (once the
        count is in, the estimate may be one high until the next count,
        never low).
        """
        self.service.maxQueued = 10
        self.store.hold()
        counted = ensureDeferred(self.service.refreshQueued())
        created = ensureDeferred(self.service.create("core.local", {"cmd": "c"}, None, "alice"))
        self.store.release()
        self.successResultOf(counted)
        self.successResultOf(created)
        self.assertGreaterEqual(self.service.queued, self.waiting())
        self.assertEqual(self.waiting(), 3)


class WaitForExecutionTests(RoutesTestsMixin, SynchronousTestCase):
    """
    C{GET /v1/executions/<id>?wait=N} and C{Prefer: wait=N}.
    """

    def send(self, path: str, headers: Dict[str, str] = None):
        d = self.http.request("GET", BASE + path, headers=dict(self.auth, **(headers or {})))
        self.http.flush()
        return d

    def answer(self, d):
        self.http.flush()
        response = self.successResultOf(d)
        return response, json.loads(self.successResultOf(self.http.content(response)))

    def finish(self, execId: str) -> None:
        self.successResultOf(ensureDeferred(self.executions.transition(execId, ["requested"], "succeeded", result={"stdout": "done"})))

    def test_answersOnCompletion(self):
        """
        The answer waits while the execution runs and comes as soon as it
        has completed, showing its end.
        """
        doc = self.startExecution()
        d = self.send(f"/v1/executions/{doc['id']}?wait=10")
        self.assertNoResult(d)
        self.clock.advance(5)
        self.assertNoResult(d)
        self.finish(doc["id"])
        response, shown = self.answer(d)
        self.assertEqual(response.code, 200)
        self.assertEqual((shown["status"], shown["result"]), ("succeeded", {"stdout": "done"}))
        self.assertIsNone(self.header(response, "Preference-Applied"))

    def test_answersAfterTheWait(self):
        """
        An execution still running after N seconds is shown as it is then.
        """
        doc = self.startExecution()
        d = self.send(f"/v1/executions/{doc['id']}?wait=2.5")
        self.clock.advance(2.4)
        self.assertNoResult(d)
        self.clock.advance(0.1)
        response, shown = self.answer(d)
        self.assertEqual((response.code, shown["status"]), (200, "requested"))

    def test_waitIsCapped(self):
        """
        A wait over MAX_WAIT (300 s) is cut to it.
        """
        self.assertEqual(MAX_WAIT, 300)
        doc = self.startExecution()
        d = self.send(f"/v1/executions/{doc['id']}?wait=100000")
        self.clock.advance(MAX_WAIT - 1)
        self.assertNoResult(d)
        self.clock.advance(1)
        self.assertEqual(self.answer(d)[1]["status"], "requested")

    def test_preferWait(self):
        """
        C{Prefer: wait=N} waits the same way and is acknowledged with
        C{Preference-Applied}.
        """
        doc = self.startExecution()
        d = self.send(f"/v1/executions/{doc['id']}", {"Prefer": "respond-async, wait=7"})
        self.assertNoResult(d)
        self.finish(doc["id"])
        response, shown = self.answer(d)
        self.assertEqual(shown["status"], "succeeded")
        self.assertEqual(self.header(response, "Preference-Applied"), "wait=7")

    def test_completedAnswersAtOnce(self):
        """
        A completed execution, or C{wait=0}, is answered at once.
        """
        doc = self.startExecution()
        response, shown = self.request("GET", f"/v1/executions/{doc['id']}?wait=0")
        self.assertEqual(shown["status"], "requested")
        self.finish(doc["id"])
        response, shown = self.request("GET", f"/v1/executions/{doc['id']}?wait=60")
        self.assertEqual(shown["status"], "succeeded")

    def test_badWait(self):
        """
        A wait that is not a number >= 0 is a 400; an unknown execution is
        a 404 without waiting.
        """
        doc = self.startExecution()
        for value in ("abc", "nan", "-1"):
            response, body = self.request("GET", f"/v1/executions/{doc['id']}?wait={value}")
            self.assertEqual(response.code, 400, value)
            self.assertEqual(body, {"faultstring": 'Parameter "wait" is not of type number'})
        response, _ = self.request("GET", "/v1/executions/5f0000000000000000000000?wait=30")
        self.assertEqual(response.code, 404)


class LoginLogTests(SynchronousTestCase):
    """
    What a refused password login logs.
    """

    def setUp(self) -> None:
        clock = MemoryReactorClock()
        clock.advance(T0)
        store = MemoryStore()
        self.successResultOf(store.start())
        users = os.path.abspath(self.mktemp())
        setPassword(users, "alice", "correct horse", rounds=4)
        self.api = Api(lambda request: None)
        self.api.ready = True
        installTokenRoutes(self.api, Tokens(store, clock), Htpasswd(users), Config(api=ApiConfig(public_url="https://bwcd.example")), paths=TOKEN_PATHS)
        self.http = StubTreq(self.api.resource())

    def login(self, user: str, password: str) -> int:
        basic = base64.b64encode(f"{user}:{password}".encode()).decode()
        d = self.http.post(BASE + "/auth/v1/tokens", headers={"Authorization": f"Basic {basic}"}, data=b"")
        self.http.flush()
        return self.successResultOf(d).code

    def test_unknownUserNameNotLogged(self):
        """
        A login refused for a name that is no user's does not log the name
        (attacker text, or a password typed into the user field); a known
        user's name is logged.
        """
        lines = captureLog(self)
        self.assertEqual(self.login("hunter2-typed-as-user", "x"), 401)
        self.assertEqual(self.login("alice", "wrong"), 401)
        refused = [line for line in lines if "Refused password login" in line]
        self.assertEqual(len(refused), 2, lines)
        self.assertEqual([line for line in lines if "hunter2" in line], [])
        self.assertIn("alice", refused[1])


class RequestReprTests(SynchronousTestCase):
    """
    The request's repr, which Twisted puts in some of its own log lines.
    """

    def test_credentialsRedacted(self):
        """
        Credentials in the query and an API key in the path are redacted
        in the repr, as in the access log.
        """
        from twisted.web.test.requesthelper import DummyChannel

        from bwcd.api.site import BwcdRequest

        request = BwcdRequest(DummyChannel())
        self.assertIn("uri=(no uri yet)", repr(request))
        request.method, request.clientproto = b"HEAD", b"HTTP/1.1"
        for uri in (b"/v1/actions?a=1;st2-api-key=not-for-logs", b"/v1/apikeys/not-for-logs", b"/v1/x?x-auth-token=not-for-logs"):
            request.uri = uri
            self.assertNotIn("not-for-logs", repr(request))
            self.assertIn("method=HEAD", repr(request))


class CriteriaErrorLogTests(TestCase):
    """
    What the rules engine logs when an error stops a rule's match.
    """

    async def test_payloadQuotedByAnErrorNotLogged(self):
        """
        A criteria error that quotes the payload (C{timediff_lt} on a value
        that is not a date: "Invalid isoformat string: '<value>'") is kept
        in the rule enforcement, as StackStorm keeps it, but the log line
        points to the enforcement instead of quoting it.
        """
        from tests.test_rules_engine import Harness, webhookPayload, webhookRule

        lines = captureLog(self)
        h = await Harness.create(self)
        rule = await h.addRule(webhookRule(criteria={"trigger.body.when": {"type": "timediff_lt", "pattern": 60}}))
        _, outcome = await h.fire(rule["trigger"]["ref"], webhookPayload({"when": "tok-s3cret-value"}))
        [enforcement] = outcome.enforcements
        self.assertIn("tok-s3cret-value", enforcement["failure_reason"])
        failed = [line for line in lines if "failed to match" in line]
        self.assertEqual(len(failed), 1, lines)
        self.assertIn(enforcement["id"], failed[0])
        self.assertEqual([line for line in lines if "tok-s3cret-value" in line], [])
