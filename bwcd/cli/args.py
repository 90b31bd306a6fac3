# -*- test-case-name: tests.test_cli_args -*-
"""
Turning C{bwc run REF k=v ...} arguments into an execution's parameters.

The rules are st2's (st2client commands/action.py), because people paste st2
command lines: arguments are read left to right, C{k=v} is cast by the
declared type of C{k} (runner parameters first, then the action's), C{@k=path}
sends a file's content, and the first argument without C{=} starts C{cmd}, made
of it and everything after it joined by spaces.
"""

from __future__ import annotations

import json
import os
from typing import Any, Callable, Dict, Mapping, Optional, Sequence

from bwcd.cli.errors import CLIError

#: variables never copied by C{-e/--inherit-env} (st2's ENV_VARS_BLACKLIST)
ENV_VARS_BLACKLIST = frozenset(
    [
        "pwd",
        "mail",
        "username",
        "user",
        "path",
        "home",
        "ps1",
        "shell",
        "pythonpath",
        "ssh_tty",
        "ssh_connection",
        "lang",
        "ls_colors",
        "logname",
        "oldpwd",
        "term",
        "xdg_session_id",
    ]
)


class ArgumentError(CLIError):
    """
    A run argument cannot be turned into a parameter value.
    """


def castArray(value: str) -> list:
    """
    JSON when it is a JSON list, a single integer as C{[int]}, otherwise
    a comma-separated list of stripped strings.
    """
    try:
        return [int(value)]
    except ValueError:
        pass
    try:
        decoded = json.loads(value)
    except ValueError:
        decoded = None
    if isinstance(decoded, list):
        return decoded
    return [v.strip() for v in value.split(",")]


def castBoolean(value: str) -> bool:
    lowered = value.strip().lower()
    if lowered == "true":
        return True
    if lowered == "false":
        return False
    raise ArgumentError("Invalid value for boolean parameter. Valid values are: true, false")


def castObject(value: str) -> Any:
    """
    JSON when the value starts with C{{}, else C{k1=v1,k2=v2} pairs (items
    without C{=} are skipped, as in st2).
    """
    if value.startswith("{"):
        try:
            return json.loads(value)
        except ValueError as e:
            raise ArgumentError(f"Invalid JSON for object parameter: {e}")
    result = {}
    for pair in value.split(","):
        key, sep, item = pair.partition("=")
        if sep:
            result[key] = item
    return result


def castInteger(value: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise ArgumentError(f"Invalid value for integer parameter: {value!r}")


def castNumber(value: str) -> float:
    try:
        return float(value)
    except ValueError:
        raise ArgumentError(f"Invalid value for number parameter: {value!r}")


CASTS: Dict[str, Callable[[str], Any]] = {
    "array": castArray,
    "boolean": castBoolean,
    "integer": castInteger,
    "number": castNumber,
    "object": castObject,
    "string": str,
}


def parameterType(name: str, actionParameters: Mapping[str, Any], runnerParameters: Mapping[str, Any]) -> Optional[str]:
    """
    The declared type of C{name}: the runner's declaration wins (st2 looks
    there first), then the action's; None when undeclared or not castable.
    """
    for source in (runnerParameters, actionParameters):
        spec = source.get(name) if isinstance(source, Mapping) else None
        if isinstance(spec, Mapping) and spec.get("type") in CASTS:
            return spec["type"]
    return None


def castParameter(name: str, value: str, actionParameters: Mapping[str, Any], runnerParameters: Mapping[str, Any]) -> Any:
    kind = parameterType(name, actionParameters, runnerParameters)
    if kind is None:
        return value
    return CASTS[kind](value)


def readParameterFile(path: str) -> str:
    if not os.path.exists(path):
        raise ArgumentError(f'File "{path}" doesn\'t exist')
    if not os.path.isfile(path):
        raise ArgumentError(f'"{path}" is not a file')
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except UnicodeDecodeError:
        raise ArgumentError(f'File "{path}" is not UTF-8 text')
    except OSError as e:
        raise ArgumentError(f'File "{path}" cannot be read: {e.strerror}')


def parseRunArguments(
    arguments: Sequence[str],
    actionParameters: Mapping[str, Any],
    runnerParameters: Mapping[str, Any],
    cwd: Optional[str] = None,
    readFile: Callable[[str], str] = readParameterFile,
) -> Dict[str, Any]:
    """
    The parameters dict for C{arguments} (the words after the action ref).
    """
    result: Dict[str, Any] = {}
    cwd = os.getcwd() if cwd is None else cwd
    for index, argument in enumerate(arguments):
        if "=" not in argument:
            result["cmd"] = " ".join(arguments[index:])
            break
        key, _, value = argument.partition("=")
        if key.startswith("@"):
            key = key[1:]
            result[key] = readFile(os.path.normpath(os.path.join(cwd, value)))
            continue
        cast = castParameter(key, value, actionParameters, runnerParameters)
        if isinstance(cast, list) and isinstance(result.get(key), list) and parameterType(key, actionParameters, runnerParameters) == "array":
            result[key] = result[key] + cast
        else:
            result[key] = cast
    return result


def inheritedEnvironment(environ: Mapping[str, str]) -> Dict[str, str]:
    """
    The environment C{-e/--inherit-env} sends as C{env}: everything except
    the per-session variables in L{ENV_VARS_BLACKLIST} (any case).
    """
    return {k: v for k, v in environ.items() if k.lower() not in ENV_VARS_BLACKLIST}
