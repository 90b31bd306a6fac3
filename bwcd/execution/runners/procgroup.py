# -*- test-case-name: tests.test_runner_local -*-
"""
Ending a child and everything it started: its process group.

Every child is started as C{setsid <argv...>} so that it leads a new process
group whose id is its pid.  Killing that group is what stops a shell command
I{and} everything it started; killing only the pid would leave the
grandchildren running and, because they keep the output pipes open, delay
C{processEnded} until they exit on their own.

Ending a process (timeout, cancel, shutdown) is one sequence
(L{KillSequence}): SIGTERM to the group, SIGKILL to the group after a grace
period, then, if the pipes are still not closed after another grace period
(a grandchild that escaped into its own session holds them), our pipe ends
are closed; a last grace period later the run is reported ended whatever
happened.
"""

from __future__ import annotations

import os
import shutil
import signal
from typing import Any, Callable, Optional

from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

_log = Logger(namespace="bwcd.execution.runners.procgroup")


def findSetsid() -> str:
    """
    The absolute path of C{setsid} (util-linux, Essential on Debian).

    @raise RuntimeError: when it cannot be found; running actions without
        process groups would leak their grandchildren, so refuse instead.
    """
    found = shutil.which("setsid") or ("/usr/bin/setsid" if os.access("/usr/bin/setsid", os.X_OK) else None)
    if found is None:
        raise RuntimeError("setsid (util-linux) not found; it is needed to run actions")
    return os.path.abspath(found)


def signalGroup(
    pid: int,
    sig: int,
    reaped: bool,
    killpg: Callable[[int, int], None] = os.killpg,
    kill: Callable[[int, int], None] = os.kill,
) -> None:
    """
    Send C{sig} to the process group C{pid} leads.

    @param reaped: the child itself has been reaped, so its pid may belong
        to someone else now and must not be signalled on its own.
    """
    try:
        killpg(pid, sig)
    except ProcessLookupError:
        # No such group: either it is gone, or the child has not yet called
        # setsid() (killed right after the start).  In the latter case it
        # has no children yet and signalling the pid suffices; the pid is
        # still ours because the child has not been reaped.
        if not reaped:
            try:
                kill(pid, sig)
            except ProcessLookupError:
                pass
    except PermissionError:
        # A group whose members all run as another user (sudo).
        _log.warn("Not allowed to signal process group {pid} with {sig}", pid=pid, sig=sig)


class KillSequence:
    """
    SIGTERM, then SIGKILL, then closing the pipes, then giving up, each a
    grace period after the one before; L{cancel} once the process has
    ended.

    @param send: C{send(signal)} signals the group.
    @param closePipes: closes our ends of the child's pipes.
    @param giveUp: reports the process ended although it did not say so.
    """

    def __init__(
        self,
        clock: IReactorTime,
        grace: float,
        pid: int,
        send: Callable[[int], None],
        closePipes: Callable[[], Any],
        giveUp: Callable[[], Any],
    ) -> None:
        self._clock = clock
        self._grace = grace
        self._pid = pid
        self._send = send
        self._closePipes = closePipes
        self._giveUp = giveUp
        self._stage = 0
        self._call: Optional[IDelayedCall] = None

    def start(self) -> None:
        self._send(signal.SIGTERM)
        self._stage = 1
        self._call = self._clock.callLater(self._grace, self._escalate)

    def cancel(self) -> None:
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None

    def _escalate(self) -> None:
        self._call = None
        if self._stage == 1:
            self._send(signal.SIGKILL)
        elif self._stage == 2:
            _log.warn("Process group {pid} still holds its output pipes after SIGKILL; closing them", pid=self._pid)
            self._closePipes()
        else:
            _log.error("Process {pid} did not end after SIGKILL; reporting it as ended", pid=self._pid)
            self._giveUp()
            return
        self._stage += 1
        self._call = self._clock.callLater(self._grace, self._escalate)


__all__ = ["KillSequence", "findSetsid", "signalGroup"]
