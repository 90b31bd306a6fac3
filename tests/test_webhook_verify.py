"""
Signature verification: each preset against published or computed vectors
(pure), and over real HTTP against a running daemon with policies from a
pack: correctly signed without credentials is 202 and runs its rule; wrong,
missing or stale is 401 and stores nothing; rotation accepts both secrets.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import time
from typing import Dict, Optional

import treq
from twisted.trial.unittest import SynchronousTestCase, TestCase

from bwcd.webhooks.policy import parsePolicy
from bwcd.webhooks.verify import MISMATCH, MISSING, STALE, UNAVAILABLE, VerifyFailed, verifyRequest
from tests.daemon import startDaemon
from tests.test_webhooks_e2e import WebhooksEndToEndMixin, writePack

GITHUB_SECRET = b"It's a Secret to Everybody"
GITHUB_BODY = b"Hello, World!"
GITHUB_SIGNATURE = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"

NOW = 1_800_000_000


def _hex(secret: bytes, message: bytes, algo=hashlib.sha256) -> str:
    return hmac.new(secret, message, algo).hexdigest()


def sign(preset: str, secret: bytes, body: bytes, ts: int = NOW, msgId: str = "msg_1") -> Dict[str, str]:
    """
    The headers a sender of C{preset} adds, computed here from each
    sender's documentation (independently of bwcd.webhooks.verify).
    """
    if preset == "github":
        return {"X-Hub-Signature-256": "sha256=" + _hex(secret, body), "X-GitHub-Event": "push"}
    if preset == "gitlab":
        return {"X-Gitlab-Token": secret.decode()}
    if preset == "slack":
        return {"X-Slack-Request-Timestamp": str(ts), "X-Slack-Signature": "v0=" + _hex(secret, b"v0:%d:" % ts + body)}
    if preset == "stripe":
        return {"Stripe-Signature": f"t={ts},v1={_hex(secret, b'%d.' % ts + body)},v0=ignored"}
    if preset == "standard-webhooks":
        key = base64.b64decode(secret[len(b"whsec_"):])
        mac = base64.b64encode(hmac.new(key, f"{msgId}.{ts}.".encode() + body, hashlib.sha256).digest()).decode()
        return {"webhook-id": msgId, "webhook-timestamp": str(ts), "webhook-signature": f"v1,bm90LXRoaXM= v1,{mac}"}
    if preset == "hmac":
        return {"X-Signature": "sha512=" + base64.b64encode(hmac.new(secret, body, hashlib.sha512).digest()).decode()}
    raise ValueError(preset)


STANDARD_SECRET = b"whsec_" + base64.b64encode(b"standard webhooks key bytes!")
SECRETS = {
    "github": b"gh-secret",
    "gitlab": b"gl-token",
    "slack": b"slack-signing-secret",
    "stripe": b"whsec_stripe_test",
    "standard-webhooks": STANDARD_SECRET,
    "hmac": b"generic-secret",
}
HMAC_OPTIONS = {"header": "X-Signature", "algorithm": "sha512", "encoding": "base64", "prefix": "sha512="}


def verifyConfig(preset: str):
    verify = {"preset": preset, "secret_file": "/x"}
    if preset == "hmac":
        verify.update(HMAC_OPTIONS)
    return parsePolicy({"url": "h", "verify": verify}).verify


def check(preset: str, secrets, headers: Dict[str, str], body: bytes, now: float = NOW) -> None:
    lower = {k.lower(): v for k, v in headers.items()}
    verifyRequest(verifyConfig(preset), secrets, lambda n: lower.get(n.lower()), body, now)


class VectorTests(SynchronousTestCase):
    def test_githubDocumentedVector(self):
        """
        GitHub's documented example (secret "It's a Secret to Everybody",
        payload "Hello, World!") verifies; one byte changed does not.
        """
        check("github", [GITHUB_SECRET], {"X-Hub-Signature-256": GITHUB_SIGNATURE}, GITHUB_BODY)
        e = self.assertRaises(VerifyFailed, check, "github", [GITHUB_SECRET], {"X-Hub-Signature-256": GITHUB_SIGNATURE}, b"Hello, World?")
        self.assertEqual(e.reason, MISMATCH)
        self.assertIn("does not match", e.faultstring)

    def test_everyPresetAcceptsItsSignature(self):
        """
        A request signed as each sender documents it verifies; the same
        request with another secret is a mismatch.
        """
        body = b'{"id": "evt_1", "x": [1, 2]}'
        for preset, secret in SECRETS.items():
            headers = sign(preset, secret, body)
            check(preset, [secret], headers, body)
            wrong = b"whsec_" + base64.b64encode(b"another key") if preset == "standard-webhooks" else b"other"
            e = self.assertRaises(VerifyFailed, check, preset, [wrong], headers, body)
            self.assertEqual(e.reason, MISMATCH, preset)

    def test_bodyIsCheckedByteForByte(self):
        """
        The signature covers the exact bytes: re-serialised JSON (other
        spacing) does not verify.
        """
        body = b'{"a": 1}'
        for preset in ("github", "slack", "stripe", "standard-webhooks", "hmac"):
            headers = sign(preset, SECRETS[preset], body)
            e = self.assertRaises(VerifyFailed, check, preset, [SECRETS[preset]], headers, b'{"a":1}')
            self.assertEqual(e.reason, MISMATCH, preset)

    def test_missing(self):
        """
        No signature header is "missing", for each preset.
        """
        for preset in SECRETS:
            e = self.assertRaises(VerifyFailed, check, preset, [SECRETS[preset]], {}, b"{}")
            self.assertEqual(e.reason, MISSING, preset)
            self.assertIn("missing", e.faultstring)

    def test_stale(self):
        """
        Slack, Stripe and Standard Webhooks refuse a timestamp more than
        300 s from now (either way), even correctly signed; 299 s is fine.
        """
        body = b"{}"
        for preset in ("slack", "stripe", "standard-webhooks"):
            for offset in (301, -301):
                headers = sign(preset, SECRETS[preset], body, ts=NOW - offset)
                e = self.assertRaises(VerifyFailed, check, preset, [SECRETS[preset]], headers, body)
                self.assertEqual(e.reason, STALE, preset)
                self.assertIn("outside the tolerance", e.faultstring)
            check(preset, [SECRETS[preset]], sign(preset, SECRETS[preset], body, ts=NOW - 299), body)

    def test_rotationAcceptsBoth(self):
        """
        With a previous secret, a request signed with either verifies.
        """
        body = b"{}"
        check("github", [b"new", b"old"], sign("github", b"old", body), body)
        check("github", [b"new", b"old"], sign("github", b"new", body), body)

    def test_noSecretFailsClosed(self):
        """
        A policy whose secret could not be read refuses everything.
        """
        e = self.assertRaises(VerifyFailed, check, "github", [], {"X-Hub-Signature-256": GITHUB_SIGNATURE}, GITHUB_BODY)
        self.assertEqual(e.reason, UNAVAILABLE)


def policyPack(testCase, secretDir: str, presets=tuple(SECRETS), extra: Optional[Dict[str, dict]] = None) -> str:
    """
    A pack with, per preset, a hook <preset> with a rule echoing "<preset>
    ok" and a policy whose secret is in a file.
    """
    files = {"hooks/pack.yaml": "name: hooks\nversion: 0.1.0\n"}
    for preset in presets:
        secretPath = os.path.join(secretDir, preset)
        with open(secretPath, "wb") as f:
            f.write(SECRETS[preset] + b"\n")
        verify = {"preset": preset, "secret_file": secretPath}
        if preset == "hmac":
            verify.update(HMAC_OPTIONS)
        policy = {"url": preset, "verify": verify}
        policy.update((extra or {}).get(preset, {}))
        files[f"hooks/webhooks/{preset}.yaml"] = json.dumps(policy)
        files[f"hooks/rules/{preset}.yaml"] = (
            f"name: on_{preset.replace('-', '_')}\nenabled: true\ntrigger:\n  type: core.st2.webhook\n  parameters:\n    url: {preset}\n"
            f"action:\n  ref: core.local\n  parameters:\n    cmd: echo {preset} ok\n"
        )
    return writePack(os.path.abspath(testCase.mktemp()), files)


async def instanceIds(d) -> set:
    _, docs = await d.get("/v1/triggerinstances?limit=1000")
    # (completed executions add core.st2.generic.actiontrigger instances)
    return {doc["id"] for doc in docs if doc["trigger"] != "core.st2.generic.actiontrigger"}


class VerifyEndToEndTests(TestCase):
    timeout = 180
    executionsOf = WebhooksEndToEndMixin.executionsOf

    async def test_presetsOverHttp(self):
        """
        For every preset, against a running daemon with the policies in a
        pack: signed without credentials, 202 and the rule runs; wrong,
        missing or stale signatures, 401 saying which and no trigger
        instance; a hook without a policy still needs a credential.
        """
        secretDir = os.path.abspath(self.mktemp())
        os.makedirs(secretDir)
        d = await startDaemon(self, packs=[policyPack(self, secretDir)])
        body = json.dumps({"id": "evt_1", "event_id": "Ev1", "text": "hi"}).encode()
        for preset, secret in SECRETS.items():
            headers = dict(sign(preset, secret, body, ts=int(time.time())), **{"Content-Type": "application/json"})
            response = await treq.post(f"{d.apiURL}/v1/webhooks/{preset}", data=body, headers=headers)
            answer = json.loads(await response.content())
            self.assertEqual(response.code, 202, (preset, answer))
            instanceId = response.headers.getRawHeaders("X-BWC-Trigger-Instance")[0]
            _, _, [execution] = await self.executionsOf(d, instanceId, 1)
            self.assertEqual(execution["result"]["stdout"], f"{preset} ok", preset)

        before = await instanceIds(d)
        for preset, secret in SECRETS.items():
            now = int(time.time())
            wrong = b"whsec_" + base64.b64encode(b"wrong") if preset == "standard-webhooks" else b"wrong"
            cases = [("does not match", sign(preset, wrong, body, ts=now)), ("missing", {})]
            if preset in ("slack", "stripe", "standard-webhooks"):
                cases.append(("outside the tolerance", sign(preset, secret, body, ts=now - 600)))
            for expected, headers in cases:
                # a valid API key does not stand in for a bad signature
                headers = dict(headers, **{"Content-Type": "application/json", "St2-Api-Key": d.apiKey})
                response = await treq.post(f"{d.apiURL}/v1/webhooks/{preset}", data=body, headers=headers)
                answer = json.loads(await response.content())
                self.assertEqual(response.code, 401, (preset, expected, answer))
                self.assertIn(expected, answer["faultstring"], preset)
        self.assertEqual(await instanceIds(d), before)
        self.assertNotIn("does not match", "".join(l for l in d.lines if "sha256=" in l))

        _, metrics = await d.get("/metrics")
        self.assertIn('bwcd_webhook_refusals_total{hook="github",reason="signature_mismatch"} 1.0', metrics)
        self.assertIn('bwcd_webhook_refusals_total{hook="slack",reason="timestamp_outside_tolerance"} 1.0', metrics)

        # a hook without a policy: credentials as before
        response, _ = await d.post("/v1/rules", dict(
            name="plain", pack="hooks", enabled=True, trigger={"type": "core.st2.webhook", "parameters": {"url": "plain"}},
            action={"ref": "core.local", "parameters": {"cmd": "true"}},
        ))
        self.assertEqual(response.code, 201)
        response = await treq.post(f"{d.apiURL}/v1/webhooks/plain", data=b"{}", headers={"Content-Type": "application/json"})
        self.assertEqual(response.code, 401)
        await response.content()
        response, _ = await d.post("/v1/webhooks/plain", {})
        self.assertEqual(response.code, 202)

        _, hooks = await d.get("/v1/webhooks")
        shown = {h["parameters"]["url"]: h["verification"] for h in hooks}
        self.assertEqual(shown["github"], "github")
        self.assertEqual(shown["plain"], "credentials")

    async def test_rotationAndHandshakes(self):
        """
        With previous_secret_file, both secrets are accepted; Slack's
        url_verification is answered with its challenge and runs nothing;
        GitHub's ping is a 202 with a trigger instance.
        """
        secretDir = os.path.abspath(self.mktemp())
        os.makedirs(secretDir)
        old = os.path.join(secretDir, "github.old")
        with open(old, "wb") as f:
            f.write(b"the-old-one\n")
        pack = policyPack(self, secretDir, presets=("github", "slack"), extra={"github": {}})
        # add the previous secret to the github policy
        path = os.path.join(pack, "hooks/webhooks/github.yaml")
        with open(path) as f:
            policy = json.load(f)
        policy["verify"]["previous_secret_file"] = old
        with open(path, "w") as f:
            json.dump(policy, f)
        d = await startDaemon(self, packs=[pack])
        for secret in (SECRETS["github"], b"the-old-one"):
            headers = dict(sign("github", secret, b"{}"), **{"Content-Type": "application/json"})
            response = await treq.post(f"{d.apiURL}/v1/webhooks/github", data=b"{}", headers=headers)
            self.assertEqual(response.code, 202, await response.content())
        ping = b'{"zen": "Keep it logically awesome.", "hook_id": 1}'
        headers = dict(sign("github", SECRETS["github"], ping), **{"Content-Type": "application/json", "X-GitHub-Event": "ping"})
        response = await treq.post(f"{d.apiURL}/v1/webhooks/github", data=ping, headers=headers)
        self.assertEqual(response.code, 202)
        await response.content()
        instanceId = response.headers.getRawHeaders("X-BWC-Trigger-Instance")[0]
        _, instance = await d.get(f"/v1/triggerinstances/{instanceId}")
        self.assertEqual(instance["payload"]["headers"]["X-Github-Event"], "ping")

        before = await instanceIds(d)
        challenge = b'{"token": "t", "challenge": "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P", "type": "url_verification"}'
        headers = dict(sign("slack", SECRETS["slack"], challenge, ts=int(time.time())), **{"Content-Type": "application/json"})
        response = await treq.post(f"{d.apiURL}/v1/webhooks/slack", data=challenge, headers=headers)
        self.assertEqual(response.code, 200)
        self.assertEqual(json.loads(await response.content()), {"challenge": "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P"})
        self.assertEqual(await instanceIds(d), before)
