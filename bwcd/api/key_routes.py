# -*- test-case-name: tests.test_key_routes -*-
"""
C{/v1/keys}: StackStorm's datastore API (st2-api-more.md section 10).

The rules are in L{bwcd.datastore.keys.KeyService}; this module only reads
the query parameters st2's OpenAPI declares for each route (PUT declares
none: its scope and user come from the body) and answers as st2 does: a
plain list without paging headers, 200 for create and update alike, 204 for
a delete.
"""

from __future__ import annotations

from typing import Any

from bwcd.api.framework import Api, Reply
from bwcd.api.query import arg, boolArg, callerIsAdmin, paging
from bwcd.datastore.keys import KeyService


def _requester(principal: Any, systemUser: str) -> str:
    return principal.user if principal is not None else systemUser


def installKeyRoutes(api: Api, keys: KeyService, systemUser: str = "stanley") -> None:
    """
    Add the four key-value routes to C{api}.

    @param systemUser: the requester when authentication is disabled and no
        principal is given.
    """

    @api.route("/v1/keys", ["GET"])
    async def listKeys(request, principal) -> Any:
        isAdmin = callerIsAdmin(principal)
        limit, offset = paging(request, defaultLimit=100, isAdmin=isAdmin)
        return await keys.list(
            _requester(principal, systemUser),
            scope=arg(request, "scope") or None,
            prefix=arg(request, "prefix") or None,
            user=arg(request, "user") or None,
            decrypt=bool(boolArg(request, "decrypt")),
            limit=limit,
            offset=offset,
            name=arg(request, "name"),
            isAdmin=isAdmin,
        )

    @api.route("/v1/keys/<string:name>", ["GET"])
    async def showKey(request, principal, name: str) -> Any:
        return await keys.get(
            _requester(principal, systemUser),
            name,
            scope=arg(request, "scope") or None,
            user=arg(request, "user") or None,
            decrypt=bool(boolArg(request, "decrypt")),
        )

    @api.route("/v1/keys/<string:name>", ["PUT"])
    async def setKey(request, principal, name: str) -> Any:
        body = api.readJson(request)
        return await keys.set(_requester(principal, systemUser), name, body, isAdmin=callerIsAdmin(principal))

    @api.route("/v1/keys/<string:name>", ["DELETE"])
    async def deleteKey(request, principal, name: str) -> Reply:
        await keys.delete(
            _requester(principal, systemUser),
            name,
            scope=arg(request, "scope") or None,
            user=arg(request, "user") or None,
        )
        return Reply(None, 204)


__all__ = ["installKeyRoutes"]
