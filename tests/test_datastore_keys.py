"""
Tests for L{bwcd.datastore.keys}: st2's key-value rules over a real SQLite
store and a real MongoDB wire-protocol server.
"""

from __future__ import annotations

import os
from typing import Any, Dict, List, Tuple

from twisted.internet import reactor
from twisted.internet.defer import ensureDeferred
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase, TestCase

import bwcd.store.schema
from bwcd.datastore import crypto
from bwcd.datastore.keys import COLLECTION, KeyService, fullScope, prefixRange, presentDocument
from bwcd.errors import Invalid, NotFound, Refused
from bwcd.store.mongo import MongoStore
from bwcd.store.sqlite import SQLiteStore
from tests.mongoserver import mongoURL

SECRET = "hunter2-plaintext-\u00e9"
SCOPES_TEXT = "['system', 'user', 'st2kv.system', 'st2kv.user']"
START = 1_800_000_000.0  # 2027-01-15T08:00:00Z


def declareKeys(case: SynchronousTestCase) -> None:
    """
    The C{keys} collection is declared by the store schema itself.
    """
    case.assertIn(COLLECTION, bwcd.store.schema.COLLECTIONS)


class PureTests(SynchronousTestCase):
    def test_fullScope(self) -> None:
        """
        st2's scope normalisation: short names get C{st2kv.}, C{all} and
        anything containing C{st2kv} stay.
        """
        self.assertEqual(
            [fullScope(s) for s in ("system", "user", "st2kv.system", "all", "foo", "xst2kvy")],
            ["st2kv.system", "st2kv.user", "st2kv.system", "all", "st2kv.foo", "xst2kvy"],
        )

    def test_prefixRange(self) -> None:
        """
        The range holds exactly the strings starting with the prefix, also
        when its last character is the largest code point or next to the
        surrogates.
        """
        for prefix in ("ab", "a\U0010ffff", "x\ud7ff", "\U0010ffff"):
            condition = prefixRange(prefix)
            low, high = condition["$gte"], condition.get("$lt")

            def inside(s: str) -> bool:
                return s.encode("utf-8", "surrogatepass") >= low.encode("utf-8", "surrogatepass") and (
                    high is None or s.encode("utf-8", "surrogatepass") < high.encode("utf-8", "surrogatepass")
                )

            for candidate in (prefix, prefix + "x", prefix + "\U0010ffff" * 3, prefix[:-1], prefix[:-1] + "\ue000", "b", "aa", "zzz"):
                self.assertEqual(inside(candidate), candidate.startswith(prefix), (prefix, candidate))

    def test_presentUserItem(self) -> None:
        """
        A user item shows its short name (split on the first colon) and its
        user; None-valued fields are dropped.
        """
        doc = {"id": "i", "uid": "key_value_pair:st2kv.user:bob:a:b", "name": "bob:a:b", "scope": "st2kv.user", "value": "v", "secret": False, "description": None}
        self.assertEqual(
            presentDocument(doc),
            {"id": "i", "uid": "key_value_pair:st2kv.user:bob:a:b", "name": "a:b", "user": "bob", "scope": "st2kv.user", "value": "v", "secret": False, "encrypted": False},
        )


class KeyServiceMixin:
    """
    The service's behaviour; subclasses give C{makeStore()}.
    """

    def setUp(self):
        declareKeys(self)
        self.clock = Clock()
        self.clock.advance(START)
        self.events: List[Tuple[str, Dict[str, Any]]] = []
        self.cryptoKey = crypto.generateKey()
        return self._open()

    def fails(self, coroutine, kind):
        return self.assertFailure(ensureDeferred(coroutine), kind)

    async def _open(self) -> None:
        self.store = await self.makeStore()
        self.keys = KeyService(self.store, self.clock, self.cryptoKey, "/etc/bwcd/datastore_key.json", emit=lambda t, p: self.events.append((t, p)))

    async def test_systemItem(self) -> None:
        """
        A system item is stored and shown as st2 shows it; a second PUT
        keeps its id.
        """
        doc = await self.keys.set("alice", "k1", {"name": "ignored", "value": "v1"})
        self.assertEqual(doc, {"id": doc["id"], "uid": "key_value_pair:st2kv.system:k1", "name": "k1", "scope": "st2kv.system", "value": "v1", "secret": False, "encrypted": False})
        self.assertEqual(await self.keys.get("bob", "k1"), doc)
        again = await self.keys.set("alice", "k1", {"name": "k1", "value": "v2", "description": "d"})
        self.assertEqual((again["id"], again["value"], again["description"]), (doc["id"], "v2", "d"))
        self.assertEqual(await self.store.count(COLLECTION, {}), 1)

    async def test_userItems(self) -> None:
        """
        User items are stored as C{<user>:<name>}, visible only to their
        user; naming another user is refused without RBAC.
        """
        doc = await self.keys.set("bob", "k1", {"name": "k1", "value": "b", "scope": "st2kv.user"})
        self.assertEqual((doc["name"], doc["user"], doc["uid"], doc["scope"]), ("k1", "bob", "key_value_pair:st2kv.user:bob:k1", "st2kv.user"))
        self.assertEqual((await self.store.findOne(COLLECTION, {"id": doc["id"]}))["name"], "bob:k1")
        await self.keys.set("alice", "k1", {"name": "k1", "value": "a", "scope": "user", "user": "alice"})
        self.assertEqual((await self.keys.get("bob", "k1", scope="user"))["value"], "b")
        self.assertEqual((await self.keys.get("alice", "k1", user="alice"))["value"], "a")
        e = await self.fails(self.keys.get("carol", "k1", scope="st2kv.user"), NotFound)
        self.assertEqual(e.faultstring, 'The key "carol:k1" does not exist in the StackStorm datastore.')
        for attempt in (
            self.keys.get("carol", "k1", user="bob"),
            self.keys.list("carol", user="bob"),
            self.keys.delete("carol", "k1", user="bob"),
            self.keys.set("carol", "k1", {"name": "k1", "value": "x", "scope": "user", "user": "bob"}),
        ):
            e = await self.fails(attempt, Refused)
            self.assertEqual(e.faultstring, '"user" attribute can only be provided by admins when RBAC is enabled')
        self.assertEqual(await self.keys.list("carol", prefix="bob:", scope="user"), [])
        self.assertEqual([d["value"] for d in await self.keys.list("bob", scope="user", prefix="k")], ["b"])
        self.assertEqual(await self.keys.list("bob"), [])

    async def test_secretEncryptedAtRest(self) -> None:
        """
        A secret is stored only as ciphertext of the datastore key, shown as
        ciphertext unless decrypted, and decrypted on request.
        """
        doc = await self.keys.set("alice", "token", {"name": "token", "value": SECRET, "secret": True})
        self.assertEqual((doc["secret"], doc["encrypted"]), (True, True))
        self.assertNotEqual(doc["value"], SECRET)
        self.assertEqual(crypto.decrypt(self.cryptoKey, doc["value"]), SECRET)
        stored = await self.store.findOne(COLLECTION, {"name": "token"})
        self.assertNotIn(SECRET, repr(stored))
        self.assertEqual(await self.keys.get("bob", "token"), doc)
        plain = await self.keys.get("bob", "token", decrypt=True)
        self.assertEqual((plain["value"], plain["secret"], plain["encrypted"]), (SECRET, True, False))
        listed = await self.keys.list("bob", decrypt=True)
        self.assertEqual([d["value"] for d in listed], [SECRET])
        self.assertNotIn(SECRET, repr(self.events))
        await self.keys.set("alice", "plain", {"name": "plain", "value": "p"})
        self.assertEqual((await self.keys.get("alice", "plain", decrypt=True))["encrypted"], False)

    async def test_preEncrypted(self) -> None:
        """
        C{encrypted: true} stores a ciphertext of this key unchanged (as a
        secret); any other value is refused with st2's message.
        """
        ciphertext = crypto.encrypt(self.cryptoKey, "s")
        doc = await self.keys.set("alice", "k", {"name": "k", "value": ciphertext, "encrypted": True})
        self.assertEqual((doc["value"], doc["secret"], doc["encrypted"]), (ciphertext, True, True))
        e = await self.fails(self.keys.set("alice", "k", {"name": "k", "value": crypto.encrypt(crypto.generateKey(), "s"), "encrypted": True}), Invalid)
        self.assertEqual(
            e.faultstring,
            'Failed to verify the integrity of the provided value for key "k". Ensure that the value is encrypted with the correct key and not corrupted.',
        )

    async def test_noCryptoKey(self) -> None:
        """
        Without a key, secret writes fail with st2's message; plain ones work.
        """
        keys = KeyService(self.store, self.clock, None, "/k.json")
        e = await self.fails(keys.set("bob", "s", {"name": "s", "value": "x", "secret": True, "scope": "user"}), Invalid)
        self.assertEqual(e.faultstring, "Crypto key not found in /k.json. Unable to encrypt / decrypt value for key bob:s.")
        await keys.set("bob", "p", {"name": "p", "value": "x"})

    async def test_ttl(self) -> None:
        """
        C{ttl} sets C{expire_timestamp}; once it passes the item is gone
        from reads at once, and a read after the purge interval deletes it
        from the store; an update without C{ttl} clears the expiry.
        """
        doc = await self.keys.set("alice", "t", {"name": "t", "value": "v", "ttl": 10})
        self.assertEqual(doc["expire_timestamp"], "2027-01-15T08:00:10.000000Z")
        await self.keys.set("alice", "u", {"name": "u", "value": "v", "ttl": 10})
        await self.keys.set("alice", "u", {"name": "u", "value": "w"})
        self.assertNotIn("expire_timestamp", await self.keys.get("alice", "u"))
        self.clock.advance(9.9)
        self.assertEqual((await self.keys.get("alice", "t"))["value"], "v")
        self.clock.advance(0.1)
        await self.fails(self.keys.get("alice", "t"), NotFound)
        self.assertEqual([d["name"] for d in await self.keys.list("alice")], ["u"])
        await self.fails(self.keys.delete("alice", "t"), NotFound)
        self.clock.advance(5)
        await self.keys.list("alice")
        self.assertEqual(await self.store.count(COLLECTION, {}), 1)
        await self.keys.set("alice", "t", {"name": "t", "value": "new"})
        self.assertEqual([e[0] for e in self.events][-1], "core.st2.key_value_pair.create")
        await self.keys.set("alice", "n", {"name": "n", "value": "v", "ttl": -5})
        await self.fails(self.keys.get("alice", "n"), NotFound)

    async def test_purgeExpired(self) -> None:
        """
        purgeExpired deletes exactly the expired items.
        """
        await self.keys.set("alice", "a", {"name": "a", "value": "v", "ttl": 1})
        await self.keys.set("alice", "b", {"name": "b", "value": "v", "ttl": 100})
        await self.keys.set("alice", "c", {"name": "c", "value": "v"})
        self.clock.advance(2)
        self.assertEqual(await self.keys.purgeExpired(), 1)
        self.assertEqual(sorted(d["name"] for d in await self.store.find(COLLECTION, {})), ["b", "c"])

    async def test_list(self) -> None:
        """
        Listing: system by default, C{prefix}, C{all} (system then the
        requester's), limit/offset, C{name}, and st2's invalid scope text.
        """
        for name in ("app.a", "app.b", "other", "apq"):
            await self.keys.set("alice", name, {"name": name, "value": name})
        await self.keys.set("alice", "app.mine", {"name": "x", "value": "m", "scope": "user"})
        await self.keys.set("bob", "app.his", {"name": "x", "value": "h", "scope": "user"})
        names = lambda docs: [d["name"] for d in docs]  # noqa: E731
        self.assertEqual(names(await self.keys.list("alice")), ["app.a", "app.b", "apq", "other"])
        self.assertEqual(names(await self.keys.list("alice", prefix="app.")), ["app.a", "app.b"])
        self.assertEqual(names(await self.keys.list("alice", scope="all", prefix="app")), ["app.a", "app.b", "app.mine"])
        self.assertEqual(names(await self.keys.list("alice", limit=2, offset=1)), ["app.b", "apq"])
        self.assertEqual(names(await self.keys.list("alice", name="other")), ["other"])
        self.assertEqual(names(await self.keys.list("bob", scope="st2kv.user")), ["app.his"])
        e = await self.fails(self.keys.list("alice", scope="foo"), Invalid)
        self.assertEqual(e.faultstring, "Invalid scope: st2kv.foo")

    async def test_scopeAndSchemaErrors(self) -> None:
        """
        Bad scopes and bodies give st2's texts.
        """
        e = await self.fails(self.keys.get("a", "k", scope="foo"), Invalid)
        self.assertEqual(e.faultstring, f"Scope st2kv.foo is not in allowed scopes list: {SCOPES_TEXT}.")
        e = await self.fails(self.keys.set("a", "k", {"name": "k", "value": "v", "scope": "all"}), Invalid)
        self.assertEqual(e.faultstring, f"Scope all is not in allowed scopes list: {SCOPES_TEXT}.")
        e = await self.fails(self.keys.set("a", "k", {"name": "k"}), Invalid)
        self.assertEqual(e.faultstring, "'value' is a required property")
        e = await self.fails(self.keys.set("a", "k", {"name": "k", "value": 123}), Invalid)
        self.assertEqual(e.faultstring, "123 is not of type 'string'")
        e = await self.fails(self.keys.set("a", "k", {"name": "k", "value": "v", "ttl": "1"}), Invalid)
        self.assertEqual(e.faultstring, "'1' is not of type 'integer'")

    async def test_deleteAndTriggers(self) -> None:
        """
        Delete removes the item (then 404 with st2's text); every change
        emits st2's internal trigger with masked documents.
        """
        await self.keys.set("alice", "k", {"name": "k", "value": "1"})
        await self.keys.set("alice", "k", {"name": "k", "value": "1"})
        await self.keys.set("alice", "k", {"name": "k", "value": SECRET, "secret": True})
        await self.keys.delete("alice", "k", scope="all")
        e = await self.fails(self.keys.delete("alice", "k"), NotFound)
        self.assertEqual(e.faultstring, 'The key "k" does not exist in the StackStorm datastore.')
        self.assertEqual(
            [t for t, _ in self.events],
            [
                "core.st2.key_value_pair.create",
                "core.st2.key_value_pair.update",
                "core.st2.key_value_pair.update",
                "core.st2.key_value_pair.value_change",
                "core.st2.key_value_pair.delete",
            ],
        )
        change = self.events[3][1]
        self.assertEqual(change["old_object"]["value"], "1")
        self.assertTrue(change["new_object"]["encrypted"])
        self.assertNotIn(SECRET, repr(self.events))
        self.assertEqual(await self.store.count(COLLECTION, {}), 0)

    async def test_lookup(self) -> None:
        """
        lookup reads live items of one scope and user as stored (secrets as
        ciphertext), for template rendering.
        """
        await self.keys.set("alice", "a", {"name": "a", "value": "1"})
        await self.keys.set("alice", "s", {"name": "s", "value": SECRET, "secret": True})
        await self.keys.set("stanley", "a", {"name": "a", "value": "mine", "scope": "user"})
        found = await self.keys.lookup("st2kv.system", None, ["a", "s", "missing"])
        self.assertEqual(sorted(found), ["a", "s"])
        self.assertEqual(self.keys.decryptValue(found["s"]["value"]), SECRET)
        self.assertEqual((await self.keys.lookup("st2kv.user", "stanley", ["a"]))["a"]["value"], "mine")
        self.assertEqual(await self.keys.lookup("st2kv.user", "bob", ["a"]), {})


class SQLiteKeyServiceTests(KeyServiceMixin, TestCase):
    async def makeStore(self) -> SQLiteStore:
        self.directory = os.path.abspath(self.mktemp())
        os.makedirs(self.directory)
        store = SQLiteStore(os.path.join(self.directory, "bwcd.sqlite"), reactor)
        await store.start()
        self.addCleanup(store.stop)
        return store

    async def test_plaintextAbsentFromFile(self) -> None:
        """
        A secret set through the service is nowhere in the SQLite files'
        bytes (database, journal, WAL), while a plain value is.
        """
        await self.keys.set("alice", "token", {"name": "token", "value": SECRET, "secret": True})
        await self.keys.set("alice", "visible", {"name": "visible", "value": "plain-marker-value"})
        await self.keys.set("bob", "t2", {"name": "t2", "value": SECRET, "secret": True, "scope": "user"})
        await self.store.stop()
        data = b""
        for name in os.listdir(self.directory):
            with open(os.path.join(self.directory, name), "rb") as f:
                data += f.read()
        self.assertIn(b"plain-marker-value", data)
        self.assertNotIn(SECRET.encode("utf-8"), data)
        self.assertNotIn(SECRET.encode("utf-16-le"), data)
        self.assertNotIn(SECRET.encode("ascii", "backslashreplace").replace(b"\\x", b"\\u00"), data)


class MongoKeyServiceTests(KeyServiceMixin, TestCase):
    async def makeStore(self) -> MongoStore:
        store = MongoStore(await mongoURL(self), reactor)
        await store.start()
        self.addCleanup(store.stop)
        return store

    async def test_plaintextAbsentFromDocuments(self) -> None:
        """
        The raw MongoDB documents of secrets hold no plaintext.
        """
        await self.keys.set("alice", "token", {"name": "token", "value": SECRET, "secret": True})
        raw = await self.store._db[COLLECTION].find({})
        self.assertEqual(len(raw), 1)
        self.assertNotIn(SECRET, repr(raw))
        self.assertTrue(raw[0]["value"].startswith("3030303030"))
