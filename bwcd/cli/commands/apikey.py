# -*- test-case-name: tests.test_cli_commands -*-
"""
C{apikey create|list|get|enable|disable|delete}.

The plaintext key exists only in the create answer, so C{create -k} prints
just that key for scripts.
"""

from __future__ import annotations

import json
from typing import Any, Dict

from bwcd.cli.commands.common import (
    addBranch,
    addCommand,
    addListOptions,
    deleted,
    notFound,
    printProperties,
    printTable,
    requireDict,
    requireList,
)
from bwcd.cli.errors import CLIError, OperationFailed
from bwcd.cli.session import quotePath

LIST_ATTRIBUTES = ["id", "user", "metadata"]
GET_ORDER = ("id", "user", "metadata")


async def fetchKey(session, keyOrId: str):
    doc = await session.getOrNone(f"/apikeys/{quotePath(keyOrId)}")
    return requireDict(doc, "API key") if doc is not None else None


async def apikeyList(session, args) -> int:
    params: Dict[str, Any] = {}
    if args.user:
        params["user"] = args.user
    if args.show_secrets:
        params["show_secrets"] = "true"
    keys = requireList(await session.getJSON("/apikeys", params=params or None), "apikeys")
    printTable(session, args, keys, ["all"] if args.detail else args.attr)
    return 0


async def apikeyGet(session, args) -> int:
    doc = await fetchKey(session, args.key_or_id)
    if doc is None:
        raise notFound(session, "API Key", args.key_or_id)
    printProperties(session, args, doc, args.attr, order=GET_ORDER)
    return 0


def _metadata(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError as e:
        raise CLIError(f"-m/--metadata must be JSON: {e}")


async def apikeyCreate(session, args) -> int:
    data: Dict[str, Any] = {}
    if args.user:
        data["user"] = args.user
    if args.metadata:
        data["metadata"] = _metadata(args.metadata)
    try:
        doc = requireDict(await session.sendJSON("POST", "/apikeys", data), "POST /apikeys")
    except CLIError as e:
        session.write(f"ERROR: {e}")
        raise OperationFailed(str(e))
    if args.only_key:
        session.write(str(doc.get("key")))
    else:
        printProperties(session, args, doc, ["all"], order=GET_ORDER)
    return 0


async def _setEnabled(session, args, enabled: bool) -> int:
    doc = await fetchKey(session, args.key_or_id)
    if doc is None:
        raise notFound(session, "API Key", args.key_or_id)
    data = {k: doc[k] for k in ("id", "user", "metadata") if k in doc}
    data["enabled"] = enabled
    updated = requireDict(await session.sendJSON("PUT", f"/apikeys/{quotePath(str(doc['id']))}", data), "PUT /apikeys")
    printProperties(session, args, updated, ["all"], order=GET_ORDER)
    return 0


async def apikeyEnable(session, args) -> int:
    return await _setEnabled(session, args, True)


async def apikeyDisable(session, args) -> int:
    return await _setEnabled(session, args, False)


async def apikeyDelete(session, args) -> int:
    doc = await fetchKey(session, args.key_or_id)
    if doc is None:
        raise notFound(session, "API Key", args.key_or_id)
    await session.api("DELETE", f"/apikeys/{quotePath(str(doc['id']))}", allow=(404,))
    deleted(session, args.key_or_id)
    return 0


def _keyArgument(parser) -> None:
    parser.add_argument("key_or_id", metavar="key-or-id", help="Key or ID of the API key.")


def register(subparsers) -> None:
    branch = addBranch(subparsers, "apikey", "API Keys")

    parser = addCommand(branch, "list", "Get the list of API keys.", apikeyList)
    addListOptions(parser, LIST_ATTRIBUTES)
    parser.add_argument("-u", "--user", type=str, help="Only return ApiKeys belonging to the provided user")
    parser.add_argument("-d", "--detail", action="store_true", help="Full list of attributes.")
    parser.add_argument("--show-secrets", action="store_true", help="Show the key hashes (admins only).")

    parser = addCommand(branch, "get", "Get individual API key.", apikeyGet)
    _keyArgument(parser)
    parser.add_argument("-a", "--attr", nargs="+", default=["all"], help='List of attributes to include in the output. "all" or unspecified will return all attributes.')

    parser = addCommand(branch, "create", "Create a new API key.", apikeyCreate)
    parser.add_argument("-u", "--user", type=str, default="", help="User for which to create API Keys.")
    parser.add_argument("-m", "--metadata", type=str, default=None, help="Optional metadata (JSON) to associate with the API Keys.")
    parser.add_argument("-k", "--only-key", action="store_true", dest="only_key", default=False, help="Only print API Key to the console on creation.")

    for name, help, handler in (
        ("enable", "Enable an existing API key.", apikeyEnable),
        ("disable", "Disable an existing API key.", apikeyDisable),
        ("delete", "Delete an existing API key.", apikeyDelete),
    ):
        parser = addCommand(branch, name, help, handler)
        _keyArgument(parser)
