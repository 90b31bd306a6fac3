# -*- test-case-name: tests.test_runner_local -*-
"""
The local runner: action processes on this host, each in its own process
group (L{bwcd.execution.runners.procgroup}), captured and timed by
L{bwcd.execution.runners.process}.

The C{setsid} prefix is used instead of a C{setpgid} in the child because
Twisted starts children with C{posix_spawnp} (no Python code runs in the
child) whenever no C{path}, C{uid} or C{gid} is given, and that path is
several times faster than C{fork}.  Only when a working directory is
requested is C{path} passed, which makes Twisted fall back to C{fork}; that
is rare.
"""

from __future__ import annotations

import errno
import os
from typing import Any, Dict, List, Mapping, Optional, Sequence

from twisted.internet.defer import Deferred, DeferredList, fail

from bwcd.execution.runners.interface import OutputCallback, RunResult
from bwcd.execution.runners.process import ChildProtocol, RunningProcess
from bwcd.execution.runners.procgroup import findSetsid, signalGroup
from bwcd.execution.runners.result import ABANDONED, CANCELED, TIMEOUT

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

DEFAULT_OUTPUT_MAX_BYTES = 4 * 1024 * 1024

# Indirection so tests with a fake reactor (and fake pids) never signal real
# process groups.
_killpg = os.killpg
_kill = os.kill


def _signal(pid: int, sig: int, reaped: bool) -> None:
    signalGroup(pid, sig, reaped, killpg=_killpg, kill=_kill)


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


class LocalRunner:
    """
    Starts action processes and ends them on timeout, cancel or shutdown
    (an L{bwcd.execution.runners.interface.IRunner}).

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

    def prepareScript(self, path: str) -> None:
        ensureExecutable(path)

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
            signaller=_signal,
        )
        protocol = ChildProtocol(running, stdin)
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

    def run(self, *args: Any, **kwargs: Any) -> "Deferred[RunResult]":
        """
        L{start} (same arguments) and wait: fires with the L{RunResult}, or
        fails with the error that prevented the start.
        """
        try:
            running = self.start(*args, **kwargs)
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
