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
    findResource,
    loadMetaFile,
    printPage,
    printProperties,
    setEnabled,
    showResource,
    updateResource,
)
from bwcd.cli.errors import CLIError

LIST_ATTRIBUTES = ["ref", "pack", "description", "enabled"]
IFTT_ATTRIBUTES = ["ref", "trigger.ref", "action.ref", "enabled"]
RULES = Resource("/rules", "Rule", "rule", ("id", "uid", "ref", "pack", "name", "description", "enabled"))


async def ruleList(session, args) -> int:
    params = copyFilters({"limit": args.last}, args, ("pack", "action", "trigger"))
    if args.enabled:
        params["enabled"] = "true"
    elif args.disabled:
        params["enabled"] = "false"
    rules, total = await fetchList(session, "/rules/", "rules", params)
    attributes = IFTT_ATTRIBUTES if args.iftt and args.attr == LIST_ATTRIBUTES else args.attr
    printPage(session, args, rules, attributes, "rules", total)
    return 0


async def ruleGet(session, args) -> int:
    return await showResource(session, args, RULES, args.ref_or_id)


def _ruleFromFile(path: str) -> Dict[str, Any]:
    data = loadMetaFile(path)
    if not isinstance(data, dict):
        raise CLIError(f'File "{path}" must hold one rule (a mapping)')
    return data


async def ruleCreate(session, args) -> int:
    with failureReported(session):
        rule = await createResource(session, RULES, _ruleFromFile(args.file))
    printProperties(session, args, rule, ["all"], order=RULES.order)
    return 0


async def ruleUpdate(session, args) -> int:
    rule = await findResource(session, RULES, args.ref_or_id)
    data = _ruleFromFile(args.file)
    if not data.get("id"):
        data["id"] = rule["id"]
    elif data["id"] != rule["id"]:
        raise CLIError("The value for the rule id in the JSON/YAML file does not match the ID provided in the command line arguments.")
    return await updateResource(session, args, RULES, rule, data)


def _editable(rule: Dict[str, Any]) -> Dict[str, Any]:
    data = dict(rule)
    data.pop("ref", None)
    return data


async def ruleEnable(session, args) -> int:
    return await setEnabled(session, args, RULES, args.ref_or_id, True, _editable)


async def ruleDisable(session, args) -> int:
    return await setEnabled(session, args, RULES, args.ref_or_id, False, _editable)


async def ruleDelete(session, args) -> int:
    return await deleteResource(session, RULES, args.ref_or_id)


def _refArgument(parser) -> None:
    parser.add_argument("ref_or_id", metavar="ref-or-id", help="Reference or ID of the rule.")


def register(subparsers) -> None:
    branch = addBranch(subparsers, "rule", "Rules")

    parser = addCommand(branch, "list", "Get the list of the 50 most recent rules.", ruleList)
    addListOptions(parser, LIST_ATTRIBUTES, recent="rules")
    parser.add_argument("-p", "--pack", type=str, help="Only return resources belonging to the provided pack")
    parser.add_argument("-c", "--action", help="Action reference to filter the list.")
    parser.add_argument("-g", "--trigger", help="Trigger type reference to filter the list.")
    parser.add_argument("--iftt", action="store_true", help="Show trigger and action in display list.")
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--enabled", action="store_true", help="Only return enabled rules.")
    group.add_argument("--disabled", action="store_true", help="Only return disabled rules.")

    parser = addCommand(branch, "get", "Get individual rule.", ruleGet)
    _refArgument(parser)
    addAttrOption(parser)

    parser = addCommand(branch, "create", "Create a new rule.", ruleCreate)
    parser.add_argument("file", help="JSON/YAML file containing the rule to create.")

    parser = addCommand(branch, "update", "Updating an existing rule.", ruleUpdate)
    _refArgument(parser)
    parser.add_argument("file", help="JSON/YAML file containing the rule to update.")

    for name, help, handler in (
        ("delete", "Delete an existing rule.", ruleDelete),
        ("enable", "Enable an existing rule.", ruleEnable),
        ("disable", "Disable an existing rule.", ruleDisable),
    ):
        _refArgument(addCommand(branch, name, help, handler))
