# -*- test-case-name: tests.test_runner_argv -*-
"""
Command lines for the local shell runners, as argv lists.

st2 builds one shell string and runs it with C{shell=True}; bwcd execs an
argv list instead, so script arguments need no shell quoting and a parameter
value can never be interpreted by a shell.  The arguments a script sees are
the ones st2 would give it after its shell had removed the quoting.

The C{local-shell-cmd} runner still runs its C{cmd} through C{/bin/sh -c}:
running a shell command line is what that runner is for.
"""

from __future__ import annotations

import json
import shlex
from typing import Any, List, Mapping, Optional, Sequence

SHELL = "/bin/sh"


def shellCmdArgv(cmd: str) -> List[str]:
    """
    The argv that runs a C{local-shell-cmd} command line.
    """
    return [SHELL, "-c", cmd]


def sudoArgv(cmd: str, *, password: bool = False, user: Optional[str] = None) -> List[str]:
    """
    The argv that runs the shell command line C{cmd} through sudo, as st2
    does for C{sudo: true} (C{sudo -E -- bash -c <cmd>}) or to run as another
    system user (C{sudo -E -H -u <user> -- bash -c <cmd>}).

    @param password: a sudo password will be written to the child's stdin,
        so sudo must read it from there (C{-S}).
    @param user: run as this user instead of root (only when it differs from
        the daemon's own user; the caller decides).
    """
    argv = ["sudo"]
    if password:
        argv.append("-S")
    argv.append("-E")
    if user is not None:
        argv += ["-H", "-u", user]
    return argv + ["--", "bash", "-c", cmd]


def argvToShell(argv: Sequence[str]) -> str:
    """
    A shell command line that runs C{argv}, for wrapping a script invocation
    in L{sudoArgv}.
    """
    return shlex.join(argv)


def _namedValue(value: Any) -> str:
    # st2 formats named values with str(), so containers appear as Python
    # literals (--obj={'a': 1}); kept for compatibility with existing scripts.
    return value if isinstance(value, str) else str(value)


def namedArgs(params: Mapping[str, Any], kwarg_op: str) -> List[str]:
    """
    Named script arguments, in the order of C{params}: C{<op><name>=<value>};
    C{True} gives the bare flag, C{False}, C{None} and C{""} give nothing.
    """
    args: List[str] = []
    for name, value in params.items():
        if value is None or (isinstance(value, str) and value == ""):
            continue
        if isinstance(value, bool):
            if value:
                args.append(kwarg_op + name)
            continue
        args.append("%s%s=%s" % (kwarg_op, name, _namedValue(value)))
    return args


def serializePositional(argType: Optional[str], value: Any) -> str:
    """
    One positional argument as st2 serializes it for its declared type (st2
    C{_serialize_positional_argument}).  Note the last rule: for any other
    type, falsy values (0 included) become C{""}.
    """
    if argType in ("string", "number", "float"):
        if value is None:
            return ""
        return value if isinstance(value, str) else str(value)
    if argType == "boolean":
        if value is None:
            return ""
        return "1" if bool(value) else "0"
    if argType in ("array", "list"):
        return ",".join(str(v) for v in value) if value else ""
    if argType == "object":
        return json.dumps(value) if value else ""
    if argType == "null":
        return ""
    return str(value) if value else ""


def positionalOrder(action_params_schema: Mapping[str, Mapping[str, Any]]) -> List[str]:
    """
    Names of the positional parameters, by ascending C{position}.  Two
    parameters claiming the same position: the later-declared one wins (as
    in st2, which builds a position-keyed dict).
    """
    byPosition = {}
    for name, spec in action_params_schema.items():
        if spec and spec.get("position") is not None:
            byPosition[spec["position"]] = name
    return [byPosition[p] for p in sorted(byPosition)]


def scriptArgv(
    entry_point_abs: str,
    action_params_schema: Mapping[str, Mapping[str, Any]],
    params: Mapping[str, Any],
    kwarg_op: str = "--",
    cmd: Optional[str] = None,
) -> List[str]:
    """
    The argv for a C{local-shell-script} action: the script, then named
    arguments, then positional ones.

    @param action_params_schema: the action's own parameter map (its
        metadata), where C{position} attributes are declared.
    @param params: the action's parameters only, without runner parameters
        (see L{bwcd.execution.runners.params.splitRunnerAndAction}); their order is the
        order of the named arguments.
    @param cmd: the C{cmd} runner parameter.  When set, it is split like a
        shell would split it and used as the positional part, and every
        action parameter is passed as a named argument.
    """
    if cmd:
        return [entry_point_abs] + namedArgs(params, kwarg_op) + shlex.split(cmd)
    positional = positionalOrder(action_params_schema)
    positionalSet = set(positional)
    named = {k: v for k, v in params.items() if k not in positionalSet}
    values = [
        serializePositional((action_params_schema.get(name) or {}).get("type"), params.get(name))
        for name in positional
    ]
    return [entry_point_abs] + namedArgs(named, kwarg_op) + values


def actionArgv(
    runner: str,
    runner_params: Mapping[str, Any],
    action_params_schema: Mapping[str, Mapping[str, Any]],
    action_params: Mapping[str, Any],
    entry_point_abs: Optional[str] = None,
    user: Optional[str] = None,
) -> List[str]:
    """
    The complete argv for one execution of a local shell runner.

    @param runner: C{"local-shell-cmd"} or C{"local-shell-script"}.
    @param runner_params: the runner's share of the final parameters (cmd,
        kwarg_op, sudo, sudo_password, ...).
    @param action_params: the action's own parameters (script arguments).
    @param entry_point_abs: the script's absolute path (script runner).
    @param user: a system user other than the daemon's to run as; ignored
        when C{sudo} is set (which runs as root), as in st2.

    @raise ValueError: for a cmd action without C{cmd}, a script action
        without entry point, or an unknown runner.
    """
    cmd = runner_params.get("cmd")
    if runner == "local-shell-cmd":
        if not cmd:
            raise ValueError("local-shell-cmd needs the cmd parameter")
        argv = shellCmdArgv(cmd)
        line = cmd
    elif runner == "local-shell-script":
        if not entry_point_abs:
            raise ValueError("Missing entry_point action metadata attribute")
        kwarg_op = runner_params.get("kwarg_op")
        argv = scriptArgv(
            entry_point_abs,
            action_params_schema,
            action_params,
            "--" if kwarg_op is None else kwarg_op,
            cmd=cmd,
        )
        line = argvToShell(argv)
    else:
        raise ValueError("not a local shell runner: %r" % (runner,))
    if runner_params.get("sudo"):
        return sudoArgv(line, password=bool(runner_params.get("sudo_password")))
    if user is not None:
        return sudoArgv(line, user=user)
    return argv
