"""
Tests for L{bwcd.datastore.templating}: C{st2kv} lookups and C{decrypt_kv}
under a sandboxed, strict Jinja environment like bwcd's renderer, with values
from a real KeyService over SQLite.
"""

from __future__ import annotations

import os
from typing import Dict, FrozenSet, List, Mapping, Optional, Tuple

from jinja2 import StrictUndefined, UndefinedError
from jinja2.sandbox import SandboxedEnvironment
from twisted.internet import reactor
from twisted.internet.defer import ensureDeferred
from twisted.trial.unittest import SynchronousTestCase, TestCase

from bwcd.datastore import crypto
from bwcd.datastore.keys import KeyService
from bwcd.datastore.templating import FILTERS, Snapshot, referencedKeys, renderWithDatastore, serviceDecrypt, serviceFetch
from bwcd.rules.templating import renderParameters
from bwcd.store.sqlite import SQLiteStore
from tests.test_datastore_keys import SECRET, declareKeys

env = SandboxedEnvironment(undefined=StrictUndefined)
env.filters.update(FILTERS)


def render(source: str, root) -> str:
    return env.from_string(source).render({"st2kv": root})


class ScanTests(SynchronousTestCase):
    def test_references(self) -> None:
        """
        Attribute and constant item paths under st2kv.system/user are found,
        with their prefixes, inside nested values; other names are not.
        """
        found = referencedKeys(
            [
                "{{ st2kv.system.a.b | decrypt_kv }}",
                {"k": ["x {{ st2kv.user['c'] }}"]},
                "{{ st2kv.other.d }} {{ trigger.st2kv.system.e }} {{ st2kv.system[name] }} {% bad",
            ]
        )
        self.assertEqual(found, {("st2kv.system", "a"), ("st2kv.system", "a.b"), ("st2kv.user", "c")})


class RenderTests(TestCase):
    async def setUp(self) -> None:
        declareKeys(self)
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        self.store = SQLiteStore(os.path.join(directory, "db.sqlite"), reactor)
        await self.store.start()
        self.addCleanup(self.store.stop)
        self.keys = KeyService(self.store, reactor, crypto.generateKey(), "/k.json")
        await self.keys.set("admin", "slack_token", {"name": "slack_token", "value": SECRET, "secret": True})
        await self.keys.set("admin", "a.b", {"name": "a.b", "value": "dotted"})
        await self.keys.set("admin", "plain", {"name": "plain", "value": "pv"})
        await self.keys.set("admin", "empty", {"name": "empty", "value": ""})
        await self.keys.set("stanley", "mine", {"name": "mine", "value": "stanley's", "scope": "user"})
        self.queries: List[Tuple[str, FrozenSet[str]]] = []
        inner = serviceFetch(self.keys, "stanley")

        async def fetch(scope: str, names: FrozenSet[str]) -> Mapping[str, Optional[str]]:
            self.queries.append((scope, names))
            return await inner(scope, names)

        self.fetch = fetch

    async def renderAll(self, sources: Dict[str, str]) -> Dict[str, str]:
        return await renderWithDatastore(
            lambda root: {k: render(v, root) for k, v in sources.items()}, self.fetch, sources.values(), serviceDecrypt(self.keys)
        )

    async def test_values(self) -> None:
        """
        System and user keys, dotted paths (both spellings), missing keys as
        empty strings, secrets as ciphertext without the filter and as
        plaintext with it; all fetched in one query per scope.
        """
        out = await self.renderAll(
            {
                "plain": "{{ st2kv.system.plain }}",
                "dotted": "{{ st2kv.system.a.b }}/{{ st2kv.system['a']['b'] }}",
                "missing": "[{{ st2kv.system.nothing }}]",
                "user": "{{ st2kv.user.mine }}",
                "cipher": "{{ st2kv.system.slack_token }}",
                "secret": "{{ st2kv.system.slack_token | decrypt_kv }}",
                "cmp": "{{ 'yes' if st2kv.system.plain == 'pv' else 'no' }}",
            }
        )
        self.assertEqual(
            {k: v for k, v in out.items() if k != "cipher"},
            {"plain": "pv", "dotted": "dotted/dotted", "missing": "[]", "user": "stanley's", "secret": SECRET, "cmp": "yes"},
        )
        self.assertTrue(out["cipher"].startswith("3030303030"))
        self.assertEqual(sorted(scope for scope, _ in self.queries), ["st2kv.system", "st2kv.user"])

    async def test_dynamicNamesFetchedOnDemand(self) -> None:
        """
        A name the scan cannot see (built at render time) is fetched after
        the first rendering and the template rendered again.
        """
        out = await self.renderAll({"v": "{% set n = 'pla' ~ 'in' %}{{ st2kv.system[n] }}|{{ st2kv.system[n ~ '_x'] }}"})
        self.assertEqual(out, {"v": "pv|"})
        self.assertEqual(len(self.queries), 1)
        out = await self.renderAll({"v": "{% set t = 'slack' ~ '_token' %}{{ st2kv.system[t] | decrypt_kv }}"})
        self.assertEqual(out, {"v": SECRET})

    async def test_decryptErrors(self) -> None:
        """
        decrypt_kv on a missing or empty item gives st2's message; on a
        non-secret value the hex decoding error.
        """
        for source, message in (
            ("{{ st2kv.system.nothing | decrypt_kv }}", 'Referenced datastore item "st2kv.system.nothing" doesn\'t exist or it contains an empty string'),
            ("{{ st2kv.system.empty | decrypt_kv }}", 'Referenced datastore item "st2kv.system.empty" doesn\'t exist or it contains an empty string'),
            ("{{ st2kv.user.nothing | decrypt_kv }}", 'Referenced datastore item "st2kv.user.nothing" doesn\'t exist or it contains an empty string'),
            ("{{ st2kv.system.plain | decrypt_kv }}", "Non-hexadecimal digit found"),
        ):
            e = await self.assertFailure(ensureDeferred(self.renderAll({"v": source})), ValueError)
            self.assertIn(message, str(e))

    async def test_decryptLiteralCiphertext(self) -> None:
        """
        decrypt_kv also takes a ciphertext string, using the key behind the
        st2kv object of the context.
        """
        ciphertext = crypto.encrypt(self.keys.cryptoKey, "lit")
        out = await self.renderAll({"v": "{{ '%s' | decrypt_kv }}" % ciphertext})
        self.assertEqual(out, {"v": "lit"})

    async def test_unknownScopeIsStrict(self) -> None:
        """
        st2kv has only system and user; anything else is undefined.
        """
        await self.assertFailure(ensureDeferred(self.renderAll({"v": "{{ st2kv.global.x }}"})), UndefinedError)

    async def test_ruleParameters(self) -> None:
        """
        bwcd's own parameter renderer takes the st2kv object in its context:
        an action parameter renders a datastore value.
        """
        params = {"token": "{{ st2kv.system.plain }}-{{ trigger.n }}", "who": "{{ st2kv.user.mine }}"}
        out = await renderWithDatastore(
            lambda root: renderParameters(params, {"trigger": {"n": 1}, "st2kv": root}), self.fetch, params.values()
        )
        self.assertEqual(out, {"token": "pv-1", "who": "stanley's"})

    def test_snapshotRecordsMisses(self) -> None:
        """
        Reading a name that was not fetched records it and renders empty.
        """
        snapshot = Snapshot()
        self.assertEqual(render("{{ st2kv.system.x.y }}", snapshot.context()), "")
        self.assertEqual(snapshot.missed, {("st2kv.system", "x.y")})
