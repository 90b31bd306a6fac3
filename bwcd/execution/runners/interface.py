# -*- test-case-name: tests.test_executor -*-
"""
What the executor needs from a runner, and what a run gives back.

The executor builds the command line and environment of an action and hands
them to a runner through this interface only, so another runner (a remote
one, or the fake of the executor's unit tests) can take the local one's
place without the executor changing.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, Mapping, Optional, Protocol, Sequence

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
        number when killed by a signal, -9 on timeout, -15 when abandoned.
    @ivar pid: the child's pid (and process group id).
    @ivar ended_by: C{None} when the process ended by itself, otherwise the
        reason it was killed (C{timeout}, C{canceled}, C{abandoned}).
    """

    status: str
    result: Dict[str, Any]
    return_code: int
    pid: int
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


__all__ = ["ABANDONED", "CANCELED", "TIMEOUT", "IRunner", "IRunningAction", "OutputCallback", "RunResult"]
