"""
Every path out of a spawn ends the execution, and only the node that owns
it records it (issue 12, points 4 and 5): unit tests on the in-memory store
with a fake runner and a fake clock, then a real daemon on SQLite and on
MongoDB.
"""

from __future__ import annotations

import json
import os
from typing import Any, Callable, Dict, List, Optional

from twisted.internet.defer import ensureDeferred, fail
from twisted.logger import globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase, TestCase

from bwcd.execution.executor import Executor
from bwcd.execution.resultcap import capResult, minimalResult
from bwcd.execution.runners.interface import RunResult
from bwcd.execution.service import ExecutionService
from bwcd.packs.registrar import registerActions, registerRunnerTypes
from bwcd.store.interface import StoreUnavailable
from bwcd.testing import MemoryStore
from tests.daemon import startDaemon
from tests.test_executor import NODE, FakeRunner, executionWorld

PACKS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures", "packs")


def jsonSize(value: Any) -> int:
    return len(json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode("utf-8"))


class CapResultTests(SynchronousTestCase):
    def test_smallResultUnchanged(self) -> None:
        """
        A result within the cap is stored as it is, with no marker.
        """
        result = {"stdout": "hi", "stderr": "", "return_code": 0}
        self.assertEqual(capResult(result, 1000), result)

    def test_largestFieldsCutToFit(self) -> None:
        """
        A result over the cap has its largest fields cut (a parsed JSON
        value as its text) until it fits, keeps its small fields and says
        it was truncated.
        """
        result = {"stdout": {"rows": ["x" * 50] * 100}, "stderr": "é\u0001" * 3000, "return_code": 3, "succeeded": False}
        capped = capResult(result, 2000)
        self.assertLessEqual(jsonSize(capped), 2000)
        self.assertIs(capped["truncated"], True)
        self.assertEqual((capped["return_code"], capped["succeeded"]), (3, False))
        self.assertTrue(json.dumps(result["stdout"], separators=(",", ":")).startswith(capped["stdout"]))
        self.assertGreater(len(capped["stdout"]), 1000)
        self.assertTrue(result["stderr"].startswith(capped["stderr"]))

    def test_minimalWhenNothingFits(self) -> None:
        """
        When even the cut fields cannot fit (many keys), what is left is the
        scalars, the error and the marker.
        """
        result = {f"k{i}": "v" * 10 for i in range(50)}
        result["return_code"] = 1
        self.assertEqual(capResult(result, 60), {"return_code": 1, "error": "The result was too large to store", "truncated": True})
        self.assertEqual(minimalResult({"x": float("nan"), "ok": True}, "no"), {"ok": True, "error": "no", "truncated": True})


class FlakyStore(MemoryStore):
    """
    A memory store whose updates setting a given status fail with
    L{StoreUnavailable} the next C{failures} times.
    """

    def __init__(self, status: str, failures: int) -> None:
        super().__init__()
        self.status = status
        self.failures = failures
        #: updates setting that status so far
        self.attempts = 0
        #: called once, before the first such update
        self.before: Optional[Callable[[], Any]] = None

    def update(self, collection, filter, set=None, push=None, sort=()):
        if collection == "executions" and (set or {}).get("status") == self.status:
            self.attempts += 1
        if collection == "executions" and (set or {}).get("status") == self.status and self.before is not None:
            before, self.before = self.before, None
            before()
        if collection == "executions" and (set or {}).get("status") == self.status and self.failures > 0:
            self.failures -= 1
            self.operations.append("update")
            return fail(StoreUnavailable("injected"))
        return super().update(collection, filter, set=set, push=push, sort=sort)


class SpawnPathTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock, self.store, self.executions = executionWorld(self)
        self.runner = FakeRunner()
        self.events: List[Dict[str, Any]] = []
        globalLogPublisher.addObserver(self.events.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.events.append)

    def useStore(self, store: MemoryStore) -> None:
        self.store = store
        self.successResultOf(store.start())
        self.successResultOf(ensureDeferred(registerRunnerTypes(store)))
        self.successResultOf(ensureDeferred(registerActions(store, [])))
        self.executions = ExecutionService(store, self.clock, "http://127.0.0.1:9101")

    def executor(self, **kw: Any) -> Executor:
        executor = Executor(
            self.store, self.executions, self.runner, self.clock, 4, "http://127.0.0.1:9101/",
            nodeId=lambda: NODE, resolveScript=lambda pack, entry: entry,
            pollInterval=10_000, **kw,
        )
        self.successResultOf(executor.startService())
        self.addCleanup(lambda: executor.running and executor.stopService())
        return executor

    def request(self, cmd: str = "echo hi") -> Dict[str, Any]:
        return self.successResultOf(ensureDeferred(self.executions.create("core.local", {"cmd": cmd}, {}, "tester")))

    def stored(self, execId: str) -> Dict[str, Any]:
        return self.successResultOf(self.store.get("executions", execId))

    def logged(self, text: str) -> List[Dict[str, Any]]:
        return [e for e in self.events if text in e.get("log_format", "")]

    def test_startRaisingValueErrorFails(self) -> None:
        """
        A start raising something other than OSError (a NUL byte in an
        argument) ends the execution failed with the error.
        """
        self.runner.refuse = ValueError("embedded null byte")  # type: ignore[assignment]
        self.executor()
        doc = self.request()
        self.clock.advance(0)
        failed = self.stored(doc["id"])
        self.assertEqual(failed["status"], "failed")
        self.assertEqual(failed["result"]["error"], "Unable to start the action: embedded null byte")
        self.assertEqual([e["status"] for e in failed["log"]], ["requested", "scheduled", "running", "failed"])

    def test_runnerResultErrorFails(self) -> None:
        """
        A run whose result fails instead of firing ends failed with the
        error, not running forever.
        """
        self.executor()
        doc = self.request()
        self.clock.advance(0)
        [running] = self.runner.started
        running.result.errback(RuntimeError("runner bug"))
        failed = self.stored(doc["id"])
        self.assertEqual((failed["status"], failed["result"]["error"]), ("failed", "The runner failed: runner bug"))
        self.flushLoggedErrors(RuntimeError)

    def test_finalWriteRetriedWithBackoff(self) -> None:
        """
        A final write failing twice is retried after 0.5 s and then 1 s
        more (on the clock, no write in between), and the result is
        recorded once.
        """
        self.useStore(FlakyStore("succeeded", 2))
        self.executor()
        completed: List[dict] = []
        self.executions.addCompletionListener(completed.append)
        doc = self.request()
        self.clock.advance(0)
        [running] = self.runner.started
        running.finish("succeeded", stdout="done")
        self.assertEqual(self.store.attempts, 1)
        self.clock.advance(0.49)
        self.assertEqual(self.store.attempts, 1)
        self.clock.advance(0.01)
        self.assertEqual(self.store.attempts, 2)
        self.clock.advance(0.99)
        self.assertEqual(self.store.attempts, 2)
        self.assertEqual(self.stored(doc["id"])["status"], "running")
        self.clock.advance(0.01)
        self.assertEqual(self.store.attempts, 3)
        done = self.stored(doc["id"])
        self.assertEqual((done["status"], done["result"]["stdout"]), ("succeeded", "done"))
        self.assertEqual([e["status"] for e in done["log"]], ["requested", "scheduled", "running", "succeeded"])
        self.assertEqual([c["id"] for c in completed], [doc["id"]])
        self.assertEqual([e["delay"] for e in self.logged("retrying in")], [0.5, 1.0])

    def test_runningWriteFailingSpawnsNothing(self) -> None:
        """
        When "running" cannot be recorded nothing is spawned; the execution
        goes back to the queue (once the store answers) and then runs.
        """
        self.useStore(FlakyStore("running", 1))
        self.executor()
        doc = self.request()
        self.clock.advance(0)
        self.assertEqual(self.store.failures, 0)
        [running] = self.runner.started  # the second claim, after the give-back
        self.assertEqual(len(self.logged("recording it running failed")), 1)
        statuses = [e["status"] for e in self.stored(doc["id"])["log"]]
        self.assertEqual(statuses, ["requested", "scheduled", "requested", "scheduled", "running"])

    def test_lostExecutionNotRecordedTwice(self) -> None:
        """
        An execution re-queued and run by another node while this one ran it
        is not recorded by this node when its child ends: the change is
        logged instead.
        """
        self.executor()
        doc = self.request()
        self.clock.advance(0)
        [running] = self.runner.started
        self.successResultOf(self.store.update("executions", {"id": doc["id"]}, set={"status": "running", "node": "node-b"}))
        running.finish("succeeded", stdout="late")
        kept = self.stored(doc["id"])
        self.assertEqual((kept["status"], kept["node"]), ("running", "node-b"))
        self.assertNotIn("result", kept)
        [event] = self.logged("is not this node's any more")
        self.assertEqual((event["execution_id"], event["current_node"]), (doc["id"], "node-b"))

    def test_transitionConditionalOnNode(self) -> None:
        """
        A transition naming a node changes only an execution that node
        holds.
        """
        doc = self.request()
        self.successResultOf(self.store.update("executions", {"id": doc["id"]}, set={"status": "running", "node": "node-b"}))
        self.assertIsNone(self.successResultOf(ensureDeferred(self.executions.transition(doc["id"], ["running"], "failed", node=NODE))))
        done = self.successResultOf(ensureDeferred(self.executions.transition(doc["id"], ["running"], "failed", node="node-b")))
        self.assertEqual(done["status"], "failed")

    def test_canceledWhileScheduledNotSpawned(self) -> None:
        """
        An execution canceled between its claim and its "running" write is
        not spawned at all, and keeps its cancel.
        """
        self.useStore(FlakyStore("running", 0))
        self.store.before = lambda: self.successResultOf(self.store.update("executions", {"status": "scheduled"}, set={"status": "canceled"}))
        self.executor()
        doc = self.request()
        self.clock.advance(0)
        self.assertEqual(self.runner.started, [])
        self.assertEqual(self.stored(doc["id"])["status"], "canceled")
        self.assertEqual(len(self.logged("not started: it was canceled")), 1)

    def test_resultOverTheCapTruncated(self) -> None:
        """
        A result over runner.result_max_bytes ends succeeded with the
        result cut and marked truncated.
        """
        self.executor(resultMaxBytes=300)
        doc = self.request()
        self.clock.advance(0)
        [running] = self.runner.started
        running.finish("succeeded", stdout="x" * 5000)
        done = self.stored(doc["id"])
        self.assertEqual(done["status"], "succeeded")
        self.assertIs(done["result"]["truncated"], True)
        self.assertLessEqual(jsonSize(done["result"]), 300)
        self.assertTrue(done["result"]["stdout"].startswith("xxx"))

    def test_refusedResultStoredAsWhatIsLeft(self) -> None:
        """
        A result the store refuses (a value it cannot hold) is recorded as
        its scalars, the error and the marker, so the execution still ends.
        """
        self.executor()
        doc = self.request()
        self.clock.advance(0)
        [running] = self.runner.started
        result = {"return_code": 0, "succeeded": True, "failed": False, "stdout": float("nan"), "stderr": ""}
        running.result.callback(RunResult("succeeded", result, 0, 4242, None, False, False))
        done = self.stored(doc["id"])
        self.assertEqual(done["status"], "succeeded")
        self.assertEqual(done["result"]["return_code"], 0)
        self.assertIs(done["result"]["truncated"], True)
        self.assertTrue(done["result"]["error"].startswith("The result could not be stored: "))
        self.assertEqual(done["liveaction"]["runner_info"]["child_pid"], 4242)


class DaemonSpawnPathsMixin:
    storage = "sqlite"
    timeout = 120

    async def test_nulByteArgumentFails(self) -> None:
        """
        A script action given a parameter holding a NUL byte ends failed
        with the error (the child cannot be spawned).
        """
        d = await startDaemon(self, storage=self.storage, packs=[PACKS])
        response, created = await d.post("/v1/executions", {"action": "examples.argv", "parameters": {"greeting": "a\u0000b"}})
        self.assertEqual(response.code, 201, created)
        done = await d.waitFor(created["id"])
        self.assertEqual(done["status"], "failed", done)
        self.assertTrue(done["result"]["error"].startswith("Unable to start the action: "), done["result"])
        self.assertIn("null", done["result"]["error"])

    async def test_outputOverTheCapTruncated(self) -> None:
        """
        An action whose output exceeds runner.result_max_bytes ends
        succeeded with a truncated result.
        """
        d = await startDaemon(self, storage=self.storage, config={"runner": {"result_max_bytes": 4096}})
        response, created = await d.post("/v1/executions", {"action": "core.local", "parameters": {"cmd": "head -c 100000 /dev/zero | tr '\\0' x"}})
        self.assertEqual(response.code, 201, created)
        done = await d.waitFor(created["id"])
        self.assertEqual(done["status"], "succeeded", done)
        self.assertIs(done["result"]["truncated"], True)
        self.assertLessEqual(jsonSize(done["result"]), 4096)
        self.assertTrue(done["result"]["stdout"].startswith("xxxx"), done["result"])


class SqliteDaemonSpawnPathTests(DaemonSpawnPathsMixin, TestCase):
    storage = "sqlite"


class MongoDaemonSpawnPathTests(DaemonSpawnPathsMixin, TestCase):
    storage = "mongodb"
