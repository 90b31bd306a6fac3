# -*- test-case-name: tests.test_cli_commands -*-
"""
C{trigger-instance list|get|re-emit}.
"""

from __future__ import annotations

from typing import Any, Dict

from bwcd.cli.commands.common import (
    addBranch,
    addCommand,
    addListOptions,
    notFound,
    printNoteBox,
    printProperties,
    printTable,
    requireDict,
    requireList,
    timestampTransform,
    totalCount,
)
from bwcd.cli.session import decodeJSON, quotePath

LIST_ATTRIBUTES = ["id", "trigger", "occurrence_time", "status"]
GET_ORDER = ("id", "trigger", "occurrence_time", "payload")


async def triggerInstanceList(session, args) -> int:
    params: Dict[str, Any] = {"limit": args.last}
    for name in ("trigger", "timestamp_gt", "timestamp_lt", "status"):
        value = getattr(args, name)
        if value:
            params[name] = value
    response = await session.api("GET", "/triggerinstances/", params=params)
    instances = list(reversed(requireList(decodeJSON(response), "triggerinstances")))
    printTable(session, args, instances, args.attr, {"occurrence_time": timestampTransform(session)})
    if not (args.json or args.yaml):
        printNoteBox(session, "triggerinstances", args.last, totalCount(response))
    return 0


async def triggerInstanceGet(session, args) -> int:
    doc = await session.getOrNone(f"/triggerinstances/{quotePath(args.id)}")
    if doc is None:
        raise notFound(session, "Trigger instance", args.id)
    printProperties(session, args, requireDict(doc, "trigger instance"), args.attr, order=GET_ORDER, transforms={"occurrence_time": timestampTransform(session)})
    return 0


async def triggerInstanceReEmit(session, args) -> int:
    response = await session.api("POST", f"/triggerinstances/{quotePath(args.id)}/re_emit", data={}, allow=(404,))
    if response.code == 404:
        raise notFound(session, "Trigger instance", args.id)
    doc = decodeJSON(response) if response.body else {}
    if args.json or args.yaml:
        printProperties(session, args, doc if isinstance(doc, dict) else {"result": doc})
    elif isinstance(doc, dict) and "message" in doc:
        session.write(str(doc["message"]))
    else:
        session.write(f"Trigger instance {args.id} succesfully re-sent.")
    return 0


def register(subparsers) -> None:
    branch = addBranch(subparsers, "trigger-instance", "Trigger instances")
    parser = addCommand(branch, "list", "Get the list of the 50 most recent trigger instances.", triggerInstanceList)
    addListOptions(parser, LIST_ATTRIBUTES)
    parser.add_argument("-n", "--last", type=int, dest="last", default=50, help="List N most recent trigger instances. Use -n -1 to fetch the full result set.")
    parser.add_argument("--trigger", help="Trigger reference to filter the list.")
    parser.add_argument("-tg", "--timestamp-gt", dest="timestamp_gt", default=None, help="Only return trigger instances with occurrence_time greater than the one provided (2000-01-01T12:00:00.000Z).")
    parser.add_argument("-tl", "--timestamp-lt", dest="timestamp_lt", default=None, help="Only return trigger instances with occurrence_time lower than the one provided (2000-01-01T12:00:00.000Z).")
    parser.add_argument("--status", help="Can be pending, processing, processed or processing_failed.")

    parser = addCommand(branch, "get", "Get individual trigger instance.", triggerInstanceGet)
    parser.add_argument("id", help="ID of the trigger instance.")
    parser.add_argument("-a", "--attr", nargs="+", default=["all"], help='List of attributes to include in the output. "all" or unspecified will return all attributes.')

    parser = addCommand(branch, "re-emit", "Re-emit a particular trigger instance.", triggerInstanceReEmit)
    parser.add_argument("id", help="ID of trigger instance to re-emit.")
