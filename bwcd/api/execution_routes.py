# -*- test-case-name: tests.test_daemon -*-
"""
C{/v1/executions}: start, list, show, cancel, re-run and read the output of
executions, with StackStorm's shapes and messages (st2-api.md section 4).
"""

from __future__ import annotations

import json
from typing import Any, Dict, Optional

from bwcd.api.framework import Api, Principal, Reply
from bwcd.api.query import arg, filtersFrom, listPage
from bwcd.errors import Invalid, NotFound, Refused, Unavailable
from bwcd.api.webhook_routes import requestedWait
from bwcd.execution.service import COMPLETED, ExecutionRequestError, ExecutionService, QueueFull, publicDocument
from bwcd.jsontext import JsonError, loadJson
from bwcd.store.interface import IStore

PREFIXES = ("/v1/executions", "/v1/actionexecutions", "/api/v1/executions")

#: the longest C{GET /v1/executions/<id>?wait=N} may wait (seconds); larger
#: values are cut to it
MAX_WAIT = 300.0

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


#: st2's refusal of C{user} from a caller who is not an admin
MSG_USER_NOT_ADMIN = '"user" attribute can only be provided by admins when RBAC is enabled'


def queueFullError(executions: ExecutionService) -> Unavailable:
    return Unavailable(
        f"{executions.queued} executions are waiting to run (runner.max_queued is {executions.maxQueued}); try again shortly.",
        headers={"Retry-After": "2"},
    )


def _notObject(value: Any) -> Invalid:
    return Invalid(f"{json.dumps(value)} is not of type 'object'")


def objectField(body: Dict[str, Any], name: str) -> Dict[str, Any]:
    """
    C{body[name]} when it is an object, C{{}} when absent or null.

    @raise Invalid: anything else (a list, a string, even empty ones).
    """
    value = body.get(name)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise _notObject(value)
    return value


def runAs(principal: Optional[Principal], asked: Any) -> str:
    """
    The user an execution runs as: the caller, or the C{user} a request
    names when the caller is an admin (st2 without RBAC: a full-access
    credential).

    @raise Invalid: C{asked} is not a string.
    @raise Refused: a caller who is not an admin names someone else.
    """
    caller = principal.user if principal else "stanley"
    if asked is None or asked == "":
        return caller
    if not isinstance(asked, str):
        raise Invalid(f"{json.dumps(asked)} is not of type 'string'")
    if asked != caller and principal is not None and not principal.admin:
        raise Refused(MSG_USER_NOT_ADMIN)
    return asked


def headerContext(request) -> Dict[str, Any]:
    """
    The extra context of the C{St2-Context} header (a JSON object), or C{{}}.

    @raise Invalid: it is not a JSON object.
    """
    header = request.getHeader(b"st2-context")
    if not header:
        return {}
    try:
        extra = loadJson(header if isinstance(header, bytes) else header.encode("utf-8"))
    except JsonError:
        extra = None
    if not isinstance(extra, dict):
        raise Invalid(f"Unable to convert st2-context from the headers into JSON (was {type(extra).__name__}).")
    return extra


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
            raise NotFound(f'Unable to identify resource with id "{execId}".')
        return doc

    @api.route([p for p in PREFIXES], ["POST"])
    async def create(request, principal: Principal):
        body = api.readJson(request)
        if not isinstance(body, dict):
            raise _notObject(body)
        allowed = {"action", "parameters", "context", "notify", "delay", "user", "id", "trace_tag"}
        extra = sorted(set(body) - allowed)
        if extra:
            raise Invalid("Additional properties are not allowed (%s %s unexpected)" % (", ".join(repr(e) for e in extra), "was" if len(extra) == 1 else "were"))
        ref = body.get("action")
        if not isinstance(ref, str) or not ref:
            raise Invalid("'action' is a required property")
        params = objectField(body, "parameters")
        context = objectField(body, "context")
        context.update(headerContext(request))
        user = runAs(principal, body.get("user"))
        # other keys may be added, but the context's user is the one the
        # execution runs as (and its child token is issued for): never a
        # name the request makes up
        context["user"] = user
        if body.get("trace_tag"):
            context.setdefault("trace_context", {"trace_tag": body["trace_tag"]})
        delay = body.get("delay")
        if delay is not None and (not isinstance(delay, int) or isinstance(delay, bool) or delay < 0):
            raise Invalid(f"{json.dumps(delay)} is not of type 'integer'" if not isinstance(delay, int) or isinstance(delay, bool) else f"{delay} is less than the minimum of 0")
        try:
            executions.checkCapacity()
            doc = await executions.create(ref, params, context, user, delay=delay)
        except QueueFull:
            raise queueFullError(executions) from None
        except ExecutionRequestError as e:
            raise Invalid(str(e)) from None
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
            raise Invalid(f"Invalid or unsupported exclude attribute specified: {sorted(bad)[0]}")

        def present(doc: dict) -> dict:
            shown = publicDocument(doc)
            for field in exclude:
                shown.pop(field, None)
            return shown

        sort = [("start_timestamp", 1 if ascending else -1), ("action.ref", 1)]
        return await listPage(store, "executions", query, sort, request, principal, 100, present)

    @api.route([p + "/<string:execId>" for p in PREFIXES], ["GET"])
    async def show(request, principal: Principal, execId: str):
        # ?wait=N or Prefer: wait=N: answer once the execution has
        # completed or N seconds (at most MAX_WAIT) have passed, so a
        # caller waits for the end without polling
        wait, viaPrefer = requestedWait(request, MAX_WAIT)
        doc = await find(execId)
        if wait and doc["status"] not in COMPLETED:
            doc = await executions.waitForCompletion(doc["id"], wait) or doc
        if viaPrefer:
            return Reply(publicDocument(doc), 200, {"Preference-Applied": f"wait={wait:g}"})
        return publicDocument(doc)

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
        body = api.readJson(request, required=False)
        if body is None:
            body = {}
        if not isinstance(body, dict):
            raise _notObject(body)
        if (body.get("tasks") or body.get("reset")) and body.get("parameters"):
            raise Invalid("Parameters override is not supported when re-running task(s) for a workflow.")
        params = objectField(body, "parameters")
        user = runAs(principal, body.get("user"))
        original = await find(execId)
        try:
            doc = await executions.reRun(original, params, user)
        except ExecutionRequestError as e:
            raise Invalid(str(e)) from None
        return Reply(publicDocument(doc), 201)

    @api.route([p + "/<string:execId>/output" for p in PREFIXES], ["GET"])
    async def output(request, principal: Principal, execId: str):
        doc = await find(execId)
        kind = arg(request, "output_type") or "all"
        if kind not in ("all", "stdout", "stderr"):
            raise Invalid(f'Invalid output_type "{kind}" (use all, stdout or stderr)')
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


__all__ = ["FILTERS", "MAX_WAIT", "MSG_USER_NOT_ADMIN", "PREFIXES", "headerContext", "installExecutionRoutes", "queueFullError", "runAs"]
