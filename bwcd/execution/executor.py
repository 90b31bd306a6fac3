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

from twisted.application.service import Service
from twisted.internet.defer import Deferred, DeferredList, ensureDeferred, gatherResults
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall, deferLater
from twisted.logger import Logger

from bwcd.execution.localactions import Launch, LocalActions, ScriptResolver
from bwcd.execution.runners.interface import ABANDONED, CANCELED, IActionRunner, IRunner, IRunningAction
from bwcd.execution.runners.types import LOCAL_SHELL_CMD, LOCAL_SHELL_SCRIPT
from bwcd.execution.resultcap import DEFAULT_RESULT_MAX_BYTES, capResult, minimalResult
from bwcd.execution.service import COMPLETED, ExecutionService
from bwcd.execution.tokens import ChildTokens
from bwcd.store.interface import IStore, StoreUnavailable

log = Logger(namespace="bwcd.execution.executor")


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
    @param resultMaxBytes: the largest result stored (L{capResult}).
    @param retryFirst: seconds before the first retry of a failed write
        of an execution's status, doubled at each retry up to C{retryMax}.
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
        resultMaxBytes: int = DEFAULT_RESULT_MAX_BYTES,
        retryFirst: float = 0.5,
        retryMax: float = 30.0,
    ) -> None:
        self._store = store
        self._resultMaxBytes = resultMaxBytes
        self._retryFirst = retryFirst
        self._retryMax = retryMax
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
        #: asked before each claim loop: False while this node may be taken
        #: for dead (its heartbeat failed or lags), so it claims nothing new
        #: (L{bwcd.execution.nodes.NodeWatch.gateClaims}); None: always claim
        self.claimGate: Optional[Callable[[], bool]] = None

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

    def _mayClaim(self) -> bool:
        return not self._stopping and self._free() > 0 and (self.claimGate is None or self.claimGate())

    def _sweep(self) -> None:
        if not self._mayClaim():
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
        while self._mayClaim():
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
        docs = await self._store.find("executions", {"id": {"$in": list(self._running)}})
        me = self._nodeId()
        for doc in docs:
            proc = self._running.get(doc["id"])
            if proc is None:
                continue
            if doc["status"] == "canceled":
                proc.kill(CANCELED)
            elif doc.get("node") != me or doc["status"] != "running":
                # settled elsewhere while this node was paused (its record
                # says abandoned, or another node owns it now): the child
                # must not keep running unrecorded
                log.warn(
                    "Execution {execution_id} is {status} on {node} now: stopping this node's child",
                    execution_id=doc["id"], status=doc["status"], node=doc.get("node"),
                )
                proc.kill(ABANDONED)

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
            await self._finish(doc, ["scheduled"], "failed", {"error": str(e), "traceback": repr(e)})
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

        # "running", with this node, is recorded before the child is
        # spawned: a child is never started for an execution that the store
        # still shows as claimed but unstarted (and that a restart or
        # another node would therefore run a second time).  It costs one
        # store round trip per start.
        node = self._nodeId()
        try:
            marked = await self._executions.transition(
                execId, ["scheduled"], "running", node=node,
                **{"liveaction.runner_info": {"hostname": socket.gethostname(), "pid": os.getpid()}},
            )
        except Exception as e:
            log.error("Execution {execution_id} not started: recording it running failed ({error})", execution_id=execId, error=str(e))
            await self._giveBack(doc)
            return
        if marked is None:
            log.info("Execution {execution_id} not started: it was canceled or is no longer this node's", execution_id=execId)
            return
        try:
            proc = runner.start(doc, launch, onOutput)
        except Exception as e:
            log.error("Execution {execution_id} could not be started: {error!r}", execution_id=execId, error=e)
            await self._finish(doc, ["running"], "failed", {"error": f"Unable to start the action: {e}", "traceback": repr(e)})
            return
        self._running[execId] = proc
        try:
            outcome = await proc.result
        except Exception as e:
            log.failure("Execution {execution_id}: the runner failed", execution_id=execId)
            await self._finish(doc, ["running"], "failed", {"error": f"The runner failed: {e}", "traceback": repr(e)})
            return
        finally:
            self._running.pop(execId, None)
            # The child has ended: its slot can take the next execution
            # while the result is written.
            self._releaseSlot(execId)
        fields = {} if outcome.pid is None else {"liveaction.runner_info.child_pid": outcome.pid}
        await self._finish(doc, ["running"], outcome.status, outcome.result, **fields)
        log.info(
            "Execution {execution_id} of {action} {status} (pid {pid}, exit {return_code})",
            execution_id=execId, action=action["ref"], status=outcome.status, pid=outcome.pid, return_code=outcome.return_code,
        )

    # -- recording -------------------------------------------------------

    async def _finish(self, doc: dict, fromStatuses: List[str], status: str, result: dict, **fields: object) -> None:
        """
        Record how an execution ended, as this node's change: its result
        capped at C{resultMaxBytes}, the write retried with backoff while
        the store is unavailable, and, when the store refuses the document
        (too large for MongoDB, a value it cannot hold), once more with
        what is left of the result (L{minimalResult}).  An execution this
        node no longer owns is not recorded, only logged.
        """
        execId = doc["id"]
        try:
            result = capResult(result, self._resultMaxBytes)
        except Exception as e:
            result = minimalResult(result, f"The result could not be stored: {e}")
        degraded = False

        def write() -> Deferred:
            return ensureDeferred(self._executions.transition(
                execId, fromStatuses, status, startTimestamp=doc["start_timestamp"], node=self._nodeId(), result=result, **fields
            ))

        attempt = 0
        while True:
            try:
                updated = await write()
                break
            except StoreUnavailable as e:
                error: Exception = e
            except Exception as e:
                error = e
                if not degraded:
                    degraded = True
                    log.error("The result of execution {execution_id} was refused ({error}): storing what is left of it", execution_id=execId, error=str(e))
                    result = minimalResult(result, f"The result could not be stored: {e}")
                    continue
            if self._stopping and attempt >= 1:
                log.error("Execution {execution_id} ended {status} but could not be recorded before shutdown: {error}", execution_id=execId, status=status, error=str(error))
                return
            delay = min(self._retryMax, self._retryFirst * (2 ** attempt))
            attempt += 1
            log.warn("Recording execution {execution_id} {status} failed ({error}); retrying in {delay}s", execution_id=execId, status=status, error=str(error), delay=delay)
            await deferLater(self._clock, delay, lambda: None)
        if updated is None:
            await self._lost(execId, status)

    async def _lost(self, execId: str, status: str) -> None:
        """
        A change this node wanted to record found the execution no longer
        its own (re-queued and run elsewhere) or already ended (canceled):
        say so, since the other record stands.
        """
        try:
            current = await self._store.get("executions", execId)
        except Exception:
            current = None
        if current is not None and current.get("status") == "canceled" and current.get("node") == self._nodeId():
            return
        log.warn(
            "Execution {execution_id} ended {status} here but is not this node's any more "
            "(now {current_status} on {current_node}): not recorded",
            execution_id=execId, status=status,
            current_status=None if current is None else current.get("status"),
            current_node=None if current is None else current.get("node"),
        )

    async def _giveBack(self, doc: dict) -> None:
        """
        Put an execution whose start could not be recorded back in the
        queue: nothing was spawned, so running it (here or elsewhere) later
        is its first run.  The failed write may have reached the store, so
        a C{running} record of this node's is given back too.  Retried with
        backoff until it succeeds or the executor stops (then a restart's
        L{recover} does it).
        """
        attempt = 0
        while True:
            try:
                requeued = await self._store.update(
                    "executions",
                    {"id": doc["id"], "node": self._nodeId(), "status": {"$in": ["scheduled", "running"]}},
                    set={"status": "requested", "node": None, "_updated_at": self._executions.now()},
                    push={"log": {"status": "requested", "timestamp": self._executions.now()}},
                )
                break
            except Exception as e:
                if self._stopping:
                    log.error("Execution {execution_id} left claimed at shutdown: {error}", execution_id=doc["id"], error=str(e))
                    return
                delay = min(self._retryMax, self._retryFirst * (2 ** attempt))
                attempt += 1
                await deferLater(self._clock, delay, lambda: None)
        if requeued is not None:
            self._executions.requeued(requeued)


__all__ = ["COMPLETED", "Executor", "Launch", "LocalActions", "ScriptResolver"]
