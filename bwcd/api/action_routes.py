# -*- test-case-name: tests.test_daemon -*-
"""
C{/v1/actions} and C{/v1/runnertypes}: what can be run and with which
parameters (st2-api.md section 5).
"""

from __future__ import annotations

from bwcd.api.framework import Api, Principal
from bwcd.api.query import filtersFrom, listPage
from bwcd.errors import NotFound
from bwcd.store.interface import IStore


def installActionRoutes(api: Api, store: IStore) -> None:
    @api.route("/v1/actions", ["GET"])
    async def listActions(request, principal: Principal):
        filters = filtersFrom(request, {"pack": "pack", "name": "name"})
        return await listPage(store, "actions", filters, [("pack", 1), ("name", 1)], request, principal, None)

    @api.route("/v1/actions/<string:refOrId>", ["GET"])
    async def showAction(request, principal: Principal, refOrId: str):
        field = "ref" if "." in refOrId else "id"
        doc = await store.findOne("actions", {field: refOrId})
        if doc is None:
            raise NotFound(f'Resource with a reference or id "{refOrId}" not found')
        return doc

    @api.route("/v1/runnertypes", ["GET"])
    async def listRunners(request, principal: Principal):
        filters = filtersFrom(request, {"name": "name"})
        return await listPage(store, "runnertypes", filters, [("name", 1)], request, principal, 100)

    @api.route("/v1/runnertypes/<string:nameOrId>", ["GET"])
    async def showRunner(request, principal: Principal, nameOrId: str):
        doc = await store.findOne("runnertypes", {"name": nameOrId}) or await store.get("runnertypes", nameOrId)
        if doc is None:
            raise NotFound(f'Resource with a name or id "{nameOrId}" not found')
        return doc
