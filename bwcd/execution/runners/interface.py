# -*- test-case-name: tests.test_executor -*-
"""
What the executor needs from a runner, and what a run gives back.

Two levels:

  - L{IActionRunner} is what the executor sees, one per runner type: it
    turns an execution document into an invocation (L{IActionRunner.prepare}),
    starts it and releases what preparing took.  Each runner type prepares
    its own invocation (a command line and environment for the local
    runners, a request for the http runner), so the executor has no
    per-runner branches;
  - L{IRunner} starts local processes from a command line and an
    environment; the local runners' L{IActionRunner} (in
    L{bwcd.execution.executor}) builds those and hands them to it, so
    another process runner (a remote one, or the fake of the executor's unit
    tests) can take the local one's place.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, Generic, Mapping, Optional, Protocol, Sequence, TypeVar

from attrs import frozen
from twisted.internet.defer import Deferred

# the kill reasons, which are also the final status of the execution
from bwcd.execution.runners.result import ABANDONED, CANCELED, TIMEOUT

#: C{on_output(stream, chunk)}: C{stream} is C{"stdout"} or C{"stderr"}
OutputCallback = Callable[[str, bytes], None]


@frozen
class RunResult:
    """
    How a run ended.

    @ivar status: the execution status it implies: C{succeeded}, C{failed},
        C{timeout}, C{canceled} or C{abandoned}.
    @ivar result: the st2 result document (see L{bwcd.execution.runners.result}).
    @ivar return_code: as in C{result}: the exit status, minus the signal
        number when killed by a signal, -9 on timeout, -15 when abandoned;
        C{None} for runners without a process (http).
    @ivar pid: the child's pid (and process group id); C{None} for runners
        without a process.
    @ivar ended_by: C{None} when the process ended by itself, otherwise the
        reason it was killed (C{timeout}, C{canceled}, C{abandoned}).
    """

    status: str
    result: Dict[str, Any]
    return_code: Optional[int]
    pid: Optional[int]
    ended_by: Optional[str]
    stdout_truncated: bool
    stderr_truncated: bool


class IRunningAction(Protocol):
    """
    An action started by an L{IRunner}.

    @ivar result: fires with a L{RunResult} once the run has ended; it never
        errbacks.
    """

    result: "Deferred[RunResult]"

    def kill(self, reason: str) -> None:
        """
        End the run early; C{reason} (L{TIMEOUT}, L{CANCELED} or
        L{ABANDONED}) becomes its status.  Later calls change nothing.
        """


class IRunner(Protocol):
    """
    Starts actions.
    """

    def prepareScript(self, path: str) -> None:
        """
        Make a script action's entry point runnable (st2 makes it
        executable before it runs it); failures are left for the run to
        report.
        """

    def start(
        self,
        argv: Sequence[str],
        env: Mapping[str, str],
        cwd: Optional[str] = None,
        timeout: Optional[float] = None,
        on_output: Optional[OutputCallback] = None,
        stdin: Optional[bytes] = None,
        sudo_password_used: bool = False,
    ) -> IRunningAction:
        """
        Start C{argv} with exactly C{env}.

        @raise OSError: it could not be started.
        """


Prepared = TypeVar("Prepared")


class IActionRunner(Protocol, Generic[Prepared]):
    """
    Runs the executions of the runner types it is registered for.

    The executor calls L{prepare}, then L{start} (while it records the
    execution as running), and L{release} once the run has ended or could
    not start, whatever happened.
    """

    async def prepare(self, doc: Dict[str, Any]) -> Prepared:
        """
        Build the invocation of the execution C{doc} (its action, and its
        full rendered parameters in C{doc["_parameters"]}).

        @raise Exception: the execution cannot run; it fails with the
            exception's message as C{error}.
        """

    def start(self, doc: Dict[str, Any], prepared: Prepared, on_output: OutputCallback) -> IRunningAction:
        """
        Start what L{prepare} built.

        @raise OSError: it could not be started; the execution fails with
            C{"Unable to start the action: <reason>"}.
        """

    async def release(self, prepared: Prepared) -> None:
        """
        Give back what L{prepare} took (a child's token); it should not
        raise, and what it raises is only logged.
        """


__all__ = [
    "ABANDONED",
    "CANCELED",
    "TIMEOUT",
    "IActionRunner",
    "IRunner",
    "IRunningAction",
    "OutputCallback",
    "RunResult",
]
