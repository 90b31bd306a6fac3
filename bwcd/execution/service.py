# -*- test-case-name: tests.test_daemon -*-
"""
Execution requests: from "run this action with these parameters" to a stored,
queued execution document, and every later change of its status.

All status changes go through L{ExecutionService.transition}, a conditional
update in the store ("set status X where status is one of Y"), so a canceled
execution can never be overwritten by a late result, and two processes can
never both move the same execution forward.

Every write of an execution also sets C{_updated_at} (this process's clock,
ISO-8601 like every stored timestamp; indexed), and every write and every
stored output chunk is told to the change listeners: the event stream
(L{bwcd.stream}) pushes this process's changes at once and finds other
processes' through that field, without a store write of its own.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from bwcd.execution.runners.params import ParameterError, maskSecrets, maskText, mergeSchema, validateParameters
from bwcd.execution.runners.types import runnerParameters, runnerTypeDict
from bwcd.store.interface import IStore, newId
from bwcd.datastore.crypto import decrypt, encrypt
from bwcd.execution.parameters import ExecutionRequestError, liveParameters, renderLive
from bwcd.execution.queue import QueueBound, QueueFull
from bwcd.execution.sealed import seal, unseal
from bwcd.timeutil import isoformat, parseIso, utcnow

log = Logger(namespace="bwcd.execution.service")

COMPLETED = frozenset({"succeeded", "failed", "timeout", "canceled", "abandoned"})
CANCELABLE = frozenset({"requested", "scheduled", "delayed", "running", "pausing", "paused", "resuming"})


class ExecutionService(QueueBound):
    """
    Creates executions, moves them through their statuses and tells
    listeners when one is queued (so the executor of this process claims it
    at once instead of at its next poll) and when one completes.
    """

    def __init__(
        self,
        store: IStore,
        clock: IReactorTime,
        publicURL: str,
        webuiBaseURL: str = "",
        maxQueued: int = 10000,
        keys: Optional[Any] = None,
    ) -> None:
        """
        @param keys: the datastore (L{bwcd.datastore.keys.KeyService}) that
            C{st2kv.system.*} / C{st2kv.user.*} in parameters read, or None.
        """
        self._store = store
        self._keys = keys
        self._clock = clock
        self._publicURL = publicURL.rstrip("/")
        self._webui = (webuiBaseURL or publicURL).rstrip("/")
        self._listeners: List[Callable[[dict], Any]] = []
        self._changeListeners: List[Callable[[str, dict], Any]] = []
        self._queueListeners: List[Callable[[], Any]] = []
        self._waiters: Dict[str, List[Deferred]] = {}
        self.maxQueued = maxQueued
        self._runnerDocs: Dict[str, Dict[str, Any]] = {}

    def claimed(self, docs: List[dict]) -> None:
        """
        The executor of this process claimed C{docs} (now C{scheduled}):
        count them off the queue and tell the change listeners.
        """
        self.noteClaimed(len(docs))
        for doc in docs:
            self._changed("update", doc)

    # -- queries ---------------------------------------------------------

    async def action(self, ref: str) -> Optional[dict]:
        return await self._store.findOne("actions", {"ref": ref})

    def _runnerDoc(self, name: str) -> Dict[str, Any]:
        """
        The runner type document embedded in executions: built once per
        runner and shared, since the store serialises it and nothing
        modifies it.
        """
        doc = self._runnerDocs.get(name)
        if doc is None:
            doc = self._runnerDocs[name] = runnerTypeDict(name)
        return doc

    def now(self) -> str:
        return isoformat(utcnow(self._clock))

    def schemaFor(self, action: Mapping[str, Any]) -> Dict[str, Dict[str, Any]]:
        try:
            return mergeSchema(runnerParameters(action["runner_type"]), action.get("parameters") or {}, action["ref"])
        except ParameterError as e:
            raise ExecutionRequestError(str(e))

    def secretSchemaFor(self, action: Mapping[str, Any]) -> Dict[str, Dict[str, Any]]:
        """
        A schema good enough to mask secrets with even when the action's
        own schema cannot be merged with its runner's (a broken override):
        the runner's definitions overlaid with the action's, as written.
        """
        try:
            schema: Dict[str, Dict[str, Any]] = dict(runnerParameters(action["runner_type"]))
        except KeyError:
            schema = {}
        for name, spec in (action.get("parameters") or {}).items():
            if isinstance(spec, Mapping):
                schema[name] = dict(schema.get(name) or {}, **spec)
        return schema

    # -- creation --------------------------------------------------------

    async def create(
        self,
        actionRef: str,
        parameters: Optional[Mapping[str, Any]],
        context: Optional[Mapping[str, Any]],
        user: str,
        embed: Optional[Mapping[str, Any]] = None,
        renderContext: Optional[Mapping[str, Any]] = None,
        failOnError: bool = False,
        executionId: Optional[str] = None,
        delay: Optional[int] = None,
    ) -> dict:
        """
        Store a new execution of C{actionRef} (status C{requested}) and queue
        it.

        @param failOnError: store a C{failed} execution carrying the error
            instead of raising, as StackStorm does for rule-started ones.
        @param executionId: the id to use; the rules engine derives it from
            (rule, trigger instance) so that the store's unique id refuses a
            second execution for the same enforcement (L{DuplicateKey}).
        @param delay: milliseconds to wait before the execution may be
            claimed; it is C{delayed} until then, as in StackStorm.
        @raise ExecutionRequestError: unknown or disabled action, a render or
            validation error (unless C{failOnError}).
        """
        action = await self.action(actionRef)
        if action is None:
            raise ExecutionRequestError(f'Action "{actionRef}" cannot be found.')
        execId = executionId or newId()
        ctx = dict(context or {})
        ctx.setdefault("user", user)
        ctx.setdefault("pack", action["pack"])
        now = self.now()
        doc: Dict[str, Any] = {
            "id": execId,
            "action": action,
            "runner": self._runnerDoc(action["runner_type"]),
            "liveaction": {"id": newId(), "action": actionRef, "action_is_workflow": False, "callback": {}, "runner_info": {}},
            "status": "requested",
            "start_timestamp": now,
            "log": [{"status": "requested", "timestamp": now}],
            "context": ctx,
            "web_url": f"{self._webui}/#/history/{execId}/general",
            "node": None,
            "_updated_at": now,
        }
        if embed:
            # the document is serialised by the store; nothing mutates these
            doc.update(embed)
        error: Optional[str] = None
        given = dict(parameters or {})
        live = given
        schema = self.secretSchemaFor(action)
        try:
            if not action.get("enabled", True):
                raise ExecutionRequestError(f'Unable to execute. Action "{actionRef}" is disabled.')
            schema = self.schemaFor(action)
            scope = dict(renderContext or {})
            scope["action_context"] = ctx
            live = await renderLive(schema, given, scope, ctx["user"], self._keys)
            # Immutability and types are checked on what the caller gave;
            # rendered template defaults (core.echo's cmd) are added after.
            full = validateParameters(schema, {k: live[k] for k in given})
            full.update({k: v for k, v in live.items() if k not in given})
        except (ExecutionRequestError, ParameterError) as e:
            # The message may quote a value (jsonschema's "'x' is not of
            # type 'integer'"): a secret one is masked there too, since the
            # message is stored, answered and logged.
            error = maskText(str(e), schema, live)
        # Secrets are masked whether or not the request was valid: a failed
        # execution is stored and shown as well.
        doc["parameters"] = maskSecrets(schema, live)
        # what re-run repeats: the given values as rendered (a rule's
        # templates need the trigger they were rendered with)
        doc["_given"] = {k: live.get(k, v) for k, v in given.items()}
        if error is None:
            doc["_parameters"] = full
        encrypt = self._encrypt()
        if encrypt is not None:
            seal(doc, schema, encrypt)
        doc["liveaction"]["parameters"] = doc["parameters"]
        if error is not None:
            if not failOnError:
                raise ExecutionRequestError(error)
            doc["status"] = "failed"
            doc["result"] = {"error": error, "traceback": error}
            doc["end_timestamp"] = now
            doc["elapsed_seconds"] = 0.0
            doc["log"].append({"status": "failed", "timestamp": now})
            await self._store.insert("executions", doc)
            self._changed("create", doc)
            self._completed(doc)
            return doc
        if delay:
            doc["status"] = "delayed"
            doc["delay"] = delay
            doc["_run_at"] = isoformat(utcnow(self._clock) + timedelta(milliseconds=delay))
            doc["log"].append({"status": "delayed", "timestamp": now})
        await self._store.insert("executions", doc)
        self._changed("create", doc)
        if "rule" not in ctx:  # the rules engine logs the executions it starts
            log.info("Execution {execution_id} of {action} requested by {user}", execution_id=execId, action=actionRef, user=ctx["user"])
        if not delay:
            self._queued(1)
        return doc

    async def settleOrphan(self, doc: Mapping[str, Any], error: str) -> Optional[dict]:
        """
        Settle an execution claimed by a process that is gone: a running one
        ends C{abandoned} with C{error} (its child died with the process); a
        claimed but unstarted one goes back to the queue.  Conditional, so
        several processes settling at once change it once.
        """
        if doc["status"] == "running":
            return await self.transition(
                doc["id"], ["running"], "abandoned", startTimestamp=doc["start_timestamp"], node=doc.get("node"), result={"error": error}
            )
        requeued = await self._store.update(
            "executions", {"id": doc["id"], "status": "scheduled", "node": doc.get("node")},
            set={"status": "requested", "node": None, "_updated_at": self.now()},
        )
        if requeued is not None:
            self._changed("update", requeued)
            self._queued(1)
        return requeued

    def requeued(self, doc: dict) -> None:
        """
        The executor gave back C{doc} (now C{requested} again) without
        running it: tell the change listeners and the queue.
        """
        self._changed("update", doc)
        self._queued(1)

    async def releaseDelayed(self) -> int:
        """
        Queue the delayed executions whose time has come; return how many.
        """
        now = self.now()
        released = 0
        while True:
            doc = await self._store.update("executions", {"status": "delayed", "_run_at": {"$lte": now}}, set={"status": "requested", "_updated_at": self.now()})
            if doc is None:
                break
            self._changed("update", doc)
            released += 1
        if released:
            self._queued(released)
        return released

    def _encrypt(self) -> Optional[Callable[[str], str]]:
        key = getattr(self._keys, "cryptoKey", None)
        return None if key is None else (lambda text: encrypt(key, text))

    def _decrypt(self) -> Optional[Callable[[str], str]]:
        key = getattr(self._keys, "cryptoKey", None)
        return None if key is None else (lambda text: decrypt(key, text))

    def unsealed(self, doc: Mapping[str, Any]) -> Dict[str, Any]:
        """
        The execution with its secret parameters decrypted, for the runner
        (L{bwcd.execution.sealed}); never stored or shown.
        """
        return unseal(doc, self._decrypt())

    async def reRun(self, original: dict, parameters: Mapping[str, Any], user: str) -> dict:
        try:
            original = self.unsealed(original)
        except ValueError as e:
            raise ExecutionRequestError(str(e))
        merged = dict(original.get("_given", original.get("parameters") or {}))
        merged.update(parameters or {})
        ctx = {k: v for k, v in (original.get("context") or {}).items() if k in ("pack", "trace_context")}
        ctx["user"] = user
        ctx["re-run"] = {"ref": original["id"]}
        return await self.create(original["action"]["ref"], merged, ctx, user)

    # -- status changes --------------------------------------------------

    async def transition(
        self,
        execId: str,
        fromStatuses: Iterable[str],
        status: str,
        startTimestamp: Optional[str] = None,
        node: Optional[str] = None,
        **fields: Any,
    ) -> Optional[dict]:
        """
        Move an execution to C{status} if it is in one of C{fromStatuses};
        fire with the new document, or C{None} when it was not.

        @param startTimestamp: the execution's start, when the caller knows
            it, saving a read to compute C{elapsed_seconds}.
        @param node: the node that claimed it, when the change is that
            node's: only then is it made, so a node that lost an execution
            (re-queued while it was paused or cut off) cannot record it a
            second time over the node that runs it now.
        """
        now = self.now()
        changes: Dict[str, Any] = {"status": status}
        changes.update(fields)
        changes["_updated_at"] = now
        if status in COMPLETED:
            if startTimestamp is None:
                doc = await self._store.get("executions", execId)
                if doc is None:
                    return None
                startTimestamp = doc["start_timestamp"]
            changes["end_timestamp"] = now
            start = parseIso(startTimestamp)
            changes["elapsed_seconds"] = round((parseIso(now) - start).total_seconds(), 6)
        query: Dict[str, Any] = {"id": execId, "status": {"$in": list(fromStatuses)}}
        if node is not None:
            query["node"] = node
        updated = await self._store.update(
            "executions",
            query,
            set=changes,
            push={"log": {"status": status, "timestamp": now}},
        )
        if updated is not None:
            self._changed("update", updated)
            if status in COMPLETED:
                self._completed(updated)
        return updated

    async def cancel(self, execution: dict, user: str) -> dict:
        """
        Cancel a queued or running execution.  A running child is killed by
        the executor that runs it when it sees the status change (at once in
        this process, within its poll interval in another).
        """
        result = {"message": "Action canceled by user.", "user": user}
        updated = await self.transition(
            execution["id"], CANCELABLE, "canceled", result=result, **{"context.cancelled_by": user}
        )
        return updated if updated is not None else (await self._store.get("executions", execution["id"]))

    # -- listeners -------------------------------------------------------

    def addQueueListener(self, fn: Callable[[], Any]) -> None:
        """
        Call C{fn()} whenever executions are queued (requested, released
        from a delay, or given back by a node that died).
        """
        self._queueListeners.append(fn)

    def removeQueueListener(self, fn: Callable[[], Any]) -> None:
        if fn in self._queueListeners:
            self._queueListeners.remove(fn)

    def _queued(self, count: int) -> None:
        self._queuedDelta += count
        for fn in list(self._queueListeners):
            try:
                fn()
            except Exception:
                log.failure("Queue listener {fn!r} failed", fn=fn)

    def addChangeListener(self, fn: Callable[[str, dict], Any]) -> None:
        """
        Call C{fn(change, doc)} after every write this process makes:
        C{("create", execution)}, C{("update", execution)} (the stored
        document, internal fields included) and C{("output", row)} for each
        stored output chunk.
        """
        self._changeListeners.append(fn)

    def removeChangeListener(self, fn: Callable[[str, dict], Any]) -> None:
        if fn in self._changeListeners:
            self._changeListeners.remove(fn)

    def _changed(self, change: str, doc: dict) -> None:
        for fn in self._changeListeners:
            try:
                fn(change, doc)
            except Exception:
                log.failure("Change listener {fn!r} failed", fn=fn)

    def outputStored(self, row: dict) -> dict:
        """
        The executor stored an output chunk (C{execution_output} row, with
        its id): tell the change listeners; returns C{row}, so that it can
        be a callback.
        """
        self._changed("output", row)
        return row

    def addCompletionListener(self, fn: Callable[[dict], Any]) -> None:
        self._listeners.append(fn)

    def _completed(self, doc: dict) -> None:
        for d in self._waiters.pop(doc["id"], []):
            d.callback(doc)
        for fn in self._listeners:
            try:
                fn(doc)
            except Exception:
                log.failure("Completion listener {fn!r} failed", fn=fn)

    async def waitForCompletion(self, execId: str, timeout: float) -> Optional[dict]:
        """
        The execution once it has completed, or as it is when C{timeout}
        seconds have passed.
        """
        doc = await self._store.get("executions", execId)
        if doc is None or doc["status"] in COMPLETED or timeout <= 0:
            return doc
        d: Deferred = Deferred()
        self._waiters.setdefault(execId, []).append(d)
        call = self._clock.callLater(timeout, lambda: (not d.called) and d.callback(None))
        result = await d
        if call.active():
            call.cancel()
        waiters = self._waiters.get(execId)
        if waiters and d in waiters:
            waiters.remove(d)
            if not waiters:
                del self._waiters[execId]
        if result is None:
            return await self._store.get("executions", execId)
        return result


def publicDocument(doc: Mapping[str, Any]) -> dict:
    """
    The execution as the API shows it: internal fields (leading C{_}) and
    falsy top-level fields dropped, as st2's C{from_model} does.
    """
    return {k: v for k, v in doc.items() if not k.startswith("_") and k != "node" and (v or v == 0 or k == "parameters")}


__all__ = [
    "CANCELABLE",
    "COMPLETED",
    "ExecutionRequestError",
    "ExecutionService",
    "QueueFull",
    "liveParameters",
    "publicDocument",
]
