"""
Tests for L{bwcd.cli.commands.key}: C{bwc key ...} in-process against the
real C{/v1/keys} routes over a KeyService on SQLite.
"""

from __future__ import annotations

import io
import json
import os

from twisted.internet import reactor
from twisted.trial.unittest import TestCase

from bwcd.cli.main import buildParser, runCommand
from tests.test_datastore_keys import SECRET
from tests.test_key_routes import serveKeys


class KeyCommandTests(TestCase):
    async def setUp(self) -> None:
        self.base, self.store, _ = await serveKeys(self)
        self.home = os.path.abspath(self.mktemp())
        os.makedirs(self.home)

    async def bwc(self, *argv: str, key: str = "alice-key") -> int:
        args = buildParser("bwc").parse_args(list(argv))
        args.prog = "bwc"
        self.out, self.err = io.StringIO(), io.StringIO()
        environ = {"HOME": self.home, "ST2_API_URL": self.base + "/v1", "ST2_AUTH_URL": self.base, "ST2_API_KEY": key, "COLUMNS": "200"}
        return await runCommand(reactor, args, self.out, self.err, environ)

    async def listJson(self, *extra: str) -> list:
        self.assertEqual(await self.bwc("key", "list", "-j", *extra), 0, self.out.getvalue())
        return json.loads(self.out.getvalue())

    async def test_roundTrip(self) -> None:
        """
        set, get, list and delete; get of a deleted key exits 2 with st2's
        "Resource ... not found." line.
        """
        self.assertEqual(await self.bwc("key", "set", "k1", "v1"), 0, self.out.getvalue())
        self.assertIn("v1", self.out.getvalue())
        self.assertEqual(await self.bwc("key", "get", "k1", "-j"), 0)
        self.assertEqual(json.loads(self.out.getvalue()), {"name": "k1", "value": "v1", "secret": False, "encrypted": False, "scope": "st2kv.system"})
        self.assertEqual(await self.bwc("key", "get", "k1"), 0)
        self.assertRegex(self.out.getvalue(), r"\| value +\| v1 +\|")
        self.assertEqual(await self.listJson(), [{"encrypted": False, "name": "k1", "scope": "st2kv.system", "secret": False, "value": "v1"}])
        self.assertEqual(await self.bwc("key", "delete", "k1"), 0)
        self.assertEqual(self.out.getvalue(), 'Resource with id "k1" has been successfully deleted.\n')
        self.assertEqual(await self.bwc("key", "get", "k1"), 2)
        self.assertEqual(self.out.getvalue(), "Resource k1 not found.\n")
        self.assertEqual(await self.bwc("key", "delete", "k1"), 2)

    async def test_secretAndScopes(self) -> None:
        """
        -e stores a secret shown encrypted unless -d; user scope items are
        listed with their user; -u for someone else is refused by the API.
        """
        self.assertEqual(await self.bwc("key", "set", "tok", SECRET, "-e", "-l", "3600", "-j"), 0)
        shown = json.loads(self.out.getvalue())
        self.assertEqual(sorted(shown), ["expire_timestamp", "name", "scope", "value"])
        self.assertNotEqual(shown["value"], SECRET)
        self.assertEqual(await self.bwc("key", "get", "tok", "-d", "-j"), 0)
        self.assertEqual(json.loads(self.out.getvalue())["value"], SECRET)
        await self.bwc("key", "set", "mine", "m", "-s", "user")
        listed = await self.listJson()
        self.assertEqual([(d["name"], d.get("user")) for d in listed], [("mine", "alice"), ("tok", None)])
        self.assertNotIn(SECRET, json.dumps(listed))
        self.assertEqual(await self.bwc("key", "list", "-s", "system", "-d", "-y"), 0)
        self.assertIn(SECRET, self.out.getvalue())
        code = await self.bwc("key", "set", "x", "y", "-s", "user", "-u", "bob")
        self.assertEqual(code, 1)
        self.assertIn('"user" attribute can only be provided by admins when RBAC is enabled', self.out.getvalue())
        self.assertEqual(await self.bwc("key", "delete", "mine", "-s", "user"), 0)

    async def test_dumpAndLoad(self) -> None:
        """
        A C{list -j} dump loads back: secrets dumped without -d keep their
        ciphertext (stored as-is), plain values stay plain; -c converts
        non-string values, which are refused without it.
        """
        await self.bwc("key", "set", "plain", "p")
        await self.bwc("key", "set", "tok", SECRET, "-e")
        dump = await self.listJson()
        for name in ("plain", "tok"):
            self.assertEqual(await self.bwc("key", "delete", name), 0)
        path = os.path.join(self.home, "dump.json")
        with open(path, "w") as f:
            json.dump(dump, f)
        self.assertEqual(await self.bwc("key", "load", path), 0, self.out.getvalue())
        self.assertEqual(await self.listJson(), dump)
        self.assertEqual(await self.bwc("key", "get", "tok", "-d", "-j"), 0)
        self.assertEqual(json.loads(self.out.getvalue())["value"], SECRET)

        yamlPath = os.path.join(self.home, "items.yaml")
        with open(yamlPath, "w") as f:
            f.write("- name: cfg\n  value: {a: 1}\n  ttl: 60\n")
        self.assertEqual(await self.bwc("key", "load", yamlPath), 1)
        self.assertIn("Item 'cfg' has a value that is not a string. Either pass in the -c/--convert option", self.out.getvalue())
        self.assertEqual(await self.bwc("key", "load", "-c", yamlPath, "-j"), 0, self.out.getvalue())
        self.assertEqual(json.loads(self.out.getvalue()), [{"name": "cfg", "value": '{"a": 1}', "secret": False, "scope": "st2kv.system", "ttl": 60}])

    async def test_listRequest(self) -> None:
        """
        list sends st2's query (decrypt, scope all, limit 50, prefix) and
        filters by prefix.
        """
        for name in ("app.a", "app.b", "zzz"):
            await self.bwc("key", "set", name, name)
        self.assertEqual([d["name"] for d in await self.listJson("--prefix", "app.")], ["app.b", "app.a"])
        self.assertEqual(await self.bwc("--debug", "key", "list", "-n", "1"), 0)
        self.assertIn("/v1/keys?decrypt=false&scope=all&limit=1", self.out.getvalue())
