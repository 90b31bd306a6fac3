# -*- test-case-name: tests.test_cli_commands -*-
"""
C{execution list|get|cancel|re-run|tail}.

C{tail} follows the event stream as st2's CLI does: C{GET <stream
url>/stream?end_event=st2.execution__update&end_execution_id=<id>&events=
st2.execution__update,st2.execution.output__create} (credentials in the
query), printing output chunks as they arrive and ending on the completing
update.  Unlike st2 it first prints what the execution wrote before the
stream opened (C{GET /executions/<id>/output}, read once the stream is
open, so nothing falls between the two), and it falls back to polling the
output when the stream listener cannot be reached.
"""

from __future__ import annotations

from typing import Any, Dict

from bwcd.cli import format as fmt
from bwcd.cli.commands.action import (
    EXECUTIONS,
    addRunOptions,
    followExecution,
    printExecution,
    runParameters,
    tailExecution,
)
from bwcd.cli.commands.common import (
    addAttrOption,
    addBranch,
    addCommand,
    addListOptions,
    addTimestampFilters,
    copyFilters,
    executionTransforms,
    fetchList,
    findResource,
    printPage,
    requireDict,
    structured,
    withElapsed,
)
from bwcd.cli.errors import CLIError

LIST_ATTRIBUTES = ["id", "action.ref", "context.user", "status", "start_timestamp", "end_timestamp"]
GET_ATTRIBUTES = ["id", "action.ref", "context.user", "parameters", "status", "start_timestamp", "end_timestamp", "log", "result"]


async def executionList(session, args) -> int:
    params: Dict[str, Any] = {"limit": args.last}
    if not args.showall:
        params["parent"] = "null"
    copyFilters(params, args, ("action", "status", "user", "trigger_instance", "timestamp_gt", "timestamp_lt"))
    if args.sort_order in ("asc", "ascending"):
        params["sort_asc"] = "true"
    executions, total = await fetchList(session, "/executions", "executions", params)
    executions.reverse()
    if not structured(args):
        executions = [withElapsed(session, e) for e in executions]
    printPage(session, args, executions, args.attr, "action executions", total, executionTransforms(session))
    return 0


async def executionGet(session, args) -> int:
    execution = await findResource(session, EXECUTIONS, args.id)
    printExecution(session, args, execution, args.attr)
    return 0


async def executionCancel(session, args) -> int:
    for executionId in args.ids:
        response = await session.api("DELETE", EXECUTIONS.at(executionId), allow=(404,))
        if response.code == 404:
            session.write(f'Execution "{executionId}" is not found.')
            continue
        try:
            doc = response.json()
        except ValueError:
            doc = None
        if isinstance(doc, dict) and doc.get("faultstring"):
            session.write(str(doc["faultstring"]))
        elif isinstance(doc, dict) and doc.get("status") == "canceling":
            session.write(f"Cancellation requested for action execution with id {executionId}.")
        elif isinstance(doc, dict):
            session.write(f"action execution with id {executionId} canceled.")
        else:
            session.write(f"Cannot cancel action execution with id {executionId}.")
    return 0


async def executionReRun(session, args) -> int:
    original = await findResource(session, EXECUTIONS, args.id)
    ref = fmt.getValue(original, "action.ref")
    if not ref:
        raise CLIError(f"Execution {args.id} has no action reference")
    parameters: Dict[str, Any] = {}
    if args.parameters:
        _, parameters = await runParameters(session, str(ref), args.parameters)
    if args.tasks and parameters:
        raise CLIError("Parameters cannot be provided when re-running specific tasks.")
    body: Dict[str, Any] = {"parameters": parameters}
    if args.tasks:
        body["tasks"] = args.tasks
        body["reset"] = [t for t in args.tasks if t not in (args.no_reset or [])]
    if args.delay:
        body["delay"] = args.delay
    execution = requireDict(await session.sendJSON("POST", EXECUTIONS.at(args.id) + "/re_run", body), "re_run")
    return await followExecution(session, args, execution)


async def executionTail(session, args) -> int:
    execution = await findResource(session, EXECUTIONS, args.id)
    executionId = str(execution.get("id", args.id))
    if execution.get("status") not in fmt.COMPLETED_STATES:
        # imported here: building the parser (-h) must not import Twisted
        from bwcd.cli.streamtail import StreamUnavailable, streamTail

        try:
            await streamTail(session, executionId, args.output_type)
            return 0
        except StreamUnavailable as e:
            session.warn(f"Warning: cannot open the event stream ({e}); polling the output instead.")
    await tailExecution(session, executionId, args.output_type)
    return 0


def register(subparsers) -> None:
    branch = addBranch(subparsers, "execution", "Action executions")

    parser = addCommand(branch, "list", "Get the list of the 50 most recent action executions.", executionList)
    addListOptions(parser, LIST_ATTRIBUTES, recent="action executions")
    parser.add_argument("-s", "--sort", type=str, dest="sort_order", default="descending", choices=["asc", "ascending", "desc", "descending"], help="Sort by start timestamp.")
    parser.add_argument("--action", help="Action reference to filter the list.")
    parser.add_argument("--status", help="Only return executions with the provided status.")
    parser.add_argument("--user", help="Only return executions created by the provided user.")
    parser.add_argument("--trigger_instance", "--trigger-instance", dest="trigger_instance", help="Trigger instance id to filter the list.")
    addTimestampFilters(parser, "executions with timestamp")
    parser.add_argument("-l", "--showall", action="store_true", help="Show all executions, including child executions of workflows.")

    parser = addCommand(branch, "get", "Get individual action execution.", executionGet)
    parser.add_argument("id", help="ID of the action execution.")
    parser.add_argument("-d", "--detail", action="store_true", help="Display full detail of the execution in table format.")
    parser.add_argument("-k", "--key", help="If result is type of JSON, then print specific key-value pair; dot notation for nested JSON is supported.")
    addAttrOption(parser, GET_ATTRIBUTES)

    parser = addCommand(branch, "cancel", "Cancel action executions.", executionCancel)
    parser.add_argument("ids", nargs="+", metavar="id", help="ID of the action execution.")

    parser = addCommand(branch, "re-run", "Re-run a particular action.", executionReRun)
    parser.add_argument("id", help="ID of action execution to re-run.")
    parser.add_argument("parameters", nargs="*", help="List of keyword args, positional args, and optional args for the action.")
    parser.add_argument("--tasks", nargs="*", help="Name of the workflow tasks to re-run.")
    parser.add_argument("--no-reset", dest="no_reset", nargs="*", help="Name of the with-items tasks to not reset.")
    addRunOptions(parser)

    parser = addCommand(branch, "tail", "Tail output of a particular execution.", executionTail)
    parser.add_argument("id", help="ID of action execution to tail (or \"last\").")
    parser.add_argument("--type", dest="output_type", choices=["stdout", "stderr"], help="Type of output to tail. If not provided, defaults to all.")
