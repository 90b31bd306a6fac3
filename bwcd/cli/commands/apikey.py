# -*- test-case-name: tests.test_cli_commands -*-
"""
C{apikey create|list|get|enable|disable|delete}.

The plaintext key exists only in the create answer, so C{create -k} prints
just that key for scripts.  C{list} shows each key's scopes (empty for a
full-access key); C{create -s webhooks:GLOB} makes a scoped one.
"""

from __future__ import annotations

import json
from typing import Any, Dict

from bwcd.cli.commands.common import (
    Resource,
    addAttrOption,
    addBranch,
    addCommand,
    addListOptions,
    copyFilters,
    createResource,
    deleteResource,
    failureReported,
    fetchList,
    printProperties,
    printTable,
    setEnabled,
    showResource,
)
from bwcd.cli.errors import CLIError

LIST_ATTRIBUTES = ["id", "user", "metadata", "scopes"]
APIKEYS = Resource("/apikeys", "API Key", "API key", ("id", "user", "metadata", "scopes"))


async def apikeyList(session, args) -> int:
    params = copyFilters({}, args, ("user",))
    if args.show_secrets:
        params["show_secrets"] = "true"
    keys, _ = await fetchList(session, "/apikeys", "apikeys", params)
    printTable(session, args, keys, ["all"] if args.detail else args.attr)
    return 0


async def apikeyGet(session, args) -> int:
    return await showResource(session, args, APIKEYS, args.key_or_id)


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
    if args.scopes:
        data["scopes"] = list(args.scopes)
    with failureReported(session):
        doc = await createResource(session, APIKEYS, data)
    if args.only_key:
        session.write(str(doc.get("key")))
    else:
        printProperties(session, args, doc, ["all"], order=APIKEYS.order)
    return 0


def _editable(doc: Dict[str, Any]) -> Dict[str, Any]:
    return {k: doc[k] for k in ("id", "user", "metadata") if k in doc}


async def apikeyEnable(session, args) -> int:
    return await setEnabled(session, args, APIKEYS, args.key_or_id, True, _editable)


async def apikeyDisable(session, args) -> int:
    return await setEnabled(session, args, APIKEYS, args.key_or_id, False, _editable)


async def apikeyDelete(session, args) -> int:
    return await deleteResource(session, APIKEYS, args.key_or_id)


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
    addAttrOption(parser)

    parser = addCommand(branch, "create", "Create a new API key.", apikeyCreate)
    parser.add_argument("-u", "--user", type=str, default="", help="User for which to create API Keys.")
    parser.add_argument("-m", "--metadata", type=str, default=None, help="Optional metadata (JSON) to associate with the API Keys.")
    parser.add_argument(
        "-s",
        "--scope",
        action="append",
        dest="scopes",
        default=None,
        metavar="webhooks:GLOB",
        help="Limit the key to sending events to the hooks matching GLOB (repeatable), e.g. webhooks:alerts/*.",
    )
    parser.add_argument("-k", "--only-key", action="store_true", dest="only_key", default=False, help="Only print API Key to the console on creation.")

    for name, help, handler in (
        ("enable", "Enable an existing API key.", apikeyEnable),
        ("disable", "Disable an existing API key.", apikeyDisable),
        ("delete", "Delete an existing API key.", apikeyDelete),
    ):
        _keyArgument(addCommand(branch, name, help, handler))
