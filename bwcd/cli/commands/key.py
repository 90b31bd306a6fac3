# -*- test-case-name: tests.test_cli_key -*-
"""
C{key list|get|set|delete|load}: the datastore, with st2's options, requests
and output (st2-api-more.md section 10, st2client commands/keyvalue.py).

C{key list -j} prints what C{key load} reads back: secrets listed without
C{-d} keep their ciphertext and C{encrypted: true}, so they are stored again
as they are (same datastore key needed); listed with C{-d} they are
encrypted anew.
"""

from __future__ import annotations

import json
from typing import Any, Dict, List, Optional

from bwcd.cli.commands.common import (
    addBranch,
    addCommand,
    addListOptions,
    fetchList,
    loadMetaFile,
    printProperties,
    printTable,
    requireDict,
)
from bwcd.cli.errors import CLIError, OperationFailed
from bwcd.cli.session import decodeJSON, quotePath

LIST_ATTRIBUTES = ["name", "value", "secret", "encrypted", "scope", "user", "expire_timestamp"]
GET_ATTRIBUTES = ["name", "value", "secret", "encrypted", "scope", "expire_timestamp"]
SET_ATTRIBUTES = ["name", "value", "scope", "expire_timestamp"]
LOAD_ATTRIBUTES = ["name", "value", "secret", "scope", "user", "ttl"]


def _shown(doc: Dict[str, Any], attributes: List[str]) -> Dict[str, Any]:
    """
    What st2 prints for C{-j}/C{-y}: the display attributes that are set.
    """
    return {k: doc[k] for k in attributes if doc.get(k) is not None}


def _notFound(session, name: str) -> OperationFailed:
    session.write(f"Resource {name} not found.")
    return OperationFailed(f"Resource {name} not found.")


async def keyList(session, args) -> int:
    params: Dict[str, Any] = {"decrypt": "true" if args.decrypt else "false", "scope": args.scope, "limit": args.last}
    if args.prefix:
        params["prefix"] = args.prefix
    if args.user:
        params["user"] = args.user
    docs, _ = await fetchList(session, "/keys", "keys", params)
    if getattr(args, "json", False) or getattr(args, "yaml", False):
        attributes = LIST_ATTRIBUTES if "all" in args.attr else args.attr
        printTable(session, args, [_shown(d, attributes) for d in reversed(docs)], ["all"])
    else:
        printTable(session, args, docs, args.attr)
    return 0


async def _fetchKey(session, name: str, params: Dict[str, Any]) -> Optional[Dict[str, Any]]:
    response = await session.api("GET", f"/keys/{quotePath(name)}", params=params, allow=(404,))
    if response.code == 404:
        return None
    return requireDict(decodeJSON(response), f"key {name}")


async def keyGet(session, args) -> int:
    params: Dict[str, Any] = {"decrypt": "true" if args.decrypt else "false", "scope": args.scope}
    doc = await _fetchKey(session, args.name, params)
    if doc is None:
        raise _notFound(session, args.name)
    attributes = GET_ATTRIBUTES if "all" in args.attr else args.attr
    printProperties(session, args, _shown(doc, attributes), attributes, order=attributes)
    return 0


def _readValue(session, args) -> str:
    import getpass

    prompt = "Please insert value for key: "
    try:
        return getpass.getpass(prompt) if args.encrypt else input(prompt)
    except EOFError:
        raise CLIError("No value given for the key.")


async def keySet(session, args) -> int:
    value = args.value if args.value is not None else _readValue(session, args)
    body: Dict[str, Any] = {"name": args.name, "scope": args.scope, "user": args.user or None, "value": value}
    if args.encrypt:
        body["secret"] = True
    if args.encrypted:
        body["encrypted"] = True
    if args.ttl:
        body["ttl"] = args.ttl
    doc = requireDict(await session.sendJSON("PUT", f"/keys/{quotePath(args.name)}", body), "PUT /keys")
    printProperties(session, args, _shown(doc, SET_ATTRIBUTES), SET_ATTRIBUTES, order=SET_ATTRIBUTES)
    return 0


async def keyDelete(session, args) -> int:
    params: Dict[str, Any] = {"scope": args.scope}
    if args.user:
        params["user"] = args.user
    if await _fetchKey(session, args.name, params) is None:
        raise _notFound(session, args.name)
    await session.api("DELETE", f"/keys/{quotePath(args.name)}", params=params)
    session.write(f'Resource with id "{args.name}" has been successfully deleted.')
    return 0


def _loadItems(path: str, convert: bool) -> List[Dict[str, Any]]:
    data = loadMetaFile(path)
    items = data if isinstance(data, list) else [data]
    bodies = []
    for item in items:
        if not isinstance(item, dict):
            raise CLIError(f"Every item in {path} must be an object")
        name = item.get("name")
        if "name" not in item or "value" not in item:
            raise CLIError(f"Item {name!r} in {path} needs a name and a value")
        value = item["value"]
        if not isinstance(value, str):
            if not convert:
                raise CLIError(
                    f"Item '{name}' has a value that is not a string. Either pass in the -c/--convert option to "
                    "convert non-string types to JSON strings automatically, or inspect the file and correct the value."
                )
            value = json.dumps(value)
        body: Dict[str, Any] = {"name": name, "value": value, "scope": item.get("scope") or "system", "user": item.get("user")}
        for field in ("secret", "encrypted", "ttl"):
            if item.get(field):
                body[field] = item[field]
        bodies.append(body)
    return bodies


async def keyLoad(session, args) -> int:
    bodies = _loadItems(args.file, args.convert)
    results = []
    for body in bodies:
        doc = requireDict(await session.sendJSON("PUT", f"/keys/{quotePath(str(body['name']))}", body), "PUT /keys")
        shown = dict(doc)
        if body.get("ttl"):
            shown["ttl"] = body["ttl"]
        results.append(_shown(shown, LOAD_ATTRIBUTES))
    printTable(session, args, results, LOAD_ATTRIBUTES)
    return 0


def register(subparsers) -> None:
    branch = addBranch(subparsers, "key", "Key value pairs")

    parser = addCommand(branch, "list", "Get the list of the 50 most recent key value pairs.", keyList)
    addListOptions(parser, LIST_ATTRIBUTES, recent="key value pairs")
    parser.add_argument("--prefix", help="Only return values with names starting with the provided prefix.")
    parser.add_argument("-d", "--decrypt", action="store_true", help="Decrypt secrets and displays plain text.")
    parser.add_argument("-s", "--scope", default="all", help="Scope item is under. Example: 'user'.")
    parser.add_argument("-u", "--user", type=str, default=None, help="User for user scoped items (admin only).")

    parser = addCommand(branch, "get", "Get individual key value pair.", keyGet)
    parser.add_argument("name", help="Name of the key value pair.")
    parser.add_argument("-a", "--attr", nargs="+", default=["all"], help='List of attributes to include in the output. "all" or unspecified will return all attributes.')
    parser.add_argument("-d", "--decrypt", action="store_true", help="Decrypt secret if encrypted and show plain text.")
    parser.add_argument("-s", "--scope", default="system", help="Scope item is under. Example: 'user'.")

    parser = addCommand(branch, "set", "Create or update a key value pair.", keySet)
    parser.add_argument("name", help="Name of the key value pair.")
    parser.add_argument("value", nargs="?", default=None, help="Value paired with the key (prompted for when omitted).")
    parser.add_argument("-l", "--ttl", dest="ttl", type=int, default=None, help="TTL (in seconds) for this value.")
    parser.add_argument("-e", "--encrypt", dest="encrypt", action="store_true", help="Encrypt value before saving.")
    parser.add_argument(
        "--encrypted",
        "--pre-encrypted",
        dest="encrypted",
        action="store_true",
        help="Value provided is already encrypted with the instance crypto key and should be stored as-is.",
    )
    parser.add_argument("-s", "--scope", default="system", help="Specify the scope under which you want to place the item.")
    parser.add_argument("-u", "--user", type=str, default=None, help="User for user scoped items (admin only).")

    parser = addCommand(branch, "delete", "Delete an existing key value pair.", keyDelete)
    parser.add_argument("name", help="Name of the key value pair.")
    parser.add_argument("-s", "--scope", default="system", help="Specify the scope under which you want to place the item.")
    parser.add_argument("-u", "--user", type=str, default=None, help="User for user scoped items (admin only).")

    parser = addCommand(branch, "load", "Load key value pairs from a JSON or YAML file.", keyLoad)
    parser.add_argument("file", help="JSON/YAML file containing the key value pairs to load: one object or a list.")
    parser.add_argument(
        "-c", "--convert", action="store_true", help="Convert non-string values to a serialized JSON string before loading them."
    )
    parser.add_argument("-w", "--width", nargs="+", type=int, default=None, help="Set the width of columns in output.")
