"""
Tests for the Debian package (debian/), the systemd unit
(etc/systemd/bwcd.service) and the nginx site (etc/nginx/bwcd.conf).

L{ShippedFilesTests} reads the shipped files and needs nothing special.
L{InstalledPackageTests} builds the .deb, installs it on this machine, runs
the daemon as the unit says and nginx with the site, and purges the package
again; it needs root and Debian, and installs its build tools with apt-get
when they are missing.
"""

from __future__ import annotations

import base64
import json
import os
import pwd
import re
import shutil
import signal
import tempfile
import time
from typing import Any, Dict, Optional

import yaml
from twisted.logger import Logger
from twisted.trial.unittest import SkipTest, SynchronousTestCase, TestCase

from bwcd.config import parseConfig
from tests.packaging import harness

log = Logger(namespace="tests.test_packaging")

REPO = harness.REPO
UNIT_SOURCE = os.path.join(REPO, "etc", "systemd", "bwcd.service")
SITE_SOURCE = os.path.join(REPO, "etc", "nginx", "bwcd.conf")
PACKAGED_CONFIG = os.path.join(REPO, "debian", "bwcd.yaml")

VENV = "/opt/venvs/bwcd"
CONFIG = "/etc/bwcd/bwcd.yaml"
USERS_FILE = "/etc/bwcd/htpasswd"
STATE_DIR = "/var/lib/bwcd"
INSTALLED_UNIT = "/lib/systemd/system/bwcd.service"
INSTALLED_SITE = "/etc/nginx/sites-available/bwcd.conf"

DOWN_FAULT = "Nginx is unable to reach bwcd. Make sure service is running."

SAMPLE_RULE = {
    "name": "sample_rule",
    "pack": "examples",
    "enabled": True,
    "trigger": {"type": "core.st2.webhook", "parameters": {"url": "sample"}},
    "criteria": {"trigger.body.key1": {"type": "equals", "pattern": "value1"}},
    "action": {"ref": "core.local", "parameters": {"cmd": "echo {{trigger.body.key1}}"}},
}


def _read(path: str) -> str:
    with open(path, encoding="utf-8") as f:
        return f.read()


def _nginxBytes(size: str) -> int:
    """
    An nginx size (C{1m}, C{512k}, C{1024}) in bytes.
    """
    match = re.fullmatch(r"(\d+)([kKmMgG]?)", size)
    assert match, size
    return int(match.group(1)) * {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3}[match.group(2).lower()]


def _siteDirective(text: str, name: str) -> list:
    return re.findall(rf"(?m)^\s*{name}\s+([^;]+);", text)


class ShippedFilesTests(SynchronousTestCase):
    """
    The unit, the site and the packaged configuration agree with the issue
    and with each other.
    """

    def setUp(self) -> None:
        self.unit = harness.parseUnit(_read(UNIT_SOURCE))
        self.site = _read(SITE_SOURCE)
        self.packaged = yaml.safe_load(_read(PACKAGED_CONFIG))

    def test_execStart(self) -> None:
        """
        systemd runs C{twistd --nodaemon --pidfile= bwcd --config
        /etc/bwcd/bwcd.yaml} from the package's virtualenv as user bwcd,
        restarts it on failure and reloads it with SIGHUP.
        """
        unit = self.unit
        self.assertEqual(
            harness.commandLine(unit.value("Service", "ExecStart")),
            [f"{VENV}/bin/twistd", "--nodaemon", "--pidfile=", "bwcd", "--config", CONFIG],
        )
        self.assertEqual((unit.value("Service", "User"), unit.value("Service", "Group")), ("bwcd", "bwcd"))
        self.assertEqual(unit.value("Service", "Restart"), "on-failure")
        self.assertEqual(unit.value("Service", "ExecReload"), "/bin/kill -HUP $MAINPID")
        self.assertEqual(unit.value("Service", "WorkingDirectory"), STATE_DIR)
        self.assertEqual(unit.value("Install", "WantedBy"), "multi-user.target")

    def test_logsToJournal(self) -> None:
        """
        twistd logs to stdout (no --logfile, no --syslog), which the unit
        hands to the journal.
        """
        argv = harness.commandLine(self.unit.value("Service", "ExecStart"))
        self.assertFalse([a for a in argv if a.startswith(("--logfile", "-l", "--syslog"))])
        self.assertEqual(self.unit.value("Service", "StandardOutput"), "journal")

    def test_hardening(self) -> None:
        """
        The unit forbids new privileges and makes the system read-only except
        the state folder, with a private /tmp; the sudo drop-in lifts exactly
        the settings that stop sudo.
        """
        unit = self.unit
        self.assertEqual(unit.value("Service", "NoNewPrivileges"), "true")
        self.assertEqual(unit.value("Service", "ProtectSystem"), "strict")
        self.assertEqual(unit.value("Service", "PrivateTmp"), "true")
        self.assertEqual(unit.value("Service", "StateDirectory"), "bwcd")
        dropin = harness.parseUnit(_read(os.path.join(REPO, "debian", "sudo-actions.conf")))
        self.assertEqual(dropin.value("Service", "NoNewPrivileges"), "false")
        self.assertEqual(dropin.value("Service", "RestrictSUIDSGID"), "false")
        self.assertEqual(dropin.value("Service", "CapabilityBoundingSet"), "~")

    def test_killGraceBelowStopTimeout(self) -> None:
        """
        bwcd's own TERM-then-KILL of running executions ends before systemd's
        TimeoutStopSec would SIGKILL everything.
        """
        timeout = float(self.unit.value("Service", "TimeoutStopSec"))
        config = self._packagedConfig()
        self.assertLess(config.runner.kill_grace * 2, timeout)

    def _packagedConfig(self, **overrides: Any):
        """
        debian/bwcd.yaml through bwcd's own parser, with the paths that exist
        only on an installed system pointed at existing ones.
        """
        data = dict(self.packaged)
        data["auth"] = dict(data["auth"], users_file=UNIT_SOURCE)
        data["packs"] = dict(data["packs"], paths=[REPO])
        return parseConfig(data, PACKAGED_CONFIG, environ={})

    def test_packagedConfigPaths(self) -> None:
        """
        The packaged configuration is valid for bwcd and keeps state under
        /var/lib/bwcd, users in /etc/bwcd/htpasswd and packs in /opt/bwcd/packs.
        """
        config = self._packagedConfig()
        self.assertEqual(config.system.state_dir, STATE_DIR)
        self.assertEqual(config.storage.url, f"sqlite://{STATE_DIR}/bwcd.sqlite")
        self.assertEqual(self.packaged["auth"]["users_file"], USERS_FILE)
        self.assertEqual(self.packaged["packs"]["paths"], ["/opt/bwcd/packs"])

    def test_siteMatchesConfig(self) -> None:
        """
        nginx's body limit equals bwcd's, and nginx proxies to the ports the
        packaged configuration listens on, on loopback.
        """
        config = self._packagedConfig()
        (limit,) = _siteDirective(self.site, "client_max_body_size")
        self.assertEqual(_nginxBytes(limit.strip()), config.api.max_body_bytes)
        upstreams = _siteDirective(self.site, "proxy_pass")
        apiPort = re.search(r"tcp:(\d+)", config.api.listen).group(1)
        authPort = re.search(r"tcp:(\d+)", config.auth.listen).group(1)
        streamPort = re.search(r"tcp:(\d+)", config.stream.listen).group(1)
        # /api/, /stream/, /auth/, and the web UI at / (no path rewrite)
        self.assertEqual(
            upstreams,
            [f"http://127.0.0.1:{apiPort}/", f"http://127.0.0.1:{streamPort}/", f"http://127.0.0.1:{authPort}/", f"http://127.0.0.1:{apiPort}"],
        )
        self.assertIn("interface=127.0.0.1", config.api.listen)
        self.assertIn("interface=127.0.0.1", config.auth.listen)
        self.assertIn("interface=127.0.0.1", config.stream.listen)
        self.assertIn("127.0.0.1", config.api.trusted_proxies)

    def test_siteForwardsClient(self) -> None:
        """
        Both proxied locations tell bwcd the client's address and scheme, and
        answer 503 JSON in st2's words when bwcd is down.
        """
        for prefix in ("/api/", "/auth/"):
            block = re.search(rf"(?s)location {prefix} {{(.*?)\n  }}", self.site).group(1)
            self.assertIn("proxy_set_header      X-Forwarded-For $proxy_add_x_forwarded_for;", block)
            self.assertIn("proxy_set_header      X-Forwarded-Proto $scheme;", block)
            (down,) = re.findall(r"error_page 502 504 = (@\w+);", block)
            handler = re.search(rf"(?s)location {down} {{(.*?)\n  }}", self.site).group(1)
            self.assertIn("return 503 '" + json.dumps({"faultstring": DOWN_FAULT}), handler)

    def test_siteAcceptedByNginx(self) -> None:
        """
        C{nginx -t} accepts the site (with a certificate of the test's own).
        """
        if shutil.which("nginx", path=harness.SYSTEM_PATH) is None or shutil.which("openssl", path=harness.SYSTEM_PATH) is None:
            raise SkipTest("nginx and openssl are not installed (InstalledPackageTests installs them)")
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        cert, key = harness.makeCertificate(directory)
        sitePath = os.path.join(directory, "site.conf")
        with open(sitePath, "w") as f:
            f.write(harness.siteWithCertificate(self.site, cert, key))
        harness.Nginx(directory, sitePath).check()


class InstalledPackageTests(TestCase):
    """
    The package built, installed and run on this machine, end to end.
    """

    #: the steps below block, each under its own timeout; this bounds the whole
    timeout = 900

    def setUp(self) -> None:
        if not os.path.exists("/usr/bin/dpkg"):
            raise SkipTest("needs Debian: dpkg-buildpackage and dpkg -i")
        if os.geteuid() != 0:
            raise SkipTest("needs root: dpkg -i, the bwcd system user, and nginx on ports 80 and 443")
        status = harness.packageStatus("bwcd")
        if status:
            raise SkipTest(f"dpkg knows a bwcd package on this machine ({status}); this test would purge it")
        try:
            installed = harness.ensurePackages(harness.BUILD_PACKAGES + harness.RUN_PACKAGES)
        except harness.Unavailable as e:
            raise SkipTest(f"cannot get the build tools: {e}")
        if installed:
            log.info("installed {packages} for the packaging test", packages=" ".join(installed))
        self.work = os.path.abspath(self.mktemp())
        os.makedirs(self.work)
        # the build tree and the .deb are large; the logs stay for a post-mortem
        self.addCleanup(shutil.rmtree, os.path.join(self.work, "src"), True)

    # -- steps -------------------------------------------------------------

    def build(self) -> str:
        source = os.path.join(self.work, "src", "bwcd")
        os.makedirs(source)
        harness.copyWorkTree(REPO, source)
        deb, seconds = harness.buildPackage(source, os.path.join(self.work, "build.log"), timeout=780)
        log.info("built {deb} in {seconds:.0f} s", deb=os.path.basename(deb), seconds=seconds)
        self.assertRegex(os.path.basename(deb), r"^bwcd_0\.\d+\.\d+[^_]*_[a-z0-9]+\.deb$")
        return deb

    def install(self, deb: str) -> None:
        harness.run(["dpkg", "-i", "--force-confold", deb], 300, env=harness.systemEnvironment({"DEBIAN_FRONTEND": "noninteractive"}))

    def purge(self) -> None:
        if harness.packageStatus("bwcd"):
            harness.run(["dpkg", "--purge", "bwcd"], 300)

    def assertInstalledLayout(self) -> None:
        user = pwd.getpwnam("bwcd")
        state = os.stat(STATE_DIR)
        self.assertEqual((state.st_uid, state.st_gid), (user.pw_uid, user.pw_gid))
        users = os.stat(USERS_FILE)
        self.assertEqual((users.st_size, users.st_mode & 0o7777, users.st_gid), (0, 0o640, user.pw_gid))
        conffiles = harness.run(["dpkg-query", "-W", "-f=${Conffiles}", "bwcd"], 30).stdout
        self.assertIn(CONFIG, conffiles)
        self.assertIn(INSTALLED_SITE, conffiles)
        self.assertTrue(os.path.isdir("/opt/bwcd/packs"))
        for script in ("bwc", "st2", "bwcd-admin"):
            self.assertEqual(os.path.realpath(f"/usr/bin/{script}"), f"{VENV}/bin/{script}")
        self.assertEqual(_read(INSTALLED_UNIT), _read(UNIT_SOURCE))
        self.assertEqual(_read(INSTALLED_SITE), _read(SITE_SOURCE))
        # the plugin cache was written at install time and names bwcd's plugin
        caches = [
            os.path.join(root, "dropin.cache")
            for root, _, files in os.walk(f"{VENV}/lib")
            if root.endswith("twisted/plugins") and "dropin.cache" in files
        ]
        self.assertEqual(len(caches), 1, caches)
        with open(caches[0], "rb") as f:
            self.assertIn(b"bwcd_plugin", f.read())
        # ...and is fresh by twisted.plugin's own test (no plugin module newer
        # than the cache), so the bwcd user never tries to rewrite it
        pluginDir = os.path.dirname(caches[0])
        cacheTime = os.stat(caches[0]).st_mtime
        stale = [n for n in os.listdir(pluginDir) if n.endswith(".py") and os.stat(os.path.join(pluginDir, n)).st_mtime > cacheTime]
        self.assertEqual(stale, [])
        if shutil.which("systemd-analyze", path=harness.SYSTEM_PATH):
            harness.run(["systemd-analyze", "verify", INSTALLED_UNIT], 60)

    def startDaemon(self) -> harness.Daemon:
        unit = harness.parseUnit(_read(INSTALLED_UNIT))
        daemon = harness.Daemon(unit, os.path.join(self.work, "bwcd.log"))
        daemon.start()
        self.addCleanup(daemon.stop, 30)
        daemon.waitReady(f"http://127.0.0.1:{self.apiPort}/v1/health", timeout=60)
        return daemon

    def startNginx(self) -> harness.Nginx:
        # nginx's workers (not root) must reach its temp folders: not under
        # trial's private temp dir
        directory = tempfile.mkdtemp(prefix="bwcd-test-nginx-")
        self.addCleanup(shutil.rmtree, directory, True)
        os.chmod(directory, 0o755)
        cert, key = harness.makeCertificate(directory)
        sitePath = os.path.join(directory, "bwcd.conf")
        with open(sitePath, "w") as f:
            f.write(harness.siteWithCertificate(_read(INSTALLED_SITE), cert, key))
        nginx = harness.Nginx(directory, sitePath)
        nginx.check()
        nginx.start()
        self.addCleanup(nginx.stop)
        self.cafile = cert
        return nginx

    def https(self, method: str, path: str, body: Any = None, token: Optional[str] = None, **kw: Any) -> harness.Response:
        headers: Dict[str, str] = dict(kw.pop("headers", {}))
        if token:
            headers["X-Auth-Token"] = token
        if body is not None and not isinstance(body, bytes):
            body = json.dumps(body).encode()
            headers.setdefault("Content-Type", "application/json")
        return harness.request(method, f"https://127.0.0.1{path}", body=body, headers=headers, cafile=self.cafile, **kw)

    def waitForExecution(self, token: str, timeout: float = 60) -> Dict[str, Any]:
        """
        The execution sample_rule started, once it has finished.
        """
        deadline = time.monotonic() + timeout
        seen: Any = None
        while time.monotonic() < deadline:
            listing = self.https("GET", "/api/v1/executions?rule=sample_rule&limit=10", token=token)
            self.assertEqual(listing.status, 200, listing.body)
            mine = [e for e in listing.json() if (e.get("rule") or {}).get("name") == "sample_rule"]
            if mine:
                execution = self.https("GET", f"/api/v1/executions/{mine[0]['id']}", token=token)
                self.assertEqual(execution.status, 200, execution.body)
                seen = execution.json()
                if seen["status"] not in ("requested", "scheduled", "delayed", "running"):
                    return seen
            time.sleep(0.3)  # justified: a blocking (non-Twisted) test of the installed package over HTTPS; the API has no wait for an execution's end
        self.fail(f"no finished execution of sample_rule after {timeout} s; last seen: {seen}")

    # -- the test -------------------------------------------------------------

    def test_buildInstallServePurge(self) -> None:
        """
        The .deb builds from the work tree, installs the layout the issue
        lists, serves tokens, rules, webhooks and executions through nginx
        over HTTPS with the daemon run exactly as the unit says, keeps state
        across an upgrade, and leaves no process or file behind once purged.
        """
        busy = [p for p in (80, 443, 9100, 9101) if harness.portOpen(p)]
        if busy:
            self.fail(f"ports {busy} are in use on this machine; the installed bwcd and the nginx site need them")
        before = harness.namedPaths("bwcd", exclude=(REPO, self.work))

        deb = self.build()
        self.addCleanup(self.purge)
        self.install(deb)
        self.assertInstalledLayout()
        config = yaml.safe_load(_read(CONFIG))
        self.apiPort = int(re.search(r"tcp:(\d+)", config["api"]["listen"]).group(1))

        # the first credential, as the README tells an operator
        harness.run(["bwcd-admin", "user-add", "operator", "--password-stdin", "--config", CONFIG], 60, input="correct horse\n")
        self.assertEqual(os.stat(USERS_FILE).st_mode & 0o7777, 0o640)
        with open(USERS_FILE) as f:
            usersBefore = f.read()
        self.assertTrue(usersBefore.startswith("operator:"), usersBefore)

        daemon = self.startDaemon()
        self.startNginx()

        # http:// is redirected with the method kept
        redirect = harness.request("POST", "http://127.0.0.1/api/v1/webhooks/sample", body=b"{}")
        self.assertEqual((redirect.status, redirect.headers.get("location")), (308, "https://127.0.0.1/api/v1/webhooks/sample"))

        basic = base64.b64encode(b"operator:correct horse").decode()
        issued = self.https("POST", "/auth/v1/tokens", body=b"", headers={"Authorization": f"Basic {basic}"})
        self.assertEqual(issued.status, 201, issued.body)
        token = issued.json()["token"]

        created = self.https("POST", "/api/v1/rules", SAMPLE_RULE, token=token)
        self.assertEqual(created.status, 201, created.body)

        hook = self.https("POST", "/api/v1/webhooks/sample", {"key1": "value1"}, token=token)
        self.assertEqual(hook.status, 202, hook.body)

        execution = self.waitForExecution(token)
        self.assertEqual(execution["status"], "succeeded", execution)
        self.assertEqual(execution["result"]["stdout"].strip(), "value1")
        self.assertEqual(execution["action"]["ref"], "core.local")

        # a body nginx must buffer to disk still reaches bwcd (the rule does not match it)
        padded = self.https("POST", "/api/v1/webhooks/sample", {"key1": "other", "pad": "x" * 200000}, token=token)
        self.assertEqual(padded.status, 202, padded.body)

        # metrics stay off the public site; bodies over bwcd's limit stop at nginx
        self.assertEqual(self.https("GET", "/api/metrics").status, 404)
        tooLarge = self.https("POST", "/api/v1/webhooks/sample", b"x" * (1048576 + 1), token=token,
                              headers={"Content-Type": "application/json"})
        self.assertEqual(tooLarge.status, 413)
        self.assertIn("faultstring", tooLarge.json())

        # ExecReload: SIGHUP re-reads packs and rules; the daemon keeps serving
        daemon.signal(signal.SIGHUP)
        time.sleep(1)  # justified: gives a SIGHUP crash time to happen before checking it did not (there is no event for "did not die")
        self.assertTrue(daemon.alive(), "bwcd died on SIGHUP (the unit's ExecReload)")
        self.assertEqual(self.https("GET", f"/api/v1/executions/{execution['id']}", token=token).status, 200)

        # systemctl stop: SIGTERM, a clean exit as systemd counts it, then nginx answers 503 JSON
        self.assertIn(daemon.stop(30), harness.CLEAN_EXIT)
        for down in (self.https("GET", "/api/v1/executions", token=token), self.https("POST", "/auth/v1/tokens", b"")):
            self.assertEqual((down.status, down.headers.get("content-type")), (503, "application/json"))
            self.assertEqual(down.json(), {"faultstring": DOWN_FAULT})

        # an upgrade (here: the same version again) keeps state, users and a changed conffile
        with open(CONFIG, "a") as f:
            f.write("# changed by the operator\n")
        self.install(deb)
        with open(USERS_FILE) as f:
            self.assertEqual(f.read(), usersBefore)
        self.assertTrue(os.path.exists(os.path.join(STATE_DIR, "bwcd.sqlite")))
        self.assertTrue(_read(CONFIG).endswith("# changed by the operator\n"))

        # purge removes everything but the system user
        uid = pwd.getpwnam("bwcd").pw_uid
        self.purge()
        self.assertEqual(harness.processesOf(uid, VENV), [])
        left = harness.namedPaths("bwcd", uid=uid, exclude=(REPO, self.work)) - before
        self.assertEqual(sorted(left), [])
        log.info("the bwcd system user (uid {uid}) stays after purge, as Debian packages do", uid=uid)
