"""
Tests for L{bwcd.cli.config}: settings precedence, the config file, and the
token cache.
"""

from __future__ import annotations

import configparser
import json
import os
import stat

from twisted.trial.unittest import SynchronousTestCase

from bwcd.cli.config import (
    ConfigError,
    cachedTokenPath,
    configFilePath,
    expiryToTimestamp,
    readCachedToken,
    readConfigFile,
    resolveSettings,
    saveLoginCredentials,
    writeCachedToken,
)


class SettingsTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.home = os.path.abspath(self.mktemp())
        os.makedirs(os.path.join(self.home, ".st2"))
        self.configPath = os.path.join(self.home, ".st2", "config")

    def writeConfig(self, text: str, path: str = "") -> str:
        path = path or self.configPath
        with open(path, "w") as f:
            f.write(text)
        return path

    def resolve(self, flags=None, **env):
        environ = {"HOME": self.home}
        environ.update(env)
        return resolveSettings(flags or {}, environ)

    def test_defaults(self) -> None:
        """
        With nothing configured: api 127.0.0.1:9101/v1, auth 127.0.0.1:9100, token cache on.
        """
        s = self.resolve()
        self.assertEqual((s.apiURL, s.authURL, s.streamURL), ("http://127.0.0.1:9101/v1", "http://127.0.0.1:9100", "http://127.0.0.1:9102/v1"))
        self.assertTrue(s.cacheToken)
        self.assertFalse(s.debug)
        self.assertEqual(s.configPath, self.configPath)
        self.assertEqual(s.configDir, os.path.join(self.home, ".st2"))
        self.assertIsNone(s.token)

    def test_baseURLDerivesServices(self) -> None:
        """
        The base url (any source) and api version build the default service urls.
        """
        s = self.resolve(ST2_BASE_URL="https://example.com/", ST2_API_VERSION="v2")
        self.assertEqual((s.apiURL, s.authURL), ("https://example.com:9101/v2", "https://example.com:9100"))

    def test_environmentBeatsDefault(self) -> None:
        """
        ST2_API_URL and ST2_AUTH_URL are used when nothing else is set; trailing slashes dropped.
        """
        s = self.resolve(ST2_API_URL="http://h:1/v1/", ST2_AUTH_URL="http://h:2/")
        self.assertEqual((s.apiURL, s.authURL), ("http://h:1/v1", "http://h:2"))

    def test_configBeatsEnvironment(self) -> None:
        """
        st2's code order: the config file wins over the environment.
        """
        self.writeConfig("[api]\nurl = http://conf:1/v1\n[auth]\nurl = http://conf:2\n[general]\nbase_url = http://confbase\n")
        s = self.resolve(ST2_API_URL="http://env:1/v1", ST2_AUTH_URL="http://env:2", ST2_BASE_URL="http://envbase")
        self.assertEqual((s.apiURL, s.authURL, s.baseURL), ("http://conf:1/v1", "http://conf:2", "http://confbase"))

    def test_flagBeatsConfig(self) -> None:
        """
        --api-url/--auth-url/--url win over the config file.
        """
        self.writeConfig("[api]\nurl = http://conf:1/v1\n[auth]\nurl = http://conf:2\n")
        s = self.resolve({"api_url": "http://flag:1/v1", "auth_url": "http://flag:2", "base_url": "http://flagbase"})
        self.assertEqual((s.apiURL, s.authURL, s.baseURL), ("http://flag:1/v1", "http://flag:2", "http://flagbase"))

    def test_bwcVariablesWin(self) -> None:
        """
        BWC_* equivalents are accepted and win over ST2_* when both are set.
        """
        s = self.resolve(ST2_API_URL="http://st2/v1", BWC_API_URL="http://bwc/v1", BWC_AUTH_TOKEN="tok")
        self.assertEqual(s.apiURL, "http://bwc/v1")
        self.assertEqual(s.token, "tok")
        self.assertTrue(s.credentialsGiven)

    def test_configFileFromEnvironment(self) -> None:
        """
        ST2_CONFIG_FILE selects another file, which must exist.
        """
        other = self.writeConfig("[api]\nurl = http://other/v1\n", os.path.join(self.home, "prod-config"))
        self.assertEqual(self.resolve(ST2_CONFIG_FILE=other).apiURL, "http://other/v1")
        e = self.assertRaises(ConfigError, self.resolve, ST2_CONFIG_FILE=os.path.join(self.home, "missing"))
        self.assertEqual(str(e), f'Config "{os.path.join(self.home, "missing")}" not found')

    def test_configFileFlagBeatsEnvironment(self) -> None:
        """
        --config-file wins over ST2_CONFIG_FILE; ~ expands to HOME.
        """
        self.writeConfig("[api]\nurl = http://flagfile/v1\n", os.path.join(self.home, "a"))
        path, explicit = configFilePath("~/a", {"HOME": self.home, "ST2_CONFIG_FILE": "/elsewhere"})
        self.assertEqual((path, explicit), (os.path.join(self.home, "a"), True))
        self.assertEqual(self.resolve({"config_file": "~/a"}, ST2_CONFIG_FILE="/elsewhere").apiURL, "http://flagfile/v1")

    def test_skipConfig(self) -> None:
        """
        --skip-config (or ST2_CLI_SKIP_CONFIG=1) ignores the file entirely.
        """
        self.writeConfig("[api]\nurl = http://conf/v1\n[credentials]\nusername = bob\n")
        s = self.resolve({"skip_config": True}, ST2_API_URL="http://env/v1")
        self.assertEqual(s.apiURL, "http://env/v1")
        self.assertIsNone(s.username)
        self.assertTrue(self.resolve(ST2_CLI_SKIP_CONFIG="1").skipConfig)
        self.assertFalse(self.resolve(ST2_CLI_SKIP_CONFIG="0").skipConfig)

    def test_credentialsAndCli(self) -> None:
        """
        [credentials] and [cli] options are read with their types.
        """
        self.writeConfig("[credentials]\nusername = bob\npassword = pw\n[cli]\ncache_token = False\ndebug = yes\ntimezone = Europe/Paris\n")
        s = self.resolve()
        self.assertEqual((s.username, s.password, s.cacheToken, s.debug, s.timezone), ("bob", "pw", False, True, "Europe/Paris"))
        self.assertFalse(s.credentialsGiven)

    def test_badBoolean(self) -> None:
        """
        A boolean option with another value is one clear error.
        """
        self.writeConfig("[cli]\ncache_token = maybe\n")
        e = self.assertRaises(ConfigError, self.resolve)
        self.assertIn("[cli] cache_token must be true or false", str(e))

    def test_notIni(self) -> None:
        """
        A file that is not ini is reported with its path.
        """
        self.writeConfig("just text\n")
        e = self.assertRaises(ConfigError, self.resolve)
        self.assertIn("is not a valid ini file", str(e))

    def test_apiKeyPrecedence(self) -> None:
        """
        API key: flag > config > environment; any of them skips automatic login.
        """
        self.writeConfig("[credentials]\napi_key = fromconfig\n")
        self.assertEqual(self.resolve({"api_key": "fromflag"}, ST2_API_KEY="fromenv").apiKey, "fromflag")
        s = self.resolve(ST2_API_KEY="fromenv")
        self.assertEqual((s.apiKey, s.apiKeySource, s.credentialsGiven), ("fromconfig", "config", True))
        os.remove(self.configPath)
        self.assertEqual(self.resolve(ST2_API_KEY="fromenv").apiKey, "fromenv")

    def test_tokenFlagBeatsEnvironment(self) -> None:
        """
        -t/--token wins over ST2_AUTH_TOKEN.
        """
        self.assertEqual(self.resolve({"token": "flag"}, ST2_AUTH_TOKEN="env").token, "flag")

    def test_cacertExpanded(self) -> None:
        """
        The CA bundle path is made absolute with ~ expanded.
        """
        self.writeConfig("[general]\ncacert = ~/ca.pem\n")
        self.assertEqual(self.resolve().cacert, os.path.join(self.home, "ca.pem"))
        self.assertEqual(self.resolve({"cacert": "/x/ca.pem"}).cacert, "/x/ca.pem")

    def test_readConfigIgnoresUnknown(self) -> None:
        """
        Unknown sections and options are ignored; defaults are filled in.
        """
        path = self.writeConfig("[weird]\na = 1\n[api]\nurl = u\nother = 2\n")
        config = readConfigFile(path, mustExist=True)
        self.assertEqual(config["api"], {"url": "u"})
        self.assertNotIn("weird", config)
        self.assertEqual(config["cli"]["cache_token"], True)


class TokenCacheTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.configDir = os.path.join(os.path.abspath(self.mktemp()), ".st2")

    def test_expiryParsing(self) -> None:
        """
        The auth service's expiry string becomes unix seconds (UTC).
        """
        self.assertEqual(expiryToTimestamp("2017-03-31T08:21:19.123456Z"), 1490948479)
        self.assertEqual(expiryToTimestamp("2017-03-31T08:21:19Z"), 1490948479)
        self.assertEqual(expiryToTimestamp("2017-03-31T10:21:19.5+02:00"), 1490948479)
        self.assertEqual(expiryToTimestamp("2017-03-31 08:21:19"), 1490948479)
        self.assertRaises(ValueError, expiryToTimestamp, "tomorrow")

    def test_writeMode(self) -> None:
        """
        The cache file is ~/.st2/token-<user>, JSON {token, expire_timestamp}, mode 0600.
        """
        path = writeCachedToken(self.configDir, "bob", "abc", 2000)
        self.assertEqual(path, cachedTokenPath(self.configDir, "bob"))
        self.assertEqual(os.path.basename(path), "token-bob")
        self.assertEqual(stat.S_IMODE(os.stat(path).st_mode), 0o600)
        self.assertEqual(stat.S_IMODE(os.stat(self.configDir).st_mode), 0o700)
        with open(path) as f:
            self.assertEqual(json.load(f), {"token": "abc", "expire_timestamp": 2000})

    def test_rewriteNarrowsMode(self) -> None:
        """
        Rewriting an existing, too-open file narrows it to 0600 and replaces the content.
        """
        path = writeCachedToken(self.configDir, "bob", "a-much-longer-old-token", 1000)
        os.chmod(path, 0o644)
        writeCachedToken(self.configDir, "bob", "new", 3000)
        self.assertEqual(stat.S_IMODE(os.stat(path).st_mode), 0o600)
        with open(path) as f:
            self.assertEqual(json.load(f), {"token": "new", "expire_timestamp": 3000})

    def test_readValid(self) -> None:
        """
        A token valid for more than 15 more seconds is used.
        """
        path = writeCachedToken(self.configDir, "bob", "abc", 1000)
        cached = readCachedToken(path, now=984)
        self.assertEqual((cached.token, cached.expireTimestamp, cached.permissiveMode), ("abc", 1000, None))

    def test_graceExpired(self) -> None:
        """
        Within 15 seconds of expiry the cached token counts as expired.
        """
        path = writeCachedToken(self.configDir, "bob", "abc", 1000)
        self.assertIsNotNone(readCachedToken(path, now=985))
        self.assertIsNone(readCachedToken(path, now=985.5))
        self.assertIsNone(readCachedToken(path, now=2000))

    def test_missing(self) -> None:
        """
        No file, no token.
        """
        self.assertIsNone(readCachedToken(cachedTokenPath(self.configDir, "nobody"), now=0))

    def test_corrupt(self) -> None:
        """
        A corrupt file gives st2's message naming the path.
        """
        os.makedirs(self.configDir)
        path = cachedTokenPath(self.configDir, "bob")
        with open(path, "w") as f:
            f.write("{not json")
        e = self.assertRaises(ConfigError, readCachedToken, path, 0)
        self.assertTrue(str(e).startswith(f'File "{path}" with cached token is corrupted or invalid ('))

    def test_permissiveReported(self) -> None:
        """
        A world-readable cache file is still used, but reported.
        """
        path = writeCachedToken(self.configDir, "bob", "abc", 1000)
        os.chmod(path, 0o644)
        self.assertEqual(readCachedToken(path, now=0).permissiveMode, "0o644")


class SaveLoginCredentialsTests(SynchronousTestCase):
    def read(self, path: str) -> configparser.ConfigParser:
        parser = configparser.ConfigParser()
        parser.read(path)
        return parser

    def test_createsFile(self) -> None:
        """
        Login without -w stores only the username, in a new 0600 file.
        """
        path = os.path.join(os.path.abspath(self.mktemp()), ".st2", "config")
        saveLoginCredentials(path, "bob", None)
        parser = self.read(path)
        self.assertEqual(dict(parser["credentials"]), {"username": "bob"})
        self.assertEqual(stat.S_IMODE(os.stat(path).st_mode), 0o600)

    def test_keepsOtherSectionsDropsPassword(self) -> None:
        """
        Other settings survive; an old password is removed unless -w gives a new one.
        """
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        path = os.path.join(directory, "config")
        with open(path, "w") as f:
            f.write("[api]\nurl = http://x/v1\n[credentials]\nusername = old\npassword = oldpw\n")
        saveLoginCredentials(path, "bob", None)
        parser = self.read(path)
        self.assertEqual(parser["api"]["url"], "http://x/v1")
        self.assertEqual(dict(parser["credentials"]), {"username": "bob"})
        saveLoginCredentials(path, "bob", "newpw")
        self.assertEqual(dict(self.read(path)["credentials"]), {"username": "bob", "password": "newpw"})
