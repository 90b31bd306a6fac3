# -*- test-case-name: tests.test_daemon -*-
"""
C{/v1/executions}: start, list, show, cancel, re-run and read the output of
executions, with StackStorm's shapes and messages (st2-api.md section 4).
"""

from __future__ import annotations

import json
from typing import Any, Dict

from bwcd.api.framework import Api, ApiError, Principal, Reply
from bwcd.api.query import arg, filtersFrom, listPage
from bwcd.execution.service import ExecutionRequestError, ExecutionService, QueueFull, publicDocument
from bwcd.store.interface import IStore

PREFIXES = ("/v1/executions", "/v1/actionexecutions", "/api/v1/executions")

#: query name -> document path, for GET /v1/executions filters
FILTERS = {
    "action": "action.ref",
    "status": "status",
    "user": "context.user",
    "rule": "rule.name",
    "runner": "runner.name",
    "trigger": "trigger.name",
    "trigger_type": "trigger_type.name",
    "trigger_instance": "trigger_instance.id",
    "liveaction": "liveaction.id",
    "parent": "parent",
}


def readJsonBody(request, required: bool = True) -> Any:
    raw = request.content.read() if request.content is not None else b""
    if not raw.strip():
        if required:
            raise ApiError(400, "Request body is required")
        return {}
    try:
        return json.loads(raw)
    except ValueError as e:
        raise ApiError(400, f"Failed to parse request body: {e}")


def queueFullError(executions: ExecutionService) -> ApiError:
    return ApiError(
        503,
        f"{executions.queued} executions are waiting to run (runner.max_queued is {executions.maxQueued}); try again shortly.",
        headers={"Retry-After": "2"},
    )


def installExecutionRoutes(api: Api, store: IStore, executions: ExecutionService, executor: Any) -> None:
    """
    Add the execution routes to C{api}.
    """

    async def find(execId: str) -> Dict[str, Any]:
        if execId == "last":
            doc = await store.findOne("executions", {}, sort=[("start_timestamp", -1)])
        else:
            doc = await store.get("executions", execId)
        if doc is None:
            raise ApiError(404, f'Unable to identify resource with id "{execId}".')
        return doc

    @api.route([p for p in PREFIXES], ["POST"])
    async def create(request, principal: Principal):
        body = readJsonBody(request)
        if not isinstance(body, dict):
            raise ApiError(400, f"{json.dumps(body)} is not of type 'object'")
        allowed = {"action", "parameters", "context", "notify", "delay", "user", "id", "trace_tag"}
        extra = sorted(set(body) - allowed)
        if extra:
            raise ApiError(400, "Additional properties are not allowed (%s %s unexpected)" % (", ".join(repr(e) for e in extra), "was" if len(extra) == 1 else "were"))
        ref = body.get("action")
        if not isinstance(ref, str) or not ref:
            raise ApiError(400, "'action' is a required property")
        params = body.get("parameters") or {}
        if not isinstance(params, dict):
            raise ApiError(400, f"{json.dumps(params)} is not of type 'object'")
        context = body.get("context") or {}
        if not isinstance(context, dict):
            raise ApiError(400, f"{json.dumps(context)} is not of type 'object'")
        header = request.getHeader(b"st2-context")
        if header:
            try:
                extraContext = json.loads(header)
            except ValueError:
                extraContext = None
            if not isinstance(extraContext, dict):
                raise ApiError(400, f"Unable to convert st2-context from the headers into JSON (was {type(extraContext).__name__}).")
            context.update(extraContext)
        user = body.get("user") or (principal.user if principal else "stanley")
        if body.get("trace_tag"):
            context.setdefault("trace_context", {"trace_tag": body["trace_tag"]})
        delay = body.get("delay")
        if delay is not None and (not isinstance(delay, int) or isinstance(delay, bool) or delay < 0):
            raise ApiError(400, f"{json.dumps(delay)} is not of type 'integer'" if not isinstance(delay, int) or isinstance(delay, bool) else f"{delay} is less than the minimum of 0")
        try:
            executions.checkCapacity()
            doc = await executions.create(ref, params, context, user, delay=delay)
        except ExecutionRequestError as e:
            raise ApiError(400, str(e))
        except QueueFull:
            raise queueFullError(executions)
        return Reply(publicDocument(doc), 201)

    @api.route([p for p in PREFIXES], ["GET"])
    async def listExecutions(request, principal: Principal):
        # "null" means "the field is absent" (the CLI sends parent=null)
        query = {path: (None if value == "null" else value) for path, value in filtersFrom(request, FILTERS).items()}
        gt, lt = arg(request, "timestamp_gt"), arg(request, "timestamp_lt")
        if gt or lt:
            cond = {}
            if gt:
                cond["$gt"] = gt
            if lt:
                cond["$lt"] = lt
            query["start_timestamp"] = cond
        ids = arg(request, "id")
        if ids:
            query["id"] = {"$in": ids.split(",")[:100]}
        ascending = bool(gt) or arg(request, "sort_asc") in ("True", "true", "1") or arg(request, "sort") == "asc"
        exclude = set((arg(request, "exclude_attributes") or "").split(",")) - {""}
        bad = exclude - {"result", "trigger_instance", "status"}
        if bad:
            raise ApiError(400, f"Invalid or unsupported exclude attribute specified: {sorted(bad)[0]}")

        def present(doc: dict) -> dict:
            shown = publicDocument(doc)
            for field in exclude:
                shown.pop(field, None)
            return shown

        sort = [("start_timestamp", 1 if ascending else -1), ("action.ref", 1)]
        return await listPage(store, "executions", query, sort, request, 100, present)

    @api.route([p + "/<string:execId>" for p in PREFIXES], ["GET"])
    async def show(request, principal: Principal, execId: str):
        return publicDocument(await find(execId))

    @api.route([p + "/<string:execId>" for p in PREFIXES], ["DELETE"])
    async def cancel(request, principal: Principal, execId: str):
        doc = await find(execId)
        if doc["status"] == "canceled":
            return publicDocument(doc)
        if doc["status"] not in ("requested", "scheduled", "delayed", "running", "pausing", "paused", "resuming"):
            return {"faultstring": f"Action cannot be canceled. State = {doc['status']}."}
        updated = await executions.cancel(doc, principal.user if principal else "stanley")
        executor.cancelLocal(execId)
        return publicDocument(updated)

    @api.route([p + "/<string:execId>/re_run" for p in PREFIXES], ["POST"])
    async def reRun(request, principal: Principal, execId: str):
        body = readJsonBody(request, required=False)
        if not isinstance(body, dict):
            raise ApiError(400, f"{json.dumps(body)} is not of type 'object'")
        if (body.get("tasks") or body.get("reset")) and body.get("parameters"):
            raise ApiError(400, "Parameters override is not supported when re-running task(s) for a workflow.")
        params = body.get("parameters") or {}
        if not isinstance(params, dict):
            raise ApiError(400, f"{json.dumps(params)} is not of type 'object'")
        original = await find(execId)
        try:
            doc = await executions.reRun(original, params, body.get("user") or (principal.user if principal else "stanley"))
        except ExecutionRequestError as e:
            raise ApiError(400, str(e))
        return Reply(publicDocument(doc), 201)

    @api.route([p + "/<string:execId>/output" for p in PREFIXES], ["GET"])
    async def output(request, principal: Principal, execId: str):
        doc = await find(execId)
        kind = arg(request, "output_type") or "all"
        if kind not in ("all", "stdout", "stderr"):
            raise ApiError(400, f'Invalid output_type "{kind}" (use all, stdout or stderr)')
        query: Dict[str, Any] = {"execution_id": doc["id"]}
        if kind != "all":
            query["output_type"] = kind
        chunks = await store.find("execution_output", query, sort=[("seq", 1)])
        text = "".join(c["data"] for c in chunks)
        return Reply(raw=text.encode("utf-8"), contentType="text/plain; charset=utf-8")

    @api.route([p + "/<string:execId>/result" for p in PREFIXES], ["GET"])
    async def result(request, principal: Principal, execId: str):
        doc = await find(execId)
        return Reply(raw=json.dumps(doc.get("result")).encode("utf-8"), contentType="text/json")
