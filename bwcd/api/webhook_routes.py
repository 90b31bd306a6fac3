# -*- test-case-name: tests.test_webhooks_api -*-
"""
C{/v1/webhooks}: list the registered hooks and receive events
(st2-api.md section 1).

Receiving is the hot path, so a request does no store read: the hooks come
from the in-memory L{RuleIndex}, the body is parsed once, and the only
store operation is the insert of the trigger instance (grouped with other
writes into one commit by the SQLite backend).  One admission gate
(L{RulesEngine.admit}) comes first, so a refused event (503 with
Retry-After) reads and stores nothing.  The answer (202) is sent once the
insert is durable and before any rule is enforced; the engine takes the
instance, with the rules it matched, on a later turn of the reactor.

C{Prefer: wait=N} (RFC 7240) or C{?wait=N} make the request wait, at most
N seconds, for the rules to be processed and the executions they started to
complete, and answer with what happened: BWC's guide admits that a webhook
is "not bidirectional" and carries "no guarantee of execution"; this closes
both gaps for callers that want it.
"""

from __future__ import annotations

import json
from typing import Any, Dict, Iterable, List, Optional, Tuple

from twisted.internet.defer import Deferred, DeferredList, ensureDeferred, gatherResults
from twisted.internet.interfaces import IReactorTime

from bwcd.api.framework import Api, Reply, RestOfPath
from bwcd.api.query import arg
from bwcd.auth.principal import Principal
from bwcd.errors import Invalid, NotFound, Unavailable
from bwcd.rules.engine import Outcome, Overloaded, RulesEngine
from bwcd.rules.index import RuleIndex
from bwcd.rules.triggers import GENERIC_HOOK, payloadError, publicTrigger
from bwcd.webhooks.body import BodyError, parseBody
from bwcd.webhooks.headers import payloadHeaders

PREFIXES = ("/v1/webhooks", "/api/v1/webhooks")
MAX_WAIT = 30.0
COMPLETED = frozenset({"succeeded", "failed", "timeout", "canceled", "abandoned"})

_TIMED_OUT = object()

_JSON_TYPE_NAMES = {dict: "object", list: "array", str: "string", int: "integer", float: "number", bool: "boolean", type(None): "null"}


def _number(text: str) -> Optional[float]:
    try:
        value = float(text.strip().strip('"'))
    except ValueError:
        return None
    if value != value or value < 0:
        return None
    return value


def preferredWait(values: Iterable[str]) -> Optional[float]:
    """
    The C{wait} preference (seconds) from C{Prefer} header values
    (C{respond-async, wait=10}), or None.
    """
    for value in values:
        for token in value.split(","):
            name, _, rest = token.split(";", 1)[0].partition("=")
            if name.strip().lower() == "wait" and rest:
                number = _number(rest)
                if number is not None:
                    return number
    return None


def requestedWait(request, maxWait: float = MAX_WAIT) -> Tuple[Optional[float], bool]:
    """
    How long the caller asked to wait, capped at C{maxWait}, and whether it
    asked through C{Prefer} (which is then acknowledged with
    C{Preference-Applied}).

    @raise Invalid: a C{wait} query value that is not a number >= 0.
    """
    query = arg(request, "wait")
    if query is not None and query != "":
        number = _number(query)
        if number is None:
            raise Invalid('Parameter "wait" is not of type number')
        return min(number, maxWait), False
    headers = request.requestHeaders.getRawHeaders(b"prefer")
    if headers:
        number = preferredWait(h.decode("latin-1") for h in headers)
        if number is not None:
            return min(number, maxWait), True
    return None, False


def _within(d: Deferred, timeout: float, clock: IReactorTime) -> Deferred:
    """
    A Deferred firing with C{d}'s result, or with L{_TIMED_OUT} after
    C{timeout} seconds; C{d} itself is left running.
    """
    result: Deferred = Deferred()
    timer = clock.callLater(max(timeout, 0), lambda: result.called or result.callback(_TIMED_OUT))

    def done(value: Any) -> Any:
        if timer.active():
            timer.cancel()
        if not result.called:
            result.callback(value)
        return None

    d.addBoth(done)
    return result


def genericInstancePayload(body: Any, index: RuleIndex) -> Tuple[str, Any]:
    """
    Check a body sent to the generic hook C{st2} and return the trigger ref
    and payload to dispatch.

    @raise Invalid: StackStorm's 400 answers.
    """
    if not isinstance(body, dict):
        raise Invalid(f"Webhook body needs to be an object, got: {_JSON_TYPE_NAMES.get(type(body), type(body).__name__)}")
    ref = body.get("trigger")
    if not ref:
        raise Invalid("Trigger not specified.")
    if not isinstance(ref, str):
        ref = json.dumps(ref, sort_keys=True)
    payload = body.get("payload")
    trigger = index.trigger(ref)
    triggerType = index.triggerType(trigger["type"] if trigger else ref)
    problem = payloadError(ref, triggerType, payload)
    if problem is not None:
        raise Invalid(problem)
    return ref, payload


def executionSummary(doc: Dict[str, Any]) -> Dict[str, Any]:
    return {
        "id": doc.get("id"),
        "action": (doc.get("action") or {}).get("ref"),
        "status": doc.get("status"),
        "result": doc.get("result"),
    }


def installWebhookRoutes(
    api: Api,
    index: RuleIndex,
    engine: RulesEngine,
    executions: Any,
    store: Any,
    clock: IReactorTime,
    maxWait: float = MAX_WAIT,
) -> None:
    """
    Add the webhook routes to C{api}.

    @param engine: admits, stores and queues events (its L{RulesEngine.admit}
        is the one gate, covering the execution queue as well).
    @param executions: the L{bwcd.execution.service.ExecutionService}, for
        C{wait}: C{waitForCompletion(id, timeout)}.
    @param store: read only on the C{wait} path.
    """
    api.app.url_map.converters["bwcdrest"] = RestOfPath

    @api.route(list(PREFIXES), ["GET"])
    async def listHooks(request, principal: Principal):
        return [publicTrigger(t) for t in index.hooks()]

    @api.route([p + "/<bwcdrest:url>" for p in PREFIXES], ["GET"])
    async def showHook(request, principal: Principal, url: str):
        triggers = index.hooksFor(url)
        if not triggers:
            # StackStorm's abort(404) without a message.
            raise NotFound("Unhandled exception")
        return publicTrigger(triggers[0])

    def eventInstances(request, hook: str) -> Tuple[Any, List[Dict[str, Any]]]:
        """
        The parsed body and the trigger instances it makes for C{hook}.

        @raise Invalid: a body that cannot be parsed or does not fit.
        @raise NotFound: no such hook.
        """
        raw = request.content.read() if request.content is not None else b""
        contentType = request.getHeader(b"content-type")
        try:
            body = parseBody(raw, contentType and contentType.decode("latin-1"))
        except BodyError as e:
            raise Invalid(e.faultstring)
        if hook.strip("/") == GENERIC_HOOK:
            ref, payload = genericInstancePayload(body, index)
            return body, [engine.newInstance(ref, payload)]
        triggers = index.hooksFor(hook)
        if not triggers:
            raise NotFound(f"Webhook {hook} not registered with st2")
        headers = payloadHeaders(request.requestHeaders.getAllRawHeaders())
        payload = {"headers": headers.headers, "headers_lower": headers.lower, "body": body}
        return body, [engine.newInstance(t["ref"], payload) for t in triggers]

    @api.prefixRoute([p + "/" for p in PREFIXES], "POST", "hook")
    async def receive(request, principal: Principal, hook: str):
        # The one admission gate, before anything is read: a place in the
        # engine's queue, refused while executions or instances are backed
        # up (503 with Retry-After; nothing is stored).
        try:
            engine.admit(1)
        except Overloaded:
            raise Unavailable("Too many webhooks are waiting to be processed; try again shortly.", headers={"Retry-After": "1"})
        try:
            wait, viaPrefer = requestedWait(request, maxWait)
            body, instances = eventInstances(request, hook)
        except BaseException:
            engine.release(1)
            raise
        try:
            outcomes = await engine.accept(instances, reserved=1)
        except Overloaded:
            raise Unavailable("Too many webhooks are waiting to be processed; try again shortly.", headers={"Retry-After": "1"})
        ids = [i["id"] for i in instances]
        replyHeaders = {"Location": f"/v1/triggerinstances/{ids[0]}", "X-BWC-Trigger-Instance": ",".join(ids)}
        if wait is None:
            return Reply(body, 202, replyHeaders)
        if viaPrefer:
            replyHeaders["Preference-Applied"] = f"wait={wait:g}"
        return await waitForResults(instances, outcomes, wait, replyHeaders)

    async def waitForResults(instances: List[Dict[str, Any]], outcomes: List[Deferred], wait: float, headers: Dict[str, str]) -> Reply:
        deadline = clock.seconds() + wait
        results = await _within(DeferredList(outcomes, consumeErrors=True), wait, clock)
        if results is _TIMED_OUT:
            current = await store.get("triggerinstances", instances[0]["id"])
            body = {"trigger_instance": current or instances[0], "enforcements": [], "executions": []}
            return Reply(body, 202, headers)
        done: List[Outcome] = [value for ok, value in results if ok and value is not None]
        enforcements = [e for o in done for e in o.enforcements]
        started = [e for o in done for e in o.executions]
        finished = []
        if started:
            remaining = max(deadline - clock.seconds(), 0)
            finished = await gatherResults([ensureDeferred(executions.waitForCompletion(e["id"], remaining)) for e in started])
        summaries = [executionSummary(doc or e) for doc, e in zip(finished, started)]
        complete = len(done) == len(outcomes) and all(s["status"] in COMPLETED for s in summaries)
        instance = done[0].instance if done else instances[0]
        body = {"trigger_instance": instance, "enforcements": enforcements, "executions": summaries}
        return Reply(body, 200 if complete else 202, headers)


__all__ = ["installWebhookRoutes", "preferredWait", "requestedWait"]
