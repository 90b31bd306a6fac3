# -*- test-case-name: tests.test_cli_commands -*-
"""
C{run} (also C{action execute}) and C{action list|get}.

C{run} makes st2's call sequence: C{GET /actions/<ref>}, C{GET
/runnertypes/?name=<runner>} (both needed to cast the arguments by type),
C{POST /executions}, then C{GET /executions/<id>} until the execution leaves
the pending states, printing a dot per poll. The helpers that wait, tail and
print an execution are shared with C{execution re-run|get|tail}.
"""

from __future__ import annotations

import codecs
import json
import os
import textwrap
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple

from bwcd.cli import format as fmt
from bwcd.cli.args import inheritedEnvironment, parseRunArguments
from bwcd.cli.commands.common import (
    Resource,
    addAttrOption,
    addBranch,
    addCommand,
    addListOptions,
    copyFilters,
    executionTransforms,
    fetchList,
    fetchResource,
    printDocument,
    printTable,
    requireDict,
    showResource,
    structured,
    withElapsed,
)
from bwcd.cli.errors import CLIError
from bwcd.cli.session import terminalWidth

RUN_DISPLAY_ATTRIBUTES = ["id", "action.ref", "context.user", "parameters", "status", "start_timestamp", "end_timestamp", "result"]

#: the states st2's run keeps polling in
PENDING_STATUSES = ("requested", "scheduled", "running", "canceling")

#: first poll delay; doubled up to st2's 2 s
FIRST_POLL_INTERVAL = 0.25
MAX_POLL_INTERVAL = 2.0

ACTIONS = Resource(
    "/actions", "Action", "action {}", ("id", "uid", "ref", "pack", "name", "description", "enabled", "entry_point", "runner_type", "parameters")
)

EXECUTIONS = Resource("/executions", "Execution", "execution")


async def fetchRunner(session, name: str) -> Optional[Dict[str, Any]]:
    runners, _ = await fetchList(session, "/runnertypes/", "runnertypes", {"name": name})
    for runner in runners:
        if isinstance(runner, dict) and runner.get("name") == name:
            return runner
    return runners[0] if runners and isinstance(runners[0], dict) else None


async def runParameters(session, ref: str, arguments: Sequence[str]) -> Tuple[Dict[str, Any], Dict[str, Any]]:
    """
    The action and the parameters made of its run C{arguments}, cast by the
    types the action and its runner declare.
    """
    action = await fetchResource(session, ACTIONS, ref)
    if action is None:
        raise CLIError(f'Action "{ref}" cannot be found.')
    runnerName = str(action.get("runner_type") or "")
    runner = await fetchRunner(session, runnerName)
    if runner is None:
        raise CLIError(f'Runner type "{runnerName}" for action "{ref}" cannot be found.')
    return action, parseRunArguments(arguments, action.get("parameters") or {}, runner.get("runner_parameters") or {})


async def readExecution(session, executionId: str) -> Dict[str, Any]:
    """
    The execution as it is now; it was just started or found, so a 404 is an error.
    """
    return requireDict(await session.getJSON(EXECUTIONS.at(executionId)), "execution")


async def waitForExecution(session, execution: Mapping[str, Any], showProgress: bool) -> Dict[str, Any]:
    """
    Poll until the execution leaves L{PENDING_STATUSES}, one dot per poll.
    """
    current = dict(execution)
    delay = FIRST_POLL_INTERVAL
    while current.get("status") in PENDING_STATUSES:
        await session.sleep(delay)
        delay = min(MAX_POLL_INTERVAL, delay * 2)
        if showProgress:
            session.out.write(".")
            session.out.flush()
        current = await readExecution(session, str(current["id"]))
    if showProgress:
        session.out.write("\n")
        session.out.flush()
    return current


async def tailExecution(session, executionId: str, outputType: Optional[str] = None) -> Dict[str, Any]:
    """
    Print the execution's output as it grows until the execution completes:
    re-read C{GET /executions/<id>/output} and write only the new bytes.
    The status is read before the output, so the last read after
    completion holds everything.
    """
    decoder = codecs.getincrementaldecoder("utf-8")("replace")
    printed = 0
    endsWithNewline = True
    outputSupported = True
    delay = FIRST_POLL_INTERVAL
    while True:
        execution = await readExecution(session, executionId)
        if outputSupported:
            response = await session.api("GET", EXECUTIONS.at(executionId) + "/output", params={"output_type": outputType}, allow=(404,))
            if response.code == 404:
                outputSupported = False
                session.warn("Warning: the server does not provide execution output; waiting for the result instead.")
            elif len(response.body) > printed:
                text = decoder.decode(response.body[printed:])
                printed = len(response.body)
                if text:
                    session.out.write(text)
                    session.out.flush()
                    endsWithNewline = text.endswith("\n")
        if execution.get("status") in fmt.COMPLETED_STATES:
            break
        await session.sleep(delay)
        delay = min(1.0, delay * 2)
    rest = decoder.decode(b"", final=True)
    if rest:
        session.out.write(rest)
        endsWithNewline = rest.endswith("\n")
    if not endsWithNewline:
        session.out.write("\n")
    session.write(f"Execution {executionId} has completed (status={execution.get('status')}).")
    return execution


def printExecution(session, args, execution: Mapping[str, Any], attributes) -> None:
    """
    st2's execution view: C{-k} one result key, C{-d} a property table,
    otherwise C{attr: value} lines with the result as YAML.
    """
    key = args.key
    if key:
        if structured(args):
            printDocument(session, args, execution, [f"result.{key}"], lambda: "")
            return
        value = fmt.getValue(execution.get("result") if isinstance(execution.get("result"), dict) else {}, key)
        if isinstance(value, (dict, list)):
            session.write(json.dumps(value, indent=4, sort_keys=True))
        else:
            session.write("" if value is None else str(value))
        return
    shown = withElapsed(session, execution)
    transforms = executionTransforms(session)
    if args.detail:
        attributes = RUN_DISPLAY_ATTRIBUTES
        printDocument(session, args, execution, attributes, lambda: fmt.formatPropertyTable(shown, attributes, attributes, transforms, termWidth=terminalWidth()))
    else:
        printDocument(session, args, execution, attributes, lambda: fmt.formatExecutionResult(shown, attributes, transforms, color=session.color))


async def followExecution(session, args, execution: Dict[str, Any]) -> int:
    """
    After a POST: return at once (C{-a}), tail (C{--tail}) or wait, then
    print; the exit code is 1 only for C{failed}.
    """
    executionId = str(execution.get("id"))
    if args.action_async:
        if structured(args):
            printDocument(session, args, execution, None, lambda: "")
        else:
            session.write(f"To get the results, execute:\n {session.prog} execution get {executionId}")
            session.write(f"\nTo view output in real-time, execute:\n {session.prog} execution tail {executionId}")
        return 0
    if args.tail:
        session.write(f'Tailing execution "{executionId}"')
        await tailExecution(session, executionId)
        execution = await readExecution(session, executionId)
        session.write("")
    else:
        # under --debug the request blocks already show progress, and dots would break their lines
        showProgress = not structured(args) and not session.settings.debug
        execution = await waitForExecution(session, execution, showProgress=showProgress)
    printExecution(session, args, execution, args.attr)
    return 1 if execution.get("status") == "failed" else 0


def _mergedParameters(action: Mapping[str, Any], runner: Mapping[str, Any]) -> Dict[str, Dict[str, Any]]:
    merged: Dict[str, Dict[str, Any]] = {}
    for source in (runner.get("runner_parameters") or {}, action.get("parameters") or {}):
        for name, spec in source.items():
            merged[name] = dict(merged.get(name, {}), **(spec if isinstance(spec, dict) else {}))
    return merged


def actionHelp(action: Mapping[str, Any], runner: Mapping[str, Any]) -> str:
    """
    C{run REF -h}: the action's description and its required and optional
    parameters (immutable ones hidden), ordered by position then name.
    """
    parameters = _mergedParameters(action, runner)
    immutable = {name for name, spec in parameters.items() if spec.get("immutable")}
    required = sorted((n for n, s in parameters.items() if s.get("required") and n not in immutable), key=lambda n: _sortKey(parameters[n], n))
    optional = sorted((n for n in parameters if n not in immutable and n not in required), key=lambda n: _sortKey(parameters[n], n))
    lines = ["", textwrap.fill(str(action.get("description") or "")), ""]
    for title, names in (("Required Parameters:", required), ("Optional Parameters:", optional)):
        if not names:
            continue
        lines.append(title)
        for name in names:
            lines.extend(_paramHelp(name, parameters[name]))
    return "\n".join(lines)


def _sortKey(spec: Mapping[str, Any], name: str):
    position = spec.get("position")
    return (0, float(position), name) if isinstance(position, (int, float)) else (1, 0.0, name)


def _paramHelp(name: str, spec: Mapping[str, Any]):
    outer = textwrap.TextWrapper(width=78, initial_indent=" " * 4, subsequent_indent=" " * 4)
    inner = textwrap.TextWrapper(width=78, initial_indent=" " * 8, subsequent_indent=" " * 8)
    lines = [outer.fill(name)]
    if spec.get("description"):
        lines.append(inner.fill(str(spec["description"])))
    if spec.get("type"):
        lines.append(inner.fill(f"Type: {spec['type']}"))
    if spec.get("enum"):
        lines.append(inner.fill("Enum: " + ", ".join(str(v) for v in spec["enum"])))
    if spec.get("default") is not None:
        lines.append(inner.fill(f"Default: {spec['default']}"))
    lines.append("")
    return lines


async def run(session, args) -> int:
    if args.help:
        if args.ref_or_id:
            action = await fetchResource(session, ACTIONS, args.ref_or_id)
            if action is None:
                session.write(f'Action "{args.ref_or_id}" is not found. Do "{session.prog} action list" to see list of available actions.')
                return 0
            runner = await fetchRunner(session, str(action.get("runner_type") or "")) or {}
            session.write(actionHelp(action, runner))
        else:
            session.write(args.parser.format_help().rstrip("\n"))
        return 0
    if not args.ref_or_id:
        raise CLIError("the following arguments are required: ref-or-id")
    action, parameters = await runParameters(session, args.ref_or_id, args.parameters)
    if args.inherit_env:
        parameters["env"] = inheritedEnvironment(os.environ)
    body: Dict[str, Any] = {"action": action.get("ref") or args.ref_or_id, "user": args.user, "parameters": parameters}
    traceContext: Dict[str, Any] = {}
    if args.trace_tag:
        traceContext["trace_tag"] = args.trace_tag
    if args.trace_id:
        traceContext["id_"] = args.trace_id
    if traceContext:
        body["context"] = {"trace_context": traceContext}
    if args.delay:
        body["delay"] = args.delay
    execution = requireDict(await session.sendJSON("POST", "/executions", body), "POST /executions")
    return await followExecution(session, args, execution)


def addRunOptions(parser) -> None:
    """
    The options shared by C{run}, C{action execute} and C{execution re-run}.
    """
    parser.add_argument("-a", "--async", action="store_true", dest="action_async", help="Do not wait for action to finish.")
    parser.add_argument("--tail", action="store_true", help="Stream the action output while it runs, then print the result.")
    parser.add_argument("--delay", type=int, default=None, help="How long (in milliseconds) to delay the execution before scheduling.")
    parser.add_argument("-d", "--detail", action="store_true", help="Display full detail of the execution in table format.")
    parser.add_argument("-k", "--key", help="If result is type of JSON, then print specific key-value pair; dot notation for nested JSON is supported.")
    addAttrOption(parser, RUN_DISPLAY_ATTRIBUTES, flags=("--attr",))


def registerRun(subparsers, name: str, help: str) -> None:
    parser = addCommand(subparsers, name, help, run, add_help=False)
    parser.add_argument("-h", "--help", action="store_true", dest="help", help="Print usage for the given action.")
    parser.add_argument("ref_or_id", nargs="?", metavar="ref-or-id", help="Action reference (pack.action_name) or ID of the action.")
    parser.add_argument("parameters", nargs="*", help="List of keyword args, positional args, and optional args for the action.")
    parser.add_argument("-u", "--user", type=str, default=None, help="User under which to run the action (admins only).")
    parser.add_argument("-e", "--inherit-env", action="store_true", dest="inherit_env", help="Pass all the environment variables which are accessible to the CLI as \"env\" parameter to the action.")
    parser.add_argument("--trace-tag", "--trace_tag", dest="trace_tag", help="A trace tag string to track execution later.")
    parser.add_argument("--trace-id", dest="trace_id", help="Existing trace id for this execution.")
    addRunOptions(parser)
    parser.set_defaults(parser=parser)


async def actionList(session, args) -> int:
    actions, _ = await fetchList(session, "/actions", "actions", copyFilters({}, args, ("pack",)))
    printTable(session, args, actions, args.attr)
    return 0


async def actionGet(session, args) -> int:
    return await showResource(session, args, ACTIONS, args.ref_or_id)


def register(subparsers) -> None:
    registerRun(subparsers, "run", "Invoke an action manually.")
    branch = addBranch(subparsers, "action", "Actions")
    parser = addCommand(branch, "list", "Get the list of actions.", actionList)
    addListOptions(parser, ["ref", "pack", "description"])
    parser.add_argument("-p", "--pack", type=str, help="Only return resources belonging to the provided pack")
    parser = addCommand(branch, "get", "Get individual action.", actionGet)
    parser.add_argument("ref_or_id", metavar="ref-or-id", help="Reference or ID of the action.")
    addAttrOption(parser)
    registerRun(branch, "execute", "Invoke an action manually.")
