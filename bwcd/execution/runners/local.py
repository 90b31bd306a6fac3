# -*- test-case-name: tests.test_runner_local -*-
"""
Running the child processes of the local shell runners.

Every child is started as C{setsid <argv...>} so that it leads a new process
group whose id is its pid.  Killing that group is what stops a shell command
I{and} everything it started; killing only the pid would leave the
grandchildren running and, because they keep the output pipes open, delay
C{processEnded} until they exit on their own.  The C{setsid} prefix is used
instead of a C{setpgid} in the child because Twisted starts children with
C{posix_spawnp} (no Python code runs in the child) whenever no C{path},
C{uid} or C{gid} is given, and that path is several times faster than
C{fork}.  Only when a working directory is requested is C{path} passed, which
makes Twisted fall back to C{fork}; that is rare.

Ending a process (timeout, cancel, shutdown) is one sequence: SIGTERM to the
group, SIGKILL to the group after C{kill_grace} seconds, then, if the pipes
are still not closed after another grace period (a grandchild that escaped
into its own session holds them), our pipe ends are closed; a last grace
period later the result is reported whatever happened.  Every timer is
cancelled as soon as the process has ended.

Output is captured up to C{output_max_bytes} per stream.  Beyond that the
bytes are read (so the child never blocks on a full pipe) and dropped, and
the result says C{"stdout_truncated": true} / C{"stderr_truncated": true}.
Those keys are absent when nothing was dropped, so ordinary results are
exactly st2's.
"""

from __future__ import annotations

import errno
import os
import shutil
import signal
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence

from attrs import frozen
from twisted.internet.defer import Deferred, DeferredList, fail
from twisted.internet.error import ProcessDone, ProcessTerminated
from twisted.internet.interfaces import IDelayedCall
from twisted.internet.protocol import ProcessProtocol
from twisted.logger import Logger
from twisted.python.failure import Failure

from bwcd.execution.runners.result import (
    ABANDONED,
    CANCELED,
    SIGKILL_EXIT_CODE,
    SIGTERM_EXIT_CODE,
    TIMEOUT,
    buildResult,
    decodeOutput,
    statusForExitCode,
    timeoutError,
)

__all__ = [
    "ABANDONED",
    "CANCELED",
    "TIMEOUT",
    "LocalRunner",
    "OutputCallback",
    "RunResult",
    "RunningProcess",
    "ensureExecutable",
    "findSetsid",
]

OutputCallback = Callable[[str, bytes], None]

DEFAULT_OUTPUT_MAX_BYTES = 4 * 1024 * 1024

_STREAMS = {1: "stdout", 2: "stderr"}

_log = Logger(namespace="bwcd.execution.runners.local")

# Indirection so tests with a fake reactor (and fake pids) never signal real
# process groups.
_killpg = os.killpg
_kill = os.kill


def findSetsid() -> str:
    """
    The absolute path of C{setsid} (util-linux, Essential on Debian).

    @raise RuntimeError: when it cannot be found; running actions without
        process groups would leak their grandchildren, so refuse instead.
    """
    found = shutil.which("setsid") or (
        "/usr/bin/setsid" if os.access("/usr/bin/setsid", os.X_OK) else None
    )
    if found is None:
        raise RuntimeError("setsid (util-linux) not found; it is needed to run actions")
    return os.path.abspath(found)


def ensureExecutable(path: str) -> None:
    """
    Make a script action's entry point executable, as st2 does with
    C{chmod +x} before running it, so pack authors need not care about file
    modes.  Failures (read-only filesystem, a file owned by someone else)
    are ignored: running the script then reports the problem.
    """
    try:
        mode = os.stat(path).st_mode
        if mode & 0o111 != 0o111:
            os.chmod(path, mode | 0o111)
    except OSError:
        pass


@frozen
class RunResult:
    """
    How a child process ended.

    @ivar status: the execution status it implies: C{succeeded}, C{failed},
        C{timeout}, C{canceled} or C{abandoned}.
    @ivar result: the st2 result document (see L{bwcd.execution.runners.result}).
    @ivar return_code: as in C{result}: the exit status, minus the signal
        number when killed by a signal, -9 on timeout, -15 when abandoned.
    @ivar pid: the child's pid (and process group id).
    @ivar ended_by: C{None} when the process ended by itself, otherwise the
        reason we killed it (C{timeout}, C{canceled}, C{abandoned}).
    """

    status: str
    result: Dict[str, Any]
    return_code: int
    pid: int
    ended_by: Optional[str]
    stdout_truncated: bool
    stderr_truncated: bool


class _ChildProtocol(ProcessProtocol):
    """
    Feeds stdin, collects bounded output, and tells its L{RunningProcess}
    when the child (and every holder of its pipes) is gone.
    """

    def __init__(self, owner: "RunningProcess", stdin: Optional[bytes]) -> None:
        self._owner = owner
        self._stdin = stdin

    def connectionMade(self) -> None:
        # Runs inside spawnProcess, before Twisted first tries to reap the
        # child; a child that exits at once may be reaped (and
        # transport.pid reset to None) before spawnProcess even returns.
        self._owner._started(self.transport)
        if self._stdin:
            self.transport.write(self._stdin)
        self.transport.closeStdin()

    def childDataReceived(self, childFD: int, data: bytes) -> None:
        stream = _STREAMS.get(childFD)
        if stream is not None:
            self._owner._output(stream, data)

    def processExited(self, reason: Failure) -> None:
        self._owner._exited = True

    def processEnded(self, reason: Failure) -> None:
        self._owner._ended(reason)


class RunningProcess:
    """
    A started child process.

    @ivar pid: the child's pid, which is also its process group id.
    @ivar result: fires with a L{RunResult} once the process has ended and
        its output pipes are closed.  It never errbacks.
    """

    def __init__(
        self,
        reactor: Any,
        timeout: Optional[float],
        kill_grace: float,
        output_max_bytes: int,
        on_output: Optional[OutputCallback],
        sudo_password_used: bool,
        on_finished: Optional[Callable[["RunningProcess"], object]] = None,
    ) -> None:
        self._reactor = reactor
        self._onFinished = on_finished
        self._timeoutSeconds = timeout
        self._grace = kill_grace
        self._max = output_max_bytes
        self._onOutput = on_output
        self._sudoPassword = sudo_password_used
        self._buffers = {"stdout": bytearray(), "stderr": bytearray()}
        self._truncated = {"stdout": False, "stderr": False}
        self._endedBy: Optional[str] = None
        self._killStage = 0
        self._timeoutCall: Optional[IDelayedCall] = None
        self._killCall: Optional[IDelayedCall] = None
        self._done = False
        self._exited = False
        self._transport: Any = None
        self.pid: int = 0
        self.result: Deferred[RunResult] = Deferred()

    @property
    def ended(self) -> bool:
        """
        Whether L{result} has fired.
        """
        return self._done

    @property
    def ended_by(self) -> Optional[str]:
        """
        The kill reason, once L{kill} has been called.
        """
        return self._endedBy

    def _started(self, transport: Any) -> None:
        self._transport = transport
        self.pid = transport.pid
        if self._timeoutSeconds and not self._done:
            self._timeoutCall = self._reactor.callLater(
                self._timeoutSeconds, self.kill, TIMEOUT
            )

    def cancel(self) -> None:
        """
        Stop the process because the execution was canceled.
        """
        self.kill(CANCELED)

    def abandon(self) -> None:
        """
        Stop the process because the daemon is shutting down.
        """
        self.kill(ABANDONED)

    def kill(self, reason: str) -> None:
        """
        Stop the process group: SIGTERM now, SIGKILL after the grace period.
        The first reason given decides the final status; later calls (a
        cancel racing a timeout) change nothing.

        @param reason: L{TIMEOUT}, L{CANCELED} or L{ABANDONED}.
        """
        if reason not in (TIMEOUT, CANCELED, ABANDONED):
            raise ValueError("unknown kill reason %r" % (reason,))
        if self._done or self._endedBy is not None:
            return
        self._endedBy = reason
        _log.info("Stopping process group {pid} ({reason})", pid=self.pid, reason=reason)
        if self._timeoutCall is not None and self._timeoutCall.active():
            self._timeoutCall.cancel()
        self._timeoutCall = None
        self._signal(signal.SIGTERM)
        self._killStage = 1
        self._killCall = self._reactor.callLater(self._grace, self._escalate)

    def _signal(self, sig: int) -> None:
        try:
            _killpg(self.pid, sig)
        except ProcessLookupError:
            # No such group: either it is gone, or the child has not yet
            # called setsid() (killed right after the start).  In the latter
            # case it has no children yet and signalling the pid suffices;
            # the pid is still ours because the child has not been reaped.
            if not self._exited:
                try:
                    _kill(self.pid, sig)
                except ProcessLookupError:
                    pass
        except PermissionError:
            # A group whose members all run as another user (sudo).
            _log.warn(
                "Not allowed to signal process group {pid} with {sig}", pid=self.pid, sig=sig
            )

    def _escalate(self) -> None:
        self._killCall = None
        if self._done:
            return
        if self._killStage == 1:
            self._signal(signal.SIGKILL)
        elif self._killStage == 2:
            _log.warn(
                "Process group {pid} still holds its output pipes after SIGKILL; closing them",
                pid=self.pid,
            )
            self._transport.loseConnection()
        else:
            _log.error(
                "Process {pid} did not end after SIGKILL; reporting it as ended", pid=self.pid
            )
            self._finish(None)
            return
        self._killStage += 1
        self._killCall = self._reactor.callLater(self._grace, self._escalate)

    def _output(self, stream: str, data: bytes) -> None:
        if self._done:
            return
        buf = self._buffers[stream]
        room = self._max - len(buf)
        if len(data) > room:
            self._truncated[stream] = True
            data = data[: max(room, 0)]
        if not data:
            return
        buf += data
        if self._onOutput is not None:
            try:
                self._onOutput(stream, data)
            except Exception:
                _log.failure("Output callback failed for process {pid}", pid=self.pid)

    def _ended(self, reason: Failure) -> None:
        if not self._done:
            self._finish(reason)

    def _cancelTimers(self) -> None:
        for call in (self._timeoutCall, self._killCall):
            if call is not None and call.active():
                call.cancel()
        self._timeoutCall = None
        self._killCall = None

    def _finish(self, reason: Optional[Failure]) -> None:
        self._done = True
        self._cancelTimers()
        returnCode = _returnCode(reason)
        error = None
        if self._endedBy == TIMEOUT:
            returnCode = SIGKILL_EXIT_CODE
            error = timeoutError(self._timeoutSeconds)
        elif self._endedBy == ABANDONED:
            returnCode = SIGTERM_EXIT_CODE
        result = buildResult(
            returnCode,
            decodeOutput(bytes(self._buffers["stdout"])),
            decodeOutput(bytes(self._buffers["stderr"])),
            error=error,
            sudo_password_used=self._sudoPassword,
        )
        for stream in ("stdout", "stderr"):
            if self._truncated[stream]:
                result[stream + "_truncated"] = True
        status = self._endedBy or statusForExitCode(result["return_code"])
        self._buffers = {"stdout": bytearray(), "stderr": bytearray()}
        runResult = RunResult(
            status=status,
            result=result,
            return_code=result["return_code"],
            pid=self.pid,
            ended_by=self._endedBy,
            stdout_truncated=self._truncated["stdout"],
            stderr_truncated=self._truncated["stderr"],
        )
        if self._onFinished is not None:
            self._onFinished(self)
        self.result.callback(runResult)


def _returnCode(reason: Optional[Failure]) -> int:
    """
    The st2 return code for how the process ended: its exit status, or
    minus the signal that killed it (like C{subprocess}).
    """
    if reason is None:
        return SIGKILL_EXIT_CODE
    value = reason.value
    if isinstance(value, ProcessDone):
        return 0
    if isinstance(value, ProcessTerminated):
        if value.signal is not None:
            return -value.signal
        if value.exitCode is not None:
            return value.exitCode
    return -1


class LocalRunner:
    """
    Starts action processes and ends them on timeout, cancel or shutdown.

    Concurrency limits are the caller's business; this class only keeps
    track of the processes alive so that L{abandonAll} can stop them.
    """

    def __init__(
        self,
        reactor: Any,
        output_max_bytes: int = DEFAULT_OUTPUT_MAX_BYTES,
        kill_grace: float = 2.0,
        setsid: Optional[str] = None,
    ) -> None:
        """
        @param reactor: an L{IReactorProcess} and L{IReactorTime} provider.
        @param output_max_bytes: bytes kept per stream (stdout, stderr).
        @param kill_grace: seconds between SIGTERM and SIGKILL.
        @param setsid: path of C{setsid}; found on C{PATH} when omitted.
        """
        self._reactor = reactor
        self._max = output_max_bytes
        self._grace = kill_grace
        self._setsid = setsid or findSetsid()
        self._running: Dict[int, RunningProcess] = {}

    @property
    def running(self) -> List[RunningProcess]:
        """
        The processes started and not yet ended.
        """
        return list(self._running.values())

    def start(
        self,
        argv: Sequence[str],
        env: Mapping[str, str],
        cwd: Optional[str] = None,
        timeout: Optional[float] = None,
        on_output: Optional[OutputCallback] = None,
        stdin: Optional[bytes] = None,
        sudo_password_used: bool = False,
    ) -> RunningProcess:
        """
        Start C{argv} in a new process group.

        @param env: the complete environment of the child (nothing is
            inherited from the daemon).
        @param cwd: working directory, or C{None} for the daemon's.
        @param timeout: seconds before the process group is killed and the
            result reports C{timeout}; C{None} or 0 for no limit (st2 treats
            a zero timeout as none as well).
        @param on_output: called with C{("stdout"|"stderr", chunk)} for each
            chunk of output as it is read, up to the output cap.
        @param stdin: bytes written to the child's stdin before it is
            closed (the sudo password line for C{sudo -S}).
        @param sudo_password_used: recognise sudo's wrong-password answer
            in stderr (see L{bwcd.execution.runners.result.buildResult}).

        @raise OSError: when the process cannot be started (for example
            C{FileNotFoundError} for a missing C{cwd}); the caller reports
            such errors as a failed execution with C{error} and
            C{traceback}.
        """
        if not argv:
            raise ValueError("empty argv")
        if cwd is not None and not os.path.isdir(cwd):
            raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), cwd)
        running = RunningProcess(
            self._reactor,
            timeout,
            self._grace,
            self._max,
            on_output,
            sudo_password_used,
            on_finished=lambda p: self._running.pop(p.pid, None),
        )
        protocol = _ChildProtocol(running, stdin)
        # path=None (or our own cwd) keeps Twisted on its posix_spawnp path;
        # see the module docstring.
        self._reactor.spawnProcess(
            protocol,
            self._setsid,
            [self._setsid, *argv],
            env=dict(env),
            path=cwd,
        )
        if not running.ended:
            self._running[running.pid] = running
        return running

    def run(
        self,
        argv: Sequence[str],
        env: Mapping[str, str],
        cwd: Optional[str] = None,
        timeout: Optional[float] = None,
        on_output: Optional[OutputCallback] = None,
        stdin: Optional[bytes] = None,
        sudo_password_used: bool = False,
    ) -> "Deferred[RunResult]":
        """
        L{start} and wait: fires with the L{RunResult}, or fails with the
        error that prevented the start.
        """
        try:
            running = self.start(argv, env, cwd, timeout, on_output, stdin, sudo_password_used)
        except Exception:
            return fail()
        return running.result

    def abandonAll(self) -> "Deferred[None]":
        """
        Stop every running process as C{abandoned} (daemon shutdown) and fire
        once all have ended, at most about three grace periods later.
        """
        processes = self.running
        for process in processes:
            process.abandon()
        results = DeferredList([p.result for p in processes], consumeErrors=True)
        return results.addCallback(lambda _: None)
