# -*- test-case-name: tests.test_cli_commands -*-
"""
Pieces every resource command shares: the per-command options st2 puts on
each command (C{-t/--token}, C{--api-key}, C{-j}, C{-y}), printing in the
chosen format, and st2's "not found" / "deleted" messages.
"""

from __future__ import annotations

import argparse
import json
import os
from typing import Any, Callable, Dict, Mapping, Optional, Sequence

from bwcd.cli import format as fmt
from bwcd.cli.errors import CLIError, OperationFailed

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
    needsAuth: bool = True,
    auth: bool = True,
    output: bool = True,
    **kwargs: Any,
) -> argparse.ArgumentParser:
    """
    A sub-command parser with st2's standard per-command options; the
    handler is C{async def handler(session, args) -> int | None}.
    """
    parser = subparsers.add_parser(name, help=help, description=help, **kwargs)
    if auth:
        addAuthOptions(parser)
    if output:
        addFormatOptions(parser)
    parser.set_defaults(handler=handler, needsAuth=needsAuth)
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


def addListOptions(parser: argparse.ArgumentParser, attributes: Sequence[str]) -> None:
    parser.add_argument(
        "-a", "--attr", nargs="+", default=list(attributes), help='List of attributes to include in the output. "all" will return all attributes.'
    )
    parser.add_argument("-w", "--width", nargs="+", type=int, default=None, help="Set the width of columns in output.")


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
        lambda: fmt.formatTable(entries, attributes, termWidth=termWidth(), widths=getattr(args, "width", None), transforms=transforms),
    )


def printProperties(
    session,
    args,
    doc: Mapping[str, Any],
    attributes: Optional[Sequence[str]] = None,
    order: Sequence[str] = ("id", "name", "pack", "description"),
    transforms: Optional[Mapping[str, Callable]] = None,
) -> None:
    printDocument(session, args, doc, attributes, lambda: fmt.formatPropertyTable(doc, attributes, order, transforms, termWidth=termWidth()))


def printNoteBox(session, entity: str, limit: int, count: Optional[int]) -> None:
    if limit and limit > 0 and count is not None and count > limit:
        session.warn(fmt.noteBox(entity, limit))


def totalCount(response) -> Optional[int]:
    value = response.header("X-Total-Count")
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def termWidth() -> int:
    from bwcd.cli.session import terminalWidth

    return terminalWidth()


def notFound(session, displayName: str, name: str) -> OperationFailed:
    """
    Print st2's C{<Resource> "<name>" is not found.} and return the
    exception that makes the process exit 2.
    """
    session.write(f'{displayName} "{name}" is not found.\n')
    return OperationFailed(f"Resource {name} not found.")


def deleted(session, name: str) -> None:
    session.write(f'Resource with id "{name}" has been successfully deleted.')


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
