# -*- test-case-name: tests.test_cli_commands -*-
"""
C{rule list|get|create|update|delete|enable|disable}.

Like st2, update/enable/disable/delete first look the rule up by ref (so a
missing rule gives C{Rule "x" is not found.} and exit 2) and then address
it by id.
"""

from __future__ import annotations

from typing import Any, Dict

from bwcd.cli.commands.common import (
    addBranch,
    addCommand,
    addListOptions,
    deleted,
    loadMetaFile,
    notFound,
    printNoteBox,
    printProperties,
    printTable,
    requireDict,
    requireList,
    totalCount,
)
from bwcd.cli.errors import CLIError, OperationFailed
from bwcd.cli.http import HTTPError
from bwcd.cli.session import decodeJSON, quotePath

LIST_ATTRIBUTES = ["ref", "pack", "description", "enabled"]
IFTT_ATTRIBUTES = ["ref", "trigger.ref", "action.ref", "enabled"]
GET_ORDER = ("id", "uid", "ref", "pack", "name", "description", "enabled")


async def fetchRule(session, refOrId: str):
    doc = await session.getOrNone(f"/rules/{quotePath(refOrId)}")
    return requireDict(doc, "rule") if doc is not None else None


async def ruleList(session, args) -> int:
    params: Dict[str, Any] = {"limit": args.last}
    if args.pack:
        params["pack"] = args.pack
    if args.action:
        params["action"] = args.action
    if args.trigger:
        params["trigger"] = args.trigger
    if args.enabled:
        params["enabled"] = "true"
    elif args.disabled:
        params["enabled"] = "false"
    response = await session.api("GET", "/rules/", params=params)
    rules = requireList(decodeJSON(response), "rules")
    attributes = IFTT_ATTRIBUTES if args.iftt and args.attr == LIST_ATTRIBUTES else args.attr
    printTable(session, args, rules, attributes)
    if not (args.json or args.yaml):
        printNoteBox(session, "rules", args.last, totalCount(response))
    return 0


async def ruleGet(session, args) -> int:
    rule = await fetchRule(session, args.ref_or_id)
    if rule is None:
        raise notFound(session, "Rule", args.ref_or_id)
    printProperties(session, args, rule, args.attr, order=GET_ORDER)
    return 0


async def _reportFailure(session, coroutine):
    """
    st2's create: any failure prints C{ERROR: ...} and exits 2.
    """
    try:
        return await coroutine
    except (HTTPError, CLIError) as e:
        if isinstance(e, OperationFailed):
            raise
        session.write(f"ERROR: {e}")
        raise OperationFailed(str(e))


async def ruleCreate(session, args) -> int:
    async def create():
        data = loadMetaFile(args.file)
        if not isinstance(data, dict):
            raise CLIError(f'File "{args.file}" must hold one rule (a mapping)')
        return requireDict(await session.sendJSON("POST", "/rules", data), "POST /rules")

    rule = await _reportFailure(session, create())
    printProperties(session, args, rule, ["all"], order=GET_ORDER)
    return 0


async def ruleUpdate(session, args) -> int:
    rule = await fetchRule(session, args.ref_or_id)
    if rule is None:
        raise notFound(session, "Rule", args.ref_or_id)
    data = loadMetaFile(args.file)
    if not isinstance(data, dict):
        raise CLIError(f'File "{args.file}" must hold one rule (a mapping)')
    if not data.get("id"):
        data["id"] = rule["id"]
    elif data["id"] != rule["id"]:
        raise CLIError("The value for the rule id in the JSON/YAML file does not match the ID provided in the command line arguments.")
    updated = requireDict(await session.sendJSON("PUT", f"/rules/{quotePath(str(rule['id']))}", data), "PUT /rules")
    printProperties(session, args, updated, ["all"], order=GET_ORDER)
    return 0


async def _setEnabled(session, args, enabled: bool) -> int:
    rule = await fetchRule(session, args.ref_or_id)
    if rule is None:
        raise notFound(session, "Rule", args.ref_or_id)
    data = dict(rule)
    data.pop("ref", None)
    data["enabled"] = enabled
    updated = requireDict(await session.sendJSON("PUT", f"/rules/{quotePath(str(rule['id']))}", data), "PUT /rules")
    printProperties(session, args, updated, ["all"], order=GET_ORDER)
    return 0


async def ruleEnable(session, args) -> int:
    return await _setEnabled(session, args, True)


async def ruleDisable(session, args) -> int:
    return await _setEnabled(session, args, False)


async def ruleDelete(session, args) -> int:
    rule = await fetchRule(session, args.ref_or_id)
    if rule is None:
        raise notFound(session, "Rule", args.ref_or_id)
    await session.api("DELETE", f"/rules/{quotePath(str(rule['id']))}", allow=(404,))
    deleted(session, args.ref_or_id)
    return 0


def _refArgument(parser) -> None:
    parser.add_argument("ref_or_id", metavar="ref-or-id", help="Reference or ID of the rule.")


def register(subparsers) -> None:
    branch = addBranch(subparsers, "rule", "Rules")

    parser = addCommand(branch, "list", "Get the list of the 50 most recent rules.", ruleList)
    addListOptions(parser, LIST_ATTRIBUTES)
    parser.add_argument("-n", "--last", type=int, dest="last", default=50, help="List N most recent rules. Use -n -1 to fetch the full result set.")
    parser.add_argument("-p", "--pack", type=str, help="Only return resources belonging to the provided pack")
    parser.add_argument("-c", "--action", help="Action reference to filter the list.")
    parser.add_argument("-g", "--trigger", help="Trigger type reference to filter the list.")
    parser.add_argument("--iftt", action="store_true", help="Show trigger and action in display list.")
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--enabled", action="store_true", help="Only return enabled rules.")
    group.add_argument("--disabled", action="store_true", help="Only return disabled rules.")

    parser = addCommand(branch, "get", "Get individual rule.", ruleGet)
    _refArgument(parser)
    parser.add_argument("-a", "--attr", nargs="+", default=["all"], help='List of attributes to include in the output. "all" or unspecified will return all attributes.')

    parser = addCommand(branch, "create", "Create a new rule.", ruleCreate)
    parser.add_argument("file", help="JSON/YAML file containing the rule to create.")

    parser = addCommand(branch, "update", "Updating an existing rule.", ruleUpdate)
    _refArgument(parser)
    parser.add_argument("file", help="JSON/YAML file containing the rule to update.")

    parser = addCommand(branch, "delete", "Delete an existing rule.", ruleDelete)
    _refArgument(parser)

    parser = addCommand(branch, "enable", "Enable an existing rule.", ruleEnable)
    _refArgument(parser)

    parser = addCommand(branch, "disable", "Disable an existing rule.", ruleDisable)
    _refArgument(parser)
