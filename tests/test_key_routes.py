"""
Tests for L{bwcd.api.key_routes}: C{/v1/keys} over real HTTP, on a
KeyService over a real SQLite store.
"""

from __future__ import annotations

import json
import os
from typing import Any, Dict, Optional, Tuple

import treq
from twisted.internet import reactor
from twisted.trial.unittest import TestCase

from bwcd.api.framework import Api, Principal
from bwcd.api.key_routes import installKeyRoutes
from bwcd.api.site import BwcdSite
from bwcd.datastore import crypto
from bwcd.datastore.keys import KeyService
from bwcd.errors import Unauthenticated
from bwcd.store.sqlite import SQLiteStore
from tests.daemon import startDaemon  # noqa: F401 (makes treq's pool one-shot)
from tests.test_datastore_keys import SECRET, declareKeys

USERS = {"alice-key": "alice", "bob-key": "bob"}


async def authenticate(request) -> Principal:
    key = request.getHeader(b"st2-api-key")
    user = USERS.get(key.decode() if key else "")
    if user is None:
        raise Unauthenticated("Unauthorized - One of Token or API key required.")
    return Principal(user, "apikey")


async def serveKeys(case: TestCase, cryptoKey: Optional[crypto.AESKey] = None) -> Tuple[str, SQLiteStore, str]:
    """
    Start a store, a KeyService and the key routes on a local port for
    C{case}; return the base URL, the store and its directory.
    """
    declareKeys(case)
    directory = os.path.abspath(case.mktemp())
    os.makedirs(directory)
    store = SQLiteStore(os.path.join(directory, "bwcd.sqlite"), reactor)
    await store.start()
    case.addCleanup(store.stop)
    keys = KeyService(store, reactor, cryptoKey or crypto.generateKey(), "/etc/bwcd/datastore_key.json")
    api = Api(authenticate)
    api.ready = True
    installKeyRoutes(api, keys)
    port = reactor.listenTCP(0, BwcdSite(api.resource(), 1 << 20), interface="127.0.0.1")
    case.addCleanup(port.stopListening)
    return f"http://127.0.0.1:{port.getHost().port}", store, directory


class KeyRouteTests(TestCase):
    async def setUp(self) -> None:
        self.base, self.store, self.directory = await serveKeys(self)

    async def call(self, method: str, path: str, body: Any = None, user: str = "alice-key", raw: Optional[bytes] = None) -> Tuple[int, Any]:
        headers: Dict[bytes, list] = {b"Content-Type": [b"application/json"]}
        if user:
            headers[b"St2-Api-Key"] = [user.encode()]
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        response = await treq.request(method, self.base + path, headers=headers, data=data)
        content = await response.content()
        self.lastHeaders = response.headers
        return response.code, (json.loads(content) if content else None)

    async def test_roundTrip(self) -> None:
        """
        PUT answers 200 with st2's document for create and update, GET
        returns it, DELETE answers 204 with no body and then GET is 404.
        """
        code, doc = await self.call("PUT", "/v1/keys/k1", {"name": "k1", "value": "v1"})
        self.assertEqual(code, 200)
        self.assertEqual(doc, {"id": doc["id"], "uid": "key_value_pair:st2kv.system:k1", "name": "k1", "scope": "st2kv.system", "value": "v1", "secret": False, "encrypted": False})
        code, again = await self.call("PUT", "/v1/keys/k1", {"name": "k1", "value": "v2"})
        self.assertEqual((code, again["id"], again["value"]), (200, doc["id"], "v2"))
        self.assertEqual(await self.call("GET", "/v1/keys/k1", user="bob-key"), (200, again))
        self.assertEqual(await self.call("DELETE", "/v1/keys/k1"), (204, None))
        self.assertEqual(
            await self.call("GET", "/v1/keys/k1"),
            (404, {"faultstring": 'The key "k1" does not exist in the StackStorm datastore.'}),
        )
        self.assertEqual((await self.call("GET", "/v1/keys/k1", user=""))[0], 401)

    async def test_secret(self) -> None:
        """
        A secret is answered as ciphertext, decrypted with C{decrypt=true},
        and absent in plaintext from the SQLite files.
        """
        code, doc = await self.call("PUT", "/v1/keys/token", {"name": "token", "value": SECRET, "secret": True})
        self.assertEqual((code, doc["secret"], doc["encrypted"]), (200, True, True))
        self.assertTrue(doc["value"].startswith("3030303030"))
        code, shown = await self.call("GET", "/v1/keys/token?decrypt=true")
        self.assertEqual((code, shown["value"], shown["encrypted"]), (200, SECRET, False))
        code, listed = await self.call("GET", "/v1/keys?decrypt=true")
        self.assertEqual([d["value"] for d in listed], [SECRET])
        code, listed = await self.call("GET", "/v1/keys")
        self.assertEqual([d["value"] for d in listed], [doc["value"]])
        await self.store.stop()
        data = b"".join(open(os.path.join(self.directory, n), "rb").read() for n in os.listdir(self.directory))
        self.assertNotIn(SECRET.encode("utf-8"), data)
        self.assertIn(doc["value"].encode("ascii"), data)

    async def test_listFilters(self) -> None:
        """
        C{prefix}, C{scope}, C{user}, C{limit}/C{offset}; no paging headers;
        user items stay their owner's.
        """
        for name in ("a.1", "a.2", "b.1"):
            await self.call("PUT", f"/v1/keys/{name}", {"name": name, "value": name})
        await self.call("PUT", "/v1/keys/a.mine", {"name": "x", "value": "m", "scope": "st2kv.user"})
        await self.call("PUT", "/v1/keys/a.his", {"name": "x", "value": "h", "scope": "user"}, user="bob-key")
        names = lambda docs: [d["name"] for d in docs]  # noqa: E731
        code, docs = await self.call("GET", "/v1/keys?prefix=a.")
        self.assertEqual((code, names(docs)), (200, ["a.1", "a.2"]))
        self.assertIsNone(self.lastHeaders.getRawHeaders("X-Total-Count"))
        code, docs = await self.call("GET", "/v1/keys?scope=all&prefix=a")
        self.assertEqual(names(docs), ["a.1", "a.2", "a.mine"])
        self.assertEqual(docs[-1]["user"], "alice")
        code, docs = await self.call("GET", "/v1/keys?limit=1&offset=1")
        self.assertEqual(names(docs), ["a.2"])
        code, docs = await self.call("GET", "/v1/keys?user=alice")
        self.assertEqual(names(docs), ["a.mine"])
        self.assertEqual(await self.call("GET", "/v1/keys?scope=user&prefix=bob:"), (200, []))
        self.assertEqual(
            await self.call("GET", "/v1/keys?user=bob"),
            (403, {"faultstring": '"user" attribute can only be provided by admins when RBAC is enabled'}),
        )
        self.assertEqual(await self.call("GET", "/v1/keys?scope=nope"), (400, {"faultstring": "Invalid scope: st2kv.nope"}))
        self.assertEqual((await self.call("GET", "/v1/keys?limit=0"))[0], 400)
        self.assertEqual((await self.call("GET", "/v1/keys?decrypt=maybe"))[0], 400)

    async def test_userScopeOneItem(self) -> None:
        """
        GET and DELETE address the requester's user item with C{scope=user}
        or C{user=<self>}; another user's name is refused; 404 names the
        stored name.
        """
        await self.call("PUT", "/v1/keys/k", {"name": "k", "value": "mine", "scope": "user"})
        code, doc = await self.call("GET", "/v1/keys/k?scope=st2kv.user")
        self.assertEqual((code, doc["user"], doc["value"]), (200, "alice", "mine"))
        self.assertEqual((await self.call("GET", "/v1/keys/k?user=alice"))[1], doc)
        self.assertEqual(
            await self.call("GET", "/v1/keys/k?scope=user", user="bob-key"),
            (404, {"faultstring": 'The key "bob:k" does not exist in the StackStorm datastore.'}),
        )
        self.assertEqual((await self.call("DELETE", "/v1/keys/k?user=alice", user="bob-key"))[0], 403)
        self.assertEqual(await self.call("DELETE", "/v1/keys/k?scope=user"), (204, None))
        code, body = await self.call("GET", "/v1/keys/k?scope=bad")
        self.assertEqual((code, body["faultstring"]), (400, "Scope st2kv.bad is not in allowed scopes list: ['system', 'user', 'st2kv.system', 'st2kv.user']."))

    async def test_badBodies(self) -> None:
        """
        Bodies that are not JSON, or break st2's request schema, are 400.
        """
        code, body = await self.call("PUT", "/v1/keys/k", raw=b'{"name": "k", "value": NaN}')
        self.assertEqual(code, 400)
        self.assertEqual((await self.call("PUT", "/v1/keys/k", raw=b"{"))[0], 400)
        self.assertEqual(await self.call("PUT", "/v1/keys/k", {"name": "k"}), (400, {"faultstring": "'value' is a required property"}))
        self.assertEqual(await self.call("PUT", "/v1/keys/k", {"name": "k", "value": 1}), (400, {"faultstring": "1 is not of type 'string'"}))
        self.assertEqual(await self.call("PUT", "/v1/keys/k", ["x"]), (400, {"faultstring": "['x'] is not of type 'object'"}))

    async def test_ttl(self) -> None:
        """
        A key with a ttl shows its expire_timestamp, and a negative one is
        already gone.
        """
        code, doc = await self.call("PUT", "/v1/keys/t", {"name": "t", "value": "v", "ttl": 3600})
        self.assertRegex(doc["expire_timestamp"], r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")
        await self.call("PUT", "/v1/keys/gone", {"name": "gone", "value": "v", "ttl": -1})
        self.assertEqual((await self.call("GET", "/v1/keys/gone"))[0], 404)
        self.assertEqual([d["name"] for d in (await self.call("GET", "/v1/keys"))[1]], ["t"])
