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

A hook's webhook policy (L{bwcd.webhooks.registry.PolicyIndex}, in
memory) comes before all of that: its content types (415), the sender's
signature over the raw body, which then stands in for a credential (401
naming the failed check), its rate (429), and after parsing its delivery id
(a repeat is answered like the first and runs nothing).  The route is
declared without authentication so that verified hooks need none; every
other hook authenticates here, as before.

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

from twisted.logger import Logger

from bwcd.api.framework import Api, Reply, RestOfPath
from bwcd.api.query import arg
from bwcd.api.site import clientAddress
from bwcd.auth.limits import tooMany
from bwcd.auth.principal import Principal
from bwcd.errors import Invalid, NotFound, Refused, Unauthenticated, Unavailable, UnsupportedMediaType
from bwcd.rules.engine import Outcome, Overloaded, RulesEngine
from bwcd.rules.index import RuleIndex
from bwcd.rules.triggers import GENERIC_HOOK, payloadError, publicTrigger
from bwcd.webhooks.body import BodyError, parseBody
from bwcd.webhooks.dedup import deliveryIdFrom
from bwcd.webhooks.headers import payloadHeaders
from bwcd.webhooks.registry import ActivePolicy, PolicyIndex
from bwcd.webhooks.verify import VerifyFailed, verifyRequest

log = Logger(namespace="bwcd.webhooks")

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


def _mediaType(value: Optional[bytes]) -> str:
    return (value or b"").split(b";", 1)[0].strip().lower().decode("latin-1")


def refuse(request, hook: str, reason: str, error: Exception) -> Exception:
    """
    Mark C{request} as refused by C{hook}'s policy for C{reason} (counted
    in C{/metrics} by hook and reason) and return C{error} to raise.
    """
    request.bwcdWebhookRefusal = (hook, reason)
    return error


def checkScope(principal: Any, hook: str) -> None:
    """
    A scoped credential may only send to the hooks its scopes name.

    @raise Refused: it may not send to C{hook}.
    """
    allows = getattr(principal, "allowsHook", None)
    if allows is not None and not allows(hook):
        scopes = ", ".join(getattr(principal, "scopes", None) or ())
        raise Refused(f"API key is limited to {scopes}")


def installWebhookRoutes(
    api: Api,
    index: RuleIndex,
    engine: RulesEngine,
    executions: Any,
    store: Any,
    clock: IReactorTime,
    maxWait: float = MAX_WAIT,
    policies: Optional[PolicyIndex] = None,
) -> None:
    """
    Add the webhook routes to C{api}.

    @param engine: admits, stores and queues events (its L{RulesEngine.admit}
        is the one gate, covering the execution queue as well).
    @param executions: the L{bwcd.execution.service.ExecutionService}, for
        C{wait}: C{waitForCompletion(id, timeout)}.
    @param store: read only on the C{wait} path.
    @param policies: the webhook policies in force (signatures,
        deduplication, per-hook limits); None: none.
    """
    api.app.url_map.converters["bwcdrest"] = RestOfPath
    authenticate = api._authenticate

    @api.route(list(PREFIXES), ["GET"])
    async def listHooks(request, principal: Principal):
        return [withVerification(publicTrigger(t)) for t in index.hooks()]

    def withVerification(trigger: Dict[str, Any]) -> Dict[str, Any]:
        url = (trigger.get("parameters") or {}).get("url")
        active = policies.get(url) if policies is not None and isinstance(url, str) else None
        verify = active.policy.verify if active is not None else None
        trigger["verification"] = verify.preset if verify is not None else "credentials"
        return trigger

    @api.route([p + "/<bwcdrest:url>" for p in PREFIXES], ["GET"])
    async def showHook(request, principal: Principal, url: str):
        triggers = index.hooksFor(url)
        if not triggers:
            # StackStorm's abort(404) without a message.
            raise NotFound("Unhandled exception")
        return withVerification(publicTrigger(triggers[0]))

    def eventInstances(request, hook: str, raw: bytes) -> Tuple[Any, List[Dict[str, Any]]]:
        """
        The parsed body and the trigger instances it makes for C{hook}.

        @raise Invalid: a body that cannot be parsed or does not fit.
        @raise NotFound: no such hook.
        """
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

    def header(request, name: str) -> Optional[str]:
        value = request.getHeader(name.encode("latin-1"))
        return None if value is None else value.decode("latin-1")

    async def admitted(request, hook: str, active: Optional[ActivePolicy], raw: bytes) -> Any:
        """
        The hook's policy, before anything is parsed: content type (415),
        the sender's signature or else a credential (401), the hook's rate
        (429).  Only requests that proved their sender spend the hook's
        rate, so forged requests cannot lock the real sender out.
        """
        policy = active.policy if active is not None else None
        if policy is not None and policy.limits.contentTypes is not None:
            mediaType = _mediaType(request.getHeader(b"content-type"))
            if mediaType not in policy.limits.contentTypes:
                shown = mediaType[:100] or "(none)"
                raise refuse(request, policy.url, "unsupported_media_type", UnsupportedMediaType(
                    f'Content-Type "{shown}" is not accepted by webhook {policy.url}: it takes {", ".join(policy.limits.contentTypes)}.'
                ))
        if policy is not None and policy.verify is not None:
            assert active is not None
            try:
                verifyRequest(policy.verify, active.secrets, lambda n: header(request, n), raw, clock.seconds())
            except VerifyFailed as e:
                log.warn(
                    "Webhook {hook} refused ({reason}): {why}; from {client}",
                    hook=policy.url, reason=e.reason, why=e.faultstring, client=clientAddress(request),
                )
                raise refuse(request, policy.url, e.reason, Unauthenticated(e.faultstring))
            principal = Principal(user=f"webhook:{policy.url}", method="signature", admin=False)
        else:
            principal = await authenticate(request)
            checkScope(principal, hook.strip("/"))
        if active is not None and active.limiter is not None:
            wait = active.limiter.take(policy.url)
            if wait is not None:
                raise refuse(request, policy.url, "rate_limited", tooMany(wait, f"Too many requests to webhook {policy.url}; try again later."))
        return principal

    @api.prefixRoute([p + "/" for p in PREFIXES], "POST", "hook", auth=False)
    async def receive(request, principal: Principal, hook: str):
        active = policies.get(hook) if policies is not None else None
        raw = request.content.read() if request.content is not None else b""
        await admitted(request, hook, active, raw)
        # The one admission gate, before anything is parsed: a place in the
        # engine's queue, refused while executions or instances are backed
        # up (503 with Retry-After; nothing is stored).
        try:
            engine.admit(1)
        except Overloaded:
            raise Unavailable("Too many webhooks are waiting to be processed; try again shortly.", headers={"Retry-After": "1"})
        claim = None
        try:
            wait, viaPrefer = requestedWait(request, maxWait)
            body, instances = eventInstances(request, hook, raw)
            policy = active.policy if active is not None else None
            if policy is not None and policy.verify is not None and policy.verify.preset == "slack" \
                    and isinstance(body, dict) and body.get("type") == "url_verification":
                engine.release(1)
                return Reply({"challenge": body.get("challenge")}, 200)
            ids = [i["id"] for i in instances]
            if policy is not None and policy.dedup is not None:
                dedup = policy.dedup
                deliveryId = deliveryIdFrom(dedup.source, dedup.name, header(request, dedup.name) if dedup.source == "header" else None, body)
                if deliveryId is not None:
                    claim = await policies.deliveries.claim(policy.url, deliveryId, ids, dedup.window)  # type: ignore[union-attr]
                    if not claim.first:
                        engine.release(1)
                        log.info("Webhook {hook}: delivery {delivery} already received; nothing run", hook=policy.url, delivery=deliveryId)
                        first = list(claim.instances)
                        return Reply(body, 202, {
                            "Location": f"/v1/triggerinstances/{first[0]}" if first else "",
                            "X-BWC-Trigger-Instance": ",".join(first),
                            "X-BWC-Duplicate": "true",
                        })
        except BaseException:
            if claim is None or claim.first:
                engine.release(1)
            raise
        try:
            outcomes = await engine.accept(instances, reserved=1)
        except BaseException as e:
            if claim is not None:
                await policies.deliveries.release(claim)  # type: ignore[union-attr]
            if isinstance(e, Overloaded):
                raise Unavailable("Too many webhooks are waiting to be processed; try again shortly.", headers={"Retry-After": "1"})
            raise
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
