# -*- test-case-name: tests.test_executor -*-
"""
The executor: claims queued executions from the store and runs them through
the runner of their action's runner type, at most C{max_concurrent} at a
time, whatever the runner.

The queue is the store itself.  A claim is one conditional update
(C{requested -> scheduled}), atomic in both backends, so any number of bwcd
processes sharing a MongoDB run each execution exactly once.  Executions
queued in this process wake the executor at once (through the execution
service's queue listeners); a periodic sweep picks up everything else
(other processes' requests, work left queued while all slots were busy,
requests recovered at start-up).
"""

from __future__ import annotations

import os
import socket
from typing import Callable, Dict, List, Mapping, Optional

import attrs
from twisted.application.service import Service
from twisted.internet.defer import Deferred, DeferredList, ensureDeferred, gatherResults
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from bwcd.execution.runners.argv import argvToShell, scriptArgv, shellCmdArgv, sudoArgv
from bwcd.execution.runners.interface import ABANDONED, CANCELED, IActionRunner, IRunner, IRunningAction, OutputCallback
from bwcd.execution.runners.params import splitRunnerAndAction
from bwcd.execution.runners.types import LOCAL_SHELL_CMD, LOCAL_SHELL_SCRIPT, runnerParameters
from bwcd.execution.service import COMPLETED, ExecutionService
from bwcd.execution.tokens import ChildTokens
from bwcd.store.interface import IStore

log = Logger(namespace="bwcd.execution.executor")

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


class Executor(Service):
    """
    Runs queued executions.

    Starting it settles what this node left behind when it died
    (L{recover}), then claims work; stopping it claims nothing more, ends
    running children (their executions end C{abandoned}) and waits for
    their records.

    @param runner: starts the children of the local runner types.
    @param nodeId: this node's name (a callable, since it is read from the
        state folder once the daemon starts).
    @param resolveScript: finds script actions' entry points.
    @param tokens: issues and revokes each execution's child token, or
        None for no C{ST2_ACTION_AUTH_TOKEN}.
    @param runners: the runners of other runner types, by runner type name
        (C{http-request}); the local types run through L{LocalActions}.
    """

    def __init__(
        self,
        store: IStore,
        executions: ExecutionService,
        runner: IRunner,
        clock: IReactorTime,
        maxConcurrent: int,
        apiURL: str,
        nodeId: Callable[[], str],
        resolveScript: ScriptResolver,
        tokens: Optional[ChildTokens] = None,
        pollInterval: float = 1.0,
        runners: Optional[Mapping[str, IActionRunner]] = None,
    ) -> None:
        self._store = store
        self._executions = executions
        local = LocalActions(runner, apiURL, resolveScript, tokens)
        self._runners: Dict[str, IActionRunner] = {LOCAL_SHELL_CMD: local, LOCAL_SHELL_SCRIPT: local, **(runners or {})}
        self._clock = clock
        self._max = maxConcurrent
        self._nodeId = nodeId
        self._pollInterval = pollInterval
        self._running: Dict[str, IRunningAction] = {}
        self._active: Dict[str, Deferred] = {}
        #: executions holding a runner slot: from their claim until their
        #: child has ended (the final write then goes on without the slot)
        self._busy: set = set()
        self._claiming = 0
        self._stopping = False
        self._sweepPending = False
        self._sweepAgain = False
        self._loop: Optional[LoopingCall] = None

    @property
    def runningCount(self) -> int:
        return len(self._running)

    def _free(self) -> int:
        return self._max - len(self._busy) - self._claiming

    # -- service ---------------------------------------------------------

    def startService(self) -> Deferred:  # type: ignore[override]
        """
        Settle this node's leftovers, then claim queued work; the Deferred
        fires once claiming has begun.
        """
        super().startService()
        self._stopping = False
        return ensureDeferred(self._start())

    async def _start(self) -> None:
        await self.recover()
        if not self.running:
            return
        self._executions.addQueueListener(self.wake)
        self._loop = LoopingCall(self._tick)
        self._loop.clock = self._clock
        self._loop.start(self._pollInterval, now=True).addErrback(lambda f: log.failure("executor poll loop died", f))

    async def recover(self) -> None:
        """
        Executions this node left C{running} or C{scheduled} when it died:
        running ones are C{abandoned} (their children died with it), claimed
        but not yet started ones go back to the queue.
        """
        left = await self._store.find("executions", {"status": {"$in": ["running", "scheduled"]}, "node": self._nodeId()})
        for doc in left:
            settled = await self._executions.settleOrphan(doc, "bwcd stopped while the action was running")
            if settled is not None and settled["status"] == "abandoned":
                log.warn("Execution {execution_id} abandoned: bwcd died while it ran", execution_id=doc["id"])

    def stopService(self) -> Deferred:  # type: ignore[override]
        """
        Claim nothing more; stop running children (their executions end
        C{abandoned}) and fire once their records are written.
        """
        self._stopping = True
        super().stopService()
        return ensureDeferred(self._stop())

    async def _stop(self) -> None:
        self._executions.removeQueueListener(self.wake)
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        for execId, proc in list(self._running.items()):
            log.info("Stopping execution {execution_id} for shutdown", execution_id=execId)
            proc.kill(ABANDONED)
        if self._active:
            await DeferredList(list(self._active.values()), consumeErrors=True)

    # -- claiming --------------------------------------------------------

    def wake(self) -> None:
        """
        Look for queued work on the next turn of the reactor.
        """
        if self._stopping or not self.running:
            return
        self._clock.callLater(0, self._sweep)

    def _tick(self) -> None:
        released = ensureDeferred(self._executions.releaseDelayed())
        released.addErrback(lambda f: log.failure("Releasing delayed executions failed", f))
        self._sweep()
        self._checkCanceled()
        ensureDeferred(self._executions.refreshQueued()).addErrback(lambda f: log.failure("Counting queued executions failed", f))

    def _sweep(self) -> None:
        if self._stopping or self._free() <= 0:
            return
        if self._sweepPending:
            # an execution queued while the claim loop runs may have missed
            # its last query: look again once it ends, not at the next poll
            self._sweepAgain = True
            return
        self._sweepPending = True
        self._sweepAgain = False
        d = ensureDeferred(self._claimLoop())
        d.addErrback(lambda f: log.failure("Claiming queued executions failed", f))

        def done(_):
            self._sweepPending = False
            if self._sweepAgain:
                self._sweep()

        d.addBoth(done)

    async def _claimLoop(self) -> None:
        """
        Fill every free slot: one claim per slot, all sent at once, so that
        a burst of requests is claimed in one store round trip (one commit
        for SQLite) rather than one trip per execution.
        """
        while not self._stopping and self._free() > 0:
            wanted = self._free()
            self._claiming += wanted
            try:
                claims = await gatherResults([self._claimOne() for _ in range(wanted)], consumeErrors=True)
            finally:
                self._claiming -= wanted
            found = [doc for doc in claims if doc is not None]
            self._executions.claimed(found)
            for doc in found:
                self._launch(doc)
            if len(found) < wanted:
                return

    def _claimOne(self) -> Deferred:
        now = self._executions.now()
        return self._store.update(
            "executions",
            {"status": "requested"},
            set={"status": "scheduled", "node": self._nodeId(), "_updated_at": now},
            push={"log": {"status": "scheduled", "timestamp": now}},
            sort=[("start_timestamp", 1)],
        )

    def _launch(self, doc: dict) -> None:
        self._busy.add(doc["id"])
        d = ensureDeferred(self._run(doc))
        self._active[doc["id"]] = d
        d.addErrback(lambda f: log.failure("Execution {execution_id} crashed the executor", f, execution_id=doc["id"]))

        def done(_):
            self._active.pop(doc["id"], None)
            self._running.pop(doc["id"], None)
            self._releaseSlot(doc["id"])

        d.addBoth(done)

    def _releaseSlot(self, execId: str) -> None:
        if execId in self._busy:
            self._busy.discard(execId)
            self.wake()

    async def _checkCanceledAsync(self) -> None:
        if not self._running:
            return
        docs = await self._store.find("executions", {"id": {"$in": list(self._running)}, "status": "canceled"})
        for doc in docs:
            proc = self._running.get(doc["id"])
            if proc is not None:
                proc.kill(CANCELED)

    def _checkCanceled(self) -> None:
        ensureDeferred(self._checkCanceledAsync()).addErrback(lambda f: log.failure("Cancel check failed", f))

    def cancelLocal(self, execId: str) -> None:
        """
        Kill the child of C{execId} now if this process runs it.
        """
        proc = self._running.get(execId)
        if proc is not None:
            proc.kill(CANCELED)

    # -- running ---------------------------------------------------------

    async def _run(self, doc: dict) -> None:
        execId = doc["id"]
        try:
            runner = self._runnerFor(doc["action"]["runner_type"])
            doc = self._executions.unsealed(doc)
            launch = await runner.prepare(doc)
        except Exception as e:
            log.failure("Execution {execution_id} could not be prepared", execution_id=execId)
            await self._executions.transition(execId, ["scheduled"], "failed", result={"error": str(e), "traceback": repr(e)})
            return
        try:
            await self._runPrepared(doc, runner, launch)
        finally:
            try:
                await runner.release(launch)
            except Exception:
                log.failure("Releasing the resources of execution {execution_id} failed", execution_id=execId)

    def _runnerFor(self, runnerType: str) -> IActionRunner:
        runner = self._runners.get(runnerType)
        if runner is None:
            raise ValueError(f'Runner "{runnerType}" is not available on this node')
        return runner

    async def _runPrepared(self, doc: dict, runner: IActionRunner, launch: object) -> None:
        execId = doc["id"]
        action = doc["action"]
        seq = [0]

        def onOutput(stream: str, data: bytes) -> None:
            seq[0] += 1
            ensureDeferred(self._store.insert("execution_output", {
                "execution_id": execId,
                "seq": seq[0],
                "action_ref": action["ref"],
                "runner_ref": action["runner_type"],
                "timestamp": self._executions.now(),
                "output_type": stream,
                "data": data.decode("utf-8", "replace"),
            })).addCallback(self._executions.outputStored).addErrback(lambda f: log.failure("Storing output of {execution_id} failed", f, execution_id=execId))

        # The "running" record is written while the child starts rather than
        # before: waiting for it would add a store round trip to every
        # execution's start.  If the execution was canceled while it was
        # scheduled, the conditional update finds nothing and the child is
        # killed at once.  Writes reach the store in order, so the final
        # status can never land before "running".
        markRunning = ensureDeferred(self._executions.transition(
            execId, ["scheduled"], "running",
            **{"liveaction.runner_info": {"hostname": socket.gethostname(), "pid": os.getpid()}},
        ))
        try:
            proc = runner.start(doc, launch, onOutput)
        except OSError as e:
            if await markRunning is not None:
                await self._executions.transition(execId, ["running"], "failed", startTimestamp=doc["start_timestamp"], result={"error": f"Unable to start the action: {e}", "traceback": repr(e)})
            return
        self._running[execId] = proc
        if await markRunning is None:
            proc.kill(CANCELED)
        outcome = await proc.result
        self._running.pop(execId, None)
        # The child has ended: its slot can take the next execution while
        # the result is written (the store keeps the writes in order).
        self._releaseSlot(execId)
        await self._executions.transition(execId, ["running"], outcome.status, startTimestamp=doc["start_timestamp"], result=outcome.result)
        log.info(
            "Execution {execution_id} of {action} {status} (pid {pid}, exit {return_code})",
            execution_id=execId, action=action["ref"], status=outcome.status, pid=outcome.pid, return_code=outcome.return_code,
        )


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


__all__ = ["COMPLETED", "Executor", "Launch", "LocalActions", "ScriptResolver"]
