"""
Tests for scoped API keys (issue 11 section 3): the C{webhooks:<url glob>}
language of L{bwcd.auth.principal}, the one check in
L{bwcd.api.framework}'s route wrapper, C{scopes} on C{/v1/apikeys}, and the
whole thing over real HTTP against a running daemon (C{bwcd-admin
apikey-create --scope}, C{bwc apikey list}, a restart).
"""

from __future__ import annotations

import json
import os
from typing import Any, List, Optional

from treq.testing import StubTreq
from twisted.internet.defer import Deferred
from twisted.trial.unittest import SynchronousTestCase, TestCase

from bwcd.api.framework import Api
from bwcd.api.query import callerIsAdmin, checkLimit
from bwcd.auth.principal import (
    BadScope,
    MAX_SCOPE_LENGTH,
    Principal,
    globPattern,
    normaliseHookUrl,
    parseScope,
    parseScopes,
    scopeAllowsHook,
)
from bwcd.errors import Invalid, Refused
from tests.daemon import BIN, childEnv, runCommand, startDaemon
from tests.test_auth import Harness

LIMITED = "API key is limited to {}"


def refusedFor(*scopes: str) -> dict:
    return {"faultstring": LIMITED.format(", ".join(scopes))}


class GlobTests(SynchronousTestCase):
    """
    What a C{webhooks:} glob matches, edge cases included.
    """

    def allows(self, glob: str, url: str) -> bool:
        return scopeAllowsHook(parseScope("webhooks:" + glob), url)

    def test_starStaysInOneSegment(self) -> None:
        """
        C{*} matches within one path segment: C{alerts/*} takes
        C{alerts/grafana} (slashes around the url ignored, as hooks are
        looked up) but not C{alerts/a/b}, nor C{alerts} itself, nor a
        neighbour sharing the prefix, nor another case.
        """
        for url in ("alerts/grafana", "/alerts/grafana", "alerts/grafana/", "//alerts/grafana//", "alerts/x.y-z_1"):
            self.assertTrue(self.allows("alerts/*", url), url)
        for url in ("alerts/a/b", "alerts", "alerts/", "/alerts/", "alertsx/y", "xalerts/y", "Alerts/grafana", "alerts//x", ""):
            self.assertFalse(self.allows("alerts/*", url), url)
        self.assertTrue(self.allows("*/grafana", "alerts/grafana"))
        self.assertFalse(self.allows("*/grafana", "a/b/grafana"))
        self.assertTrue(self.allows("a*z", "az"))
        self.assertTrue(self.allows("a*z", "abcz"))
        self.assertFalse(self.allows("a*z", "a/z"))

    def test_doubleStarCrossesSegments(self) -> None:
        """
        C{**} matches any run including C{/}: C{alerts/**} takes every hook
        under C{alerts/}, at any depth, but not C{alerts}; C{***} is C{**}.
        """
        for url in ("alerts/a", "alerts/a/b", "alerts/a/b/c/", "alerts//a"):
            self.assertTrue(self.allows("alerts/**", url), url)
            self.assertTrue(self.allows("alerts/***", url), url)
        for url in ("alerts", "alertsx/a", "other/alerts/a"):
            self.assertFalse(self.allows("alerts/**", url), url)
        self.assertTrue(self.allows("**/grafana", "a/b/grafana"))
        self.assertTrue(self.allows("**", "anything/at/all"))

    def test_trailingSlashesInTheGlob(self) -> None:
        """
        Slashes around the glob are dropped when the scope is stored, so
        C{/alerts/*/} is the same scope as C{alerts/*}; inner ones count.
        """
        self.assertEqual(parseScope("webhooks:/alerts/*/"), "webhooks:alerts/*")
        self.assertEqual(parseScope("webhooks://a//b//"), "webhooks:a//b")
        self.assertTrue(self.allows("/alerts/*/", "alerts/x/"))
        self.assertTrue(self.allows("a//b", "a//b"))
        self.assertFalse(self.allows("a//b", "a/b"))

    def test_questionMarkAndClasses(self) -> None:
        """
        C{?} is one character other than C{/}; C{[...]} and C{[!...]} are
        one character of (not of) a set or range, never C{/}; a leading
        C{]} in a set is literal.
        """
        self.assertTrue(self.allows("hook?", "hook1"))
        self.assertFalse(self.allows("hook?", "hook"))
        self.assertFalse(self.allows("hook?", "hook12"))
        self.assertFalse(self.allows("a?b", "a/b"))
        self.assertTrue(self.allows("env-[ab]", "env-a"))
        self.assertFalse(self.allows("env-[ab]", "env-c"))
        self.assertTrue(self.allows("env-[a-c]", "env-c"))
        self.assertTrue(self.allows("env-[!ab]", "env-c"))
        self.assertFalse(self.allows("env-[!ab]", "env-a"))
        self.assertFalse(self.allows("a[!x]b", "a/b"))
        self.assertFalse(self.allows("a[/]b", "a/b"))
        self.assertTrue(self.allows("x[]]", "x]"))
        self.assertTrue(self.allows("x[\\^&~|]", "x^"))
        self.assertFalse(self.allows("x[\\^&~|]", "xa"))

    def test_otherCharactersAreLiteral(self) -> None:
        """
        Regular-expression characters in a glob mean themselves.
        """
        self.assertTrue(self.allows("a.b", "a.b"))
        self.assertFalse(self.allows("a.b", "axb"))
        for literal in ("a+b", "(x)", "a|b", "$x^", "a{2}", "a\\b", "caf\u00e9", "%2F"):
            self.assertTrue(self.allows(literal, literal), literal)
        self.assertFalse(self.allows("a|b", "a"))
        self.assertFalse(self.allows("a{2}", "aa"))

    def test_genericHookOnlyByName(self) -> None:
        """
        The generic hook C{st2} (any trigger named in its body) is matched
        by the scope C{webhooks:st2} alone, never by a wildcard.
        """
        for glob in ("*", "**", "st?", "s*", "st[2]", "**/"):
            self.assertFalse(self.allows(glob, "st2"), glob)
            self.assertFalse(self.allows(glob, "/st2/"), glob)
        self.assertTrue(self.allows("st2", "st2"))
        self.assertTrue(self.allows("/st2/", "/st2/"))
        self.assertTrue(self.allows("*", "st3"))
        self.assertTrue(self.allows("st2/*", "st2/x"))

    def test_storedScopesOfAnotherKindMatchNothing(self) -> None:
        """
        A scope that reached the database some other way and is not a
        C{webhooks:} glob allows nothing (fail closed).
        """
        self.assertFalse(scopeAllowsHook("executions:*", "x"))
        self.assertFalse(scopeAllowsHook("webhooks:", "x"))
        self.assertFalse(scopeAllowsHook("webhooks:a[b", "a[b"))
        self.assertTrue(scopeAllowsHook("webhooks:/x/", "x"))

    def test_badScopes(self) -> None:
        """
        A scope must be a string C{webhooks:<url glob>} with a non-empty
        glob that compiles; the 400 names it.
        """
        for scope, reason in (
            ("executions:*", "the only scope kind is webhooks:<url glob>"),
            ("Webhooks:x", "the only scope kind is webhooks:<url glob>"),
            ("webhooks", "the only scope kind is webhooks:<url glob>"),
            ("alerts/*", "the only scope kind is webhooks:<url glob>"),
            ("", "the only scope kind is webhooks:<url glob>"),
            ("webhooks:", "the url glob is empty"),
            ("webhooks:///", "the url glob is empty"),
            ("webhooks:a[b", "unclosed [ in the glob"),
            ("webhooks:[!", "unclosed [ in the glob"),
        ):
            with self.assertRaises(BadScope) as e:
                parseScope(scope)
            self.assertEqual(e.exception.faultstring, f'Invalid scope "{scope}": {reason}')
            self.assertIsInstance(e.exception, Invalid)
        with self.assertRaises(BadScope) as e:
            parseScope("webhooks:[z-a]")
        self.assertTrue(e.exception.faultstring.startswith('Invalid scope "webhooks:[z-a]": not a valid glob: '), e.exception.faultstring)
        with self.assertRaises(BadScope) as e:
            parseScope("webhooks:a\nb")
        self.assertEqual(e.exception.faultstring, 'Invalid scope "webhooks:a\\nb": control characters are not allowed')
        with self.assertRaises(BadScope) as e:
            parseScope(7)
        self.assertEqual(e.exception.faultstring, 'Invalid scope "7": a scope is a string, webhooks:<url glob>')
        with self.assertRaises(BadScope) as e:
            parseScope("webhooks:" + "a" * MAX_SCOPE_LENGTH)
        self.assertIn("longer than 1024 characters", e.exception.faultstring)
        self.assertEqual(len(e.exception.faultstring.split('"')[1]), 103)

    def test_parseScopes(self) -> None:
        """
        A key's scopes: none or an empty list is a full-access key;
        duplicates (after canonicalisation) are dropped, order kept; a
        string instead of a list is refused.
        """
        self.assertEqual(parseScopes(None), ())
        self.assertEqual(parseScopes([]), ())
        self.assertEqual(parseScopes(["webhooks:b", "webhooks:/a/", "webhooks:b/", "webhooks:a"]), ("webhooks:b", "webhooks:a"))
        for bad in ("webhooks:a", b"webhooks:a", {"webhooks:a": 1}, 3):
            self.assertRaises(BadScope, parseScopes, bad)
        with self.assertRaises(BadScope) as e:
            parseScopes(["webhooks:ok", "nope"])
        self.assertEqual(e.exception.faultstring, 'Invalid scope "nope": the only scope kind is webhooks:<url glob>')

    def test_patternsCached(self) -> None:
        """
        A glob is compiled once (the check runs on every webhook).
        """
        self.assertIs(globPattern("cache/*"), globPattern("cache/*"))
        self.assertEqual(normaliseHookUrl("/a/b/"), "a/b")


class PrincipalTests(SynchronousTestCase):
    """
    L{Principal} with scopes.
    """

    def test_scopedIsNeverAdmin(self) -> None:
        """
        A principal with scopes cannot be an admin; one is made with
        C{admin=False}, and its scopes are a tuple.
        """
        self.assertRaises(ValueError, Principal, "bot", "apikey", "k1", True, ["webhooks:a"])
        p = Principal("bot", "apikey", "k1", admin=False, scopes=["webhooks:a"])
        self.assertEqual((p.scopes, p.scoped, p.admin), (("webhooks:a",), True, False))
        self.assertEqual(hash(p), hash(Principal("bot", "apikey", "k1", admin=False, scopes=("webhooks:a",))))

    def test_allowsHook(self) -> None:
        """
        A full-access principal may send to any hook; a scoped one to the
        hooks one of its scopes matches.
        """
        self.assertTrue(Principal("alice", "token").allowsHook("anything/at/all"))
        self.assertTrue(Principal("alice", "token").allowsHook("st2"))
        self.assertTrue(Principal("stanley", "none").allowsHook("x"))
        p = Principal("bot", "apikey", admin=False, scopes=("webhooks:alerts/*", "webhooks:grafana"))
        self.assertEqual([p.allowsHook(u) for u in ("alerts/x", "grafana", "/grafana/", "alerts/x/y", "grafana/x", "st2")], [True, True, True, False, False, False])

    def test_refusalNamesEveryScope(self) -> None:
        """
        The 403 names each scope, comma and space separated, in the key's
        order.
        """
        one = Principal("bot", "apikey", admin=False, scopes=("webhooks:alerts/*",)).refusal()
        self.assertIsInstance(one, Refused)
        self.assertEqual(one.faultstring, "API key is limited to webhooks:alerts/*")
        two = Principal("bot", "apikey", admin=False, scopes=("webhooks:b", "webhooks:a")).refusal()
        self.assertEqual(two.faultstring, "API key is limited to webhooks:b, webhooks:a")

    def test_nonAdminAnswers(self) -> None:
        """
        The admin-only rules that read C{principal.admin} treat a scoped key
        as a non-admin: no C{limit=-1}, no page above 100.
        """
        p = Principal("bot", "apikey", admin=False, scopes=("webhooks:a",))
        self.assertFalse(callerIsAdmin(p))
        self.assertTrue(callerIsAdmin(Principal("alice", "apikey")))
        self.assertEqual(checkLimit(100, callerIsAdmin(p)), 100)
        with self.assertRaises(Exception) as e:
            checkLimit(-1, callerIsAdmin(p))
        self.assertEqual(e.exception.code, 403)
        with self.assertRaises(Exception) as e:
            checkLimit(101, callerIsAdmin(p))
        self.assertEqual(e.exception.code, 403)


class FrameworkTests(TestCase):
    """
    The one check in the route wrapper: scoped callers reach only routes
    flagged C{scopedAccess="webhooks"}, and on a prefix route only the
    hooks their scopes match.
    """

    def setUp(self) -> None:
        self.principal: Optional[Principal] = Principal("alice", "token")
        self.seen: List[Any] = []

        async def authenticate(request):
            return self.principal

        api = Api(authenticate)
        api.ready = True

        @api.route("/v1/thing", ["GET", "POST"])
        async def thing(request, principal):
            self.seen.append(("thing", principal.user))
            return {"ok": "thing"}

        @api.route("/v1/open", ["GET"], auth=False)
        async def openRoute(request, principal):
            self.seen.append(("open", principal))
            return {"ok": "open"}

        @api.route("/v1/flagged/<string:name>", ["POST"], scopedAccess="webhooks")
        async def flagged(request, principal, name):
            # what a route() flagged for scoped keys must do itself
            if not principal.allowsHook(name):
                raise principal.refusal()
            self.seen.append(("flagged", name))
            return {"ok": name}

        @api.prefixRoute(["/v1/hooks/"], "POST", "hook", scopedAccess="webhooks")
        async def hooks(request, principal, hook):
            self.seen.append(("hook", hook))
            return {"hook": hook}

        @api.prefixRoute(["/v1/other/"], "POST", "rest")
        async def other(request, principal, rest):
            self.seen.append(("other", rest))
            return {"other": rest}

        self.api = api
        self.stub = StubTreq(api.resource())

    def call(self, method: str, path: str) -> tuple:
        d = self.stub.request(method, "http://bwcd.test" + path)
        self.stub.flush()
        response = self.successResultOf(d)
        return response.code, json.loads(self.successResultOf(response.content()))

    def test_scopedCallerHeldToItsHooks(self) -> None:
        """
        A scoped caller gets 403 naming its scopes on an ordinary route and
        on an unflagged prefix route, reaches the flagged webhook route for
        a matching hook only (percent-decoded as the handler sees it), and
        reaches routes that need no credentials; no refused handler runs.
        """
        self.principal = Principal("bot", "apikey", "k1", admin=False, scopes=("webhooks:alerts/*", "webhooks:deploy"))
        refused = (403, refusedFor("webhooks:alerts/*", "webhooks:deploy"))
        self.assertEqual(self.call("GET", "/v1/thing"), refused)
        self.assertEqual(self.call("POST", "/v1/thing"), refused)
        self.assertEqual(self.call("POST", "/v1/other/alerts/x"), refused)
        self.assertEqual(self.call("POST", "/v1/hooks/alerts/x"), (200, {"hook": "alerts/x"}))
        self.assertEqual(self.call("POST", "/v1/hooks/alerts/x/"), (200, {"hook": "alerts/x/"}))
        self.assertEqual(self.call("POST", "/v1/hooks/alerts%2Fy"), (200, {"hook": "alerts/y"}))
        self.assertEqual(self.call("POST", "/v1/hooks/deploy"), (200, {"hook": "deploy"}))
        for hook in ("alerts/a/b", "alerts", "deploy/x", "st2", "other", "alerts%2Fa%2Fb"):
            self.assertEqual(self.call("POST", "/v1/hooks/" + hook), refused, hook)
        self.assertEqual(self.call("POST", "/v1/flagged/deploy"), (200, {"ok": "deploy"}))
        self.assertEqual(self.call("POST", "/v1/flagged/nope"), refused)
        self.assertEqual(self.call("GET", "/v1/open"), (200, {"ok": "open"}))
        self.assertEqual(self.seen, [("hook", "alerts/x"), ("hook", "alerts/x/"), ("hook", "alerts/y"), ("hook", "deploy"), ("flagged", "deploy"), ("open", None)])

    def test_fullAccessUnchanged(self) -> None:
        """
        A full-access caller (a token, an unscoped key, auth disabled)
        reaches every route and every hook.
        """
        for principal in (Principal("alice", "token"), Principal("ci", "apikey", "k2"), Principal("stanley", "none")):
            self.principal = principal
            self.assertEqual(self.call("GET", "/v1/thing"), (200, {"ok": "thing"}))
            self.assertEqual(self.call("POST", "/v1/other/a/b"), (200, {"other": "a/b"}))
            self.assertEqual(self.call("POST", "/v1/hooks/st2"), (200, {"hook": "st2"}))
            self.assertEqual(self.call("POST", "/v1/flagged/x"), (200, {"ok": "x"}))

    def test_notReadyBeforeRefused(self) -> None:
        """
        While bwcd starts every route answers 503, scoped callers included
        (nothing about the key is revealed before the store is open).
        """
        self.api.ready = False
        self.principal = Principal("bot", "apikey", admin=False, scopes=("webhooks:a",))
        code, body = self.call("GET", "/v1/thing")
        self.assertEqual(code, 503, body)

    def test_unknownAccessKindRefusedAtDeclaration(self) -> None:
        """
        A typo in C{scopedAccess} fails when the route is declared, rather
        than silently closing (or opening) it.
        """
        with self.assertRaises(ValueError):
            self.api.route("/v1/typo", ["GET"], scopedAccess="webhook")(lambda request, principal: None)
        with self.assertRaises(ValueError):
            self.api.prefixRoute(["/v1/typo/"], "POST", "x", scopedAccess="executions")(lambda request, principal, x: None)


class ApiKeyScopeTests(Harness):
    """
    C{scopes} on C{/v1/apikeys} and in authentication, over a real SQLite
    store.
    """

    async def setUp(self) -> None:
        await super().setUp()
        self.auth = {"X-Auth-Token": (await self.login())["token"]}

    async def test_createShowAndAuthenticate(self) -> None:
        """
        A key created with scopes answers them canonical, shows them in GET
        and the list (full-access keys show C{[]}), and authenticates as a
        non-admin principal with those scopes.
        """
        code, _, doc = await self.call("POST", "/v1/apikeys", self.auth, body={"user": "grafana", "scopes": ["webhooks:/alerts/*/", "webhooks:grafana"]})
        self.assertEqual(code, 201, doc)
        self.assertEqual(doc["scopes"], ["webhooks:alerts/*", "webhooks:grafana"])
        code, _, plain = await self.call("POST", "/v1/apikeys", self.auth, body={"user": "ci", "scopes": None})
        self.assertEqual((code, plain["scopes"]), (201, []))
        code, _, got = await self.call("GET", f"/v1/apikeys/{doc['id']}", self.auth)
        self.assertEqual((code, got["scopes"]), (200, ["webhooks:alerts/*", "webhooks:grafana"]))
        code, _, listed = await self.call("GET", "/v1/apikeys", self.auth)
        self.assertEqual([(k["user"], k["scopes"]) for k in listed], [("ci", []), ("grafana", ["webhooks:alerts/*", "webhooks:grafana"])])
        stored = await self.store.get("apikeys", doc["id"])
        self.assertEqual(stored["scopes"], ["webhooks:alerts/*", "webhooks:grafana"])
        self.assertNotIn("scopes", await self.store.get("apikeys", plain["id"]))

        class Request:
            args: dict = {}

            def __init__(self, key: str) -> None:
                self.key = key

            def getHeader(self, name: bytes) -> Optional[bytes]:
                return self.key.encode() if name.lower() == b"st2-api-key" else None

        principal = await Deferred.fromCoroutine(self.authenticator.authenticate(Request(doc["key"])))
        self.assertEqual(principal, Principal("grafana", "apikey", doc["id"], admin=False, scopes=("webhooks:alerts/*", "webhooks:grafana")))
        principal = await Deferred.fromCoroutine(self.authenticator.authenticate(Request(plain["key"])))
        self.assertEqual((principal.admin, principal.scopes), (True, ()))

    async def test_badScopeIs400(self) -> None:
        """
        A bad scope is a 400 naming it (the first bad one), or jsonschema's
        message for a wrong type; nothing is stored.
        """
        for scopes, message in (
            (["webhooks:ok", "executions:*"], 'Invalid scope "executions:*": the only scope kind is webhooks:<url glob>'),
            (["webhooks:"], 'Invalid scope "webhooks:": the url glob is empty'),
            (["webhooks:a[b"], 'Invalid scope "webhooks:a[b": unclosed [ in the glob'),
            ("webhooks:a", "'webhooks:a' is not of type 'array', 'null'"),
            ([1], "1 is not of type 'string'"),
        ):
            code, _, body = await self.call("POST", "/v1/apikeys", self.auth, body={"scopes": scopes})
            self.assertEqual((code, body), (400, {"faultstring": message}), scopes)
        _, total = await Deferred.fromCoroutine(self.apikeys.list())
        self.assertEqual(total, 0)

    async def test_updateScopes(self) -> None:
        """
        PUT may change a key's scopes, which apply to the next request at
        once; a body without C{scopes} (what C{bwc apikey disable} sends)
        keeps them; C{[]} makes the key full-access; a bad one is a 400.
        """
        created = (await self.call("POST", "/v1/apikeys", self.auth, body={"scopes": ["webhooks:a"]}))[2]
        path = f"/v1/apikeys/{created['id']}"
        key = {"St2-Api-Key": created["key"]}
        code, _, body = await self.call("GET", "/v1/whoami", key)
        self.assertEqual((code, body), (403, refusedFor("webhooks:a")))
        code, _, body = await self.call("PUT", path, self.auth, body={"scopes": ["webhooks:b/**"]})
        self.assertEqual((code, body["scopes"]), (200, ["webhooks:b/**"]))
        code, _, body = await self.call("GET", "/v1/whoami", key)
        self.assertEqual((code, body), (403, refusedFor("webhooks:b/**")))
        code, _, body = await self.call("PUT", path, self.auth, body={"id": created["id"], "user": "alice", "metadata": {}, "enabled": True})
        self.assertEqual((code, body["scopes"]), (200, ["webhooks:b/**"]))
        code, _, body = await self.call("PUT", path, self.auth, body={"scopes": ["nope"]})
        self.assertEqual((code, body), (400, {"faultstring": 'Invalid scope "nope": the only scope kind is webhooks:<url glob>'}))
        code, _, body = await self.call("PUT", path, self.auth, body={"scopes": []})
        self.assertEqual((code, body["scopes"]), (200, []))
        code, _, body = await self.call("GET", "/v1/whoami", key)
        self.assertEqual((code, body["user"]), (200, "alice"))

    async def test_scopedKeyCannotManageCredentials(self) -> None:
        """
        A scoped key cannot list, read, create, change or delete keys, nor
        validate tokens: each is a 403 naming its scope, and nothing
        changes.
        """
        created = (await self.call("POST", "/v1/apikeys", self.auth, body={"scopes": ["webhooks:alerts/*"]}))[2]
        key = {"St2-Api-Key": created["key"]}
        refused = refusedFor("webhooks:alerts/*")
        for method, path, body in (
            ("GET", "/v1/apikeys", None),
            ("GET", "/v1/apikeys?limit=-1", None),
            ("GET", f"/v1/apikeys/{created['id']}", None),
            ("POST", "/v1/apikeys", {}),
            ("PUT", f"/v1/apikeys/{created['id']}", {"scopes": []}),
            ("DELETE", f"/v1/apikeys/{created['id']}", None),
            ("POST", "/v1/tokens/validate", {"token": "x"}),
            ("POST", "/auth/v1/tokens/validate", {"token": "x"}),
        ):
            code, _, answer = await self.call(method, path, key, body=body)
            self.assertEqual((code, answer), (403, refused), (method, path))
        docs, total = await Deferred.fromCoroutine(self.apikeys.list())
        self.assertEqual((total, docs[0]["scopes"]), (1, ["webhooks:alerts/*"]))


#: a rule on the hook alerts/grafana whose action writes a fixed line
ALERT_RULE = {
    "name": "grafana_alert",
    "pack": "examples",
    "enabled": True,
    "trigger": {"type": "core.st2.webhook", "parameters": {"url": "alerts/grafana"}},
    "action": {"ref": "core.local", "parameters": {"cmd": "echo alert received"}},
}


class DaemonTests(TestCase):
    """
    Scoped keys over real HTTP against a running C{twistd bwcd}.
    """

    timeout = 120

    def scoped(self, key: str, json_: bool = True) -> dict:
        headers = {"St2-Api-Key": key}
        if json_:
            headers["Content-Type"] = "application/json"
        return headers

    async def test_scopedKeyOverHttp(self) -> None:
        """
        A key made with C{webhooks:alerts/*}: 202 on its hook, whose rule
        runs; 403 naming the scope everywhere else (executions, actions,
        keys, datastore, listing hooks, other hooks, the generic hook), also
        with the key in the query string; C{/v1/health} answers; the
        unscoped key keeps full access; all of it survives a restart.
        """
        d = await startDaemon(self)
        response, rule = await d.post("/v1/rules", ALERT_RULE)
        self.assertEqual(response.code, 201, rule)
        response, created = await d.post("/v1/apikeys", {"user": "grafana", "scopes": ["webhooks:alerts/*"]})
        self.assertEqual((response.code, created["scopes"]), (201, ["webhooks:alerts/*"]))
        key = created["key"]

        async def checkScoped() -> None:
            response, body = await d.post("/v1/webhooks/alerts/grafana", {"title": "disk full"}, headers=self.scoped(key))
            self.assertEqual((response.code, body), (202, {"title": "disk full"}))
            instanceId = response.headers.getRawHeaders("X-BWC-Trigger-Instance")[0]
            [execId] = await d.ruleExecutions(instanceId, 1)
            done = await d.waitFor(execId)
            self.assertEqual((done["status"], done["result"]["stdout"]), ("succeeded", "alert received"))

            refused = refusedFor("webhooks:alerts/*")
            for method, path, body in (
                ("POST", "/v1/executions", {"action": "core.local", "parameters": {"cmd": "id"}}),
                ("POST", "/v1/executions", {"action": "core.local", "parameters": {"cmd": "id"}, "user": "root"}),
                ("GET", "/v1/executions", None),
                ("GET", f"/v1/executions/{execId}", None),
                ("GET", "/v1/actions", None),
                ("GET", "/v1/apikeys", None),
                ("GET", "/v1/apikeys?limit=-1", None),
                ("POST", "/v1/apikeys", {}),
                ("GET", "/v1/keys?user=stanley", None),
                ("GET", "/v1/rules", None),
                ("GET", "/v1/webhooks", None),
                ("GET", "/v1/webhooks/alerts/grafana", None),
                ("POST", "/v1/webhooks/deploy", {"x": 1}),
                ("POST", "/v1/webhooks/alerts/a/b", {"x": 1}),
                ("POST", "/v1/webhooks/st2", {"trigger": "core.st2.webhook", "payload": {}}),
                ("POST", "/api/v1/webhooks/other", {"x": 1}),
            ):
                if method == "GET":
                    response, answer = await d.get(path, headers=self.scoped(key, False))
                else:
                    response, answer = await d.post(path, body, headers=self.scoped(key))
                self.assertEqual((response.code, answer), (403, refused), (method, path))
            response, answer = await d.get("/v1/actions?st2-api-key=" + key, headers={})
            self.assertEqual((response.code, answer), (403, refused))
            response, answer = await d.post("/v1/webhooks/alerts/grafana?st2-api-key=" + key, {"x": 1}, headers={"Content-Type": "application/json"})
            self.assertEqual(response.code, 202, answer)
            response, answer = await d.get("/v1/health", headers=self.scoped(key, False))
            self.assertEqual(response.code, 200, answer)

            # the unscoped key made by bwcd-admin keeps full access
            response, actions = await d.get("/v1/actions")
            self.assertEqual(response.code, 200, actions)
            response, keys = await d.get("/v1/apikeys")
            self.assertEqual(sorted(k["scopes"] for k in keys), [[], ["webhooks:alerts/*"]])
            response, answer = await d.post("/v1/webhooks/st2", {"trigger": "core.st2.webhook", "payload": {}})
            self.assertNotEqual(response.code, 403, answer)

        await checkScoped()
        await d.restart()
        await checkScoped()

    async def test_adminAndCli(self) -> None:
        """
        C{bwcd-admin apikey-create --scope} (repeatable) makes a scoped key
        the running daemon honours; C{bwc apikey create -s} makes one too;
        C{bwc apikey list} shows a scopes column.
        """
        d = await startDaemon(self)
        code, out, err = await runCommand(
            [os.path.join(BIN, "bwcd-admin"), "apikey-create", "--config", d.configPath, "--user", "alertmanager", "--scope", "webhooks:deploy/**", "--scope", "webhooks:/pager/"]
        )
        self.assertEqual(code, 0, err)
        adminKey = out.decode().strip()
        response, answer = await d.get("/v1/actions", headers=self.scoped(adminKey, False))
        self.assertEqual((response.code, answer), (403, refusedFor("webhooks:deploy/**", "webhooks:pager")))
        # the scope lets it through to the receiver, which knows no such hook
        response, answer = await d.post("/v1/webhooks/deploy/prod/eu", {"x": 1}, headers=self.scoped(adminKey))
        self.assertEqual((response.code, answer), (404, {"faultstring": "Webhook deploy/prod/eu not registered with st2"}))

        home = os.path.abspath(self.mktemp())
        os.makedirs(home)
        env = childEnv({"HOME": home, "COLUMNS": "240", "ST2_API_URL": d.apiURL + "/v1", "ST2_AUTH_URL": d.authURL, "ST2_API_KEY": d.apiKey or ""})
        bwc = os.path.join(BIN, "bwc")
        code, out, err = await runCommand([bwc, "apikey", "create", "-u", "jira", "-s", "webhooks:jira/*", "-k"], env=env)
        self.assertEqual(code, 0, err)
        cliKey = out.decode().strip()
        response, answer = await d.get("/v1/rules", headers=self.scoped(cliKey, False))
        self.assertEqual((response.code, answer), (403, refusedFor("webhooks:jira/*")))

        code, out, err = await runCommand([bwc, "apikey", "list"], env=env)
        self.assertEqual(code, 0, err)
        table = out.decode()
        self.assertIn("scopes", table)
        rows = {line.split("|")[2].strip(): line for line in table.splitlines() if line.startswith("|") and "|" in line[1:]}
        self.assertIn("webhooks:deploy/**, webhooks:pager", rows["alertmanager"])
        self.assertIn("webhooks:jira/*", rows["jira"])
        code, out, err = await runCommand([bwc, "apikey", "list", "-j"], env=env)
        self.assertEqual(code, 0, err)
        self.assertEqual(sorted(k["scopes"] for k in json.loads(out)), [[], ["webhooks:deploy/**", "webhooks:pager"], ["webhooks:jira/*"]])
