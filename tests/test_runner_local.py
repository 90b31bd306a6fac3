"""
Tests for L{bwcd.execution.runners.local} and L{bwcd.execution.runners.result}.

L{LocalProcessTests} runs real child processes on the real reactor; the
kill sequence's later stages are also driven step by step with a fake
reactor in L{KillSequenceTests}, where no real signal is ever sent.
"""

from __future__ import annotations

import os
import random
import signal
import stat

from twisted.internet import reactor
from twisted.internet.defer import Deferred, DeferredSemaphore, gatherResults
from twisted.internet.error import ProcessDone, ProcessTerminated
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase, TestCase

from bwcd.execution.runners import local
from bwcd.execution.runners.argv import scriptArgv, shellCmdArgv
from bwcd.execution.runners.local import LocalRunner, RunResult, ensureExecutable, findSetsid
from bwcd.execution.runners.result import (
    buildResult,
    jsonOrText,
    statusForExitCode,
    stripShellChars,
    timeoutError,
)

ENV = {"PATH": "/usr/local/bin:/usr/bin:/bin"}


def newMarker() -> str:
    """
    A sleep duration unique to one test, so its processes can be found in
    /proc by their command line; longer than any test may last, so a runner
    that waited for them instead of killing them hangs into trial's timeout
    rather than passing slowly.
    """
    return "3600.%06d" % (random.randrange(10**6),)


def firstOutput():
    """
    An C{on_output} callback and a Deferred firing with the first chunk it
    receives: the event that the child is running its command.
    """
    received: Deferred = Deferred()

    def onOutput(stream: str, data: bytes) -> None:
        if not received.called:
            received.callback(data)

    return onOutput, received


def pidsWithMarker(marker: str) -> list:
    """
    Pids of live (non-zombie) processes whose command line contains marker.
    """
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open("/proc/%s/cmdline" % (entry,), "rb") as f:
                cmdline = f.read()
            with open("/proc/%s/stat" % (entry,), "rb") as f:
                state = f.read().rsplit(b")", 1)[1].split()[0]
        except OSError:
            continue
        if marker.encode() in cmdline.split(b"\0") and state != b"Z":
            found.append(int(entry))
    return found


def cmdline(pid: int) -> list:
    """
    The argv of pid, as bytes.
    """
    with open("/proc/%d/cmdline" % (pid,), "rb") as f:
        return f.read().split(b"\0")


def procStat(pid: int) -> dict:
    """
    State, parent, process group and session of pid, from /proc.
    """
    with open("/proc/%d/stat" % (pid,), "rb") as f:
        fields = f.read().rsplit(b")", 1)[1].split()
    return {"state": fields[0], "ppid": int(fields[1]), "pgrp": int(fields[2]), "session": int(fields[3])}


def alive(pid: int) -> bool:
    """
    Whether pid is a live process (not a zombie).
    """
    try:
        return procStat(pid)["state"] != b"Z"
    except OSError:
        return False


def openFds() -> int:
    return len(os.listdir("/proc/self/fd"))


class LocalProcessTests(TestCase):
    """
    L{LocalRunner} with real processes.
    """

    def setUp(self):
        self.runner = LocalRunner(reactor, output_max_bytes=64 * 1024)
        self.markers = []

    def marker(self) -> str:
        marker = newMarker()
        self.markers.append(marker)
        return marker

    def tearDown(self):
        # Safety net only: a passing test leaves nothing behind.
        for marker in self.markers:
            for pid in pidsWithMarker(marker):
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass

    def sh(self, cmd, **kwargs):
        return self.runner.run(shellCmdArgv(cmd), kwargs.pop("env", ENV), **kwargs)

    async def test_failedCommand(self):
        """
        A non-zero exit gives status failed with stdout and stderr captured
        and their final newline stripped.
        """
        res = await self.sh("echo hi; echo err >&2; exit 3")
        self.assertIsInstance(res, RunResult)
        self.assertEqual(res.status, "failed")
        self.assertEqual(res.return_code, 3)
        self.assertIsNone(res.ended_by)
        self.assertEqual(
            res.result,
            {"failed": True, "succeeded": False, "return_code": 3, "stdout": "hi", "stderr": "err"},
        )

    async def test_succeeded(self):
        """
        Exit 0 gives succeeded, and output that is not JSON stays text.
        """
        res = await self.sh("echo hello world")
        self.assertEqual(res.status, "succeeded")
        self.assertEqual(
            res.result,
            {"failed": False, "succeeded": True, "return_code": 0, "stdout": "hello world", "stderr": ""},
        )

    async def test_jsonOutput(self):
        """
        stdout and stderr that parse as JSON are decoded.
        """
        res = await self.sh("""echo 10; echo '{"a": [1, 2]}' >&2""")
        self.assertEqual(res.result["stdout"], 10)
        self.assertEqual(res.result["stderr"], {"a": [1, 2]})
        res = await self.sh("""printf '{"x": true}\\r\\n'""")
        self.assertEqual(res.result["stdout"], {"x": True})

    async def test_killedBySignal(self):
        """
        A process killed by a signal reports minus the signal number and
        fails.
        """
        res = await self.sh("kill -USR1 $$")
        self.assertEqual(res.return_code, -signal.SIGUSR1)
        self.assertEqual(res.status, "failed")

    async def test_exitCodeMinus15(self):
        """
        A process terminated by SIGTERM (not by us) maps to abandoned, as in
        st2's exit code table.
        """
        res = await self.sh("kill -TERM $$")
        self.assertEqual(res.return_code, -15)
        self.assertEqual(res.status, "abandoned")
        self.assertIsNone(res.ended_by)

    async def test_ownProcessGroup(self):
        """
        The child leads its own process group and session (pid == pgid ==
        sid), because setsid executed in place: the command's own pid is the
        one the runner started.
        """
        marker = self.marker()
        onOutput, started = firstOutput()
        running = self.runner.start(["/bin/sh", "-c", "echo $$; exec sleep " + marker], ENV, on_output=onOutput)
        self.assertEqual(int(await started), running.pid)
        info = procStat(running.pid)
        self.assertEqual((info["pgrp"], info["session"]), (running.pid, running.pid))
        self.assertNotEqual(info["pgrp"], os.getpgrp())
        running.cancel()
        res = await running.result
        self.assertEqual(res.status, "canceled")
        self.assertEqual(res.ended_by, "canceled")
        self.assertEqual(res.return_code, -15)

    async def test_timeoutKillsGroup(self):
        """
        On timeout the whole group dies (grandchildren included), the result
        arrives with return code -9, the st2 error and the output so far.
        (When the timer fires is tested with a fake clock in
        L{KillSequenceTests}.)
        """
        marker = self.marker()
        res = await self.sh("echo before; echo oops >&2; sleep %s & sleep %s" % (marker, marker), timeout=1)
        self.assertEqual(res.status, "timeout")
        self.assertEqual(res.ended_by, "timeout")
        self.assertEqual(
            res.result,
            {
                "failed": True,
                "succeeded": False,
                "return_code": -9,
                "stdout": "before",
                "stderr": "oops",
                "error": "Action failed to complete in 1 seconds",
            },
        )
        self.assertEqual(pidsWithMarker(marker), [])

    async def test_timeoutEscalatesToKill(self):
        """
        A group that ignores SIGTERM is killed with SIGKILL after the grace
        period.  (The grace's length is tested with a fake clock in
        L{KillSequenceTests}.)
        """
        self.runner = LocalRunner(reactor, output_max_bytes=1024, kill_grace=0.5)
        marker = self.marker()
        res = await self.sh("trap '' TERM; sleep %s & sleep %s" % (marker, marker), timeout=1)
        self.assertEqual(res.status, "timeout")
        self.assertEqual(res.return_code, -9)
        self.assertEqual(pidsWithMarker(marker), [])

    async def test_escapedGrandchild(self):
        """
        A grandchild that escaped into its own session keeps the output
        pipes open; the runner closes them after the kill and still
        reports, instead of waiting for it.
        """
        self.runner = LocalRunner(reactor, output_max_bytes=1024, kill_grace=0.3)
        marker = self.marker()
        res = await self.sh("setsid sleep %s & echo started" % (marker,), timeout=0.5)
        self.assertEqual(res.status, "timeout")
        self.assertEqual(res.result["stdout"], "started")
        escaped = pidsWithMarker(marker)
        self.assertEqual(len(escaped), 1)
        os.kill(escaped[0], signal.SIGKILL)

    async def test_cancelKillsGroup(self):
        """
        Canceling a running command stops it and its children; the status is
        canceled and the output so far is kept.
        """
        marker = self.marker()
        onOutput, started = firstOutput()
        running = self.runner.start(
            shellCmdArgv("sleep %s & echo $!; wait" % (marker,)),
            ENV,
            on_output=onOutput,
        )
        child = int(await started)
        self.assertTrue(alive(child))
        running.cancel()
        running.cancel()
        res = await running.result
        self.assertEqual(res.status, "canceled")
        self.assertEqual(res.result["stdout"], child)
        self.assertFalse(alive(child))
        self.assertEqual(pidsWithMarker(marker), [])
        self.assertEqual(self.runner.running, [])

    async def test_cancelRightAfterStart(self):
        """
        A cancel issued right after the start (possibly before the child
        became a group leader) still stops it promptly.
        """
        marker = self.marker()
        running = self.runner.start(["sleep", marker], ENV)
        running.cancel()
        res = await running.result
        self.assertEqual(res.status, "canceled")
        self.assertEqual(pidsWithMarker(marker), [])

    async def test_abandonAll(self):
        """
        Shutdown stops every running process as abandoned, with return code
        -15.
        """
        markers = [self.marker(), self.marker()]
        processes = [self.runner.start(shellCmdArgv("sleep %s" % (m,)), ENV) for m in markers]
        self.assertEqual(set(self.runner.running), set(processes))
        await self.runner.abandonAll()
        for process in processes:
            res = await process.result
            self.assertEqual(res.status, "abandoned")
            self.assertEqual(res.return_code, -15)
            self.assertEqual(res.result["return_code"], -15)
        self.assertEqual(self.runner.running, [])
        for marker in markers:
            self.assertEqual(pidsWithMarker(marker), [])

    async def test_outputCap(self):
        """
        Output beyond the cap is dropped, the child still runs to the end,
        and the result says which stream was truncated.
        """
        self.runner = LocalRunner(reactor, output_max_bytes=1000)
        chunks = []
        res = await self.runner.run(
            shellCmdArgv("head -c 300000 /dev/zero | tr '\\0' a; echo tail >&2; exit 4"),
            ENV,
            on_output=lambda stream, data: chunks.append((stream, data)),
        )
        self.assertEqual(res.return_code, 4)
        self.assertEqual(res.result["stdout"], "a" * 1000)
        self.assertIs(res.result["stdout_truncated"], True)
        self.assertNotIn("stderr_truncated", res.result)
        self.assertTrue(res.stdout_truncated)
        self.assertFalse(res.stderr_truncated)
        self.assertEqual(b"".join(d for s, d in chunks if s == "stdout"), b"a" * 1000)
        self.assertEqual(b"".join(d for s, d in chunks if s == "stderr"), b"tail\n")

    async def test_liveOutput(self):
        """
        Output chunks are delivered while the process is still running: the
        child waits, after its first line, for the test to have seen it.
        """
        gate = os.path.abspath(self.mktemp())
        os.mkfifo(gate)
        # read-write: opening never blocks, and the child's read sees the
        # line written once it has been seen
        gateFd = os.open(gate, os.O_RDWR | os.O_NONBLOCK)
        self.addCleanup(os.close, gateFd)
        seen = []

        def onOutput(stream, data):
            seen.append((data, running.ended))
            if len(seen) == 1:
                os.write(gateFd, b"go\n")

        running = self.runner.start(shellCmdArgv("echo first; read x < %s; echo second" % (gate,)), ENV, on_output=onOutput)
        res = await running.result
        self.assertEqual(seen[0], (b"first\n", False))
        self.assertEqual(b"".join(d for d, _ in seen), b"first\nsecond\n")
        self.assertEqual(res.result["stdout"], "first\nsecond")

    async def test_brokenOutputCallback(self):
        """
        An output callback that raises does not break the run.
        """

        def broken(stream, data):
            raise RuntimeError("nope")

        res = await self.runner.run(shellCmdArgv("echo x"), ENV, on_output=broken)
        self.assertEqual(res.result["stdout"], "x")
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)

    async def test_environment(self):
        """
        The child sees exactly the environment given, nothing inherited from
        the daemon.
        """
        os.environ["BWCD_TEST_INHERITED"] = "leak"
        self.addCleanup(os.environ.pop, "BWCD_TEST_INHERITED")
        env = dict(ENV, ST2_ACTION_EXECUTION_ID="65a1b2c3d4e5f60718293a4b", ST2_ACTION_API_URL="http://x/v1")
        res = await self.sh(
            'echo "$ST2_ACTION_EXECUTION_ID $ST2_ACTION_API_URL ${BWCD_TEST_INHERITED-unset}"', env=env
        )
        self.assertEqual(res.result["stdout"], "65a1b2c3d4e5f60718293a4b http://x/v1 unset")

    async def test_cwd(self):
        """
        The command runs in the requested directory.
        """
        path = os.path.realpath(self.mktemp())
        os.mkdir(path)
        res = await self.sh("pwd -P", cwd=path)
        self.assertEqual(res.result["stdout"], path)
        res = await self.sh("pwd -P", cwd=os.getcwd())
        self.assertEqual(res.result["stdout"], os.path.realpath(os.getcwd()))

    async def test_missingCwd(self):
        """
        A working directory that does not exist fails the start.
        """
        missing = os.path.abspath(self.mktemp())
        with self.assertRaises(FileNotFoundError) as ctx:
            await self.sh("true", cwd=missing)
        self.assertIn(missing, str(ctx.exception))
        self.assertEqual(self.runner.running, [])

    async def test_stdin(self):
        """
        Given stdin bytes reach the child, and stdin is closed afterwards
        (so a reader sees end of file).
        """
        res = await self.sh("read x; echo got:$x; cat", stdin=b"secret\nrest")
        self.assertEqual(res.result["stdout"], "got:secret\nrest")
        res = await self.sh("cat; echo done")
        self.assertEqual(res.result["stdout"], "done")

    async def test_script(self):
        """
        A script, made executable first, receives its arguments exactly as
        scriptArgv built them.
        """
        path = os.path.abspath(self.mktemp())
        with open(path, "w") as f:
            f.write("#!/bin/sh\nfor a in \"$@\"; do printf '[%s]\\n' \"$a\"; done\n")
        os.chmod(path, stat.S_IRUSR | stat.S_IWUSR)
        ensureExecutable(path)
        self.assertEqual(stat.S_IMODE(os.stat(path).st_mode), 0o711)
        ensureExecutable(path + ".missing")
        schema = {"a": {"type": "string", "position": 0}, "b": {"type": "integer", "position": 1}, "c": {"type": "string"}}
        argv = scriptArgv(path, schema, {"a": "x y", "b": 0, "c": "$HOME; rm"})
        res = await self.runner.run(argv, ENV)
        self.assertEqual(res.result["stdout"], "[--c=$HOME; rm]\n[x y]\n[]")

    async def test_manyChildrenNoLeaks(self):
        """
        Many short children, sixteen at a time, all succeed and leave no
        file descriptors or bookkeeping behind.
        """
        await self.runner.run(["/bin/true"], ENV)
        before = openFds()
        sem = DeferredSemaphore(16)
        results = await gatherResults([sem.run(self.runner.run, ["/bin/true"], ENV) for _ in range(50)])
        self.assertEqual([r.status for r in results], ["succeeded"] * 50)
        self.assertEqual(openFds(), before)
        self.assertEqual(self.runner.running, [])

    async def test_fastSpawnPath(self):
        """
        Without a cwd, children are started with posix_spawn, never fork
        (the fork path is several times slower).
        """

        def noFork():
            raise AssertionError("fork used")

        self.patch(os, "fork", noFork)
        res = await self.sh("echo spawned")
        self.assertEqual(res.result["stdout"], "spawned")
        res = await self.sh("echo spawned", cwd=os.getcwd())
        self.assertEqual(res.result["stdout"], "spawned")

    async def test_missingExecutable(self):
        """
        A command that does not exist fails with setsid's exit code, like a
        shell would report it.
        """
        res = await self.runner.run(["/nonexistent/bwcd-test"], ENV)
        self.assertEqual(res.status, "failed")
        self.assertEqual(res.return_code, 127)
        self.assertIn("/nonexistent/bwcd-test", res.result["stderr"])


class FakeTransport:
    def __init__(self, pid):
        self.pid = pid
        self.written = []
        self.stdinClosed = False
        self.lost = False

    def write(self, data):
        self.written.append(data)

    def closeStdin(self):
        self.stdinClosed = True

    def loseConnection(self):
        self.lost = True


class FakeProcessReactor(Clock):
    """
    A clock that records spawnProcess calls instead of starting anything.
    """

    def __init__(self):
        super().__init__()
        self.spawned = []
        self.endImmediately = None

    def spawnProcess(self, protocol, executable, args, env=None, path=None, uid=None, gid=None, usePTY=False, childFDs=None):
        transport = FakeTransport(40000 + len(self.spawned))
        self.spawned.append({"protocol": protocol, "executable": executable, "args": args, "env": env, "path": path, "transport": transport})
        protocol.makeConnection(transport)
        if self.endImmediately is not None:
            # Like Twisted reaping a child that already exited, inside
            # spawnProcess, and its pipes closing at once.
            transport.pid = None
            protocol.processExited(Failure(self.endImmediately))
            protocol.processEnded(Failure(self.endImmediately))
        return transport


class KillSequenceTests(SynchronousTestCase):
    """
    Timers and signals of L{RunningProcess}, with a fake reactor.
    """

    def setUp(self):
        self.reactor = FakeProcessReactor()
        self.signals = []
        self.patch(local, "_killpg", lambda pid, sig: self.signals.append((pid, sig)))
        self.patch(local, "_kill", lambda pid, sig: self.fail("unexpected kill(%r, %r)" % (pid, sig)))
        self.runner = LocalRunner(self.reactor, output_max_bytes=100, kill_grace=2, setsid="/usr/bin/setsid")

    def end(self, running, reason):
        self.reactor.spawned[-1]["protocol"].processEnded(Failure(reason))

    def test_spawn(self):
        """
        The child is started as setsid + argv with the explicit environment,
        no path, and stdin written then closed.
        """
        running = self.runner.start(["/bin/sh", "-c", "x"], {"A": "b"}, stdin=b"pw\n")
        spawned = self.reactor.spawned[0]
        self.assertEqual(spawned["executable"], "/usr/bin/setsid")
        self.assertEqual(spawned["args"], ["/usr/bin/setsid", "/bin/sh", "-c", "x"])
        self.assertEqual(spawned["env"], {"A": "b"})
        self.assertIsNone(spawned["path"])
        self.assertEqual(spawned["transport"].written, [b"pw\n"])
        self.assertTrue(spawned["transport"].stdinClosed)
        self.assertEqual(running.pid, 40000)
        self.assertEqual(self.reactor.getDelayedCalls(), [])

    def test_fullEscalation(self):
        """
        Timeout: TERM to the group, KILL after the grace, pipes closed after
        another, and the result reported after a third even if the process
        never ends; no timer is left.
        """
        running = self.runner.start(["x"], {}, timeout=5)
        self.reactor.advance(4.9)
        self.assertEqual(self.signals, [])
        self.reactor.advance(0.1)
        self.assertEqual(self.signals, [(40000, signal.SIGTERM)])
        self.reactor.advance(2)
        self.assertEqual(self.signals, [(40000, signal.SIGTERM), (40000, signal.SIGKILL)])
        transport = self.reactor.spawned[0]["transport"]
        self.assertFalse(transport.lost)
        self.reactor.advance(2)
        self.assertTrue(transport.lost)
        self.assertNoResult(running.result)
        self.reactor.advance(2)
        res = self.successResultOf(running.result)
        self.assertEqual((res.status, res.return_code), ("timeout", -9))
        self.assertEqual(res.result["error"], timeoutError(5))
        self.assertEqual(self.reactor.getDelayedCalls(), [])
        self.assertEqual(len(self.signals), 2)
        self.assertEqual(self.runner.running, [])

    def test_endAfterTerm(self):
        """
        When the group dies on TERM, the pending KILL is cancelled.
        """
        running = self.runner.start(["x"], {}, timeout=5)
        self.reactor.advance(5)
        self.end(running, ProcessTerminated(signal=signal.SIGTERM))
        res = self.successResultOf(running.result)
        self.assertEqual((res.status, res.return_code), ("timeout", -9))
        self.assertEqual(self.reactor.getDelayedCalls(), [])
        self.assertEqual(self.signals, [(40000, signal.SIGTERM)])

    def test_normalExitCancelsTimeout(self):
        """
        A process that ends in time leaves no timeout timer, and a later
        kill does nothing.
        """
        running = self.runner.start(["x"], {}, timeout=5)
        self.assertEqual(len(self.reactor.getDelayedCalls()), 1)
        self.end(running, ProcessDone(0))
        self.assertEqual(self.successResultOf(running.result).status, "succeeded")
        self.assertEqual(self.reactor.getDelayedCalls(), [])
        running.cancel()
        self.assertEqual(self.signals, [])

    def test_killedButExitedZero(self):
        """
        A canceled process that still exits 0 is reported canceled, not
        succeeded.
        """
        running = self.runner.start(["x"], {}, timeout=5)
        running.cancel()
        self.end(running, ProcessDone(0))
        res = self.successResultOf(running.result)
        self.assertEqual(res.status, "canceled")
        self.assertEqual(res.return_code, 0)
        self.assertEqual(self.reactor.getDelayedCalls(), [])

    def test_firstReasonWins(self):
        """
        A timeout after a cancel keeps the canceled status and sends no
        second TERM.
        """
        running = self.runner.start(["x"], {}, timeout=1)
        running.cancel()
        running.kill("timeout")
        running.abandon()
        self.reactor.advance(1)
        self.end(running, ProcessTerminated(signal=signal.SIGTERM))
        res = self.successResultOf(running.result)
        self.assertEqual((res.status, res.return_code), ("canceled", -15))
        self.assertEqual(self.signals, [(40000, signal.SIGTERM)])

    def test_endedInsideSpawn(self):
        """
        A child that ends before spawnProcess returns still reports its pid,
        leaves no timeout timer and is not listed as running.
        """
        self.reactor.endImmediately = ProcessTerminated(exitCode=2)
        running = self.runner.start(["x"], {}, timeout=5)
        res = self.successResultOf(running.result)
        self.assertEqual((res.status, res.return_code, res.pid), ("failed", 2, 40000))
        self.assertEqual(self.reactor.getDelayedCalls(), [])
        self.assertEqual(self.runner.running, [])

    def test_unknownReason(self):
        """
        Only the three kill reasons are accepted.
        """
        running = self.runner.start(["x"], {})
        self.assertRaises(ValueError, running.kill, "succeeded")

    def test_groupAlreadyGone(self):
        """
        A group that vanished before the signal is not an error; once the
        child has been reaped its pid is never signalled on its own.
        """

        def gone(pid, sig):
            raise ProcessLookupError()

        self.patch(local, "_killpg", gone)
        self.patch(local, "_kill", lambda pid, sig: self.signals.append((pid, sig)))
        running = self.runner.start(["x"], {})
        self.reactor.spawned[0]["protocol"].processExited(Failure(ProcessDone(0)))
        running.abandon()
        self.reactor.advance(2)
        self.assertEqual(self.signals, [])
        self.end(running, ProcessTerminated(exitCode=0))
        self.assertEqual(self.successResultOf(running.result).status, "abandoned")
        self.assertEqual(self.reactor.getDelayedCalls(), [])

    def test_groupNotYetCreated(self):
        """
        Killed before setsid() ran in the child, the pid itself is signalled.
        """

        def noGroup(pid, sig):
            raise ProcessLookupError()

        self.patch(local, "_killpg", noGroup)
        self.patch(local, "_kill", lambda pid, sig: self.signals.append((pid, sig)))
        running = self.runner.start(["x"], {})
        running.cancel()
        self.assertEqual(self.signals, [(40000, signal.SIGTERM)])
        self.end(running, ProcessTerminated(signal=signal.SIGTERM))
        self.assertEqual(self.successResultOf(running.result).status, "canceled")

    def test_outputChunks(self):
        """
        Output is split by stream, capped, and other file descriptors are
        ignored.
        """
        seen = []
        running = self.runner.start(["x"], {}, on_output=lambda s, d: seen.append((s, d)))
        protocol = self.reactor.spawned[0]["protocol"]
        protocol.childDataReceived(1, b"o" * 60)
        protocol.childDataReceived(2, b"e")
        protocol.childDataReceived(1, b"p" * 60)
        protocol.childDataReceived(1, b"q")
        protocol.childDataReceived(3, b"ignored")
        self.end(running, ProcessDone(0))
        res = self.successResultOf(running.result)
        self.assertEqual(seen, [("stdout", b"o" * 60), ("stderr", b"e"), ("stdout", b"p" * 40)])
        self.assertEqual(res.result["stdout"], "o" * 60 + "p" * 40)
        self.assertTrue(res.result["stdout_truncated"])

    def test_findSetsid(self):
        """
        setsid is found as an absolute path.
        """
        path = findSetsid()
        self.assertTrue(os.path.isabs(path))
        self.assertTrue(os.access(path, os.X_OK))


class ResultTests(SynchronousTestCase):
    """
    L{bwcd.execution.runners.result}.
    """

    def test_strip(self):
        """
        One newline, then one carriage return, are stripped; nothing more.
        """
        for raw, expected in [
            ("hi\n", "hi"),
            ("hi\r\n", "hi"),
            ("hi\n\n", "hi\n"),
            ("hi\r", "hi"),
            ("hi\n\r", "hi\n"),
            ("hi \n", "hi "),
            ("", ""),
        ]:
            self.assertEqual(stripShellChars(raw), expected, repr(raw))

    def test_json(self):
        """
        Text that is JSON is decoded, anything else (NaN included) stays.
        """
        for text, expected in [
            ("10", 10),
            ("1.5", 1.5),
            ('"s"', "s"),
            ("null", None),
            ("true", True),
            ("[1]", [1]),
            ("", ""),
            ("hi", "hi"),
            ("NaN", "NaN"),
            ("10 20", "10 20"),
        ]:
            self.assertEqual(jsonOrText(text), expected, repr(text))

    def test_statusMap(self):
        """
        st2's exit code to status table.
        """
        for code, status in [(0, "succeeded"), (1, "failed"), (2, "failed"), (-9, "timeout"), (-15, "abandoned"), (-1, "failed"), (127, "failed")]:
            self.assertEqual(statusForExitCode(code), status, code)

    def test_build(self):
        """
        The result document, with error only when there is one.
        """
        self.assertEqual(
            buildResult(0, "10\n", "warn\n"),
            {"failed": False, "succeeded": True, "return_code": 0, "stdout": 10, "stderr": "warn"},
        )
        self.assertEqual(buildResult(-9, "", "", error="E")["error"], "E")

    def test_badSudoPassword(self):
        """
        sudo refusing the password becomes st2's error and return code -1,
        only when a password was given.
        """
        stderr = "[sudo] password for stanley: Sorry, try again.\nsudo: 3 incorrect password attempts\n"
        result = buildResult(1, "", stderr, sudo_password_used=True)
        self.assertEqual(result["return_code"], -1)
        self.assertEqual(
            result["error"],
            "Invalid sudo password provided or sudo is not configured for this user (stanley)",
        )
        self.assertNotIn("error", buildResult(1, "", stderr))
