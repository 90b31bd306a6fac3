"""
Tests for L{bwcd.config}: defaults, the lookup order and one-line errors.
"""

import os
import subprocess
import sys

from twisted.trial.unittest import SynchronousTestCase

from bwcd.config import ConfigError, loadConfig, parseConfig
from tests.daemon import REPO, childEnv


class ParseTests(SynchronousTestCase):
    def setUp(self):
        self.state = os.path.abspath(self.mktemp())
        os.makedirs(self.state)
        self.env = {"BWCD_STATE_DIR": self.state}

    def test_defaults(self):
        """
        An empty file gives the documented listeners and keeps all state under
        the state folder.
        """
        config = parseConfig({}, None, self.env)
        self.assertEqual(config.api.listen, "tcp:9101:interface=127.0.0.1")
        self.assertEqual(config.auth.listen, "tcp:9100:interface=127.0.0.1")
        self.assertEqual(config.storage.url, "sqlite://" + os.path.join(self.state, "bwcd.sqlite"))
        self.assertEqual(config.auth.users_file, os.path.join(self.state, "htpasswd"))
        self.assertEqual(config.datastore.encryption_key_path, os.path.join(self.state, "datastore_key.json"))
        self.assertEqual(config.runner.max_concurrent, 16)
        self.assertEqual(config.api.max_body_bytes, 1048576)

    def test_contractKeys(self):
        """
        Every key of the documented contract is read.
        """
        users = os.path.join(self.state, "users")
        open(users, "w").close()
        config = parseConfig(
            {
                "api": {"listen": "tcp:1", "public_url": "https://x", "max_body_bytes": 10},
                "auth": {"enable": False, "listen": "tcp:2", "users_file": users, "token_ttl": 5, "token_max_ttl": 6},
                "storage": {"url": "mongodb://h:1/db"},
                "packs": {"paths": [self.state]},
                "runner": {"max_concurrent": 2, "output_max_bytes": 3},
            },
            None,
            self.env,
        )
        self.assertEqual(
            (config.api.listen, config.api.public_url, config.api.max_body_bytes, config.auth.enable,
             config.auth.listen, config.auth.users_file, config.auth.token_ttl, config.auth.token_max_ttl,
             config.storage.url, config.packs.paths, config.runner.max_concurrent, config.runner.output_max_bytes),
            ("tcp:1", "https://x", 10, False, "tcp:2", users, 5, 6, "mongodb://h:1/db", (self.state,), 2, 3),
        )

    def assertConfigError(self, data, message):
        with self.assertRaises(ConfigError) as cm:
            parseConfig(data, None, self.env)
        self.assertEqual(str(cm.exception), message)

    def test_errors(self):
        """
        Each problem is one line naming the key.
        """
        self.assertConfigError({"storage": {"url": "postgres://x"}}, "storage.url: unknown scheme 'postgres' (use sqlite:///PATH or mongodb://HOST:PORT/DB)")
        self.assertConfigError({"auth": {"users_file": "/nonexistent/users"}}, "auth.users_file: no such file '/nonexistent/users'")
        self.assertConfigError({"runner": {"max_concurrent": "many"}}, "runner.max_concurrent: expected an integer, got str 'many'")
        self.assertConfigError({"runner": {"max_concurrent": True}}, "runner.max_concurrent: expected an integer, got bool True")
        self.assertConfigError({"api": {"lisen": "x"}}, "api.lisen: unknown key (known: allow_origins, listen, max_body_bytes, metrics, public_url, trusted_proxies, webui_base_url)")
        self.assertConfigError({"nope": {}}, "nope: unknown section (known: api, auth, datastore, packs, retention, runner, storage, stream, system)")
        self.assertConfigError({"auth": {"token_ttl": 10, "token_max_ttl": 5}}, "auth.token_ttl: must not exceed auth.token_max_ttl")
        self.assertConfigError({"packs": {"paths": "/x"}}, "packs.paths: expected a list, got str '/x'")

    def test_retention(self):
        """
        retention: nothing is purged by default (every TTL 0); TTLs are whole
        days, 0 or more; interval and batch_size must be positive.
        """
        r = parseConfig({}, None, self.env).retention
        self.assertEqual((r.executions, r.execution_output, r.trigger_instances, r.rule_enforcements), (0, 0, 0, 0))
        r = parseConfig({"retention": {"executions": 30, "interval": 60}}, None, self.env).retention
        self.assertEqual((r.executions, r.interval), (30, 60.0))
        self.assertConfigError({"retention": {"executions": -1}}, "retention.executions: must be 0 (keep forever) or a number of days, got -1")
        self.assertConfigError({"retention": {"trigger_instances": 1.5}}, "retention.trigger_instances: expected an integer, got float 1.5")
        self.assertConfigError({"retention": {"batch_size": 0}}, "retention.batch_size: must be more than 0, got 0")

    def test_allowOrigins(self):
        """
        api.allow_origins is empty by default (no CORS headers), takes a list
        of http(s) origins or "*", and names the key for anything else.
        """
        self.assertEqual(parseConfig({}, None, self.env).api.allow_origins, ())
        config = parseConfig({"api": {"allow_origins": ["https://ui.example", "*"]}}, None, self.env)
        self.assertEqual(config.api.allow_origins, ("https://ui.example", "*"))
        self.assertConfigError(
            {"api": {"allow_origins": ["ui.example"]}},
            "api.allow_origins: expected \"*\" or an http:// or https:// origin, got 'ui.example'",
        )
        self.assertConfigError({"api": {"allow_origins": "*"}}, "api.allow_origins: expected a list, got str '*'")

    def test_lookupOrder(self):
        """
        --config wins over $BWCD_CONFIG, which wins over the defaults.
        """
        a = os.path.join(self.state, "a.yaml")
        b = os.path.join(self.state, "b.yaml")
        with open(a, "w") as f:
            f.write("api: {listen: 'tcp:1'}\n")
        with open(b, "w") as f:
            f.write("api: {listen: 'tcp:2'}\n")
        env = dict(self.env, BWCD_CONFIG=b)
        self.assertEqual(loadConfig(a, env).api.listen, "tcp:1")
        self.assertEqual(loadConfig(None, env).api.listen, "tcp:2")
        self.assertEqual(loadConfig(None, env).source, b)

    def test_shippedConfigParses(self):
        """
        The commented default configuration in etc/ is valid and equals the
        built-in defaults.
        """
        shipped = loadConfig(os.path.join(REPO, "etc", "bwcd.yaml"), self.env)
        defaults = parseConfig({}, None, self.env)
        self.assertEqual(shipped.api, defaults.api)
        self.assertEqual(shipped.runner, defaults.runner)
        self.assertEqual(shipped.auth, defaults.auth)


class TwistdExitTests(SynchronousTestCase):
    def twistdErrors(self, text):
        path = os.path.abspath(self.mktemp())
        with open(path, "w") as f:
            f.write(text)
        twistd = os.path.join(os.path.dirname(sys.executable), "twistd")
        proc = subprocess.run([twistd, "-n", "--pidfile=", "bwcd", "--config", path], env=childEnv(), capture_output=True, text=True, timeout=60)
        self.assertNotEqual(proc.returncode, 0)
        return [line for line in proc.stderr.splitlines() if line.strip()]

    def test_badConfigExitsWithOneLine(self):
        """
        twistd exits non-zero with one line naming the key when the
        configuration is wrong.
        """
        self.assertEqual(
            self.twistdErrors("storage: {url: 'redis://x'}\n"),
            ["bwcd: configuration error: storage.url: unknown scheme 'redis' (use sqlite:///PATH or mongodb://HOST:PORT/DB)"],
        )

    def test_malformedStoreURL(self):
        """
        A storage URL with the right scheme but a wrong shape is also one
        line.
        """
        self.assertEqual(
            self.twistdErrors("storage: {url: 'sqlite://relative'}\n"),
            ["bwcd: configuration error: storage.url: 'sqlite://relative': an absolute SQLite path needs three slashes (sqlite:///path)"],
        )
