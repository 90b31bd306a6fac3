# -*- test-case-name: tests.test_cli_commands -*-
"""
Pieces every resource command shares: the per-command options st2 puts on
each command (C{-t/--token}, C{--api-key}, C{-j}, C{-y}), printing in the
chosen format, and st2's look-up-then-act sequence with its "not found" /
"deleted" messages.
"""

from __future__ import annotations

import argparse
import json
import os
from contextlib import contextmanager
from typing import Any, Callable, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple

import attrs

from bwcd.cli import format as fmt
from bwcd.cli.errors import CLIError, OperationFailed
from bwcd.cli.session import decodeJSON, quotePath, terminalWidth

#: parameters whose values are masked when an execution is shown
PARAMETERS_TO_MASK = ("password", "private_key")

ALLOWED_EXTS = (".json", ".yaml", ".yml")


def addAuthOptions(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-t", "--token", dest="token", help="Access token for user authentication. Get ST2_AUTH_TOKEN from the environment variables by default."
    )
    parser.add_argument("--api-key", dest="api_key", help="Api Key for user authentication. Get ST2_API_KEY from the environment variables by default.")


def addFormatOptions(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-j", "--json", action="store_true", dest="json", help="Print output in JSON format.")
    parser.add_argument("-y", "--yaml", action="store_true", dest="yaml", help="Print output in YAML format.")


def addCommand(
    subparsers,
    name: str,
    help: str,
    handler: Callable,
    auth: bool = True,
    output: bool = True,
    **kwargs: Any,
) -> argparse.ArgumentParser:
    """
    A sub-command parser with st2's standard per-command options; the
    handler is C{async def handler(session, args) -> int | None}. Only
    commands that take credentials log in automatically first.
    """
    parser = subparsers.add_parser(name, help=help, description=help, **kwargs)
    if auth:
        addAuthOptions(parser)
    if output:
        addFormatOptions(parser)
    parser.set_defaults(handler=handler, needsAuth=auth)
    return parser


def addBranch(subparsers, name: str, help: str) -> Any:
    """
    A resource group such as C{rule}, whose sub-commands are required.
    """
    parser = subparsers.add_parser(name, help=help, description=help)
    children = parser.add_subparsers(title="commands", metavar="{command}", help=f"List of commands for managing {help.lower()}")
    children.required = True
    parser.set_defaults(handler=None, needsAuth=False)
    return children


ATTR_HELP = 'List of attributes to include in the output. "all" or unspecified will return all attributes.'


def addAttrOption(parser: argparse.ArgumentParser, default: Sequence[str] = ("all",), flags: Sequence[str] = ("-a", "--attr")) -> None:
    """
    The C{-a/--attr} of a command that shows one document.
    """
    parser.add_argument(*flags, nargs="+", default=list(default), help=ATTR_HELP)


def addListOptions(parser: argparse.ArgumentParser, attributes: Sequence[str], recent: Optional[str] = None) -> None:
    """
    C{-a} and C{-w} of a list command, and C{-n} when the server pages it
    (C{recent} names the entries in the help).
    """
    parser.add_argument(
        "-a", "--attr", nargs="+", default=list(attributes), help='List of attributes to include in the output. "all" will return all attributes.'
    )
    parser.add_argument("-w", "--width", nargs="+", type=int, default=None, help="Set the width of columns in output.")
    if recent:
        parser.add_argument("-n", "--last", type=int, dest="last", default=50, help=f"List N most recent {recent}. Use -n -1 to fetch the full result set.")


def addTimestampFilters(parser: argparse.ArgumentParser, subject: str) -> None:
    """
    C{-tg}/C{-tl}; C{subject} says which entries and field, as in
    C{executions with timestamp}.
    """
    for flag, name, side in (("-tg", "gt", "greater"), ("-tl", "lt", "lower")):
        parser.add_argument(
            flag,
            f"--timestamp-{name}",
            dest=f"timestamp_{name}",
            default=None,
            help=f"Only return {subject} {side} than the one provided (2000-01-01T12:00:00.000Z).",
        )


def structured(args) -> bool:
    """
    C{-j} or C{-y}; commands without those options (C{login}) print text.
    """
    return bool(getattr(args, "json", False) or getattr(args, "yaml", False))


def printDocument(session, args, subject: Any, attributes: Optional[Sequence[str]], human: Callable[[], str]) -> None:
    """
    Print C{subject} as JSON (C{-j}), YAML (C{-y}) or the human form.
    """
    if getattr(args, "json", False):
        session.write(fmt.formatJSON(subject, attributes))
    elif getattr(args, "yaml", False):
        session.write(fmt.formatYAML(subject, attributes))
    else:
        text = human()
        if text:
            session.write(text)


def printTable(session, args, entries: Sequence[Mapping[str, Any]], attributes: Sequence[str], transforms: Optional[Mapping[str, Callable]] = None) -> None:
    printDocument(
        session,
        args,
        list(entries),
        attributes,
        lambda: fmt.formatTable(entries, attributes, termWidth=terminalWidth(), widths=args.width, transforms=transforms),
    )


def printPage(
    session,
    args,
    entries: Sequence[Mapping[str, Any]],
    attributes: Sequence[str],
    entity: str,
    total: Optional[int],
    transforms: Optional[Mapping[str, Callable]] = None,
) -> None:
    """
    A C{-n}-limited list: the table, then st2's note on stderr when the
    server holds more than were shown (human output only).
    """
    printTable(session, args, entries, attributes, transforms)
    if not structured(args) and args.last > 0 and total is not None and total > args.last:
        session.warn(fmt.noteBox(entity, args.last))


def printProperties(
    session,
    args,
    doc: Mapping[str, Any],
    attributes: Optional[Sequence[str]] = None,
    order: Sequence[str] = fmt.PROPERTY_ORDER,
    transforms: Optional[Mapping[str, Callable]] = None,
) -> None:
    printDocument(session, args, doc, attributes, lambda: fmt.formatPropertyTable(doc, attributes, order, transforms, termWidth=terminalWidth()))


def totalCount(response) -> Optional[int]:
    value = response.header("X-Total-Count")
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def copyFilters(params: Dict[str, Any], args, names: Sequence[str]) -> Dict[str, Any]:
    """
    Add each option in C{names} that was given, as the query parameter of
    the same name.
    """
    for name in names:
        value = getattr(args, name)
        if value:
            params[name] = value
    return params


async def fetchList(session, path: str, what: str, params: Optional[Mapping[str, Any]] = None) -> Tuple[List[Any], Optional[int]]:
    """
    A list answer and the server's C{X-Total-Count}, if any.
    """
    response = await session.api("GET", path, params=params)
    return requireList(decodeJSON(response), what), totalCount(response)


# ---------------------------------------------------------------------------
# one resource: look up, then act on its id


@attrs.frozen
class Resource:
    """
    How st2's resource managers address one kind of document: looked up by
    ref, name or id at C{<path>/<refOrId>}, then changed at its id.
    """

    #: the collection, as in C{/rules}
    path: str
    #: the name in st2's messages, as in C{Rule "x" is not found.}
    displayName: str
    #: the name in "Unexpected answer for ..." (C{{}} stands for the ref)
    what: str
    #: the property table's leading rows
    order: Sequence[str] = fmt.PROPERTY_ORDER

    def at(self, refOrId: str) -> str:
        return f"{self.path}/{quotePath(refOrId)}"


async def fetchResource(session, resource: Resource, refOrId: str) -> Optional[Dict[str, Any]]:
    doc = await session.getOrNone(resource.at(refOrId))
    return requireDict(doc, resource.what.format(refOrId)) if doc is not None else None


async def findResource(session, resource: Resource, refOrId: str) -> Dict[str, Any]:
    """
    The document, or st2's C{<Resource> "<name>" is not found.} and exit 2.
    """
    doc = await fetchResource(session, resource, refOrId)
    if doc is None:
        raise notFound(session, resource.displayName, refOrId)
    return doc


async def showResource(session, args, resource: Resource, refOrId: str, transforms: Optional[Mapping[str, Callable]] = None) -> int:
    """
    C{<resource> get}: the C{-a} attributes as a property table.
    """
    doc = await findResource(session, resource, refOrId)
    printProperties(session, args, doc, args.attr, order=resource.order, transforms=transforms)
    return 0


async def createResource(session, resource: Resource, data: Any) -> Dict[str, Any]:
    return requireDict(await session.sendJSON("POST", resource.path, data), f"POST {resource.path}")


async def updateResource(session, args, resource: Resource, doc: Mapping[str, Any], data: Any) -> int:
    """
    PUT C{data} at C{doc}'s id and show the stored result in full.
    """
    updated = requireDict(await session.sendJSON("PUT", resource.at(str(doc["id"])), data), f"PUT {resource.path}")
    printProperties(session, args, updated, ["all"], order=resource.order)
    return 0


async def setEnabled(
    session,
    args,
    resource: Resource,
    refOrId: str,
    enabled: bool,
    editable: Callable[[Dict[str, Any]], Dict[str, Any]],
) -> int:
    """
    C{enable}/C{disable}: send back the C{editable} part of the document
    with C{enabled} set.
    """
    doc = await findResource(session, resource, refOrId)
    data = editable(doc)
    data["enabled"] = enabled
    return await updateResource(session, args, resource, doc, data)


async def deleteResource(session, resource: Resource, refOrId: str) -> int:
    doc = await findResource(session, resource, refOrId)
    await session.api("DELETE", resource.at(str(doc["id"])), allow=(404,))
    session.write(f'Resource with id "{refOrId}" has been successfully deleted.')
    return 0


def notFound(session, displayName: str, name: str) -> OperationFailed:
    """
    Print st2's C{<Resource> "<name>" is not found.} and return the
    exception that makes the process exit 2.
    """
    session.write(f'{displayName} "{name}" is not found.\n')
    return OperationFailed(f"Resource {name} not found.")


@contextmanager
def failureReported(session) -> Iterator[None]:
    """
    st2's create: any expected failure prints C{ERROR: ...} and exits 2.
    """
    try:
        yield
    except OperationFailed:
        raise
    except CLIError as e:
        session.write(f"ERROR: {e}")
        raise OperationFailed(str(e))


def loadMetaFile(path: str) -> Any:
    """
    A rule (or other resource) from a C{.json}, C{.yaml} or C{.yml} file.
    """
    if not os.path.isfile(path):
        raise CLIError(f'File "{path}" does not exist.')
    ext = os.path.splitext(path)[1]
    if ext not in ALLOWED_EXTS:
        raise CLIError(f"Unsupported meta type {ext}, file {path}. Allowed: {list(ALLOWED_EXTS)}")
    try:
        with open(path, encoding="utf-8") as f:
            if ext == ".json":
                return json.load(f)
            import yaml

            return yaml.safe_load(f)
    except ValueError as e:
        raise CLIError(f'File "{path}" is not valid JSON: {e}')
    except OSError as e:
        raise CLIError(f'File "{path}" cannot be read: {e.strerror}')
    except Exception as e:  # yaml.YAMLError without importing yaml up front
        first = str(e).splitlines()[0] if str(e) else e.__class__.__name__
        raise CLIError(f'File "{path}" is not valid YAML: {first}')


def maskParameters(value: Any) -> Any:
    if not isinstance(value, dict):
        return value
    return {k: ("********" if k in PARAMETERS_TO_MASK else v) for k, v in value.items()}


def timestampTransform(session) -> Callable[[Any], str]:
    tz = session.settings.timezone
    return lambda value: fmt.formatTimestamp(value, tz)


def executionTransforms(session) -> Dict[str, Callable[[Any], Any]]:
    """
    How st2 shows execution attributes: human timestamps, coloured status.
    """
    stamp = timestampTransform(session)
    return {
        "start_timestamp": stamp,
        "end_timestamp": stamp,
        "status": lambda value: fmt.colorStatus(str(value or ""), session.color),
    }


def withElapsed(session, execution: Mapping[str, Any]) -> Dict[str, Any]:
    """
    A copy of the execution whose status carries C{(<n>s elapsed)} and whose
    secret-looking parameters are masked, for human output only.
    """
    shown = dict(execution)
    shown["status"] = fmt.statusWithElapsed(execution, session.clock())
    if "parameters" in shown:
        shown["parameters"] = maskParameters(shown["parameters"])
    return shown


def requireDict(value: Any, what: str) -> Dict[str, Any]:
    if not isinstance(value, dict):
        raise CLIError(f"Unexpected answer for {what}: expected a JSON object")
    return value


def requireList(value: Any, what: str) -> list:
    if not isinstance(value, list):
        raise CLIError(f"Unexpected answer for {what}: expected a JSON list")
    return value
