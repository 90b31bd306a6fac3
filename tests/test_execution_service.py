"""
L{bwcd.execution.service}: execution requests and status changes, on the
in-memory store and a fake clock, so every step is synchronous and every
timestamp known.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any, Dict, List

from twisted.internet.defer import ensureDeferred
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from bwcd.execution.service import (
    COMPLETED,
    ExecutionRequestError,
    ExecutionService,
    QueueFull,
    publicDocument,
)
from bwcd.store.interface import DuplicateKey, StoreUnavailable
from bwcd.testing import MemoryStore, startedStore

#: 2026-11-28T21:20:00Z
T0 = datetime(2026, 11, 28, 21, 20, tzinfo=timezone.utc).timestamp()

ECHO = {
    "ref": "demo.echo",
    "uid": "action:demo:echo",
    "name": "echo",
    "pack": "demo",
    "description": "",
    "enabled": True,
    "runner_type": "local-shell-cmd",
    "entry_point": "",
    "parameters": {
        "message": {"type": "string", "required": True},
        "count": {"type": "integer", "default": 1},
        "password": {"type": "string", "secret": True},
        "cmd": {"default": "echo {{message}}", "immutable": True},
    },
}

#: without a template default, so that validation (not rendering) meets
#: a missing parameter first
PLAIN = dict(ECHO, ref="demo.plain", name="plain", parameters={
    k: v for k, v in ECHO["parameters"].items() if k != "cmd"
})


def run(coroutine) -> Any:
    """
    Start C{coroutine}; the memory store answers at once, so the Deferred
    has fired when this returns.
    """
    return ensureDeferred(coroutine)


class ServiceTestsMixin:
    """
    A started memory store holding C{demo.echo} and a disabled action, a
    clock at L{T0}, and the service under test.
    """

    maxQueued = 10000

    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(T0)
        self.store = startedStore({"actions": [ECHO, dict(ECHO, ref="demo.off", name="off", enabled=False), PLAIN]})
        self.service = self.makeService()
        self.woken: List[int] = []
        self.service.addQueueListener(lambda: self.woken.append(1))
        self.completed: List[Dict[str, Any]] = []
        self.service.addCompletionListener(self.completed.append)

    def makeService(self) -> ExecutionService:
        return ExecutionService(self.store, self.clock, "https://bwcd.example/", maxQueued=self.maxQueued)

    def create(self, ref: str = "demo.echo", parameters: Any = None, user: str = "alice", **kw: Any) -> dict:
        if parameters is None:
            parameters = {"message": "hi"}
        return self.successResultOf(run(self.service.create(ref, parameters, kw.pop("context", None), user, **kw)))

    def refused(self, *args: Any, **kw: Any) -> str:
        """
        The message of the ExecutionRequestError that create fails with.
        """
        failure = self.failureResultOf(run(self.service.create(*args, **kw)), ExecutionRequestError)
        return str(failure.value)

    def stored(self, execId: str) -> dict:
        return self.successResultOf(self.store.get("executions", execId))


class CreateTests(ServiceTestsMixin, SynchronousTestCase):
    """
    ExecutionService.create: checks, defaults and the stored document.
    """

    def test_requested(self):
        """
        A valid request is stored as requested, stamped by the clock, with
        the user and pack in its context, the action and runner embedded,
        a liveaction and a web URL; the executor is woken and the queue
        grows by one.
        """
        doc = self.create(parameters={"message": "hi"})
        self.assertEqual(doc, self.stored(doc["id"]))
        self.assertEqual(doc["status"], "requested")
        self.assertEqual(doc["start_timestamp"], "2026-11-28T21:20:00.000000Z")
        self.assertEqual(doc["log"], [{"status": "requested", "timestamp": doc["start_timestamp"]}])
        self.assertEqual(doc["context"], {"user": "alice", "pack": "demo"})
        self.assertEqual(doc["action"]["ref"], "demo.echo")
        self.assertEqual(doc["runner"]["name"], "local-shell-cmd")
        self.assertEqual(doc["liveaction"]["action"], "demo.echo")
        self.assertRegex(doc["liveaction"]["id"], "^[0-9a-f]{24}$")
        self.assertEqual(doc["web_url"], f"https://bwcd.example/#/history/{doc['id']}/general")
        self.assertEqual(self.woken, [1])
        self.assertEqual(self.service.queued, 1)
        self.assertEqual(self.completed, [])

    def test_delayedNotWoken(self):
        """
        A delayed execution does not wake the executor when created.
        """
        self.create(delay=10)
        self.assertEqual(self.woken, [])

    def test_parameters(self):
        """
        Template defaults are rendered with the given parameters in scope
        and recorded; static defaults are validated in but only kept in
        the internal full set; secrets are masked in what is shown.
        """
        doc = self.create(parameters={"message": "hi", "password": "s3cret"})
        self.assertEqual(doc["parameters"], {"message": "hi", "password": "********", "cmd": "echo hi"})
        self.assertEqual(doc["liveaction"]["parameters"], doc["parameters"])
        self.assertEqual(doc["_given"], {"message": "hi", "password": "s3cret"})
        full = doc["_parameters"]
        self.assertEqual({k: full[k] for k in ["message", "password", "count", "cmd"]},
                         {"message": "hi", "password": "s3cret", "count": 1, "cmd": "echo hi"})
        self.assertEqual(full["timeout"], 60, "runner defaults too")

    def test_contextKept(self):
        """
        A caller's context is kept, and its user and pack win over the
        defaults.
        """
        doc = self.create(context={"user": "bob", "trace_context": {"trace_tag": "t"}})
        self.assertEqual(doc["context"], {"user": "bob", "pack": "demo", "trace_context": {"trace_tag": "t"}})

    def test_unknownAction(self):
        """
        An action that is not registered is refused with st2's message and
        nothing is stored.
        """
        self.assertEqual(self.refused("demo.nothing", {}, None, "alice"), 'Action "demo.nothing" cannot be found.')
        self.assertEqual(self.successResultOf(self.store.count("executions", {})), 0)
        self.assertEqual(self.woken, [])

    def test_disabledAction(self):
        """
        A disabled action is refused.
        """
        self.assertEqual(
            self.refused("demo.off", {"message": "x"}, None, "alice"),
            'Unable to execute. Action "demo.off" is disabled.',
        )
        self.assertEqual(self.successResultOf(self.store.count("executions", {})), 0)

    def test_invalidParameters(self):
        """
        Missing, mistyped, unknown and immutable parameters are refused with
        the validator's message; nothing is stored or queued.
        """
        self.assertEqual(self.refused("demo.plain", {}, None, "alice"), "'message' is a required property")
        self.assertIn("is not of type 'integer'", self.refused("demo.echo", {"message": "m", "count": "x"}, None, "a"))
        self.assertIn("'nope' was unexpected", self.refused("demo.echo", {"message": "m", "nope": 1}, None, "a"))
        self.assertEqual(
            self.refused("demo.echo", {"message": "m", "cmd": "rm -rf /"}, None, "alice"),
            "Override of immutable parameter(s) ['cmd'] is unsupported.",
        )
        self.assertEqual(self.successResultOf(self.store.count("executions", {})), 0)
        self.assertEqual(self.service.queued, 0)

    def test_renderError(self):
        """
        A parameter template that cannot be rendered is a request error.
        """
        self.assertEqual(
            self.refused("demo.echo", {"message": "{{ nowhere.deep }}"}, None, "alice"),
            'Dependency unsatisfied in variable "nowhere"',
        )
        self.assertEqual(self.successResultOf(self.store.count("executions", {})), 0)

    def test_failOnError(self):
        """
        With failOnError (rule-started executions) a bad request is stored
        as a failed execution carrying the error, completed at once, not
        queued.
        """
        doc = self.create("demo.plain", parameters={}, failOnError=True)
        self.assertEqual(doc["status"], "failed")
        self.assertEqual(doc["result"], {"error": "'message' is a required property",
                                         "traceback": "'message' is a required property"})
        self.assertEqual(doc["end_timestamp"], doc["start_timestamp"])
        self.assertEqual(doc["elapsed_seconds"], 0.0)
        self.assertEqual([entry["status"] for entry in doc["log"]], ["requested", "failed"])
        self.assertEqual(self.stored(doc["id"])["status"], "failed")
        self.assertEqual([d["id"] for d in self.completed], [doc["id"]])
        self.assertEqual(self.service.queued, 0)
        self.assertEqual(self.woken, [])

    def test_failedKeepsSecrets(self):
        """
        A failed request stored for a rule masks its secret parameters, in
        the parameters shown and in the error quoting a value.
        """
        doc = self.create(parameters={"message": "m", "password": 12345}, failOnError=True)
        self.assertEqual(doc["status"], "failed")
        self.assertEqual(doc["parameters"]["password"], "********")
        self.assertNotIn("12345", doc["result"]["error"])
        self.assertIn("is not of type 'string'", doc["result"]["error"])

    def test_givenIdIsUnique(self):
        """
        A given execution id is used, and a second request with it fails
        with DuplicateKey (how the rules engine enforces once per event).
        """
        doc = self.create(executionId="e" * 24)
        self.assertEqual(doc["id"], "e" * 24)
        self.failureResultOf(run(self.service.create("demo.echo", {"message": "again"}, None, "alice",
                                                     executionId="e" * 24)), DuplicateKey)
        self.assertEqual(self.stored("e" * 24)["parameters"]["message"], "hi")

    def test_storeUnavailable(self):
        """
        A store that cannot be reached fails the request with
        StoreUnavailable and nothing is queued.
        """
        self.store.breakDown()
        self.failureResultOf(run(self.service.create("demo.echo", {"message": "m"}, None, "alice")), StoreUnavailable)
        self.assertEqual(self.service.queued, 0)
        self.assertEqual(self.woken, [])


class DelayTests(ServiceTestsMixin, SynchronousTestCase):
    """
    Delayed executions wait for their time, then join the queue.
    """

    def test_delayed(self):
        """
        A delayed execution is stored as delayed with the time it may run,
        and does not count as queued.
        """
        doc = self.create(delay=1500)
        self.assertEqual(doc["status"], "delayed")
        self.assertEqual(doc["delay"], 1500)
        self.assertEqual(doc["_run_at"], "2026-11-28T21:20:01.500000Z")
        self.assertEqual([entry["status"] for entry in doc["log"]], ["requested", "delayed"])
        self.assertEqual(self.service.queued, 0)

    def test_release(self):
        """
        releaseDelayed queues exactly the delayed executions whose time has
        come, once.
        """
        soon = self.create(delay=1000)
        later = self.create(delay=5000)
        self.assertEqual(self.successResultOf(run(self.service.releaseDelayed())), 0)
        self.clock.advance(0.999)
        self.assertEqual(self.successResultOf(run(self.service.releaseDelayed())), 0)
        self.clock.advance(0.001)
        self.assertEqual(self.successResultOf(run(self.service.releaseDelayed())), 1)
        self.assertEqual(self.stored(soon["id"])["status"], "requested")
        self.assertEqual(self.stored(later["id"])["status"], "delayed")
        self.assertEqual(self.service.queued, 1)
        self.assertEqual(self.woken, [1], "the executor is told")
        self.assertEqual(self.successResultOf(run(self.service.releaseDelayed())), 0)
        self.clock.advance(10)
        self.assertEqual(self.successResultOf(run(self.service.releaseDelayed())), 1)
        self.assertEqual(self.service.queued, 2)
        self.assertEqual(self.woken, [1, 1])

    def test_cancelDelayed(self):
        """
        A canceled delayed execution is never released.
        """
        doc = self.create(delay=1000)
        self.successResultOf(run(self.service.cancel(doc, "bob")))
        self.clock.advance(2)
        self.assertEqual(self.successResultOf(run(self.service.releaseDelayed())), 0)
        self.assertEqual(self.stored(doc["id"])["status"], "canceled")


class TransitionTests(ServiceTestsMixin, SynchronousTestCase):
    """
    Status changes are conditional on the current status.
    """

    def transition(self, execId: str, fromStatuses, status: str, **kw: Any):
        return self.successResultOf(run(self.service.transition(execId, fromStatuses, status, **kw)))

    def test_guarded(self):
        """
        A transition happens only from one of the given statuses; otherwise
        it fires with None and changes nothing.
        """
        doc = self.create()
        self.assertIsNone(self.transition(doc["id"], ["scheduled"], "running"))
        self.assertEqual(self.stored(doc["id"]), doc)
        self.clock.advance(1)
        scheduled = self.transition(doc["id"], ["requested"], "scheduled", **{"liveaction.runner_info": {"hostname": "n1"}})
        self.assertEqual(scheduled["status"], "scheduled")
        self.assertEqual(scheduled["liveaction"]["runner_info"], {"hostname": "n1"})
        self.assertEqual(scheduled["log"][-1], {"status": "scheduled", "timestamp": "2026-11-28T21:20:01.000000Z"})
        self.assertNotIn("end_timestamp", scheduled)
        self.assertEqual(self.completed, [])

    def test_completion(self):
        """
        Moving to a completed status stamps the end and the elapsed time and
        tells the completion listeners, once.
        """
        doc = self.create()
        self.transition(doc["id"], ["requested"], "running")
        self.clock.advance(2.5)
        done = self.transition(doc["id"], ["running"], "succeeded", result={"stdout": "hi"})
        self.assertEqual(done["end_timestamp"], "2026-11-28T21:20:02.500000Z")
        self.assertEqual(done["elapsed_seconds"], 2.5)
        self.assertEqual(done["result"], {"stdout": "hi"})
        self.assertEqual([e["status"] for e in done["log"]], ["requested", "running", "succeeded"])
        self.assertEqual(self.completed, [done])
        self.assertIsNone(self.transition(doc["id"], ["running"], "failed"))
        self.assertEqual(self.stored(doc["id"])["status"], "succeeded")
        self.assertEqual(len(self.completed), 1)

    def test_startTimestampGiven(self):
        """
        A caller that knows the start gets elapsed_seconds computed from it.
        """
        doc = self.create()
        self.clock.advance(4)
        done = self.transition(doc["id"], ["requested"], "failed", startTimestamp="2026-11-28T21:20:03.000000Z")
        self.assertEqual(done["elapsed_seconds"], 1.0)

    def test_completeMissing(self):
        """
        Completing an execution that does not exist fires with None.
        """
        self.assertIsNone(self.transition("0" * 24, ["running"], "succeeded"))
        self.assertEqual(self.completed, [])

    def test_failingListener(self):
        """
        A listener that raises does not stop the others or the transition.
        """
        def broken(doc):
            raise RuntimeError("listener bug")

        seen = []
        self.service.addCompletionListener(broken)
        self.service.addCompletionListener(seen.append)
        doc = self.create()
        done = self.transition(doc["id"], ["requested"], "failed")
        self.assertEqual(seen, [done])
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)

    def test_waitForCompletion(self):
        """
        waitForCompletion fires when the execution completes, and leaves no
        timer behind.
        """
        doc = self.create()
        waiting = run(self.service.waitForCompletion(doc["id"], 30))
        self.assertNoResult(waiting)
        self.clock.advance(1)
        self.assertNoResult(waiting)
        done = self.transition(doc["id"], ["requested"], "succeeded")
        self.assertEqual(self.successResultOf(waiting), done)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_waitTimesOut(self):
        """
        When the timeout passes first, waitForCompletion fires with the
        execution as it is then.
        """
        doc = self.create()
        waiting = run(self.service.waitForCompletion(doc["id"], 5))
        self.transition(doc["id"], ["requested"], "running")
        self.clock.advance(4.9)
        self.assertNoResult(waiting)
        self.clock.advance(0.1)
        self.assertEqual(self.successResultOf(waiting)["status"], "running")

    def test_waitForFinished(self):
        """
        An execution already completed, or unknown, is answered at once.
        """
        doc = self.create()
        self.transition(doc["id"], ["requested"], "canceled")
        self.assertEqual(self.successResultOf(run(self.service.waitForCompletion(doc["id"], 30)))["status"], "canceled")
        self.assertIsNone(self.successResultOf(run(self.service.waitForCompletion("0" * 24, 30))))
        self.assertEqual(self.clock.getDelayedCalls(), [])


class CancelTests(ServiceTestsMixin, SynchronousTestCase):
    """
    Canceling executions.
    """

    def test_cancelQueued(self):
        """
        A queued execution is canceled with st2's result, the canceling user
        recorded, and completes.
        """
        doc = self.create()
        canceled = self.successResultOf(run(self.service.cancel(doc, "bob")))
        self.assertEqual(canceled["status"], "canceled")
        self.assertEqual(canceled["result"], {"message": "Action canceled by user.", "user": "bob"})
        self.assertEqual(canceled["context"]["cancelled_by"], "bob")
        self.assertEqual(canceled["context"]["user"], "alice")
        self.assertEqual(self.completed, [canceled])

    def test_cancelEveryCancelable(self):
        """
        Every non-final status can be canceled.
        """
        for status in ["requested", "scheduled", "delayed", "running", "pausing", "paused", "resuming"]:
            doc = self.create()
            self.successResultOf(self.store.update("executions", {"id": doc["id"]}, set={"status": status}))
            self.assertEqual(self.successResultOf(run(self.service.cancel(doc, "bob")))["status"], "canceled", status)

    def test_cancelFinished(self):
        """
        A finished execution is not changed by cancel, which fires with it
        as stored.
        """
        doc = self.create()
        done = self.successResultOf(run(self.service.transition(doc["id"], ["requested"], "succeeded")))
        self.completed.clear()
        self.assertEqual(self.successResultOf(run(self.service.cancel(doc, "bob"))), done)
        self.assertEqual(self.completed, [])

    def test_lateResultAfterCancel(self):
        """
        A result arriving after cancel does not overwrite the cancel.
        """
        doc = self.create()
        self.successResultOf(run(self.service.transition(doc["id"], ["requested"], "running")))
        self.successResultOf(run(self.service.cancel(doc, "bob")))
        self.assertIsNone(self.successResultOf(run(self.service.transition(doc["id"], ["running"], "succeeded"))))
        self.assertEqual(self.stored(doc["id"])["status"], "canceled")


class OrphanTests(ServiceTestsMixin, SynchronousTestCase):
    """
    settleOrphan: executions claimed by a process that is gone.
    """

    def claim(self, status: str, node: str) -> dict:
        doc = self.create()
        # as the executor claims: the node is set with the status
        return self.successResultOf(self.store.update("executions", {"id": doc["id"]}, set={"status": status, "node": node}))

    def test_runningAbandoned(self):
        """
        A running orphan ends abandoned with the error, and completes.
        """
        doc = self.claim("running", "gone")
        self.clock.advance(3)
        settled = self.successResultOf(run(self.service.settleOrphan(doc, "node gone")))
        self.assertEqual(settled["status"], "abandoned")
        self.assertEqual(settled["result"], {"error": "node gone"})
        self.assertEqual(settled["elapsed_seconds"], 3.0)
        self.assertEqual(self.completed, [settled])

    def test_scheduledRequeued(self):
        """
        A claimed but unstarted orphan goes back to the queue, unowned, and
        counts as queued again.
        """
        doc = self.claim("scheduled", "gone")
        self.service.noteClaimed(1)
        self.assertEqual(self.service.queued, 0)
        settled = self.successResultOf(run(self.service.settleOrphan(doc, "node gone")))
        self.assertEqual(settled["status"], "requested")
        self.assertIsNone(settled["node"])
        self.assertEqual(self.service.queued, 1)
        self.assertEqual(self.woken, [1, 1], "queued at create, then again")
        self.assertEqual(self.completed, [])

    def test_settledOnce(self):
        """
        Settling the same orphan twice (two processes noticing) changes it
        once.
        """
        running = self.claim("running", "gone")
        scheduled = self.claim("scheduled", "gone")
        self.service.noteClaimed(2)
        self.successResultOf(run(self.service.settleOrphan(running, "gone")))
        self.successResultOf(run(self.service.settleOrphan(scheduled, "gone")))
        self.assertIsNone(self.successResultOf(run(self.service.settleOrphan(running, "gone"))))
        self.assertIsNone(self.successResultOf(run(self.service.settleOrphan(scheduled, "gone"))))
        self.assertEqual(len(self.completed), 1)
        self.assertEqual(self.service.queued, 1)

    def test_reclaimedLeftAlone(self):
        """
        An execution another node has claimed since is not requeued.
        """
        doc = self.claim("scheduled", "gone")
        self.successResultOf(self.store.update("executions", {"id": doc["id"]}, set={"node": "alive"}))
        self.assertIsNone(self.successResultOf(run(self.service.settleOrphan(doc, "gone"))))
        self.assertEqual(self.stored(doc["id"])["node"], "alive")


class QueueBoundTests(ServiceTestsMixin, SynchronousTestCase):
    """
    The bound on executions waiting for a runner slot.
    """

    maxQueued = 2

    def test_full(self):
        """
        At the bound checkCapacity raises QueueFull; a claim makes room.
        """
        self.service.checkCapacity()
        self.create()
        self.service.checkCapacity()
        self.create()
        self.assertRaises(QueueFull, self.service.checkCapacity)
        self.service.noteClaimed(1)
        self.service.checkCapacity()

    def test_delayedNotCounted(self):
        """
        Delayed executions do not take queue room until released.
        """
        self.create(delay=1000)
        self.create(delay=1000)
        self.service.checkCapacity()
        self.clock.advance(1)
        self.successResultOf(run(self.service.releaseDelayed()))
        self.assertRaises(QueueFull, self.service.checkCapacity)

    def test_refresh(self):
        """
        refreshQueued counts what waits in the store, including executions
        queued by another process sharing it.
        """
        other = ExecutionService(MemoryStore(self.store.database), self.clock, "https://bwcd.example/")
        self.successResultOf(other._store.start())
        self.successResultOf(run(other.create("demo.echo", {"message": "x"}, None, "bob")))
        self.successResultOf(run(other.create("demo.echo", {"message": "y"}, None, "bob")))
        self.service.checkCapacity()
        self.assertEqual(self.successResultOf(run(self.service.refreshQueued())), 2)
        self.assertEqual(self.service.queued, 2)
        self.assertRaises(QueueFull, self.service.checkCapacity)

    def test_refreshKeepsLaterChanges(self):
        """
        What this process queues after a refresh adds to the count; the
        store's count replaces what was queued before it.
        """
        self.create()
        self.assertEqual(self.successResultOf(run(self.service.refreshQueued())), 1)
        self.assertEqual(self.service.queued, 1)
        self.create()
        self.assertEqual(self.service.queued, 2)
        self.service.noteClaimed(5)
        self.assertEqual(self.service.queued, 0, "never negative")


class ReRunTests(ServiceTestsMixin, SynchronousTestCase):
    """
    Re-running an execution.
    """

    def test_reRun(self):
        """
        A re-run uses the original's given parameters (secrets included)
        with the new ones on top, keeps pack and trace context, and records
        what it re-runs and who asked.
        """
        original = self.create(parameters={"message": "hi", "password": "pw"},
                               context={"trace_context": {"trace_tag": "t"}, "other": 1})
        again = self.successResultOf(run(self.service.reRun(original, {"count": 3}, "bob")))
        self.assertNotEqual(again["id"], original["id"])
        self.assertEqual(again["_given"], {"message": "hi", "password": "pw", "count": 3})
        self.assertEqual(again["parameters"]["cmd"], "echo hi")
        self.assertEqual(again["context"], {"pack": "demo", "trace_context": {"trace_tag": "t"}, "user": "bob",
                                            "re-run": {"ref": original["id"]}})


class PublicDocumentTests(SynchronousTestCase):
    """
    publicDocument: the execution as the API shows it.
    """

    def test_masking(self):
        """
        Internal fields, the node and empty fields are dropped; zero and
        empty parameters are kept.
        """
        doc = {
            "id": "x",
            "status": "running",
            "_given": {"password": "pw"},
            "_parameters": {"password": "pw"},
            "_run_at": "t",
            "node": "n1",
            "parameters": {},
            "result": {},
            "context": {"user": "a"},
            "elapsed_seconds": 0,
            "end_timestamp": None,
            "children": [],
        }
        self.assertEqual(
            publicDocument(doc),
            {"id": "x", "status": "running", "parameters": {}, "context": {"user": "a"}, "elapsed_seconds": 0},
        )

    def test_completedStatuses(self):
        """
        The completed statuses are st2's final ones.
        """
        self.assertEqual(COMPLETED, {"succeeded", "failed", "timeout", "canceled", "abandoned"})
