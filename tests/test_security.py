"""
Findings of the hostile-input review (issue 10), one test class per finding,
each named after it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any, Dict, List

import yaml
from twisted.internet import reactor
from twisted.internet.task import Clock
from twisted.logger import formatEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web.client import Agent, readBody
from twisted.web.http_headers import Headers
from twisted.web.resource import Resource

import bwcd
from bwcd.api.site import BwcdSite, redactedURI
from bwcd.auth.htpasswd import Htpasswd, hashPassword
from bwcd.auth.limits import BoundedGate, RateLimiter
from bwcd.errors import TooMany
from bwcd.execution.runners.params import mergeSchema
from bwcd.execution.runners.result import jsonOrText
from bwcd.execution.runners.types import LOCAL_SHELL_CMD, runnerParameters
from bwcd.execution.service import liveParameters
from bwcd.metrics import Metrics
from bwcd.rules import criteria, operators
from bwcd.rules.model import RuleError, normaliseRule
from bwcd.webhooks.headers import payloadHeaders
from tests.daemon import startDaemon

KEY = "K3y-0f-the-attacker-9f2e"


class _Echo(Resource):
    """
    Answers every path, remembering what Twisted parsed into request.args
    (where the credential check looks for query credentials); /boom fails.
    """

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.args: List[Dict[bytes, List[bytes]]] = []

    def render(self, request):
        self.args.append(dict(request.args))
        if request.path == b"/boom":
            raise RuntimeError("boom")
        return b"{}"


class _SiteMixin:
    """
    A real BwcdSite on a loopback port, and every log event it emits.
    """

    def startSite(self, **kw: Any) -> None:
        self.resource = _Echo()
        site = BwcdSite(self.resource, 1000, **kw)
        port = reactor.listenTCP(0, site, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        self.url = f"http://127.0.0.1:{port.getHost().port}".encode()
        self.events: List[dict] = []
        globalLogPublisher.addObserver(self.events.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.events.append)

    async def request(self, method: bytes, path: bytes, headers: Dict[bytes, List[bytes]] = None):
        # Agent sends the path bytes as they are (no re-encoding of %2D or ;)
        response = await Agent(reactor).request(method, self.url + path, Headers(headers or {}))
        await readBody(response)
        return response


def _eventText(event: dict) -> str:
    return formatEvent(event) + " " + repr(event)


class AccessLogRedactionSplitsOnlyOnAmpersandTests(_SiteMixin, TestCase):
    """
    Finding: the access-log redaction split the query on C{&} only, while
    Twisted also splits on C{;}, so C{?a=1;st2-api-key=KEY} authenticated
    and was logged in clear.
    """

    VARIANTS = [
        b"/v1/x?a=1;st2-api-key=" + KEY.encode(),
        b"/v1/x?a=1&x-auth-token=" + KEY.encode(),
        b"/v1/x?st2%2Dapi%2Dkey=" + KEY.encode(),
        b"/v1/x?x%2dauth%2dtoken=" + KEY.encode() + b";b=2",
        b"/v1/x?st2-api-key=" + KEY.encode() + b"&st2-api-key=" + KEY.encode() + b";st2-api-key=" + KEY.encode(),
        b"/v1/x?a=1;;st2-api-key=" + KEY[:10].encode() + b"%2D" + KEY[11:].encode(),
        b"/v1/x?ST2-API-KEY=" + KEY.encode(),
        b"/v1/x?st2+api+key=1&st2_api_key=" + KEY.encode(),
        b"/v1/apikeys/" + KEY.encode() + b"?x-auth-token=" + KEY.encode(),
    ]

    async def test_noKeyInAnyLogEvent(self):
        """
        Every variant of a query credential (separated by ; or &, %-encoded
        names, repeated) is missing from every log event, while Twisted does
        hand the key to the application (so the variant would authenticate).
        """
        self.startSite()
        for path in self.VARIANTS:
            await self.request(b"GET", path)
        await self.request(b"GET", b"/boom?a=1;st2-api-key=" + KEY.encode())
        self.flushLoggedErrors(RuntimeError)
        parsed = [args for args in self.resource.args if b"st2-api-key" in args or b"x-auth-token" in args]
        self.assertIn([KEY.encode()], [args.get(b"st2-api-key") for args in parsed])
        logged = [e for e in self.events if e.get("log_namespace") == "bwcd.http"]
        self.assertEqual(len(logged), len(self.VARIANTS) + 2)  # the failure and its access line
        for event in self.events:
            self.assertNotIn(KEY, _eventText(event))
            self.assertNotIn(KEY[:10], _eventText(event))

    def test_redactedURI(self):
        """
        The logged URI keeps other parameters and hides the secret ones,
        split as Twisted splits them.
        """
        self.assertEqual(redactedURI(b"/v1/x?a=1;st2-api-key=" + KEY.encode()), "/v1/x?a=1&st2-api-key=%2A%2A%2A%2A%2A%2A%2A%2A")
        for path in self.VARIANTS:
            self.assertNotIn(KEY[:10], redactedURI(path), path)
        self.assertEqual(redactedURI(b"/v1/x?limit=5;offset=2"), "/v1/x?limit=5&offset=2")


class AuthorizationHeadersStoredInPayloadTests(SynchronousTestCase):
    """
    Finding: C{Authorization} headers were stored in trigger-instance
    payloads.
    """

    def test_credentialHeadersNeverInPayload(self):
        """
        Authorization, Proxy-Authorization and st2's scrubbed headers are
        removed whatever their spelling; other headers stay.
        """
        raw = [
            (b"Authorization", [b"Basic " + KEY.encode()]),
            (b"proxy-authorization", [b"Bearer " + KEY.encode()]),
            (b"PROXY_AUTHORIZATION", [KEY.encode()]),
            (b"st2-api-key", [KEY.encode()]),
            (b"X-Auth-Token", [KEY.encode()]),
            (b"cookie", [b"s=" + KEY.encode()]),
            (b"X-GitHub-Event", [b"push"]),
        ]
        result = payloadHeaders(raw, newRequestId="rid")
        self.assertEqual(result.headers, {"X-Github-Event": "push", "X-Request-Id": "rid"})
        self.assertNotIn(KEY, json.dumps([result.headers, result.lower]))


class _Request:
    def __init__(self, method: bytes, path: bytes, code: int = 404) -> None:
        self.method = method
        self.path = path
        self.code = code


def _seriesCount(metrics: Metrics) -> int:
    return sum(len(family.samples) for family in metrics.registry.collect())


class MetricsRawMethodLabelTests(_SiteMixin, TestCase):
    """
    Finding: C{/metrics} used the raw HTTP method as a label, so made-up
    methods, without credentials, added series without bound.
    """

    def test_madeUpMethodsAndPathsAddNoSeries(self):
        """
        Once one unknown method and path have been counted, 50 more made-up
        methods and paths add no series (they are all "other").
        """
        metrics = Metrics()
        metrics.observeRequest(_Request(b"GET", b"/v1/executions/1", 200), 0.01)
        metrics.observeRequest(_Request(b"BREW", b"/coffee"), 0.01)
        before = _seriesCount(metrics)
        for i in range(50):
            metrics.observeRequest(_Request(b"M%dX" % i, b"/made/up/%d" % i), 0.01)
        self.assertEqual(_seriesCount(metrics), before)
        self.assertEqual(metrics.registry.get_sample_value(
            "bwcd_http_requests_total", {"route": "other", "method": "other", "status": "404"}), 51.0)

    def test_methodLabel(self):
        """
        Known methods keep their name; anything else is "other".
        """
        from bwcd.metrics import methodLabel

        self.assertEqual([methodLabel(m) for m in (b"GET", b"POST", b"OPTIONS", b"get", b"PROPFIND")],
                         ["GET", "POST", "OPTIONS", "other", "other"])

    async def test_overHttp(self):
        """
        Requests with made-up methods to a real site, as the daemon counts
        them, add no series after the first.
        """
        metrics = Metrics()
        self.startSite(onRequestDone=metrics.observeRequest)
        await self.request(b"FIRST", b"/x")
        before = _seriesCount(metrics)
        for i in range(10):
            await self.request(b"MADE%d" % i, b"/made/%d" % i)
        self.assertEqual(_seriesCount(metrics), before)


class CriteriaRegexCatastrophicTests(SynchronousTestCase):
    """
    Finding: a criteria C{regex} ran with Python's C{re} on the reactor
    thread, so a catastrophic pattern froze the daemon.
    """

    SUBJECT = "a" * 40 + "!"

    def test_catastrophicPatternCompletes(self):
        """
        (a+)+$ against "a"*40+"!" completes (no match) for every regex
        operator; with backtracking it would run for days.
        """
        for name in ("regex", "iregex", "matchregex"):
            self.assertIs(operators.applyOperator(name, self.SUBJECT, "(a+)+$"), False, name)
        self.assertIs(operators.applyOperator("regex", "a" * 40, "(a+)+$"), True)
        self.assertIs(operators.applyOperator("matchwildcard", "a" * 5000, "*a*a*a*a*a*a*a*a*a*a*b"), False)

    def test_catastrophicPatternInChildProcess(self):
        """
        The same match through criteria evaluation finishes in a child
        process (a hang here would otherwise hold the whole test run).
        """
        code = (
            "from bwcd.rules.criteria import evaluate\n"
            "r = evaluate('p.r', 'i', {'trigger.s': {'type': 'regex', 'pattern': '(a+)+$'}}, {'s': 'a' * 40 + '!'})\n"
            "print(r.matched, r.failure_reason)\n"
        )
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                             cwd=os.path.dirname(os.path.dirname(os.path.abspath(bwcd.__file__))))
        self.assertEqual(out.stdout.strip(), "False None", out.stderr)

    def test_unsupportedPatternRefusedAtRuleCreation(self):
        """
        A pattern RE2 cannot take (backreference, lookahead) is a 400 naming
        the pattern when the rule is created, also inside a search child.
        """
        for pattern in (r"(a)\1", "(?=x)a"):
            error = self.assertRaises(criteria.CriteriaError, criteria.validateCriteria,
                                      {"trigger.s": {"type": "regex", "pattern": pattern}})
            self.assertIn(repr(pattern), str(error))
            self.assertIn("trigger.s", str(error))
        error = self.assertRaises(criteria.CriteriaError, criteria.validateCriteria, {
            "trigger.l": {"type": "search", "condition": "any",
                          "pattern": {"item.n": {"type": "iregex", "pattern": "(?<!x)y"}}}})
        self.assertIn("(?<!x)y", str(error))
        body = {"name": "r", "pack": "p", "trigger": {"type": "core.st2.webhook"}, "action": {"ref": "core.local"},
                "criteria": {"trigger.s": {"type": "matchregex", "pattern": r"(\w)\1"}}}
        error = self.assertRaises(RuleError, normaliseRule, body)
        self.assertIn(repr(r"(\w)\1"), str(error))

    def test_validPatternsAccepted(self):
        """
        Ordinary patterns, templated ones (checked when rendered) and
        Python's \\Z pass validation; \\Z still means end of text.
        """
        criteria.validateCriteria({
            "trigger.a": {"type": "regex", "pattern": "^push|pull$"},
            "trigger.b": {"type": "iregex", "pattern": "{{ trigger.p }}"},
            "trigger.c": {"type": "matchregex", "pattern": r"v\d+\Z"},
        })
        self.assertIs(operators.applyOperator("matchregex", "v12", r"v\d+\Z"), True)
        self.assertIs(operators.applyOperator("matchregex", "v12x", r"v\d+\Z"), False)

    def test_unsupportedPatternAtMatchTime(self):
        """
        A rendered pattern RE2 cannot take fails the enforcement with a
        reason naming it, and is a re.error for callers that catch those.
        """
        self.assertRaises(operators.RegexError, operators.applyOperator, "regex", "aa", r"(a)\1")
        result = criteria.evaluate("p.r", "i", {"trigger.s": {"type": "regex", "pattern": "{{ trigger.p }}"}},
                                   {"s": "aa", "p": r"(a)\1"})
        self.assertFalse(result.matched)
        self.assertIn(repr(r"(a)\1"), result.failure_reason)


ECHO_YAML = os.path.join(os.path.dirname(os.path.abspath(bwcd.__file__)), "packs", "core", "actions", "echo.yaml")
HOSTILE_MESSAGES = ["$(id)", '"; touch TOUCHED; "', "`id`; $HOME ' \" \\ *"]


class CoreEchoShellEvaluationTests(TestCase):
    """
    Finding: C{core.echo} ran C{echo "{{message}}"} through a shell, so a
    webhook body C{{"msg": "$(id)"}} templated into C{message} ran C{id}.
    """

    timeout = 120

    def echoCommand(self, message: str) -> str:
        with open(ECHO_YAML) as f:
            action = yaml.safe_load(f)
        schema = mergeSchema(runnerParameters(LOCAL_SHELL_CMD), action["parameters"], "core.echo")
        return liveParameters(schema, {"message": message}, {})["cmd"]

    def test_renderedCommandEchoesLiterally(self):
        """
        The rendered cmd, run by /bin/sh as the local-shell-cmd runner does,
        prints each hostile message literally and runs nothing.
        """
        folder = os.path.abspath(self.mktemp())
        os.makedirs(folder)
        for message in HOSTILE_MESSAGES:
            out = subprocess.run(["/bin/sh", "-c", self.echoCommand(message)], cwd=folder,
                                 capture_output=True, text=True, timeout=30)
            self.assertEqual(out.stdout, message + "\n")
        self.assertEqual(os.listdir(folder), [])

    async def test_executionEchoesLiterally(self):
        """
        A real core.echo execution prints $(id) and a quote-breaking message
        literally, and the injected touch never runs.
        """
        d = await startDaemon(self)
        for message in HOSTILE_MESSAGES + ['x"; touch TOUCHED; "y']:
            response, doc = await d.post("/v1/executions", {"action": "core.echo", "parameters": {"message": message}})
            self.assertEqual(response.code, 201, doc)
            done = await d.waitFor(doc["id"])
            # stdout that is JSON is recorded decoded, as st2 does: the
            # literal line '"; touch TOUCHED; "' is the JSON string without
            # its quotes
            self.assertEqual((done["status"], done["result"]["stdout"]), ("succeeded", jsonOrText(message)))
        self.assertFalse(os.path.exists(os.path.join(d.stateDir, "TOUCHED")))


class CorsStarWithAuthDisabledTests(_SiteMixin, TestCase):
    """
    Finding: CORS C{*} was sent on every answer, so with C{auth.enable:
    false} any web page could start executions on a developer's daemon.
    """

    async def test_noCorsHeadersUnlessConfigured(self):
        """
        Without allowed origins no Access-Control-* header is sent, on a
        preflight or a request, whatever the Origin.
        """
        self.startSite()
        for method in (b"OPTIONS", b"GET", b"POST"):
            response = await self.request(method, b"/v1/executions", {b"Origin": [b"https://evil.example"]})
            names = [name.lower() for name, _ in response.headers.getAllRawHeaders()]
            self.assertEqual([n for n in names if n.startswith(b"access-control")], [], method)

    async def test_onlyConfiguredOrigins(self):
        """
        A configured origin gets st2's CORS headers with its own origin and
        Vary: Origin; another origin gets none.
        """
        self.startSite(allowOrigins=["https://UI.example/"])
        response = await self.request(b"OPTIONS", b"/v1/executions", {b"Origin": [b"https://ui.example"]})
        self.assertEqual(response.headers.getRawHeaders(b"Access-Control-Allow-Origin"), [b"https://ui.example"])
        self.assertEqual(response.headers.getRawHeaders(b"Access-Control-Allow-Methods"), [b"GET,POST,PUT,DELETE,OPTIONS"])
        self.assertEqual(response.headers.getRawHeaders(b"Access-Control-Allow-Credentials"), [b"true"])
        self.assertEqual(response.headers.getRawHeaders(b"Vary"), [b"Origin"])
        response = await self.request(b"GET", b"/v1/executions", {b"Origin": [b"https://evil.example"]})
        self.assertIsNone(response.headers.getRawHeaders(b"Access-Control-Allow-Origin"))
        self.assertIsNone(response.headers.getRawHeaders(b"Access-Control-Allow-Methods"))
        self.assertEqual(response.headers.getRawHeaders(b"Vary"), [b"Origin"])

    async def test_wildcard(self):
        """
        "*" allows any origin, without credentials (as browsers require).
        """
        self.startSite(allowOrigins=["*"])
        response = await self.request(b"GET", b"/v1/x", {b"Origin": [b"https://any.example"]})
        self.assertEqual(response.headers.getRawHeaders(b"Access-Control-Allow-Origin"), [b"*"])
        self.assertIsNone(response.headers.getRawHeaders(b"Access-Control-Allow-Credentials"))


class _QueuedPool:
    """
    A thread pool that holds work until told to run it.
    """

    def __init__(self) -> None:
        self.work: list = []

    def callInThreadWithCallback(self, onResult, f, *a, **kw):
        self.work.append((onResult, f, a, kw))

    def runOne(self) -> None:
        onResult, f, a, kw = self.work.pop(0)
        onResult(True, f(*a, **kw))


class _FakeReactor(Clock):
    def __init__(self) -> None:
        super().__init__()
        self.pool = _QueuedPool()

    def getThreadPool(self):
        return self.pool

    def callFromThread(self, f, *a, **kw):
        f(*a, **kw)


class LoginBcryptQueueUnboundedTests(SynchronousTestCase):
    """
    Finding: login ran bcrypt on an unbounded thread-pool queue, so a flood
    of logins delayed every other request; logins were not rate-limited.
    """

    def setUp(self) -> None:
        self.path = self.mktemp()
        with open(self.path, "w") as f:
            f.write("alice:" + hashPassword("pw", rounds=4) + "\n")
        self.reactor = _FakeReactor()

    def test_bucketPerClient(self):
        """
        A client gets its burst, then is refused with a Retry-After until
        its bucket refills; other clients are unaffected.
        """
        clock = Clock()
        limiter = RateLimiter(clock, rate=0.5, burst=3)
        self.assertEqual([limiter.take("a") for _ in range(3)], [None, None, None])
        self.assertEqual(limiter.take("a"), 2.0)
        self.assertIsNone(limiter.take("b"))
        clock.advance(2)
        self.assertIsNone(limiter.take("a"))
        self.assertIsNotNone(limiter.take("a"))

    def test_bucketsBounded(self):
        """
        Many addresses keep at most maxKeys buckets.
        """
        limiter = RateLimiter(Clock(), maxKeys=5)
        for i in range(50):
            limiter.take(str(i))
        self.assertEqual(len(limiter), 5)

    def test_rateLimitedLogin(self):
        """
        Htpasswd.check with a client address fails with TooMany (429 with
        Retry-After) beyond the client's burst, before any bcrypt work.
        """
        h = Htpasswd(self.path, self.reactor, limiter=RateLimiter(self.reactor, rate=0.1, burst=2))
        results = [h.check("alice", "pw", client="10.0.0.1") for _ in range(2)]
        failure = self.failureResultOf(h.check("alice", "pw", client="10.0.0.1"), TooMany)
        self.assertEqual(failure.value.headers, {"Retry-After": "10"})
        self.assertEqual(len(self.reactor.pool.work), 2)
        while self.reactor.pool.work:
            self.reactor.pool.runOne()
        self.assertEqual([self.successResultOf(d) for d in results], [True, True])
        self.assertNoResult(h.check("alice", "pw", client="10.0.0.2"))

    def test_boundedQueue(self):
        """
        With every bcrypt slot busy and the queue full, a further check is
        refused at once instead of waiting; queued checks still complete.
        """
        h = Htpasswd(self.path, self.reactor, gate=BoundedGate(running=1, waiting=2))
        pending = [h.check("alice", "pw" if i == 0 else "wrong") for i in range(3)]
        failure = self.failureResultOf(h.check("alice", "pw"), TooMany)
        self.assertEqual(failure.value.headers, {"Retry-After": "1"})
        self.assertEqual(len(self.reactor.pool.work), 1)
        for _ in range(3):
            self.reactor.pool.runOne()
        self.assertEqual([self.successResultOf(d) for d in pending], [True, False, False])
        self.assertNoResult(h.check("alice", "pw"))

    def test_defaultsBound(self):
        """
        An Htpasswd with a reactor has both limits by default.
        """
        h = Htpasswd(self.path, self.reactor)
        self.assertIsNotNone(h.limiter)
        self.assertIsNotNone(h.gate)
        for _ in range(h.gate.waiting + 2):
            h.check("alice", "pw")
        self.failureResultOf(h.check("alice", "pw"), TooMany)


class _PeerRequest:
    """
    Just what L{clientAddress} reads from a request.
    """

    def __init__(self, peer: str, forwarded: bytes | None, trusted: frozenset) -> None:
        self._peer = peer
        self._forwarded = forwarded
        self.site = type("S", (), {"trustedProxies": trusted})()

    def getClientAddress(self):
        return type("A", (), {"host": self._peer})()

    def getHeader(self, name: bytes):
        return self._forwarded if name == b"x-forwarded-for" else None


class LoginLimitSpoofedForwardedForTests(SynchronousTestCase):
    """
    The per-address login limit keys on the address nginx saw, not on a hop
    the client wrote into X-Forwarded-For itself.
    """

    def test_leftmostHopIsNotTrusted(self) -> None:
        """
        nginx appends the real peer to whatever X-Forwarded-For the client
        sent, so the rightmost hop that is not a trusted proxy is the client.
        """
        from bwcd.api.site import clientAddress

        trusted = frozenset({"127.0.0.1", "10.0.0.2"})
        self.assertEqual(clientAddress(_PeerRequest("127.0.0.1", b"1.2.3.4, 203.0.113.9", trusted)), "203.0.113.9")
        self.assertEqual(clientAddress(_PeerRequest("127.0.0.1", b"made-up, 203.0.113.9, 10.0.0.2", trusted)), "203.0.113.9")
        self.assertEqual(clientAddress(_PeerRequest("127.0.0.1", None, trusted)), "127.0.0.1")
        # an untrusted peer's header is ignored altogether
        self.assertEqual(clientAddress(_PeerRequest("198.51.100.7", b"1.2.3.4", trusted)), "198.51.100.7")
