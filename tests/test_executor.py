"""
Unit tests for L{bwcd.execution.executor}: claiming, running through the
runner interface, shutdown, recovery and child tokens, on the in-memory
store with a fake runner and a fake clock (real processes are
L{tests.test_runner_local} and L{tests.test_daemon}).
"""

from __future__ import annotations

from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from twisted.internet.defer import Deferred, ensureDeferred
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from bwcd.auth.tokens import TOKENS, Tokens, hashToken
from bwcd.execution.executor import Executor
from bwcd.execution.runners.argv import shellCmdArgv
from bwcd.execution.runners.interface import ABANDONED, CANCELED, RunResult
from bwcd.execution.service import ExecutionService
from bwcd.execution.tokens import ExecutionTokens
from bwcd.packs.registrar import registerActions, registerRunnerTypes
from bwcd.testing import MemoryStore

NODE = "node-a"


class FakeRunning:
    """
    A started action that ends when the test says so (or when killed).
    """

    def __init__(self, argv: Sequence[str], env: Mapping[str, str], stdin: Optional[bytes]) -> None:
        self.argv = list(argv)
        self.env = dict(env)
        self.stdin = stdin
        self.killedWith: Optional[str] = None
        self.result: Deferred = Deferred()

    def kill(self, reason: str) -> None:
        if self.killedWith is None and not self.result.called:
            self.killedWith = reason
            self.finish(reason, returnCode=-15)

    def finish(self, status: str = "succeeded", stdout: str = "", returnCode: int = 0) -> None:
        result = {"return_code": returnCode, "stdout": stdout, "stderr": "", "succeeded": returnCode == 0, "failed": returnCode != 0}
        self.result.callback(RunResult(status, result, returnCode, 4242, self.killedWith, False, False))


class FakeRunner:
    """
    An L{IRunner} that records what it is asked to start.
    """

    def __init__(self) -> None:
        self.started: List[FakeRunning] = []
        self.prepared: List[str] = []
        self.refuse: Optional[OSError] = None

    def prepareScript(self, path: str) -> None:
        self.prepared.append(path)

    def start(self, argv, env, cwd=None, timeout=None, on_output=None, stdin=None, sudo_password_used=False) -> FakeRunning:
        if self.refuse is not None:
            raise self.refuse
        running = FakeRunning(argv, env, stdin)
        self.started.append(running)
        return running


def executionWorld(testCase: SynchronousTestCase) -> Tuple[Clock, MemoryStore, ExecutionService]:
    """
    A fake clock, a running in-memory store holding the runner types and
    the core pack's actions, and an execution service on both.
    """
    clock = Clock()
    clock.advance(1_800_000_000)
    store = MemoryStore()
    testCase.successResultOf(store.start())
    testCase.successResultOf(ensureDeferred(registerRunnerTypes(store)))
    testCase.successResultOf(ensureDeferred(registerActions(store, [])))
    return clock, store, ExecutionService(store, clock, "http://127.0.0.1:9101")


class ExecutorTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock, self.store, self.executions = executionWorld(self)
        self.runner = FakeRunner()
        self.scripts: List[tuple] = []
        self.tokens = Tokens(self.store, self.clock, ttl=3600, maxTtl=86400)

    def resolveScript(self, pack: str, entryPoint: str) -> str:
        self.scripts.append((pack, entryPoint))
        if pack != "examples":
            raise ValueError(f'Pack "{pack}" is not installed on this node')
        return f"/packs/{pack}/actions/{entryPoint}"

    def executor(self, maxConcurrent: int = 4, tokens: bool = True) -> Executor:
        executor = Executor(
            self.store,
            self.executions,
            self.runner,
            self.clock,
            maxConcurrent,
            "http://127.0.0.1:9101/",
            nodeId=lambda: NODE,
            resolveScript=self.resolveScript,
            tokens=ExecutionTokens(self.tokens) if tokens else None,
        )
        self.successResultOf(executor.startService())
        self.addCleanup(lambda: executor.running and executor.stopService())
        return executor

    def request(self, cmd: str = "echo hi", **params: Any) -> Dict[str, Any]:
        return self.successResultOf(ensureDeferred(self.executions.create("core.local", dict(params, cmd=cmd), {}, "tester")))

    def stored(self, execId: str) -> Dict[str, Any]:
        return self.successResultOf(self.store.get("executions", execId))

    def test_queuedExecutionRunsThroughTheRunner(self) -> None:
        """
        A requested execution is claimed at once (no poll needed), started
        through the runner with its command and the ST2 environment, and
        its result is recorded when the run ends.
        """
        self.executor()
        doc = self.request("echo hi")
        self.clock.advance(0)
        [running] = self.runner.started
        self.assertEqual(running.argv, shellCmdArgv("echo hi"))
        self.assertEqual(running.env["ST2_ACTION_EXECUTION_ID"], doc["id"])
        self.assertEqual(running.env["ST2_ACTION_API_URL"], "http://127.0.0.1:9101/v1")
        self.assertEqual(running.env["ST2_ACTION_PACK_NAME"], "core")
        self.assertEqual(self.stored(doc["id"])["status"], "running")
        self.assertEqual(self.stored(doc["id"])["node"], NODE)
        running.finish("succeeded", stdout="hi")
        done = self.stored(doc["id"])
        self.assertEqual(done["status"], "succeeded")
        self.assertEqual(done["result"]["stdout"], "hi")
        self.assertEqual([e["status"] for e in done["log"]], ["requested", "scheduled", "running", "succeeded"])

    def test_atMostMaxConcurrent(self) -> None:
        """
        No more than maxConcurrent runs at once; a slot freed by a finished
        run takes the next queued execution.
        """
        self.executor(maxConcurrent=2)
        docs = [self.request(f"echo {i}") for i in range(3)]
        self.clock.advance(0)
        self.assertEqual(len(self.runner.started), 2)
        self.assertEqual(self.stored(docs[2]["id"])["status"], "requested")
        self.runner.started[0].finish()
        self.clock.advance(0)
        self.assertEqual(len(self.runner.started), 3)
        self.assertEqual(self.runner.started[2].env["ST2_ACTION_EXECUTION_ID"], docs[2]["id"])

    def test_childTokenRevokedWhenExecutionEnds(self) -> None:
        """
        Every execution gets its own ST2_ACTION_AUTH_TOKEN, valid while it
        runs and deleted from the store when it ends.
        """
        self.executor()
        first, second = self.request("echo 1"), self.request("echo 2")
        self.clock.advance(0)
        a, b = self.runner.started
        tokenA, tokenB = a.env["ST2_ACTION_AUTH_TOKEN"], b.env["ST2_ACTION_AUTH_TOKEN"]
        self.assertNotEqual(tokenA, tokenB)
        self.assertTrue(self.successResultOf(ensureDeferred(self.tokens.isValid(tokenA))))
        stored = self.successResultOf(self.store.findOne(TOKENS, {"token_hash": hashToken(tokenA)}))
        self.assertEqual(stored["user"], "tester")
        self.assertEqual(stored["metadata"]["action_execution_id"], first["id"])
        a.finish()
        self.assertIsNone(self.successResultOf(self.store.findOne(TOKENS, {"token_hash": hashToken(tokenA)})))
        self.assertFalse(self.successResultOf(ensureDeferred(self.tokens.isValid(tokenA))))
        self.assertTrue(self.successResultOf(ensureDeferred(self.tokens.isValid(tokenB))))
        b.kill(CANCELED)
        self.assertEqual(self.successResultOf(self.store.count(TOKENS, {})), 0)
        self.assertEqual(self.stored(second["id"])["status"], "canceled")

    def test_childTokenRevokedWhenStartFails(self) -> None:
        """
        An execution whose child cannot be started fails with the reason,
        and its token is deleted all the same.
        """
        self.runner.refuse = FileNotFoundError(2, "No such file or directory", "/nowhere")
        self.executor()
        doc = self.request()
        self.clock.advance(0)
        failed = self.stored(doc["id"])
        self.assertEqual(failed["status"], "failed")
        self.assertTrue(failed["result"]["error"].startswith("Unable to start the action: "), failed["result"])
        self.assertEqual(self.successResultOf(self.store.count(TOKENS, {})), 0)

    def test_stopAbandonsRunningChildren(self) -> None:
        """
        Stopping claims nothing more, kills running children as abandoned
        and fires once their records are written.
        """
        executor = self.executor()
        doc = self.request("sleep 100")
        self.clock.advance(0)
        [running] = self.runner.started
        self.successResultOf(executor.stopService())
        self.assertEqual(running.killedWith, ABANDONED)
        self.assertEqual(self.stored(doc["id"])["status"], "abandoned")
        later = self.request("echo later")
        self.clock.advance(5)
        self.assertEqual(len(self.runner.started), 1)
        self.assertEqual(self.stored(later["id"])["status"], "requested")

    def test_recoversOwnLeftovers(self) -> None:
        """
        At start, this node's executions left running end abandoned and
        those left claimed go back to the queue (and then run); other
        nodes' are left alone.
        """
        running = self.request("sleep 1")
        claimed = self.request("echo again")
        other = self.request("echo other")
        self.successResultOf(self.store.update("executions", {"id": running["id"]}, set={"status": "running", "node": NODE}))
        self.successResultOf(self.store.update("executions", {"id": claimed["id"]}, set={"status": "scheduled", "node": NODE}))
        self.successResultOf(self.store.update("executions", {"id": other["id"]}, set={"status": "running", "node": "node-b"}))
        self.executor()
        abandoned = self.stored(running["id"])
        self.assertEqual(abandoned["status"], "abandoned")
        self.assertEqual(abandoned["result"]["error"], "bwcd stopped while the action was running")
        self.assertEqual(self.stored(other["id"])["status"], "running")
        self.clock.advance(0)
        self.assertEqual([r.env["ST2_ACTION_EXECUTION_ID"] for r in self.runner.started], [claimed["id"]])

    def test_cancelKillsChild(self) -> None:
        """
        An execution canceled while it runs has its child killed, at once
        through cancelLocal and otherwise at the next poll.
        """
        executor = self.executor()
        first, second = self.request("sleep 1"), self.request("sleep 2")
        self.clock.advance(0)
        a, b = self.runner.started
        self.successResultOf(ensureDeferred(self.executions.cancel(first, "tester")))
        executor.cancelLocal(first["id"])
        self.assertEqual(a.killedWith, CANCELED)
        self.successResultOf(ensureDeferred(self.executions.cancel(second, "tester")))
        self.assertIsNone(b.killedWith)
        self.clock.advance(1)
        self.assertEqual(b.killedWith, CANCELED)
        self.assertEqual(self.stored(second["id"])["status"], "canceled")

    def test_childOfASettledExecutionIsStopped(self) -> None:
        """
        When another node has settled this node's running execution (this
        node was paused past node_timeout), the next poll stops the child
        instead of letting it run unrecorded; a running one of this node's
        is left alone.
        """
        self.executor()
        first, second = self.request("sleep 1"), self.request("sleep 2")
        self.clock.advance(0)
        a, b = self.runner.started
        self.successResultOf(self.store.update("executions", {"id": first["id"]}, set={"status": "abandoned", "node": "other"}))
        self.clock.advance(1)
        self.assertEqual(a.killedWith, ABANDONED)
        self.assertIsNone(b.killedWith)
        self.assertEqual(self.stored(first["id"])["status"], "abandoned")

    def test_scriptPathFromTheResolver(self) -> None:
        """
        A script action's entry point comes from the resolver it was given
        and is prepared by the runner; a pack missing on this node fails the
        execution with the resolver's reason.
        """
        for pack in ("examples", "elsewhere"):
            self.successResultOf(self.store.insert("actions", {
                "ref": f"{pack}.script", "pack": pack, "name": "script", "runner_type": "local-shell-script",
                "entry_point": "script.sh", "parameters": {}, "enabled": True,
            }))
        self.executor(tokens=False)
        ok = self.successResultOf(ensureDeferred(self.executions.create("examples.script", {}, {}, "tester")))
        missing = self.successResultOf(ensureDeferred(self.executions.create("elsewhere.script", {}, {}, "tester")))
        self.clock.advance(0)
        self.assertEqual(self.scripts, [("examples", "script.sh"), ("elsewhere", "script.sh")])
        self.assertEqual(self.runner.prepared, ["/packs/examples/actions/script.sh"])
        [running] = self.runner.started
        self.assertEqual(running.argv[0], "/packs/examples/actions/script.sh")
        self.assertNotIn("ST2_ACTION_AUTH_TOKEN", running.env)
        self.assertEqual(self.stored(ok["id"])["status"], "running")
        failed = self.stored(missing["id"])
        self.assertEqual((failed["status"], failed["result"]["error"]), ("failed", 'Pack "elsewhere" is not installed on this node'))
        self.flushLoggedErrors(ValueError)

    def test_delayedExecutionReleasedByThePoll(self) -> None:
        """
        A delayed execution waits until its time, then the poll releases
        it and it runs.
        """
        self.executor()
        doc = self.successResultOf(ensureDeferred(self.executions.create("core.local", {"cmd": "echo later"}, {}, "tester", delay=1500)))
        self.clock.advance(1)
        self.assertEqual(self.runner.started, [])
        self.clock.advance(1)
        self.clock.advance(0)
        [running] = self.runner.started
        self.assertEqual(running.env["ST2_ACTION_EXECUTION_ID"], doc["id"])


class FakeActionRunner:
    """
    An L{IActionRunner} for another runner type, recording each step.
    """

    def __init__(self) -> None:
        self.steps: List[tuple] = []
        self.started: List[FakeRunning] = []

    async def prepare(self, doc: Dict[str, Any]) -> Dict[str, Any]:
        self.steps.append(("prepare", doc["id"]))
        if doc["_parameters"]["url"] == "bad":
            raise ValueError("URL must be an http URL")
        return dict(doc["_parameters"])

    def start(self, doc: Dict[str, Any], prepared: Dict[str, Any], on_output: Any) -> FakeRunning:
        self.steps.append(("start", prepared["url"]))
        running = FakeRunning([], {}, None)
        self.started.append(running)
        return running

    async def release(self, prepared: Dict[str, Any]) -> None:
        self.steps.append(("release", prepared["url"]))


class RunnerDispatchTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock, self.store, self.executions = executionWorld(self)
        self.processes = FakeRunner()
        self.http = FakeActionRunner()

    def executor(self, maxConcurrent: int = 4) -> Executor:
        executor = Executor(
            self.store, self.executions, self.processes, self.clock, maxConcurrent, "http://127.0.0.1:9101/",
            nodeId=lambda: NODE, resolveScript=lambda pack, entry: entry, runners={"http-request": self.http},
        )
        self.successResultOf(executor.startService())
        self.addCleanup(lambda: executor.running and executor.stopService())
        return executor

    def stored(self, execId: str) -> Dict[str, Any]:
        return self.successResultOf(self.store.get("executions", execId))

    def test_runnerChosenByRunnerType(self) -> None:
        """
        A core.http execution goes to the http-request runner with its
        rendered parameters (not to the process runner), shares the slots
        with local actions, and is released once it ends.
        """
        self.executor(maxConcurrent=2)
        http = self.successResultOf(ensureDeferred(self.executions.create("core.http", {"url": "http://x/"}, {}, "tester")))
        local = self.successResultOf(ensureDeferred(self.executions.create("core.local", {"cmd": "echo hi"}, {}, "tester")))
        queued = self.successResultOf(ensureDeferred(self.executions.create("core.http", {"url": "http://y/"}, {}, "tester")))
        self.clock.advance(0)
        self.assertEqual(self.http.steps, [("prepare", http["id"]), ("start", "http://x/")])
        self.assertEqual([r.argv for r in self.processes.started], [shellCmdArgv("echo hi")])
        self.assertEqual(self.stored(queued["id"])["status"], "requested")
        self.http.started[0].result.callback(RunResult("succeeded", {"status_code": 200}, None, None, None, False, False))
        self.assertEqual(self.stored(http["id"])["result"], {"status_code": 200})
        self.assertEqual(self.http.steps[2], ("release", "http://x/"))
        self.clock.advance(0)
        self.assertEqual(self.http.steps[3:], [("prepare", queued["id"]), ("start", "http://y/")])
        self.assertEqual(self.stored(local["id"])["status"], "running")

    def test_prepareFailureFailsTheExecution(self) -> None:
        """
        A runner that refuses the parameters fails the execution with its
        reason; nothing starts.
        """
        self.executor()
        doc = self.successResultOf(ensureDeferred(self.executions.create("core.http", {"url": "bad"}, {}, "tester")))
        self.clock.advance(0)
        failed = self.stored(doc["id"])
        self.assertEqual((failed["status"], failed["result"]["error"]), ("failed", "URL must be an http URL"))
        self.assertEqual(self.http.started, [])
        self.flushLoggedErrors(ValueError)

    def test_runnerMissing(self) -> None:
        """
        An action whose runner type this node has no runner for fails
        rather than running through another runner.
        """
        executor = Executor(
            self.store, self.executions, self.processes, self.clock, 2, "http://127.0.0.1:9101/",
            nodeId=lambda: NODE, resolveScript=lambda pack, entry: entry,
        )
        self.successResultOf(executor.startService())
        self.addCleanup(lambda: executor.running and executor.stopService())
        doc = self.successResultOf(ensureDeferred(self.executions.create("core.http", {"url": "http://x/"}, {}, "tester")))
        self.clock.advance(0)
        failed = self.stored(doc["id"])
        self.assertEqual((failed["status"], failed["result"]["error"]), ("failed", 'Runner "http-request" is not available on this node'))
        self.assertEqual(self.processes.started, [])
        self.flushLoggedErrors(ValueError)
