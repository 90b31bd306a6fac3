# -*- test-case-name: tests.test_runner_local -*-
"""
One started child: its process protocol, bounded output capture, timeout,
and the L{RunResult} it ends with.

Output is captured up to C{output_max_bytes} per stream.  Beyond that the
bytes are read (so the child never blocks on a full pipe) and dropped, and
the result says C{"stdout_truncated": true} / C{"stderr_truncated": true}.
Those keys are absent when nothing was dropped, so ordinary results are
exactly st2's.  Every timer is cancelled as soon as the process has ended.
"""

from __future__ import annotations

from typing import Any, Callable, Optional

from twisted.internet.defer import Deferred
from twisted.internet.error import ProcessDone, ProcessTerminated
from twisted.internet.interfaces import IDelayedCall
from twisted.internet.protocol import ProcessProtocol
from twisted.logger import Logger
from twisted.python.failure import Failure

from bwcd.execution.runners.interface import OutputCallback, RunResult
from bwcd.execution.runners.procgroup import KillSequence
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

_STREAMS = {1: "stdout", 2: "stderr"}

_log = Logger(namespace="bwcd.execution.runners.local")

#: C{signaller(pid, signal, reaped)}: signals the process group C{pid}
Signaller = Callable[[int, int, bool], None]


class ChildProtocol(ProcessProtocol):
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
    A started child process (an L{bwcd.execution.runners.interface.IRunningAction}).

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
        signaller: Optional[Signaller] = None,
    ) -> None:
        self._reactor = reactor
        self._onFinished = on_finished
        self._signaller = signaller
        self._timeoutSeconds = timeout
        self._grace = kill_grace
        self._max = output_max_bytes
        self._onOutput = on_output
        self._sudoPassword = sudo_password_used
        self._buffers = {"stdout": bytearray(), "stderr": bytearray()}
        self._truncated = {"stdout": False, "stderr": False}
        self._endedBy: Optional[str] = None
        self._timeoutCall: Optional[IDelayedCall] = None
        self._killing: Optional[KillSequence] = None
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
            self._timeoutCall = self._reactor.callLater(self._timeoutSeconds, self.kill, TIMEOUT)

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
        Stop the process group (see L{KillSequence}).  The first reason
        given decides the final status; later calls (a cancel racing a
        timeout) change nothing.

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
        self._killing = KillSequence(
            self._reactor,
            self._grace,
            self.pid,
            self._signal,
            lambda: self._transport.loseConnection(),
            lambda: self._finish(None),
        )
        self._killing.start()

    def _signal(self, sig: int) -> None:
        if self._signaller is not None:
            self._signaller(self.pid, sig, self._exited)

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
        if self._timeoutCall is not None and self._timeoutCall.active():
            self._timeoutCall.cancel()
        self._timeoutCall = None
        if self._killing is not None:
            self._killing.cancel()

    def _finish(self, reason: Optional[Failure]) -> None:
        self._done = True
        self._cancelTimers()
        returnCode = returnCodeFor(reason)
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


def returnCodeFor(reason: Optional[Failure]) -> int:
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


__all__ = ["ChildProtocol", "RunningProcess", "Signaller", "returnCodeFor"]
