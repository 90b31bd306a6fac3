"""
Tests for authentication: L{bwcd.auth} and L{bwcd.api.auth_routes}.

Routes are driven over HTTP with treq's StubTreq, on a real SQLite store in a
temporary folder and a real bcrypt users file; time is a L{Clock} so that
token expiry and the validation cache can be stepped through.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import subprocess
from datetime import datetime, timezone
from typing import Any, List, Optional

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.logger import formatEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase, TestCase

from bwcd.api.auth_routes import TOKEN_PATHS, installApiKeyRoutes, installTokenRoutes, parseBasic
from bwcd.api import framework
from bwcd.api.framework import Api
from bwcd.auth.apikeys import ApiKeyNotFound, ApiKeys, KeyHashChange, generateKey, hashKey
from bwcd.auth.credentials import Authenticator, ValidationCache, findCredential
from bwcd.auth.principal import Principal
from bwcd.auth.tokens import TtlError
from bwcd.errors import Invalid, NotFound, Unauthenticated
from bwcd.auth.htpasswd import Htpasswd, UsersFileError, hashPassword, parseUsers, setPassword
from bwcd.auth.tokens import Tokens, hashToken
from bwcd.config import ApiConfig, Config
from bwcd.store.sqlite import SQLiteStore
from bwcd import timeutil
from tests.daemon import PumpWhenFinished

#: 2027-01-15T08:00:00Z, a time with no special properties
T0 = 1800000000.0
PUBLIC_URL = "https://bwcd.example.org:9101"
MISSING = "Unauthorized - One of Token or API key required."
DISABLED = "Unauthorized - API key is disabled."
EXPIRED = "Unauthorized - Token has expired."
BAD_LOGIN = "Invalid or missing credentials"


#: bodies the one JSON parser refuses: each must be a 400, never a 500
HOSTILE = (
    b"[" * 5000 + b"]" * 5000,
    b'{"ttl": NaN}',
    b'{"ttl": Infinity}',
    b'{"ttl": 1e309}',
    b'{"user": "\\ud800"}',
    b'{"user": "\xff"}',
    b"{nope",
)


def basic(user: str, password: str, scheme: str = "Basic") -> str:
    return scheme + " " + base64.b64encode(f"{user}:{password}".encode()).decode()


def st2Hash(key: str) -> str:
    # written out independently of bwcd.auth.apikeys.hashKey
    return hashlib.sha512(b"saltnpepper" + key.encode()).hexdigest()


class CountingStore:
    """
    Passes every call to a real store and counts the reads of each
    collection, to tell whether a check went to the database.
    """

    def __init__(self, store: Any) -> None:
        self._store = store
        self.reads: List[str] = []

    def findOne(self, collection, filter, sort=()):
        self.reads.append(collection)
        return self._store.findOne(collection, filter, sort)

    def __getattr__(self, name):
        return getattr(self._store, name)


class Harness(TestCase):
    """
    An Api with the auth routes and a C{/v1/whoami} route that needs
    credentials, over a real SQLite store.
    """

    authEnabled = True

    async def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(T0)
        self.folder = os.path.abspath(self.mktemp())
        os.makedirs(self.folder)
        sqlite = SQLiteStore(os.path.join(self.folder, "bwcd.sqlite"), reactor)
        await sqlite.start()
        self.addCleanup(sqlite.stop)
        self.store = CountingStore(sqlite)
        self.usersFile = os.path.join(self.folder, "htpasswd")
        setPassword(self.usersFile, "alice", "correct horse", rounds=4)
        self.htpasswd = Htpasswd(self.usersFile, reactor=reactor)
        self.tokens = Tokens(self.store, self.clock, ttl=3600, maxTtl=7200)
        self.apikeys = ApiKeys(self.store, self.clock)
        self.authenticator = Authenticator(self.tokens, self.apikeys, self.authEnabled, "stanley")
        # as the daemon wires it: JSON routes need a JSON type when auth is off
        self.api = Api(self.authenticator.authenticate, requireJsonContentType=not self.authEnabled)
        self.api.ready = True
        config = Config(api=ApiConfig(public_url=PUBLIC_URL))
        installTokenRoutes(self.api, self.tokens, self.htpasswd, config, paths=TOKEN_PATHS)
        installApiKeyRoutes(self.api, self.apikeys)

        @self.api.route("/v1/whoami", ["GET", "POST"])
        async def whoami(request, principal):
            return {"user": principal.user, "method": principal.method, "id": principal.credentialId}

        self.stub = PumpWhenFinished(self.api.resource()).stub
        self.logged: List[dict] = []
        globalLogPublisher.addObserver(self.logged.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.logged.append)

    async def call(self, method: str, path: str, headers: Optional[dict] = None, body: Any = None, raw: Optional[bytes] = None, params: Any = None):
        """
        One request; the response's status, headers and decoded JSON body.
        """
        headers = dict(headers or {})
        data = raw
        if body is not None:
            data = json.dumps(body).encode()
            headers.setdefault("Content-Type", "application/json")
        response = await self.stub.request(method, "http://bwcd.test" + path, headers=headers, data=data, params=params)
        content = await response.content()
        decoded = json.loads(content) if content else None
        return response.code, response.headers, decoded

    async def login(self, user: str = "alice", password: str = "correct horse", body: Any = None) -> dict:
        code, _, doc = await self.call("POST", "/auth/v1/tokens", {"Authorization": basic(user, password)}, body=body)
        self.assertEqual(code, 201, doc)
        return doc

    async def newKey(self, **body: Any) -> dict:
        token = (await self.login())["token"]
        code, _, doc = await self.call("POST", "/v1/apikeys", {"X-Auth-Token": token}, body=body)
        self.assertEqual(code, 201, doc)
        return doc

    def assertNotLogged(self, *secrets: str) -> None:
        for event in self.logged:
            text = repr(event) + (formatEvent(event) or "")
            for secret in secrets:
                self.assertNotIn(secret, text)


class CredentialCheckTests(Harness):
    """
    The 401s and the order in which credentials are looked for.
    """

    async def test_noCredential(self) -> None:
        """
        A request without any credential is refused with st2's message.
        """
        code, headers, body = await self.call("GET", "/v1/whoami")
        self.assertEqual((code, body), (401, {"faultstring": MISSING}))
        self.assertEqual(headers.getRawHeaders("content-type"), ["application/json"])

    async def test_emptyCredentialIsAbsent(self) -> None:
        """
        An empty header or query value counts as no credential at all.
        """
        code, _, body = await self.call("GET", "/v1/whoami?x-auth-token=", {"X-Auth-Token": "", "St2-Api-Key": ""})
        self.assertEqual((code, body), (401, {"faultstring": MISSING}))

    async def test_unknownToken(self) -> None:
        """
        A token that was never issued gives a bare C{Unauthorized}.
        """
        code, _, body = await self.call("GET", "/v1/whoami", {"X-Auth-Token": "0" * 32})
        self.assertEqual((code, body), (401, {"faultstring": "Unauthorized"}))

    async def test_tokenExpires(self) -> None:
        """
        A token works until its expiry and is refused from that instant on.
        """
        doc = await self.login()
        self.clock.advance(3599.5)
        code, _, body = await self.call("GET", "/v1/whoami", {"X-Auth-Token": doc["token"]})
        self.assertEqual((code, body["user"], body["method"]), (200, "alice", "token"))
        self.clock.advance(0.5)
        code, _, body = await self.call("GET", "/v1/whoami", {"X-Auth-Token": doc["token"]})
        self.assertEqual((code, body), (401, {"faultstring": EXPIRED}))

    async def test_unknownApiKey(self) -> None:
        """
        An unknown API key is refused naming the st2 hash of what was sent.
        """
        code, _, body = await self.call("GET", "/v1/whoami", {"St2-Api-Key": "not-a-key"})
        expected = f"Unauthorized - ApiKey with key_hash={st2Hash('not-a-key')} not found."
        self.assertEqual((code, body), (401, {"faultstring": expected}))

    async def test_disabledApiKey(self) -> None:
        """
        A disabled API key is refused with its own message.
        """
        created = await self.newKey(enabled=False)
        code, _, body = await self.call("GET", "/v1/whoami", {"St2-Api-Key": created["key"]})
        self.assertEqual((code, body), (401, {"faultstring": DISABLED}))

    async def test_headerNamesAnyCase(self) -> None:
        """
        Header names are matched whatever their case.
        """
        token = (await self.login())["token"]
        key = (await self.newKey())["key"]
        for headers, method in (
            ({"x-auth-token": token}, "token"),
            ({"X-AUTH-TOKEN": token}, "token"),
            ({"St2-Api-key": key}, "apikey"),
            ({"st2-api-key": key}, "apikey"),
        ):
            code, _, body = await self.call("GET", "/v1/whoami", headers)
            self.assertEqual((code, body["method"]), (200, method), headers)

    async def test_queryCredentials(self) -> None:
        """
        Credentials may come in the query string, under their exact names.
        """
        token = (await self.login())["token"]
        key = (await self.newKey())["key"]
        code, _, body = await self.call("GET", "/v1/whoami", params={"x-auth-token": token})
        self.assertEqual((code, body["method"]), (200, "token"))
        code, _, body = await self.call("GET", "/v1/whoami", params={"st2-api-key": key})
        self.assertEqual((code, body["method"]), (200, "apikey"))
        code, _, body = await self.call("GET", "/v1/whoami", params={"X-Auth-Token": token})
        self.assertEqual((code, body), (401, {"faultstring": MISSING}))

    async def test_precedence(self) -> None:
        """
        The first credential present decides, in st2's order: header token,
        header key, query token, query key; a bad first one is not rescued
        by a good later one.
        """
        token = (await self.login())["token"]
        key = (await self.newKey())["key"]
        bad = "f" * 32
        cases = [
            ({"X-Auth-Token": token, "St2-Api-Key": "wrong"}, {"st2-api-key": "wrong"}, 200, "token"),
            ({"X-Auth-Token": bad, "St2-Api-Key": key}, None, 401, "Unauthorized"),
            ({"St2-Api-Key": key}, {"x-auth-token": bad}, 200, "apikey"),
            ({"St2-Api-Key": "wrong"}, {"x-auth-token": token}, 401, f"Unauthorized - ApiKey with key_hash={st2Hash('wrong')} not found."),
            ({}, {"x-auth-token": token, "st2-api-key": "wrong"}, 200, "token"),
            ({}, {"x-auth-token": bad, "st2-api-key": key}, 401, "Unauthorized"),
            ({}, {"st2-api-key": key}, 200, "apikey"),
        ]
        for headers, params, code, expected in cases:
            got, _, body = await self.call("GET", "/v1/whoami", headers, params=params)
            self.assertEqual(got, code, (headers, params, body))
            self.assertEqual(body.get("method") if code == 200 else body["faultstring"], expected)

    async def test_findCredentialPure(self) -> None:
        """
        L{findCredential} reports the kind and where it was found, never
        trying a later source once one is present.
        """

        class R:
            def __init__(self, headers, args):
                self._h = {k.lower(): v for k, v in headers.items()}
                self.args = args

            def getHeader(self, name):
                return self._h.get(name.decode().lower())

        self.assertIsNone(findCredential(R({}, {})))
        self.assertEqual(findCredential(R({"st2-api-key": "k"}, {b"x-auth-token": [b"t"]})), ("apikey", "header St2-Api-Key", "k"))
        self.assertEqual(findCredential(R({}, {b"st2-api-key": [b"k"], b"x-auth-token": [b"t"]})), ("token", "query x-auth-token", "t"))

    async def test_principalForApiKey(self) -> None:
        """
        An API key authenticates as the key's owner, with the key's id.
        """
        created = await self.newKey(user="ci-bot")
        code, _, body = await self.call("GET", "/v1/whoami", {"St2-Api-Key": created["key"]})
        self.assertEqual((code, body), (200, {"user": "ci-bot", "method": "apikey", "id": created["id"]}))

    async def test_refusalsAreDomainErrors(self) -> None:
        """
        The credential check raises L{Unauthenticated} with st2's messages
        (the API answers it as a 401); it returns the L{Principal} the API
        layer re-exports.
        """

        class R:
            args: dict = {}

            def __init__(self, headers: dict) -> None:
                self.headers = headers

            def getHeader(self, name: bytes) -> Optional[bytes]:
                return self.headers.get(name.decode().lower())

        with self.assertRaises(Unauthenticated) as cm:
            await self.authenticator.authenticate(R({}))
        self.assertEqual(cm.exception.faultstring, MISSING)
        with self.assertRaises(Unauthenticated) as cm:
            await Deferred.fromCoroutine(self.authenticator.authenticate(R({"x-auth-token": b"bogus"})))
        self.assertEqual(cm.exception.faultstring, "Unauthorized")
        token = (await self.login())["token"]
        principal = await Deferred.fromCoroutine(self.authenticator.authenticate(R({"x-auth-token": token.encode()})))
        self.assertIs(framework.Principal, Principal)
        self.assertEqual((type(principal), principal.user, principal.admin), (Principal, "alice", True))

    async def test_secretsNeverLogged(self) -> None:
        """
        No password, token or key, nor their hashes, appears in any log event
        while logging in, creating keys and authenticating in all four ways.
        """
        doc = await self.login()
        created = await self.newKey()
        token, key = doc["token"], created["key"]
        await self.call("GET", "/v1/whoami", {"X-Auth-Token": token})
        await self.call("GET", "/v1/whoami", {"St2-Api-Key": key})
        await self.call("GET", "/v1/whoami", params={"x-auth-token": token})
        await self.call("GET", "/v1/whoami", params={"st2-api-key": key})
        await self.call("POST", "/auth/v1/tokens", {"Authorization": basic("alice", "wrong password")})
        self.assertTrue(self.logged)
        self.assertNotLogged(token, key, "correct horse", "wrong password", hashToken(token), hashKey(key))


class ValidationCacheTests(Harness):
    """
    Successful checks are reused for at most two seconds.
    """

    async def test_apiKeyCheckCached(self) -> None:
        """
        A second check of the same key within two seconds does not read the
        store; after two seconds it does again.
        """
        key = (await self.newKey())["key"]
        del self.store.reads[:]
        for _ in range(3):
            code, _, _ = await self.call("GET", "/v1/whoami", {"St2-Api-Key": key})
            self.assertEqual(code, 200)
        self.assertEqual(self.store.reads.count("apikeys"), 1)
        self.clock.advance(2.0)
        await self.call("GET", "/v1/whoami", {"St2-Api-Key": key})
        self.assertEqual(self.store.reads.count("apikeys"), 2)

    async def test_disabledElsewhereRefusedWithinTwoSeconds(self) -> None:
        """
        A key disabled or deleted behind this process's back (another
        process, the database directly) is refused within two seconds.
        """
        first = await self.newKey()
        second = await self.newKey()
        for created in (first, second):
            code, _, _ = await self.call("GET", "/v1/whoami", {"St2-Api-Key": created["key"]})
            self.assertEqual(code, 200)
        await self.store.update("apikeys", {"id": first["id"]}, set={"enabled": False})
        await self.store.deleteOne("apikeys", second["id"])
        self.clock.advance(1.9)
        code, _, _ = await self.call("GET", "/v1/whoami", {"St2-Api-Key": first["key"]})
        self.assertEqual(code, 200)
        self.clock.advance(0.1)
        code, _, body = await self.call("GET", "/v1/whoami", {"St2-Api-Key": first["key"]})
        self.assertEqual((code, body), (401, {"faultstring": DISABLED}))
        code, _, body = await self.call("GET", "/v1/whoami", {"St2-Api-Key": second["key"]})
        self.assertEqual((code, body["faultstring"]), (401, f"Unauthorized - ApiKey with key_hash={st2Hash(second['key'])} not found."))

    async def test_tokenDeletedElsewhereRefusedWithinTwoSeconds(self) -> None:
        """
        A token removed from the database stops working within two seconds.
        """
        doc = await self.login()
        code, _, _ = await self.call("GET", "/v1/whoami", {"X-Auth-Token": doc["token"]})
        self.assertEqual(code, 200)
        await self.store.delete("tokens", {"id": doc["id"]})
        self.clock.advance(1.0)
        code, _, _ = await self.call("GET", "/v1/whoami", {"X-Auth-Token": doc["token"]})
        self.assertEqual(code, 200)
        self.clock.advance(1.0)
        code, _, body = await self.call("GET", "/v1/whoami", {"X-Auth-Token": doc["token"]})
        self.assertEqual((code, body), (401, {"faultstring": "Unauthorized"}))

    async def test_changesThroughApiApplyAtOnce(self) -> None:
        """
        Disabling or deleting a cached key through this process's API takes
        effect on the very next request.
        """
        token = (await self.login())["token"]
        first = await self.newKey()
        second = await self.newKey()
        for created in (first, second):
            code, _, _ = await self.call("GET", "/v1/whoami", {"St2-Api-Key": created["key"]})
            self.assertEqual(code, 200)
        code, _, _ = await self.call("PUT", f"/v1/apikeys/{first['id']}", {"X-Auth-Token": token}, body={"enabled": False})
        self.assertEqual(code, 200)
        code, _, _ = await self.call("DELETE", f"/v1/apikeys/{second['id']}", {"X-Auth-Token": token})
        self.assertEqual(code, 204)
        code, _, body = await self.call("GET", "/v1/whoami", {"St2-Api-Key": first["key"]})
        self.assertEqual((code, body), (401, {"faultstring": DISABLED}))
        code, _, body = await self.call("GET", "/v1/whoami", {"St2-Api-Key": second["key"]})
        self.assertEqual(code, 401)
        self.assertIn("not found", body["faultstring"])

    async def test_cacheKeyedByHash(self) -> None:
        """
        The cache holds hashes, never the plaintext credential.
        """
        doc = await self.login()
        key = (await self.newKey())["key"]
        await self.call("GET", "/v1/whoami", {"St2-Api-Key": key})
        await self.call("GET", "/v1/whoami", {"X-Auth-Token": doc["token"]})
        self.assertEqual(set(self.apikeys._cache._entries), {hashKey(key)})
        self.assertIn(hashToken(doc["token"]), self.tokens._cache._entries)
        for cacheKey in self.tokens._cache._entries:
            self.assertRegex(cacheKey, r"^[0-9a-f]{64}$")
        self.assertNotIn(key, repr(self.apikeys._cache._entries))
        self.assertNotIn(doc["token"], repr(self.tokens._cache._entries))


class CacheUnitTests(SynchronousTestCase):
    """
    L{ValidationCache} on its own.
    """

    def test_expiresAndSweeps(self) -> None:
        """
        Entries vanish after their time, and a full cache drops stale
        entries instead of growing without bound.
        """
        clock = Clock()
        cache = ValidationCache(clock, 2.0)
        cache.put("a", {"n": 1})
        clock.advance(1.99)
        self.assertEqual(cache.get("a"), {"n": 1})
        clock.advance(0.01)
        self.assertIsNone(cache.get("a"))
        for i in range(ValidationCache._SWEEP_AT):
            cache.put(str(i), {})
        clock.advance(3)
        cache.put("fresh", {})
        self.assertEqual(len(cache), 1)

    def test_disabledWithZeroSeconds(self) -> None:
        """
        A cache of zero seconds keeps nothing.
        """
        cache = ValidationCache(Clock(), 0)
        cache.put("a", {})
        self.assertIsNone(cache.get("a"))


class TokenRouteTests(Harness):
    """
    C{POST /auth/v1/tokens} and C{/validate}.
    """

    async def test_issue(self) -> None:
        """
        A good password gives 201 with st2's fields, the public API URL, an
        expiry one default TTL away, and only a hash in the store.
        """
        code, headers, doc = await self.call("POST", "/auth/v1/tokens", {"Authorization": basic("alice", "correct horse")})
        self.assertEqual(code, 201)
        self.assertEqual(headers.getRawHeaders("x-api-url"), [PUBLIC_URL])
        self.assertEqual(set(doc), {"user", "token", "expiry", "id", "metadata"})
        self.assertEqual(doc["user"], "alice")
        self.assertEqual(doc["metadata"], {})
        self.assertRegex(doc["token"], r"^[0-9a-f]{32}$")
        self.assertRegex(doc["id"], r"^[0-9a-f]{24}$")
        self.assertEqual(doc["expiry"], "2027-01-15T09:00:00.000000Z")
        stored = await self.store.get("tokens", doc["id"])
        self.assertEqual(stored["token_hash"], hashlib.sha256(doc["token"].encode()).hexdigest())
        self.assertNotIn(doc["token"], json.dumps(stored))

    async def test_allPaths(self) -> None:
        """
        Tokens are issued at C{/auth/v1/tokens}, C{/v1/tokens} and
        C{/tokens}, with or without a trailing slash.
        """
        for path in ("/auth/v1/tokens", "/v1/tokens", "/tokens", "/tokens/"):
            code, _, doc = await self.call("POST", path, {"Authorization": basic("alice", "correct horse")})
            self.assertEqual(code, 201, path)
            code, _, _ = await self.call("GET", "/v1/whoami", {"X-Auth-Token": doc["token"]})
            self.assertEqual(code, 200)

    async def test_badLogins(self) -> None:
        """
        Every malformed or wrong Basic header gives the same 401.
        """
        good = base64.b64encode(b"alice:correct horse").decode()
        for header in (
            None,
            "Bearer " + good,
            "Basic !!!not-base64!!!",
            "Basic " + base64.b64encode(b"alice-no-colon").decode(),
            basic("alice", "wrong"),
            basic("mallory", "correct horse"),
            basic("alice", ""),
        ):
            headers = {} if header is None else {"Authorization": header}
            code, _, body = await self.call("POST", "/auth/v1/tokens", headers)
            self.assertEqual((code, body), (401, {"faultstring": BAD_LOGIN}), header)

    async def test_schemeAnyCase(self) -> None:
        """
        The Basic scheme name is matched whatever its case.
        """
        for scheme in ("basic", "BASIC"):
            code, _, _ = await self.call("POST", "/auth/v1/tokens", {"Authorization": basic("alice", "correct horse", scheme)})
            self.assertEqual(code, 201)

    async def test_emptyBodies(self) -> None:
        """
        An empty body is fine whatever its type, as is C{{}} and a null ttl.
        """
        auth = {"Authorization": basic("alice", "correct horse")}
        for headers, raw in (
            ({"Content-Type": "text/plain"}, b""),
            ({"Content-Type": "application/json"}, b"  "),
            ({"Content-Type": "application/json"}, b"{}"),
            ({"Content-Type": "application/json"}, b'{"ttl": null}'),
        ):
            code, _, doc = await self.call("POST", "/auth/v1/tokens", {**auth, **headers}, raw=raw)
            self.assertEqual(code, 201, raw)
            self.assertEqual(doc["expiry"], "2027-01-15T09:00:00.000000Z")

    async def test_ttl(self) -> None:
        """
        A ttl within range sets the expiry; above the maximum or below 1 is
        a 400 with st2's message.
        """
        doc = await self.login(body={"ttl": 7200})
        self.assertEqual(doc["expiry"], "2027-01-15T10:00:00.000000Z")
        auth = {"Authorization": basic("alice", "correct horse")}
        for ttl, message in (
            (7201, "TTL specified 7201 is greater than max allowed 7200."),
            (0, "0 is less than the minimum of 1"),
            (-5, "-5 is less than the minimum of 1"),
            ("60", "'60' is not of type 'integer', 'null'"),
        ):
            code, _, body = await self.call("POST", "/auth/v1/tokens", auth, body={"ttl": ttl})
            self.assertEqual((code, body), (400, {"faultstring": message}), ttl)

    async def test_badJson(self) -> None:
        """
        A body that is not JSON is a 400.
        """
        code, _, body = await self.call("POST", "/auth/v1/tokens", {"Authorization": basic("alice", "correct horse")}, raw=b"{nope")
        self.assertEqual(code, 400)
        self.assertTrue(body["faultstring"].startswith("Failed to parse request body"))

    async def test_hostileJsonIs400(self) -> None:
        """
        Deep, NaN, Infinity, 1e309, lone-surrogate and invalid UTF-8 bodies
        are 400s when logging in and validating, never 500s.
        """
        auth = {"Authorization": basic("alice", "correct horse"), "Content-Type": "application/json"}
        token = (await self.login())["token"]
        for path, headers in (("/auth/v1/tokens", auth), ("/auth/v1/tokens/validate", {"X-Auth-Token": token})):
            for raw in HOSTILE:
                code, _, body = await self.call("POST", path, headers, raw=raw)
                self.assertEqual(code, 400, (path, raw[:40]))
                self.assertTrue(body["faultstring"].startswith("Failed to parse request body: "), body)
        for body in ([], "x", {"ttl": []}, {"ttl": {"a": 1}}, {"user": []}):
            code, _, answer = await self.call("POST", "/auth/v1/tokens", auth, body=body)
            self.assertEqual(code, 400, (body, answer))
        for body in ([], "x", {"token": []}, {"token": {"a": 1}}):
            code, _, answer = await self.call("POST", "/auth/v1/tokens/validate", {"X-Auth-Token": token}, body=body)
            self.assertEqual((code, answer), (400, {"faultstring": "Token is not provided."}), body)

    async def test_ttlErrorIsInvalid(self) -> None:
        """
        A TTL out of range is the domain's L{Invalid}, with st2's message.
        """
        with self.assertRaises(Invalid) as cm:
            await self.tokens.issue("alice", ttl=7201)
        self.assertIsInstance(cm.exception, TtlError)
        self.assertEqual((cm.exception.faultstring, str(cm.exception)), ("TTL specified 7201 is greater than max allowed 7200.",) * 2)

    async def test_impersonationRefused(self) -> None:
        """
        Asking for another user's token is refused: bwcd has no service
        users.
        """
        code, _, body = await self.call("POST", "/auth/v1/tokens", {"Authorization": basic("alice", "correct horse")}, body={"user": "bob"})
        self.assertEqual((code, body), (400, {"faultstring": 'Current user "alice" is not a service and cannot request impersonated tokens'}))

    async def test_userRecordedOnce(self) -> None:
        """
        The first login records the user; later ones do not add another.
        """
        await self.login()
        await self.login()
        users = await self.store.find("users", {})
        self.assertEqual([u["name"] for u in users], ["alice"])

    async def test_validate(self) -> None:
        """
        C{/validate} says whether a token is good, needs credentials itself,
        and wants a token in the body.
        """
        mine = (await self.login())["token"]
        other = (await self.login(body={"ttl": 10}))["token"]
        auth = {"X-Auth-Token": mine}
        for path in ("/auth/v1/tokens/validate", "/v1/tokens/validate", "/tokens/validate"):
            code, _, body = await self.call("POST", path, auth, body={"token": other})
            self.assertEqual((code, body), (200, {"valid": True}))
        code, _, body = await self.call("POST", "/auth/v1/tokens/validate", auth, body={"token": "a" * 32})
        self.assertEqual((code, body), (200, {"valid": False}))
        self.clock.advance(10)
        code, _, body = await self.call("POST", "/auth/v1/tokens/validate", auth, body={"token": other})
        self.assertEqual((code, body), (200, {"valid": False}))
        for raw in (b"", b"{}", b'{"token": ""}'):
            code, _, body = await self.call("POST", "/auth/v1/tokens/validate", {**auth, "Content-Type": "application/json"}, raw=raw)
            self.assertEqual((code, body), (400, {"faultstring": "Token is not provided."}))
        code, _, body = await self.call("POST", "/auth/v1/tokens/validate", body={"token": other})
        self.assertEqual((code, body), (401, {"faultstring": MISSING}))

    async def test_usersFileReread(self) -> None:
        """
        A user added to the file while running can log in without a restart.
        """
        code, _, _ = await self.call("POST", "/auth/v1/tokens", {"Authorization": basic("bob", "hunter2")})
        self.assertEqual(code, 401)
        setPassword(self.usersFile, "bob", "hunter2", rounds=4)
        doc = await self.login("bob", "hunter2")
        self.assertEqual(doc["user"], "bob")

    async def test_purgeExpired(self) -> None:
        """
        Expired tokens can be removed in bulk; live ones stay.
        """
        await self.login(body={"ttl": 10})
        live = await self.login()
        self.clock.advance(10)
        removed = await Deferred.fromCoroutine(self.tokens.purgeExpired())
        self.assertEqual(removed, 1)
        remaining = await self.store.find("tokens", {})
        self.assertEqual([t["id"] for t in remaining], [live["id"]])


class ApiKeyRouteTests(Harness):
    """
    C{/v1/apikeys}.
    """

    async def setUp(self) -> None:
        await super().setUp()
        self.auth = {"X-Auth-Token": (await self.login())["token"]}

    async def test_create(self) -> None:
        """
        Creating a key answers 201 with the plaintext key, once, owned by the
        caller; only its st2 hash is stored.
        """
        code, _, doc = await self.call("POST", "/v1/apikeys", self.auth, body={"metadata": {"for": "ci"}})
        self.assertEqual(code, 201)
        self.assertEqual(set(doc), {"id", "uid", "user", "key", "metadata", "created_at", "enabled", "scopes"})
        self.assertEqual(doc["scopes"], [])
        self.assertRegex(doc["key"], r"^[A-Za-z0-9]{86}$")
        self.assertEqual(doc["uid"], "api_key:" + st2Hash(doc["key"]))
        self.assertEqual((doc["user"], doc["metadata"], doc["enabled"]), ("alice", {"for": "ci"}, True))
        self.assertEqual(doc["created_at"], "2027-01-15T08:00:00.000000Z")
        stored = await self.store.get("apikeys", doc["id"])
        self.assertEqual(stored["key_hash"], st2Hash(doc["key"]))
        self.assertNotIn(doc["key"], json.dumps(stored))
        code, _, body = await self.call("GET", f"/v1/apikeys/{doc['id']}", self.auth)
        self.assertNotIn("key", body)

    async def test_createForOtherUserAndImport(self) -> None:
        """
        A key can be made for another user, or imported by its hash (no
        plaintext then); importing the same hash twice is a 409.
        """
        code, _, doc = await self.call("POST", "/v1/apikeys", self.auth, body={"user": "ci-bot"})
        self.assertEqual((code, doc["user"]), (201, "ci-bot"))
        existing = generateKey()
        code, _, doc = await self.call("POST", "/v1/apikeys", self.auth, body={"key_hash": st2Hash(existing)})
        self.assertEqual((code, doc["key"]), (201, None))
        code, _, body = await self.call("GET", "/v1/whoami", {"St2-Api-Key": existing})
        self.assertEqual((code, body["user"]), (200, "alice"))
        code, _, body = await self.call("POST", "/v1/apikeys", self.auth, body={"key_hash": st2Hash(existing)})
        self.assertEqual((code, body["conflict-id"]), (409, doc["id"]))

    async def test_createValidation(self) -> None:
        """
        Unknown fields and wrong types are 400s with jsonschema's message.
        """
        for body, message in (
            ({"foo": 1}, "Additional properties are not allowed ('foo' was unexpected)"),
            ({"enabled": "yes"}, "'yes' is not of type 'boolean'"),
            ([], "[] is not of type 'object'"),
        ):
            code, _, got = await self.call("POST", "/v1/apikeys", self.auth, body=body)
            self.assertEqual((code, got), (400, {"faultstring": message}))

    async def test_hostileJsonIs400(self) -> None:
        """
        Hostile JSON bodies and misshapen values are 400s on create and
        update, and create nothing.
        """
        created = (await self.call("POST", "/v1/apikeys", self.auth, body={}))[2]
        for method, path in (("POST", "/v1/apikeys"), ("PUT", f"/v1/apikeys/{created['id']}")):
            for raw in HOSTILE:
                code, _, body = await self.call(method, path, {**self.auth, "Content-Type": "application/json"}, raw=raw)
                self.assertEqual(code, 400, (method, raw[:40]))
                self.assertTrue(body["faultstring"].startswith("Failed to parse request body: "), body)
            for body in ([], "x", 1, {"metadata": "s"}, {"metadata": []}, {"user": []}, {"enabled": "x"}, {"key_hash": []}):
                code, _, answer = await self.call(method, path, self.auth, body=body)
                self.assertEqual(code, 400, (method, body, answer))
        docs, total = await Deferred.fromCoroutine(self.apikeys.list())
        self.assertEqual(total, 1)

    async def test_errorsAreDomainKinds(self) -> None:
        """
        The key store's refusals are the domain's L{NotFound} and L{Invalid},
        with st2's messages.
        """
        self.assertIsInstance(ApiKeyNotFound("k"), NotFound)
        self.assertEqual(ApiKeyNotFound("k").faultstring, "ApiKey matching k for reference and id not found.")
        self.assertIsInstance(KeyHashChange(), Invalid)
        self.assertEqual(str(KeyHashChange()), "Update of key_hash is not allowed.")

    async def test_listMasked(self) -> None:
        """
        The list masks hashes and uids unless secrets are asked for, pages
        with limit/offset and reports the total.
        """
        keys = [(await self.call("POST", "/v1/apikeys", self.auth, body={"user": u}))[2] for u in ("carol", "bob", "dave")]
        code, headers, body = await self.call("GET", "/v1/apikeys", self.auth)
        self.assertEqual(code, 200)
        self.assertEqual(headers.getRawHeaders("x-total-count"), ["3"])
        self.assertEqual([k["user"] for k in body], ["bob", "carol", "dave"])
        for item in body:
            self.assertEqual(set(item), {"id", "uid", "user", "key_hash", "metadata", "created_at", "enabled", "scopes"})
            self.assertEqual((item["key_hash"], item["uid"]), ("********", "********"))
        code, _, body = await self.call("GET", "/v1/apikeys?show_secrets=true", self.auth)
        byId = {k["id"]: k for k in body}
        for created in keys:
            self.assertEqual(byId[created["id"]]["key_hash"], st2Hash(created["key"]))
            self.assertEqual(byId[created["id"]]["uid"], "api_key:" + st2Hash(created["key"]))
        code, headers, body = await self.call("GET", "/v1/apikeys?limit=1&offset=1", self.auth)
        self.assertEqual(([k["user"] for k in body], headers.getRawHeaders("x-limit")), (["carol"], ["1"]))
        code, _, body = await self.call("GET", "/v1/apikeys?show_secrets=maybe", self.auth)
        self.assertEqual((code, body), (400, {"faultstring": 'Parameter "show_secrets" is not of type boolean'}))

    async def test_getOne(self) -> None:
        """
        One key is found by id or by its plaintext, masked by default; an
        unknown one is a 404 with st2's message.
        """
        created = (await self.call("POST", "/v1/apikeys", self.auth, body={}))[2]
        for ref in (created["id"], created["key"]):
            code, _, body = await self.call("GET", f"/v1/apikeys/{ref}", self.auth)
            self.assertEqual((code, body["id"], body["key_hash"]), (200, created["id"], "********"))
        code, _, body = await self.call("GET", f"/v1/apikeys/{created['id']}?show_secrets=1", self.auth)
        self.assertEqual(body["key_hash"], st2Hash(created["key"]))
        for ref in ("nope", "0123456789abcdef01234567"):
            code, _, body = await self.call("GET", f"/v1/apikeys/{ref}", self.auth)
            self.assertEqual((code, body), (404, {"faultstring": f"ApiKey matching {ref} for reference and id not found."}))

    async def test_update(self) -> None:
        """
        PUT changes user, metadata and enabled; a masked or unchanged hash is
        no change, a different one is refused.
        """
        created = (await self.call("POST", "/v1/apikeys", self.auth, body={}))[2]
        path = f"/v1/apikeys/{created['id']}"
        code, _, current = await self.call("GET", path, self.auth)
        current.update(user="ops", metadata={"team": "ops"}, enabled=False)
        code, _, body = await self.call("PUT", path, self.auth, body=current)
        self.assertEqual(code, 200, body)
        self.assertEqual((body["user"], body["metadata"], body["enabled"], body["key_hash"]), ("ops", {"team": "ops"}, False, "********"))
        code, _, body = await self.call("PUT", path, self.auth, body={"enabled": True, "key_hash": st2Hash(created["key"])})
        self.assertEqual((code, body["enabled"], body["user"]), (200, True, "ops"))
        code, _, body = await self.call("PUT", path, self.auth, body={"key_hash": "0" * 128})
        self.assertEqual((code, body), (400, {"faultstring": "Update of key_hash is not allowed."}))
        code, _, body = await self.call("PUT", "/v1/apikeys/nope", self.auth, body={"enabled": False})
        self.assertEqual((code, body), (404, {"faultstring": "ApiKey matching nope for reference and id not found."}))
        code, _, body = await self.call("GET", "/v1/whoami", {"St2-Api-Key": created["key"]})
        self.assertEqual((code, body["user"]), (200, "ops"))

    async def test_delete(self) -> None:
        """
        DELETE answers 204 with no body; the key then no longer works and a
        second DELETE is a 404.
        """
        created = (await self.call("POST", "/v1/apikeys", self.auth, body={}))[2]
        code, _, body = await self.call("DELETE", f"/v1/apikeys/{created['key']}", self.auth)
        self.assertEqual((code, body), (204, None))
        code, _, _ = await self.call("GET", "/v1/whoami", {"St2-Api-Key": created["key"]})
        self.assertEqual(code, 401)
        code, _, _ = await self.call("DELETE", f"/v1/apikeys/{created['id']}", self.auth)
        self.assertEqual(code, 404)

    async def test_needCredentials(self) -> None:
        """
        Every API-key route needs credentials.
        """
        for method, path in (("GET", "/v1/apikeys"), ("POST", "/v1/apikeys"), ("GET", "/v1/apikeys/x"), ("PUT", "/v1/apikeys/x"), ("DELETE", "/v1/apikeys/x")):
            code, _, body = await self.call(method, path, body={} if method in ("POST", "PUT") else None)
            self.assertEqual((code, body), (401, {"faultstring": MISSING}), (method, path))


class AuthDisabledTests(Harness):
    """
    C{auth.enable: false}.
    """

    authEnabled = False

    async def test_everyoneIsSystemUser(self) -> None:
        """
        Without checks every request acts as the system user, whatever it
        sends.
        """
        for headers in ({}, {"X-Auth-Token": "bogus"}, {"St2-Api-Key": "bogus"}):
            code, _, body = await self.call("GET", "/v1/whoami", headers)
            self.assertEqual((code, body), (200, {"user": "stanley", "method": "none", "id": None}))
        code, _, doc = await self.call("POST", "/v1/apikeys", body={})
        self.assertEqual((code, doc["user"]), (201, "stanley"))

    async def test_jsonContentTypeRequired(self) -> None:
        """
        With auth disabled a body not labelled JSON is a 415 (a web page
        can send text/plain cross-site without a preflight); a login with an
        empty body of any type still works.
        """
        for headers in ({"Content-Type": "text/plain"}, {"Content-Type": "application/x-www-form-urlencoded"}, {}):
            code, _, body = await self.call("POST", "/v1/apikeys", headers, raw=b"{}")
            self.assertEqual(code, 415, headers)
            self.assertIn("application/json", body["faultstring"])
        code, _, _ = await self.call("POST", "/v1/apikeys", {"Content-Type": "application/json; charset=utf-8"}, raw=b"{}")
        self.assertEqual(code, 201)
        code, _, _ = await self.call("POST", "/auth/v1/tokens", {"Authorization": basic("alice", "correct horse"), "Content-Type": "text/plain"}, raw=b"")
        self.assertEqual(code, 201)


class HtpasswdTests(SynchronousTestCase):
    """
    The users file.
    """

    def test_formats(self) -> None:
        """
        C{$2y$}, C{$2b$} and C{$2a$} lines are accepted; other schemes,
        comments and junk are skipped.
        """
        b = hashPassword("pw", rounds=4)
        self.assertTrue(b.startswith("$2y$04$"))
        text = "\n".join([
            "# comment",
            f"y:{b}",
            f"b:$2b${b[4:]}",
            f"a:$2a${b[4:]}",
            "sha:{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g=",
            "md5:$apr1$abc$def",
            "junk",
            "",
        ])
        users = parseUsers(text)
        self.assertEqual(sorted(users), ["a", "b", "y"])
        path = self.mktemp()
        with open(path, "w") as f:
            f.write(text)
        h = Htpasswd(path)
        for name in ("y", "b", "a"):
            self.assertTrue(self.successResultOf(h.check(name, "pw")))
            self.assertFalse(self.successResultOf(h.check(name, "pW")))
        self.assertFalse(self.successResultOf(h.check("sha", "password")))
        self.assertFalse(self.successResultOf(h.check("nobody", "pw")))

    def test_missingFile(self) -> None:
        """
        Without a users file every password login fails (and nothing breaks).
        """
        h = Htpasswd(self.mktemp())
        self.assertFalse(self.successResultOf(h.check("alice", "x")))

    def test_apacheHtpasswd(self) -> None:
        """
        A line written by Apache's own C{htpasswd -B} is understood.
        """
        binary = shutil.which("htpasswd")
        if binary is None:
            raise self.skipTest("htpasswd (apache2-utils) is not installed")
        path = self.mktemp()
        subprocess.run([binary, "-B", "-b", "-c", path, "webadmin", "s3 cret"], check=True, capture_output=True)
        h = Htpasswd(path)
        self.assertTrue(self.successResultOf(h.check("webadmin", "s3 cret")))
        self.assertFalse(self.successResultOf(h.check("webadmin", "s3cret")))

    def test_setPassword(self) -> None:
        """
        Adding creates a 0640 file; changing a password replaces that user's
        line only, keeping other lines and the file's mode.
        """
        path = os.path.join(self.mktemp(), "sub", "htpasswd")
        self.assertTrue(setPassword(path, "alice", "one", rounds=4))
        self.assertEqual(os.stat(path).st_mode & 0o777, 0o640)
        self.assertTrue(setPassword(path, "bob", "two", rounds=4))
        os.chmod(path, 0o600)
        self.assertFalse(setPassword(path, "alice", "three", rounds=4))
        self.assertEqual(os.stat(path).st_mode & 0o777, 0o600)
        lines = open(path).read().splitlines()
        self.assertEqual([line.split(":")[0] for line in lines], ["alice", "bob"])
        h = Htpasswd(path)
        self.assertTrue(self.successResultOf(h.check("alice", "three")))
        self.assertFalse(self.successResultOf(h.check("alice", "one")))
        self.assertTrue(self.successResultOf(h.check("bob", "two")))

    def test_setPasswordRefuses(self) -> None:
        """
        Names with a colon or line break, empty passwords and passwords
        bcrypt would truncate are refused.
        """
        path = self.mktemp()
        for user, password in (("a:b", "x"), ("a\nb", "x"), ("", "x"), ("ok", ""), ("ok", "x" * 73)):
            self.assertRaises(UsersFileError, setPassword, path, user, password, 4)
        self.assertFalse(os.path.exists(path))

    def test_parseBasic(self) -> None:
        """
        Passwords may contain colons; the user part may not be empty.
        """
        self.assertEqual(parseBasic(basic("u", "a:b")), ("u", "a:b"))
        self.assertIsNone(parseBasic(basic("", "pw")))
        self.assertIsNone(parseBasic("Basic"))


class TimeutilTests(SynchronousTestCase):
    """
    L{bwcd.timeutil}.
    """

    def test_roundTrip(self) -> None:
        """
        Formatting gives st2's shape and parsing gives the same instant back.
        """
        dt = datetime(2026, 11, 28, 21, 23, 4, 123456, tzinfo=timezone.utc)
        self.assertEqual(timeutil.isoformat(dt), "2026-11-28T21:23:04.123456Z")
        self.assertEqual(timeutil.parseIso("2026-11-28T21:23:04.123456Z"), dt)

    def test_acceptedForms(self) -> None:
        """
        Every form st2 accepts parses; others are refused.
        """
        expected = datetime(2026, 1, 2, 3, 4, 5, 120000, tzinfo=timezone.utc)
        for s in ("2026-01-02T03:04:05.12Z", "2026-01-02 03:04:05.120+00:00", "2026-01-02T03:04:05.120000+0000", "2026-01-02T03:04:05.120+00"):
            if s.endswith(".12Z"):
                self.assertRaises(ValueError, timeutil.parseIso, s)
            else:
                self.assertEqual(timeutil.parseIso(s), expected, s)
        self.assertEqual(timeutil.parseIso("2026-01-02T03:04:05Z"), expected.replace(microsecond=0))
        for s in ("2026-01-02T03:04:05+01:00", "yesterday", "2026-01-02"):
            self.assertRaises(ValueError, timeutil.parseIso, s)

    def test_utcnow(self) -> None:
        """
        The current time comes from the clock given.
        """
        clock = Clock()
        clock.advance(T0)
        self.assertEqual(timeutil.isoformat(timeutil.utcnow(clock)), "2027-01-15T08:00:00.000000Z")


class TokenUserRecordTests(SynchronousTestCase):
    """
    Each execution gets a token of its own, so issuing one must not cost a
    read of C{users} every time.
    """

    def test_userRecordedOncePerProcess(self) -> None:
        """
        The first token of a user records the user; later ones only insert
        the token; the record exists in the store.
        """
        from bwcd.testing import startedStore

        store = startedStore()
        tokens = Tokens(store, Clock())
        self.successResultOf(Deferred.fromCoroutine(tokens.issue("stanley", ttl=60)))
        first = list(store.operations)
        self.successResultOf(Deferred.fromCoroutine(tokens.issue("stanley", ttl=60)))
        self.assertEqual(store.operations[len(first):], ["insert"])
        self.assertEqual(self.successResultOf(store.count("users", {"name": "stanley"})), 1)
        self.assertEqual(self.successResultOf(store.count("tokens", {})), 2)
