# -*- test-case-name: tests.test_webhook_policies -*-
"""
C{/v1/webhookpolicies}: the policies of webhook urls (how requests to a hook
are verified, deduplicated and limited), listed, shown, set and deleted.

A policy references its secrets (a file bwcd reads, a datastore key); a
C{PUT} whose secret cannot be read is refused (400 naming the key) instead
of leaving a hook that refuses every sender.  Anything secret-looking in a
document is shown as C{********}.
"""

from __future__ import annotations

from typing import Any

from bwcd.api.framework import Api, Reply, RestOfPath
from bwcd.auth.principal import Principal
from bwcd.errors import Invalid, NotFound, Refused
from bwcd.webhooks.policy import PolicyError, parsePolicy, publicPolicy
from bwcd.webhooks.registry import PolicyIndex, SecretError

__all__ = ["installPolicyRoutes"]

PREFIXES = ("/v1/webhookpolicies", "/api/v1/webhookpolicies")


def _shown(doc: Any) -> Any:
    return publicPolicy({k: v for k, v in doc.items() if k != "metadata_file"})


def _requireAdmin(principal: Any) -> None:
    if principal is not None and not getattr(principal, "admin", True):
        raise Refused("Changing webhook policies needs a full-access credential.")


def installPolicyRoutes(api: Api, policies: PolicyIndex) -> None:
    """
    Add the webhook policy routes to C{api}.
    """
    api.app.url_map.converters.setdefault("bwcdrest", RestOfPath)

    @api.route(list(PREFIXES), ["GET"])
    async def listPolicies(request, principal: Principal):
        return [_shown(d) for d in await policies.stored()]

    @api.route([p + "/<bwcdrest:url>" for p in PREFIXES], ["GET"])
    async def showPolicy(request, principal: Principal, url: str):
        found = await policies.stored(url)
        if not found:
            raise NotFound(f"Webhook policy {url.strip('/')} not found")
        return _shown(found[0])

    @api.route([p + "/<bwcdrest:url>" for p in PREFIXES], ["PUT"])
    async def setPolicy(request, principal: Principal, url: str):
        _requireAdmin(principal)
        if not url.strip("/"):
            raise Invalid("url: is required")
        body = api.readJson(request)
        try:
            policy = parsePolicy(body, url)
        except PolicyError as e:
            raise Invalid(str(e))
        try:
            await policies.secretsOf(policy)
        except SecretError as e:
            raise Invalid(str(e))
        doc, created = await policies.put(policy)
        return Reply(_shown(doc), 201 if created else 200)

    @api.route([p + "/<bwcdrest:url>" for p in PREFIXES], ["DELETE"])
    async def deletePolicy(request, principal: Principal, url: str):
        _requireAdmin(principal)
        if not await policies.delete(url):
            raise NotFound(f"Webhook policy {url.strip('/')} not found")
        return Reply(None, 204)
