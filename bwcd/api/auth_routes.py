# -*- test-case-name: tests.test_auth -*-
"""
The HTTP face of authentication: token issuance on the auth listener and
API-key management on the API listener, with st2's paths, bodies and
messages so that the st2 CLI and existing scripts work unchanged.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any, Optional, Sequence, Tuple

from jsonschema import Draft7Validator
from jsonschema.exceptions import best_match
from twisted.logger import Logger

from bwcd.api.framework import Api, Principal, Reply, readJsonBody
from bwcd.api.site import clientAddress
from bwcd.api.query import arg, boolArg, callerIsAdmin, listHeaders, paging
from bwcd.auth.apikeys import ApiKeys, publicView, uidFor
from bwcd.auth.htpasswd import Htpasswd
from bwcd.auth.tokens import Tokens
from bwcd.config import Config
from bwcd.errors import Invalid, Unauthenticated
from bwcd.timeutil import ISO8601_UTC_REGEX

log = Logger(namespace="bwcd.auth")

TOKEN_PATHS = ("/auth/v1/tokens", "/v1/tokens", "/tokens")
APIKEY_PREFIXES = ("/v1", "/api/v1")

MSG_BAD_LOGIN = "Invalid or missing credentials"

TOKEN_REQUEST_SCHEMA = {
    "type": ["object", "null"],
    "properties": {
        "ttl": {"type": ["integer", "null"], "minimum": 1},
        "user": {"type": ["string", "null"]},
        "impersonate_user": {"type": ["string", "null"]},
        "nickname_origin": {"type": ["string", "null"]},
    },
}

#: st2common/models/api/auth.py ApiKeyAPI
APIKEY_SCHEMA = {
    "title": "ApiKey",
    "type": "object",
    "properties": {
        "id": {"type": "string"},
        "uid": {"type": "string"},
        "user": {"type": ["string", "null"]},
        "key_hash": {"type": ["string", "null"]},
        "metadata": {"type": ["object", "null"]},
        "created_at": {"type": "string", "pattern": ISO8601_UTC_REGEX},
        "enabled": {"type": "boolean"},
        # bwcd's own: webhooks:<url glob> strings (bwcd.auth.principal)
        "scopes": {"type": ["array", "null"], "items": {"type": "string"}},
    },
    "additionalProperties": False,
}


def readJson(request: Any) -> Any:
    """
    The request body as JSON; an empty body is C{None} whatever its
    Content-Type (st2 clients send an empty text/plain body to C{/tokens}).

    @raise Invalid: the body is not acceptable JSON.
    """
    return readJsonBody(request, required=False)


def validateBody(schema: dict, body: Any) -> None:
    """
    @raise Invalid: with jsonschema's message, as st2's router gives.
    """
    error = best_match(Draft7Validator(schema).iter_errors(body))
    if error is not None:
        raise Invalid(error.message)


def parseBasic(header: Optional[str]) -> Optional[Tuple[str, str]]:
    """
    C{(user, password)} from an C{Authorization: Basic ...} header, or
    C{None} when it is missing or malformed.
    """
    if not header:
        return None
    scheme, _, value = header.strip().partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except (binascii.Error, ValueError):
        return None
    user, sep, password = decoded.partition(":")
    if not sep or not user:
        return None
    return user, password


def installTokenRoutes(
    api: Api,
    tokens: Tokens,
    htpasswd: Htpasswd,
    config: Config,
    paths: Sequence[str] = TOKEN_PATHS,
) -> None:
    """
    C{POST <path>} (password login, no credentials needed) and
    C{POST <path>/validate} (needs credentials) for every path in C{paths}.
    """
    apiUrl = config.api.public_url

    @api.route(list(paths), ["POST"], auth=False)
    async def createToken(request: Any, principal: Optional[Principal]) -> Reply:
        body = api.readJson(request, required=False, anyTypeWhenEmpty=True)
        validateBody(TOKEN_REQUEST_SCHEMA, body)
        body = body or {}
        header = request.getHeader(b"authorization")
        creds = parseBasic(header.decode("latin-1") if isinstance(header, bytes) else header)
        if creds is None:
            raise Unauthenticated(MSG_BAD_LOGIN)
        user, password = creds
        if not await htpasswd.check(user, password, client=clientAddress(request)):
            # a name that is not a user's is not logged: it is attacker
            # text, or a password typed into the user field
            known = user in htpasswd.users()
            log.info("Refused password login for user {user} from {client}", user=user if known else "(unknown)", client=clientAddress(request))
            raise Unauthenticated(MSG_BAD_LOGIN)
        if body.get("user") or body.get("impersonate_user"):
            raise Invalid(f'Current user "{user}" is not a service and cannot request impersonated tokens')
        doc = await tokens.issue(user, ttl=body.get("ttl"))
        return Reply(doc, code=201, headers={"X-API-URL": apiUrl})

    @api.route([p.rstrip("/") + "/validate" for p in paths], ["POST"])
    async def validateToken(request: Any, principal: Principal) -> dict:
        body = api.readJson(request, required=False)
        token = body.get("token") if isinstance(body, dict) else None
        if not token or not isinstance(token, str):
            raise Invalid("Token is not provided.")
        return {"valid": await tokens.isValid(token)}


def installApiKeyRoutes(api: Api, apikeys: ApiKeys, prefixes: Sequence[str] = APIKEY_PREFIXES) -> None:
    """
    C{/v1/apikeys} CRUD under every prefix in C{prefixes}.

    A key created with C{"scopes": ["webhooks:<url glob>", ...]} may only
    send events to matching hooks (L{bwcd.auth.principal}); a bad scope is a
    400 naming it.  Scoped callers never reach these routes (the route
    wrapper answers them 403), so managing keys needs a full-access
    credential.
    """
    collection = [p.rstrip("/") + "/apikeys" for p in prefixes]
    item = [c + "/<id_or_key>" for c in collection]

    @api.route(collection, ["GET"])
    async def listApiKeys(request: Any, principal: Principal) -> Reply:
        limit, offset = paging(request, defaultLimit=50, isAdmin=callerIsAdmin(principal))
        showSecrets = bool(boolArg(request, "show_secrets"))
        docs, total = await apikeys.list(limit=limit, offset=offset, user=arg(request, "user") or None)
        headers = listHeaders(total, limit)
        return Reply([publicView(d, showSecrets) for d in docs], headers=headers)

    @api.route(item, ["GET"])
    async def getApiKey(request: Any, principal: Principal, id_or_key: str) -> dict:
        showSecrets = bool(boolArg(request, "show_secrets"))
        doc = await apikeys.get(id_or_key)
        return publicView(doc, showSecrets)

    @api.route(collection, ["POST"])
    async def createApiKey(request: Any, principal: Principal) -> Reply:
        body = api.readJson(request, required=False)
        validateBody(APIKEY_SCHEMA, body)
        enabled = body.get("enabled", True)
        doc, key = await apikeys.create(
            user=body.get("user") or principal.user,
            metadata=body.get("metadata") or {},
            enabled=True if enabled is None else enabled,
            keyHash=body.get("key_hash") or None,
            scopes=body.get("scopes"),
        )
        answer = {
            "id": doc["id"],
            "uid": uidFor(doc["key_hash"]),
            "user": doc["user"],
            "key": key,
            "metadata": doc["metadata"],
            "created_at": doc["created_at"],
            "enabled": doc["enabled"],
            "scopes": list(doc.get("scopes") or []),
        }
        return Reply(answer, code=201)

    @api.route(item, ["PUT"])
    async def updateApiKey(request: Any, principal: Principal, id_or_key: str) -> dict:
        body = api.readJson(request, required=False)
        validateBody(APIKEY_SCHEMA, body)
        doc = await apikeys.update(id_or_key, body)
        return publicView(doc, bool(boolArg(request, "show_secrets")))

    @api.route(item, ["DELETE"])
    async def deleteApiKey(request: Any, principal: Principal, id_or_key: str) -> Reply:
        await apikeys.delete(id_or_key)
        return Reply(None, code=204)


__all__ = [
    "APIKEY_PREFIXES",
    "TOKEN_PATHS",
    "installApiKeyRoutes",
    "installTokenRoutes",
    "parseBasic",
    "readJson",
]
