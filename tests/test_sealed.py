"""
Tests for L{bwcd.execution.sealed}: secret parameters are never stored in
clear, yet the runner and re-run get them.
"""

from __future__ import annotations

import glob
import hashlib
import os

from twisted.trial.unittest import SynchronousTestCase, TestCase

from bwcd.datastore.crypto import decrypt, encrypt, generateKey
from bwcd.execution.sealed import seal, unseal
from tests.daemon import startDaemon

PACKS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures", "packs")
SCHEMA = {"password": {"type": "string", "secret": True}, "user": {"type": "string"}}


class SealTests(SynchronousTestCase):
    def setUp(self) -> None:
        key = generateKey()
        self.encrypt = lambda text: encrypt(key, text)
        self.decrypt = lambda text: decrypt(key, text)

    def test_secretsMovedIntoCiphertext(self) -> None:
        """
        Secret values leave both internal fields (masked there) and are
        found only inside the ciphertext; other values stay as they were.
        """
        doc = {"_given": {"password": "hunter2", "user": "u"}, "_parameters": {"password": "hunter2", "user": "u", "x": 1}}
        seal(doc, SCHEMA, self.encrypt)
        self.assertEqual(doc["_given"], {"password": "********", "user": "u"})
        self.assertEqual(doc["_parameters"], {"password": "********", "user": "u", "x": 1})
        self.assertNotIn("hunter2", repr(doc))
        opened = unseal(doc, self.decrypt)
        self.assertEqual(opened["_given"], {"password": "hunter2", "user": "u"})
        self.assertEqual(opened["_parameters"], {"password": "hunter2", "user": "u", "x": 1})
        self.assertEqual(doc["_given"]["password"], "********", "unseal returns a copy")

    def test_nothingToSeal(self) -> None:
        """
        Without a secret value no ciphertext is added, and unsealing such a
        document needs no key.
        """
        doc = {"_given": {"user": "u"}, "_parameters": {"user": "u", "password": None}}
        seal(doc, SCHEMA, self.encrypt)
        self.assertNotIn("_sealed", doc)
        self.assertEqual(unseal(doc, None), doc)

    def test_sealedWithoutKeyRefused(self) -> None:
        """
        A sealed document cannot be opened without the key.
        """
        doc = {"_given": {"password": "p"}}
        seal(doc, SCHEMA, self.encrypt)
        self.assertRaises(ValueError, unseal, doc, None)


class SecretParametersAtRestTests(TestCase):
    timeout = 60

    async def test_secretParameterNotInTheDatabaseFile(self) -> None:
        """
        An execution with a secret parameter runs with the real value (its
        script prints the value's hash), re-runs with it, and the value is
        in none of the SQLite files, nor in any answer.
        """
        secret = "Very-Secret-Value-31337"
        digest = hashlib.sha256(secret.encode()).hexdigest()
        d = await startDaemon(self, packs=[PACKS])
        response, created = await d.post("/v1/executions", {"action": "examples.secret", "parameters": {"password": secret}})
        self.assertEqual(response.code, 201, created)
        self.assertEqual(created["parameters"], {"password": "********"})
        done = await d.waitFor(created["id"])
        self.assertEqual(done["status"], "succeeded", done)
        self.assertEqual(str(done["result"]["stdout"]).strip(), digest)
        response, again = await d.post(f"/v1/executions/{created['id']}/re_run", {})
        self.assertEqual(response.code, 201, again)
        rerun = await d.waitFor(again["id"])
        self.assertEqual(str(rerun["result"]["stdout"]).strip(), digest)
        files = glob.glob(os.path.join(d.stateDir, "bwcd.sqlite*"))
        self.assertTrue(files)
        for path in files:
            with open(path, "rb") as f:
                self.assertNotIn(secret.encode(), f.read(), path)
        self.assertNotIn(secret, d.readLog())
