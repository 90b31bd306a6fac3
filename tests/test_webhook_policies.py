"""
Webhook policies: parsing (every bad key named), pack files (a broken one
stops start-up naming it), the /v1/webhookpolicies routes, and per-hook
limits over real HTTP (413, 415, 429 with Retry-After).
"""

from __future__ import annotations

import json
import os
import socket

import treq
from twisted.internet.defer import ensureDeferred
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import SynchronousTestCase, TestCase

from bwcd.webhooks.policy import DEFAULT_DEDUP_WINDOW, PolicyError, parsePolicy, publicPolicy
from tests.daemon import startDaemon
from tests.test_webhook_verify import SECRETS, policyPack, sign
from tests.test_webhooks_e2e import writePack


class ParseTests(SynchronousTestCase):
    def bad(self, doc, field, url=None):
        e = self.assertRaises(PolicyError, parsePolicy, doc, url)
        self.assertEqual(e.field, field, str(e))
        return e

    def test_full(self):
        """
        The issue's example document parses, the url normalised.
        """
        p = parsePolicy({
            "url": "/github/", "verify": {"preset": "github", "secret_file": "/etc/s", "previous_secret_file": "/etc/o"},
            "dedup": True, "limits": {"max_body_bytes": 262144, "content_types": ["Application/JSON"], "rate": {"per_second": 5, "burst": 20}},
        })
        self.assertEqual(p.url, "github")
        self.assertEqual((p.dedup.source, p.dedup.name, p.dedup.window), ("header", "X-GitHub-Delivery", DEFAULT_DEDUP_WINDOW))
        self.assertEqual((p.limits.maxBodyBytes, p.limits.contentTypes, p.limits.perSecond, p.limits.burst), (262144, ("application/json",), 5.0, 20))

    def test_errorsNameTheKey(self):
        """
        Unknown keys and bad values are refused naming the key.
        """
        self.bad({"url": "a", "verfy": {}}, "verfy")
        self.bad({"verify": None}, "url")
        self.bad({"url": "a", "verify": {"preset": "bitbucket", "secret_file": "/s"}}, "verify.preset")
        self.bad({"url": "a", "verify": {"preset": "github"}}, "verify.secret_file")
        self.bad({"url": "a", "verify": {"preset": "github", "secret_file": "relative"}}, "verify.secret_file")
        self.bad({"url": "a", "verify": {"preset": "github", "secret_file": "/s", "algorithm": "sha1"}}, "verify.algorithm")
        self.bad({"url": "a", "verify": {"preset": "hmac", "secret_file": "/s"}}, "verify.header")
        self.bad({"url": "a", "verify": {"preset": "hmac", "secret_file": "/s", "header": "X", "algorithm": "md5"}}, "verify.algorithm")
        self.bad({"url": "a", "dedup": True}, "dedup")
        self.bad({"url": "a", "dedup": {"header": "X", "window": 0}}, "dedup.window")
        self.bad({"url": "a", "dedup": {"head": "X"}}, "dedup.head")
        self.bad({"url": "a", "limits": {"max_body_bytes": -1}}, "limits.max_body_bytes")
        self.bad({"url": "a", "limits": {"max_body_bytes": True}}, "limits.max_body_bytes")
        self.bad({"url": "a", "limits": {"content_types": ["json"]}}, "limits.content_types[0]")
        self.bad({"url": "a", "limits": {"rate": {"per_second": 0}}}, "limits.rate.per_second")
        self.bad({"url": "a", "limits": {"rate": {"per_second": 1, "burst": 1.5}}}, "limits.rate.burst")
        self.bad({"url": "a"}, "url", url="b")

    def test_masking(self):
        """
        Inline secret values are masked; references are shown.
        """
        shown = publicPolicy({"url": "a", "verify": {"secret_file": "/s", "secret": "x"}})
        self.assertEqual(shown["verify"], {"secret_file": "/s", "secret": "********"})


def rawPost(port: int, head: bytes) -> bytes:
    """
    Send a request head only (no body) and read the answer: a 413 must
    come before the body is sent.
    """
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(head)
        data = b""
        while b"\r\n\r\n" not in data or not data.rstrip().endswith(b"}"):
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
        return data


class PolicyEndToEndTests(TestCase):
    timeout = 180

    async def test_apiAndLimits(self):
        """
        The policy API (list, get, put with validation, delete), and a
        policy's limits answered 413 (before the body), 415 and 429 with
        Retry-After, counted in /metrics.
        """
        secretDir = os.path.abspath(self.mktemp())
        os.makedirs(secretDir)
        pack = policyPack(self, secretDir, presets=("github",), extra={"github": {"limits": {
            "max_body_bytes": 100, "content_types": ["application/json"], "rate": {"per_second": 0.01, "burst": 2}}}})
        d = await startDaemon(self, packs=[pack])
        _, listed = await d.get("/v1/webhookpolicies")
        self.assertEqual([p["url"] for p in listed], ["github"])
        self.assertEqual(listed[0]["pack"], "hooks")

        # 413 before the body is sent, by Content-Length
        answer = await deferToThread(rawPost, d.apiPort, b"POST /v1/webhooks/github HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 101\r\n\r\n")
        self.assertIn(b" 413 ", answer.split(b"\r\n")[0])
        self.assertIn(b"limit of 100 bytes for webhook github", answer)
        # 415
        body = b"{}"
        headers = dict(sign("github", SECRETS["github"], body), **{"Content-Type": "text/plain"})
        response = await treq.post(f"{d.apiURL}/v1/webhooks/github", data=body, headers=headers)
        self.assertEqual(response.code, 415)
        self.assertIn("not accepted by webhook github", json.loads(await response.content())["faultstring"])
        # 429 after the burst
        headers["Content-Type"] = "application/json"
        codes = []
        for _ in range(3):
            response = await treq.post(f"{d.apiURL}/v1/webhooks/github", data=body, headers=headers)
            codes.append(response.code)
            answer = json.loads(await response.content())
        self.assertEqual(codes, [202, 202, 429])
        self.assertIn("Too many requests to webhook github", answer["faultstring"])
        self.assertGreaterEqual(int(response.headers.getRawHeaders("Retry-After")[0]), 1)
        _, metrics = await d.get("/metrics")
        for reason in ("body_too_large", "unsupported_media_type", "rate_limited"):
            self.assertIn(f'bwcd_webhook_refusals_total{{hook="github",reason="{reason}"}} 1.0', metrics)

        # the API
        secret = os.path.join(secretDir, "gitlab")
        with open(secret, "w") as f:
            f.write("token\n")
        put = lambda url, doc: treq.put(f"{d.apiURL}/v1/webhookpolicies/{url}", data=json.dumps(doc).encode(), headers=dict(d.headers, **{"Content-Type": "application/json"}))
        response = await put("alerts/gl", {"verify": {"preset": "gitlab", "secret_file": secret, "secret": "inline"}})
        self.assertEqual(response.code, 400)
        self.assertIn("secret", json.loads(await response.content())["faultstring"])
        response = await put("alerts/gl", {"verify": {"preset": "gitlab", "secret_file": secret + ".missing"}})
        self.assertEqual(response.code, 400)
        self.assertIn("verify.secret_file", json.loads(await response.content())["faultstring"])
        response = await put("alerts/gl", {"verify": {"preset": "gitlab", "secret_file": secret}, "limits": {"max_body_bytes": 10}})
        self.assertEqual(response.code, 201)
        self.assertEqual(json.loads(await response.content())["url"], "alerts/gl")
        response, shown = await d.get("/v1/webhookpolicies/alerts/gl")
        self.assertEqual((response.code, shown["verify"]["preset"]), (200, "gitlab"))
        response = await treq.post(f"{d.apiURL}/v1/webhooks/alerts/gl", data=b"{}", headers={"X-Gitlab-Token": "nope", "Content-Type": "application/json"})
        self.assertEqual(response.code, 401)
        await response.content()
        response = await treq.delete(f"{d.apiURL}/v1/webhookpolicies/alerts/gl", headers=d.headers)
        self.assertEqual(response.code, 204)
        response, _ = await d.get("/v1/webhookpolicies/alerts/gl")
        self.assertEqual(response.code, 404)
        response = await treq.get(f"{d.apiURL}/v1/webhookpolicies")
        self.assertEqual(response.code, 401)
        await response.content()

    async def test_brokenPolicyFileStopsStart(self):
        """
        A policy file with an unknown key fails start-up, naming the file
        and the key.
        """
        root = writePack(os.path.abspath(self.mktemp()), {
            "p/pack.yaml": "name: p\n",
            "p/webhooks/bad.yaml": "url: x\nverify: {preset: github, secret_fil: /s}\n",
        })
        e = await self.assertFailure(ensureDeferred(startDaemon(self, packs=[root])), RuntimeError)
        self.assertIn("bad.yaml", str(e))
        self.assertIn("verify.secret_fil", str(e))


class PolicyCliTests(TestCase):
    timeout = 180

    async def test_bwcWebhookPolicy(self):
        """
        bwc webhook policy set FILE / list / get / delete against a daemon,
        and the verification column of bwc webhook list.
        """
        from twisted.internet.utils import getProcessOutputAndValue

        from tests.daemon import REPO
        from tests.test_cli_integration import bwcArgv

        secretDir = os.path.abspath(self.mktemp())
        os.makedirs(secretDir)
        d = await startDaemon(self, packs=[policyPack(self, secretDir, presets=("github",))])
        home = os.path.abspath(self.mktemp())
        os.makedirs(home)
        env = {"HOME": home, "PATH": os.environ.get("PATH", ""), "PYTHONPATH": REPO, "COLUMNS": "200",
               "ST2_API_URL": d.apiURL + "/v1", "ST2_API_KEY": d.apiKey}

        async def bwc(*args):
            argv = bwcArgv() + list(args)
            out, err, code = await getProcessOutputAndValue(argv[0], argv[1:], env=env, path=home)
            return code, out.decode(), err.decode()

        policyFile = os.path.join(home, "alerts.yaml")
        with open(policyFile, "w") as f:
            f.write(f"url: alerts/gitlab\nverify:\n  preset: gitlab\n  secret_file: {secretDir}/github\nlimits:\n  rate: {{per_second: 1}}\n")
        code, out, err = await bwc("webhook", "policy", "set", policyFile)
        self.assertEqual(code, 0, err)
        self.assertIn("alerts/gitlab", out)
        code, out, err = await bwc("webhook", "policy", "list", "-j")
        self.assertEqual(code, 0, err)
        self.assertEqual(sorted(p["url"] for p in json.loads(out)), ["alerts/gitlab", "github"])
        code, out, err = await bwc("webhook", "policy", "get", "alerts/gitlab", "-j")
        self.assertEqual((code, json.loads(out)["verify"]["preset"]), (0, "gitlab"), err)
        code, out, err = await bwc("webhook", "list")
        self.assertEqual(code, 0, err)
        self.assertIn("verification", out)
        self.assertRegex(out, r"github\s*\|.*\|\s*github\s*\|")
        code, out, err = await bwc("webhook", "policy", "delete", "alerts/gitlab")
        self.assertEqual(code, 0, err)
        code, out, err = await bwc("webhook", "policy", "get", "alerts/gitlab")
        self.assertNotEqual(code, 0)
