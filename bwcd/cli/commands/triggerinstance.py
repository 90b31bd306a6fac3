# -*- test-case-name: tests.test_cli_commands -*-
"""
C{trigger-instance list|get|re-emit|explain}.
"""

from __future__ import annotations

from bwcd.cli.commands.common import (
    Resource,
    addAttrOption,
    addBranch,
    addCommand,
    addListOptions,
    addTimestampFilters,
    copyFilters,
    fetchList,
    notFound,
    printPage,
    printDocument,
    printProperties,
    showResource,
    structured,
    timestampTransform,
)
from bwcd.cli.commands.rule import explain, formatExplanation
from bwcd.cli.session import decodeJSON

LIST_ATTRIBUTES = ["id", "trigger", "occurrence_time", "status"]
TRIGGER_INSTANCES = Resource("/triggerinstances", "Trigger instance", "trigger instance", ("id", "trigger", "occurrence_time", "payload"))


async def triggerInstanceList(session, args) -> int:
    params = copyFilters({"limit": args.last}, args, ("trigger", "timestamp_gt", "timestamp_lt", "status"))
    instances, total = await fetchList(session, "/triggerinstances/", "triggerinstances", params)
    instances.reverse()
    printPage(session, args, instances, args.attr, "triggerinstances", total, {"occurrence_time": timestampTransform(session)})
    return 0


async def triggerInstanceGet(session, args) -> int:
    return await showResource(session, args, TRIGGER_INSTANCES, args.id, transforms={"occurrence_time": timestampTransform(session)})


async def triggerInstanceReEmit(session, args) -> int:
    response = await session.api("POST", TRIGGER_INSTANCES.at(args.id) + "/re_emit", data={}, allow=(404,))
    if response.code == 404:
        raise notFound(session, TRIGGER_INSTANCES.displayName, args.id)
    doc = decodeJSON(response) if response.body else {}
    if structured(args):
        printProperties(session, args, doc if isinstance(doc, dict) else {"result": doc})
    elif isinstance(doc, dict) and "message" in doc:
        session.write(str(doc["message"]))
    else:
        session.write(f"Trigger instance {args.id} succesfully re-sent.")
    return 0


async def triggerInstanceExplain(session, args) -> int:
    """
    Why each rule of the instance's trigger did or did not fire.
    """
    doc = await explain(session, {"trigger_instance": args.id})
    printDocument(session, args, doc, None, lambda: formatExplanation(doc))
    return 0


def register(subparsers) -> None:
    branch = addBranch(subparsers, "trigger-instance", "Trigger instances")
    parser = addCommand(branch, "list", "Get the list of the 50 most recent trigger instances.", triggerInstanceList)
    addListOptions(parser, LIST_ATTRIBUTES, recent="trigger instances")
    parser.add_argument("--trigger", help="Trigger reference to filter the list.")
    addTimestampFilters(parser, "trigger instances with occurrence_time")
    parser.add_argument("--status", help="Can be pending, processing, processed or processing_failed.")

    parser = addCommand(branch, "get", "Get individual trigger instance.", triggerInstanceGet)
    parser.add_argument("id", help="ID of the trigger instance.")
    addAttrOption(parser)

    parser = addCommand(branch, "re-emit", "Re-emit a particular trigger instance.", triggerInstanceReEmit)
    parser.add_argument("id", help="ID of trigger instance to re-emit.")

    parser = addCommand(branch, "explain", "Explain why each rule of the trigger did or did not fire for a trigger instance.", triggerInstanceExplain)
    parser.add_argument("id", help="ID of the trigger instance.")
