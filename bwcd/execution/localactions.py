# -*- test-case-name: tests.test_executor -*-
"""
The runner of the local runner types (C{local-shell-cmd},
C{local-shell-script}): their command line, environment and child token,
started through a process runner.  Kept apart from the executor, which
only talks to the L{IActionRunner} interface.
"""

from __future__ import annotations

import os
from typing import Callable, Dict, List, Optional

import attrs

from bwcd.execution.runners.argv import argvToShell, scriptArgv, shellCmdArgv, sudoArgv
from bwcd.execution.runners.interface import IRunner, IRunningAction, OutputCallback
from bwcd.execution.runners.params import splitRunnerAndAction
from bwcd.execution.runners.types import LOCAL_SHELL_SCRIPT, runnerParameters
from bwcd.execution.tokens import ChildTokens

#: C{resolveScript(pack, entryPoint)}: the absolute path of a script
#: action's entry point on this node
#: (@raise ValueError: the pack is not installed here)
ScriptResolver = Callable[[str, str], str]


@attrs.frozen
class Launch:
    """
    Everything needed to start one execution's child.

    @ivar token: its C{ST2_ACTION_AUTH_TOKEN}, revoked when it ends.
    """

    argv: List[str]
    env: Dict[str, str]
    cwd: Optional[str]
    timeout: Optional[float]
    stdin: Optional[bytes]
    token: Optional[str] = None


class LocalActions:
    """
    The runner of the local runner types (an L{IActionRunner}): builds the
    command line and environment of C{local-shell-cmd} and
    C{local-shell-script} actions, and starts them through a process
    runner (L{IRunner}).

    @param tokens: issues and revokes each execution's child token, or
        None for no C{ST2_ACTION_AUTH_TOKEN}.
    """

    def __init__(
        self, runner: IRunner, apiURL: str, resolveScript: ScriptResolver, tokens: Optional[ChildTokens] = None
    ) -> None:
        self._runner = runner
        self._apiURL = apiURL.rstrip("/") + "/v1"
        self._resolveScript = resolveScript
        self._tokens = tokens

    async def prepare(self, doc: dict) -> Launch:
        return await self._prepare(doc)

    def start(self, doc: dict, launch: Launch, on_output: OutputCallback) -> IRunningAction:
        return self._runner.start(
            launch.argv, env=launch.env, cwd=launch.cwd, timeout=launch.timeout, on_output=on_output,
            stdin=launch.stdin, sudo_password_used=launch.stdin is not None,
        )

    async def release(self, launch: Launch) -> None:
        if launch.token is not None and self._tokens is not None:
            await self._tokens.revoke(launch.token)

    async def _prepare(self, doc: dict) -> Launch:
        action = doc["action"]
        runnerName = action["runner_type"]
        runnerParams = runnerParameters(runnerName)
        params = doc["_parameters"]
        runnerPart, actionPart = splitRunnerAndAction(runnerParams, action.get("parameters") or {}, params)
        for name, spec in (action.get("parameters") or {}).items():
            if name in runnerParams and name in params:
                runnerPart[name] = params[name]
        timeout = runnerPart.get("timeout")
        timeout = 60 if timeout is None else int(timeout)  # 0: no limit, as in st2
        env = dict(os.environ)
        for k, v in (runnerPart.get("env") or {}).items():
            env[str(k)] = str(v)
        env["ST2_ACTION_PACK_NAME"] = action["pack"]
        env["ST2_ACTION_EXECUTION_ID"] = doc["id"]
        env["ST2_ACTION_API_URL"] = self._apiURL
        if runnerName == LOCAL_SHELL_SCRIPT:
            script = self._resolveScript(action["pack"], action["entry_point"])
            self._runner.prepareScript(script)
            argv = scriptArgv(
                script,
                action.get("parameters") or {},
                actionPart,
                runnerPart.get("kwarg_op", "--"),
                cmd=runnerPart.get("cmd"),
            )
        else:
            argv = shellCmdArgv(runnerPart["cmd"])
        stdin = None
        if runnerPart.get("sudo"):
            password = runnerPart.get("sudo_password")
            command = runnerPart["cmd"] if runnerName != LOCAL_SHELL_SCRIPT else argvToShell(argv)
            argv = sudoArgv(command, password=bool(password))
            if password:
                stdin = (password + "\n").encode("utf-8")
        token = None
        if self._tokens is not None:
            # Last, so that nothing after it can fail and leave it behind.
            token = await self._tokens.issue(doc["context"].get("user", "stanley"), doc["id"], timeout or None)
            env["ST2_ACTION_AUTH_TOKEN"] = token
        return Launch(argv, env, runnerPart.get("cwd"), timeout or None, stdin, token)


__all__ = ["Launch", "LocalActions", "ScriptResolver"]
