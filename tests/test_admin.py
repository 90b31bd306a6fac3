"""
Tests for L{bwcd.admin}: the C{bwcd-admin} command that creates the first
credentials of a fresh install.
"""

from __future__ import annotations

import base64
import io
import json
import os
import stat
import subprocess
import sys
from typing import Any, List

from twisted.internet import reactor
from twisted.trial.unittest import SynchronousTestCase, TestCase

from bwcd import admin
from bwcd.api.auth_routes import installTokenRoutes
from bwcd.api.framework import Api
from bwcd.auth.apikeys import ApiKeys
from bwcd.auth.credentials import Authenticator
from bwcd.auth.htpasswd import Htpasswd
from bwcd.auth.tokens import Tokens
from bwcd.config import loadConfig
from bwcd.store.sqlite import SQLiteStore
from tests.daemon import PumpWhenFinished

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def writeConfig(folder: str, **auth: Any) -> str:
    """
    A configuration whose state (database, default users file) lives in
    C{folder}/state.
    """
    data: dict = {"system": {"state_dir": os.path.join(folder, "state")}}
    if auth:
        data["auth"] = auth
    path = os.path.join(folder, "bwcd.yaml")
    with open(path, "w") as f:
        json.dump(data, f)  # JSON is YAML
    return path


def runAdmin(*argv: str, stdin: str = "") -> subprocess.CompletedProcess:
    """
    C{bwcd-admin} as its own process, the way an operator runs it.
    """
    env = {k: v for k, v in os.environ.items() if k not in ("BWCD_CONFIG", "BWCD_STATE_DIR")}
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    return subprocess.run(
        [sys.executable, "-m", "bwcd.admin", *argv],
        input=stdin,
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=60,
    )


class UserAddTests(SynchronousTestCase):
    """
    C{bwcd-admin user-add}.
    """

    def setUp(self) -> None:
        self.folder = os.path.abspath(self.mktemp())
        os.makedirs(self.folder)
        self.config = writeConfig(self.folder)
        self.usersFile = os.path.join(self.folder, "state", "htpasswd")

    def run_(self, *argv: str, stdin: str = "") -> tuple:
        out, err = io.StringIO(), io.StringIO()
        code = admin.main(list(argv), stdin=io.StringIO(stdin), stdout=out, stderr=err)
        return code, out.getvalue(), err.getvalue()

    def test_passwordStdin(self) -> None:
        """
        A password from stdin creates the users file (0640) with a bcrypt
        entry the daemon accepts.
        """
        code, out, err = self.run_("--config", self.config, "user-add", "alice", "--password-stdin", stdin="s3cret pw\n")
        self.assertEqual((code, err), (0, ""))
        self.assertEqual(out, f"Added user alice in {self.usersFile}\n")
        self.assertEqual(stat.S_IMODE(os.stat(self.usersFile).st_mode), 0o640)
        (line,) = open(self.usersFile).read().splitlines()
        self.assertTrue(line.startswith("alice:$2y$"))
        self.assertNotIn("s3cret", line)
        h = Htpasswd(self.usersFile)
        self.assertTrue(self.successResultOf(h.check("alice", "s3cret pw")))
        self.assertFalse(self.successResultOf(h.check("alice", "s3cret pw\n")))

    def test_changePassword(self) -> None:
        """
        Adding an existing user changes their password and keeps others.
        """
        self.run_("--config", self.config, "user-add", "alice", "--password-stdin", stdin="one\n")
        self.run_("user-add", "bob", "--config", self.config, "--password-stdin", stdin="two\n")
        code, out, _ = self.run_("user-add", "alice", "--password-stdin", "--config", self.config, stdin="three\r\n")
        self.assertEqual((code, out), (0, f"Changed the password of user alice in {self.usersFile}\n"))
        h = Htpasswd(self.usersFile)
        self.assertTrue(self.successResultOf(h.check("alice", "three")))
        self.assertFalse(self.successResultOf(h.check("alice", "one")))
        self.assertTrue(self.successResultOf(h.check("bob", "two")))
        self.assertEqual(len(open(self.usersFile).read().splitlines()), 2)

    def test_prompted(self) -> None:
        """
        Without --password-stdin the password is asked twice; a mismatch
        writes nothing.
        """
        answers: List[str] = ["pw1", "pw2", "same", "same"]
        prompts: List[str] = []

        def fake(prompt: str) -> str:
            prompts.append(prompt)
            return answers.pop(0)

        self.patch(admin.getpass, "getpass", fake)
        code, _, err = self.run_("--config", self.config, "user-add", "alice")
        self.assertEqual((code, err), (1, "bwcd-admin: the passwords do not match\n"))
        self.assertFalse(os.path.exists(self.usersFile))
        code, _, _ = self.run_("--config", self.config, "user-add", "alice")
        self.assertEqual(code, 0)
        self.assertEqual(prompts, ["Password: ", "Password (again): "] * 2)
        self.assertTrue(self.successResultOf(Htpasswd(self.usersFile).check("alice", "same")))

    def test_refusals(self) -> None:
        """
        An empty password or a bad name is refused with a message.
        """
        code, _, err = self.run_("--config", self.config, "user-add", "alice", "--password-stdin", stdin="\n")
        self.assertEqual((code, err), (1, "bwcd-admin: the password is empty\n"))
        code, _, err = self.run_("--config", self.config, "user-add", "a:b", "--password-stdin", stdin="x\n")
        self.assertEqual(code, 1)
        self.assertIn("invalid user name", err)
        self.assertFalse(os.path.exists(self.usersFile))

    def test_configuredFileMissing(self) -> None:
        """
        A users file named in the configuration but not yet there is
        created, although the daemon's configuration check wants it to exist.
        """
        target = os.path.join(self.folder, "etc-users")
        config = writeConfig(self.folder, users_file=target)
        code, _, err = self.run_("--config", config, "user-add", "ops", "--password-stdin", stdin="pw\n")
        self.assertEqual((code, err), (0, ""))
        self.assertEqual(loadConfig(config).auth.users_file, target)
        self.assertTrue(self.successResultOf(Htpasswd(target).check("ops", "pw")))

    def test_badConfig(self) -> None:
        """
        An unusable configuration is reported in one line, exit status 1.
        """
        path = os.path.join(self.folder, "bad.yaml")
        with open(path, "w") as f:
            f.write("auth: {enable: maybe}\n")
        code, _, err = self.run_("--config", path, "user-add", "x", "--password-stdin", stdin="pw\n")
        self.assertEqual(code, 1)
        self.assertEqual(err, "bwcd-admin: auth.enable: expected true or false, got str 'maybe'\n")

    def test_badMetadata(self) -> None:
        """
        --metadata must be a JSON object; the usage error exits 2.
        """
        for value, message in (("{nope", "--metadata: not JSON"), ("[1]", "--metadata: expected a JSON object")):
            usage = io.StringIO()
            self.patch(sys, "stderr", usage)
            with self.assertRaises(SystemExit) as e:
                self.run_("--config", self.config, "apikey-create", "--metadata", value)
            self.assertEqual(e.exception.code, 2)
            self.assertIn(message, usage.getvalue())

    def test_badScope(self) -> None:
        """
        Each --scope must be webhooks:<url glob>; a bad one is a usage error
        (exit 2) naming it, and no key is made.
        """
        for value in ("executions:*", "webhooks:", "webhooks:a[b", "alerts/*"):
            usage = io.StringIO()
            self.patch(sys, "stderr", usage)
            with self.assertRaises(SystemExit) as e:
                self.run_("--config", self.config, "apikey-create", "--scope", "webhooks:ok", "--scope", value)
            self.assertEqual(e.exception.code, 2)
            self.assertIn(f'--scope: Invalid scope "{value}": ', usage.getvalue())
        self.assertFalse(os.path.exists(os.path.join(self.folder, "state")))


class EndToEndTests(TestCase):
    """
    A fresh install: credentials made with C{bwcd-admin} work against the
    routes of a daemon using the same configuration.
    """

    def setUp(self) -> None:
        self.folder = os.path.abspath(self.mktemp())
        os.makedirs(self.folder)
        self.config = writeConfig(self.folder)

    async def test_freshInstall(self) -> None:
        """
        C{user-add} then C{apikey-create} (in their own processes) give a
        password that logs in and a key, printed alone, that authenticates as
        the chosen user with its metadata.
        """
        added = runAdmin("--config", self.config, "user-add", "admin", "--password-stdin", stdin="first password\n")
        self.assertEqual(added.returncode, 0, added.stderr)
        made = runAdmin("apikey-create", "--config", self.config, "--user", "ci", "--metadata", '{"for": "ci"}')
        self.assertEqual((made.returncode, made.stderr), (0, ""))
        self.assertRegex(made.stdout, r"^[A-Za-z0-9]{86}\n$")
        key = made.stdout.strip()
        made2 = runAdmin("apikey-create", "--config", self.config)
        self.assertEqual(made2.returncode, 0, made2.stderr)

        config = loadConfig(self.config)
        store = SQLiteStore(config.storage.url[len("sqlite://"):], reactor)
        await store.start()
        self.addCleanup(store.stop)
        tokens = Tokens(store, reactor)
        apikeys = ApiKeys(store, reactor)
        api = Api(Authenticator(tokens, apikeys, True, config.system.user).authenticate)
        api.ready = True
        installTokenRoutes(api, tokens, Htpasswd(config.auth.users_file, reactor=reactor), config)

        @api.route("/v1/whoami", ["GET"])
        async def whoami(request, principal):
            return {"user": principal.user, "method": principal.method}

        stub = PumpWhenFinished(api.resource()).stub

        async def call(method: str, path: str, headers: dict) -> tuple:
            response = await stub.request(method, "http://bwcd.test" + path, headers=headers)
            return response.code, json.loads(await response.content())

        code, body = await call("GET", "/v1/whoami", {"St2-Api-Key": key})
        self.assertEqual((code, body), (200, {"user": "ci", "method": "apikey"}))
        code, body = await call("GET", "/v1/whoami", {"St2-Api-Key": made2.stdout.strip()})
        self.assertEqual((code, body["user"]), (200, config.system.user))
        doc = await apikeys.lookup(key)
        self.assertEqual(doc["metadata"], {"for": "ci"})
        login = "Basic " + base64.b64encode(b"admin:first password").decode()
        code, body = await call("POST", "/auth/v1/tokens", {"Authorization": login})
        self.assertEqual(code, 201, body)
        code, body = await call("GET", "/v1/whoami", {"X-Auth-Token": body["token"]})
        self.assertEqual((code, body), (200, {"user": "admin", "method": "token"}))

    async def test_scopedKey(self) -> None:
        """
        C{apikey-create --scope} (repeatable) stores the scopes with the key,
        canonical (slashes around the glob dropped) and in order; the key
        authenticates as a scoped, non-admin caller, refused (403 naming
        both scopes) on a route not open to scoped keys.
        """
        made = runAdmin("apikey-create", "--config", self.config, "--user", "grafana", "--scope", "webhooks:alerts/*", "--scope", "webhooks:/grafana/")
        self.assertEqual((made.returncode, made.stderr), (0, ""))
        key = made.stdout.strip()
        config = loadConfig(self.config)
        store = SQLiteStore(config.storage.url[len("sqlite://"):], reactor)
        await store.start()
        self.addCleanup(store.stop)
        apikeys = ApiKeys(store, reactor)
        doc = await apikeys.lookup(key)
        self.assertEqual((doc["user"], doc["scopes"]), ("grafana", ["webhooks:alerts/*", "webhooks:grafana"]))
        authenticator = Authenticator(Tokens(store, reactor), apikeys, True, config.system.user)
        api = Api(authenticator.authenticate)
        api.ready = True

        @api.route("/v1/whoami", ["GET"])
        async def whoami(request, principal):
            return {"user": principal.user}

        stub = PumpWhenFinished(api.resource()).stub
        response = await stub.request("GET", "http://bwcd.test/v1/whoami", headers={"St2-Api-Key": key})
        body = json.loads(await response.content())
        self.assertEqual((response.code, body), (403, {"faultstring": "API key is limited to webhooks:alerts/*, webhooks:grafana"}))

    def test_storeUnusable(self) -> None:
        """
        A store that cannot be opened is reported without a traceback.
        """
        blocker = os.path.join(self.folder, "file")
        with open(blocker, "w") as f:
            f.write("x")
        path = os.path.join(self.folder, "bad.yaml")
        with open(path, "w") as f:
            json.dump({"storage": {"url": f"sqlite:///{blocker}/db.sqlite"}, "system": {"state_dir": self.folder}}, f)
        made = runAdmin("--config", path, "apikey-create")
        self.assertEqual((made.returncode, made.stdout), (1, ""))
        self.assertTrue(made.stderr.startswith("bwcd-admin: "), made.stderr)
        self.assertNotIn("Traceback", made.stderr)

    def test_help(self) -> None:
        """
        The help names both commands.
        """
        shown = runAdmin("--help")
        self.assertEqual(shown.returncode, 0)
        self.assertIn("user-add", shown.stdout)
        self.assertIn("apikey-create", shown.stdout)


class PurgeCommandTests(TestCase):
    """
    C{bwcd-admin purge --before DATE} over a real SQLite file.
    """

    def setUp(self) -> None:
        self.folder = os.path.abspath(self.mktemp())
        os.makedirs(self.folder)
        self.config = writeConfig(self.folder)
        os.makedirs(os.path.join(self.folder, "state"))

    async def openStore(self) -> SQLiteStore:
        store = SQLiteStore(loadConfig(self.config).storage.url[len("sqlite://"):], reactor)
        await store.start()
        return store

    async def test_purge(self) -> None:
        """
        Completed executions (with their output), processed instances and
        enforcements before the date are deleted and counted; unfinished
        executions, pending instances and newer documents stay; a second
        run limited to some collections deletes nothing more.
        """
        from tests.test_retention import SURVIVORS, insertAll, remaining, seedDocuments

        store = await self.openStore()
        await insertAll(store, seedDocuments(60, "old"))
        await insertAll(store, seedDocuments(1, "new"))
        await store.stop()
        # the seeds are 60 and 1 days before 2026-12-03
        done = runAdmin("--config", self.config, "purge", "--before", "2026-11-01")
        self.assertEqual((done.returncode, done.stderr), (0, ""))
        self.assertEqual(
            done.stdout,
            "execution_output: 4 deleted\nexecutions: 2 deleted\nrule_enforcements: 1 deleted\ntrigger_instances: 2 deleted\n",
        )
        store = await self.openStore()
        self.addCleanup(store.stop)
        self.assertEqual(await remaining(store), SURVIVORS)
        again = runAdmin("purge", "--config", self.config, "--before", "2026-11-01T00:00:00Z", "--collections", "executions", "trigger_instances")
        self.assertEqual((again.returncode, again.stdout), (0, "execution_output: 0 deleted\nexecutions: 0 deleted\ntrigger_instances: 0 deleted\n"))

    async def test_onlySomeCollections(self) -> None:
        """
        --collections limits the purge to the kinds named.
        """
        from tests.test_retention import insertAll, remaining, seedDocuments

        store = await self.openStore()
        await insertAll(store, seedDocuments(60, "old"))
        await store.stop()
        done = runAdmin("--config", self.config, "purge", "--before", "2026-11-01", "--collections", "rule_enforcements")
        self.assertEqual((done.returncode, done.stdout), (0, "rule_enforcements: 1 deleted\n"))
        store = await self.openStore()
        self.addCleanup(store.stop)
        left = await remaining(store)
        self.assertEqual((len(left["executions"]), len(left["triggerinstances"]), left["ruleenforcements"]), (5, 4, []))

    def test_badDate(self) -> None:
        """
        A --before that is not a UTC date is a usage error (exit 2), and an
        unknown collection too.
        """
        for argv in (("--before", "yesterday"), ("--before", "2026-11-01", "--collections", "users")):
            done = runAdmin("--config", self.config, "purge", *argv)
            self.assertEqual(done.returncode, 2)
            self.assertIn("purge", done.stderr)
        self.assertIn("not a UTC date or timestamp: 'yesterday'", runAdmin("--config", self.config, "purge", "--before", "yesterday").stderr)
