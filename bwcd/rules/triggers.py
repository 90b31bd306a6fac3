# -*- test-case-name: tests.test_triggers_api -*-
"""
Trigger types and triggers (st2-api.md section 7).

A I{trigger type} says what events of one kind look like (C{payload_schema})
and how rules may narrow them (C{parameters_schema}).  A I{trigger} is a type
with one set of parameter values; rules point at triggers, and trigger
instances are events of one trigger.  Webhooks are triggers of type
C{core.st2.webhook} whose C{url} parameter names the hook.

Two differences from StackStorm, both so that concurrent bwcd processes on
one database agree without coordination:

  - the name of a parameterised trigger is a UUID derived from the type and
    the canonical JSON of its parameters (StackStorm draws a random uuid4),
    so two processes creating "the same" trigger at once create one
    document, the second insert failing on the unique ref;
  - a trigger's reference count is not stored: rules pointing at it are
    counted when one is removed, which cannot drift.
"""

from __future__ import annotations

import copy
import hashlib
import json
import uuid
from typing import Any, Dict, Iterable, List, Mapping, Optional, Tuple

import jsonschema
from jsonschema import _legacy_keywords
from jsonschema.exceptions import best_match

from bwcd.rules.cron import cronError
from bwcd.store.interface import DuplicateKey, IStore, newId

WEBHOOK_TYPE = "core.st2.webhook"
ACTION_TRIGGER_TYPE = "core.st2.generic.actiontrigger"
INTERVAL_TIMER_TYPE = "core.st2.IntervalTimer"
DATE_TIMER_TYPE = "core.st2.DateTimer"
CRON_TIMER_TYPE = "core.st2.CronTimer"
#: the timer trigger types (scheduled by L{bwcd.rules.timers})
TIMER_TYPES = frozenset({INTERVAL_TIMER_TYPE, DATE_TIMER_TYPE, CRON_TIMER_TYPE})
#: the hook that dispatches any trigger by name (body {trigger, payload})
GENERIC_HOOK = "st2"

# Namespace of the derived trigger names (an arbitrary, fixed uuid).
_TRIGGER_NAMESPACE = uuid.UUID("6f0b7c52-2a43-4d8e-9d1c-0b5d2f6c1e7a")


def _obj(*names: str) -> Dict[str, Any]:
    return {"type": "object", "properties": {name: {} for name in names}}


def _cronField(minimum: Optional[int] = None, maximum: Optional[int] = None) -> Dict[str, Any]:
    field: Dict[str, Any] = {"anyOf": [{"type": "string"}, {"type": "integer"}]}
    if minimum is not None:
        field.update(minimum=minimum, maximum=maximum)
    return field


# StackStorm's timer schemas (st2common/constants/triggers.py), as they are.
_TIMER_PAYLOAD_SCHEMA = {
    "type": "object",
    "properties": {
        "executed_at": {"type": "string", "format": "date-time", "default": "2014-07-30 05:04:24.578325"},
        "schedule": {"type": "object", "default": {"delta": 30, "units": "seconds"}},
    },
}
_INTERVAL_PARAMETERS_SCHEMA = {
    "type": "object",
    "properties": {
        "timezone": {"type": "string"},
        "unit": {"enum": ["weeks", "days", "hours", "minutes", "seconds"], "required": True},
        "delta": {"type": "integer", "required": True},
    },
    "additionalProperties": False,
}
_DATE_PARAMETERS_SCHEMA = {
    "type": "object",
    "properties": {"timezone": {"type": "string"}, "date": {"type": "string", "format": "date-time", "required": True}},
    "additionalProperties": False,
}
_CRON_PARAMETERS_SCHEMA = {
    "type": "object",
    "properties": {
        "timezone": {"type": "string"},
        "year": _cronField(),
        "month": _cronField(1, 12),
        "day": _cronField(1, 31),
        "week": _cronField(1, 53),
        "day_of_week": _cronField(0, 6),
        "hour": _cronField(0, 23),
        "minute": _cronField(0, 59),
        "second": _cronField(0, 59),
    },
    "additionalProperties": False,
}


def triggerTypeDocument(
    pack: str,
    name: str,
    description: str = "",
    payload_schema: Optional[Mapping[str, Any]] = None,
    parameters_schema: Optional[Mapping[str, Any]] = None,
    tags: Optional[List[Any]] = None,
    metadata_file: Optional[str] = None,
) -> Dict[str, Any]:
    """
    A trigger type document (without id) as StackStorm shapes it.
    """
    doc: Dict[str, Any] = {
        "ref": f"{pack}.{name}",
        "uid": f"trigger_type:{pack}:{name}",
        "name": name,
        "pack": pack,
        "description": description,
        "payload_schema": dict(payload_schema or {}),
        "parameters_schema": dict(parameters_schema or {}),
        "tags": list(tags or []),
    }
    if metadata_file:
        doc["metadata_file"] = metadata_file
    return doc


#: the trigger types bwcd registers itself: the webhook type and StackStorm's
#: internal types (bwcd emits core.st2.generic.actiontrigger; the others are
#: registered so that rules and packs written for StackStorm load).
SYSTEM_TRIGGER_TYPES: Tuple[Dict[str, Any], ...] = (
    triggerTypeDocument(
        "core",
        "st2.webhook",
        "Trigger type for registering webhooks that can consume arbitrary payload.",
        payload_schema={
            "type": "object",
            "properties": {"headers": {"type": "object"}, "body": {"anyOf": [{"type": "array"}, {"type": "object"}]}},
        },
        parameters_schema={
            "type": "object",
            "properties": {"url": {"type": "string", "required": True}},
            "additionalProperties": False,
        },
    ),
    triggerTypeDocument(
        "core",
        "st2.generic.actiontrigger",
        "Trigger encapsulating the completion of an action execution.",
        payload_schema=_obj("execution_id", "status", "start_timestamp", "action_name", "action_ref", "runner_ref", "parameters", "result"),
    ),
    triggerTypeDocument(
        "core",
        "st2.generic.notifytrigger",
        "Notification trigger.",
        payload_schema=_obj("execution_id", "status", "start_timestamp", "end_timestamp", "action_ref", "runner_ref", "channel", "route", "message", "data"),
    ),
    triggerTypeDocument(
        "core",
        "st2.action.file_written",
        "Trigger encapsulating action file being written on disk.",
        payload_schema=_obj("ref", "file_path", "host_info"),
    ),
    triggerTypeDocument(
        "core",
        "st2.generic.inquiry",
        'Trigger indicating a new "inquiry" has entered "pending" status',
        payload_schema={
            "type": "object",
            "properties": {
                "id": {"type": "string", "description": "ID of the new inquiry.", "required": True},
                "route": {"type": "string", "description": "An arbitrary value for allowing rules to route to proper notification channel.", "required": True},
            },
            "additionalProperties": False,
        },
    ),
    triggerTypeDocument("core", "st2.sensor.process_spawn", "Trigger indicating sensor process is started up.", payload_schema={"type": "object", "properties": {"object": {}}}),
    triggerTypeDocument("core", "st2.sensor.process_exit", "Trigger indicating sensor process is stopped.", payload_schema={"type": "object", "properties": {"object": {}}}),
    triggerTypeDocument("core", "st2.key_value_pair.create", "Trigger encapsulating datastore item creation.", payload_schema={"type": "object", "properties": {"object": {}}}),
    triggerTypeDocument("core", "st2.key_value_pair.update", "Trigger encapsulating datastore set action.", payload_schema={"type": "object", "properties": {"object": {}}}),
    triggerTypeDocument(
        "core",
        "st2.key_value_pair.value_change",
        "Trigger encapsulating a change of datastore item value.",
        payload_schema={"type": "object", "properties": {"old_object": {}, "new_object": {}}},
    ),
    triggerTypeDocument("core", "st2.key_value_pair.delete", "Trigger encapsulating datastore item deletion.", payload_schema={"type": "object", "properties": {"object": {}}}),
    triggerTypeDocument(
        "core",
        "st2.IntervalTimer",
        "Triggers on specified intervals. e.g. every 30s, 1week etc.",
        payload_schema=_TIMER_PAYLOAD_SCHEMA,
        parameters_schema=_INTERVAL_PARAMETERS_SCHEMA,
    ),
    triggerTypeDocument(
        "core",
        "st2.DateTimer",
        "Triggers exactly once when the current time matches the specified time. e.g. timezone:UTC date:2014-12-31 23:59:59.",
        payload_schema=_TIMER_PAYLOAD_SCHEMA,
        parameters_schema=_DATE_PARAMETERS_SCHEMA,
    ),
    triggerTypeDocument(
        "core",
        "st2.CronTimer",
        "Triggers whenever current time matches the specified time constaints like a UNIX cron scheduler.",
        payload_schema=_TIMER_PAYLOAD_SCHEMA,
        parameters_schema=_CRON_PARAMETERS_SCHEMA,
    ),
)

SYSTEM_TRIGGER_TYPE_REFS = frozenset(t["ref"] for t in SYSTEM_TRIGGER_TYPES)


class TriggerError(ValueError):
    """
    A rule's trigger cannot be used; the message is the API's 400 answer.
    """


# -- documents (pure) --------------------------------------------------------


def hasParameters(triggerType: Mapping[str, Any]) -> bool:
    """
    Whether triggers of this type carry parameters (one trigger per distinct
    parameter set) rather than one "shadow" trigger named like the type.
    """
    return bool(triggerType.get("parameters_schema"))


def canonicalParameters(parameters: Mapping[str, Any]) -> str:
    return json.dumps(parameters, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def triggerUid(pack: str, name: str, parameters: Mapping[str, Any]) -> str:
    """
    StackStorm's trigger uid: C{trigger:<pack>:<name>:<md5 of the sorted
    JSON of the parameters>}.
    """
    digest = hashlib.md5(json.dumps(parameters, sort_keys=True).encode("utf-8")).hexdigest()
    return f"trigger:{pack}:{name}:{digest}"


def shadowTrigger(triggerType: Mapping[str, Any]) -> Dict[str, Any]:
    """
    The trigger a parameterless type gets, with the type's pack and name (so
    its ref equals the type's ref).
    """
    pack, name = triggerType["pack"], triggerType["name"]
    return {
        "ref": f"{pack}.{name}",
        "uid": triggerUid(pack, name, {}),
        "name": name,
        "pack": pack,
        "type": triggerType["ref"],
        "parameters": {},
        "description": triggerType.get("description", ""),
    }


def parameterisedTrigger(typeRef: str, pack: str, parameters: Mapping[str, Any]) -> Dict[str, Any]:
    """
    The trigger of type C{typeRef} with C{parameters}; its name is derived
    from both, so the same pair always gives the same ref.
    """
    name = str(uuid.uuid5(_TRIGGER_NAMESPACE, typeRef + "\n" + canonicalParameters(parameters)))
    return {
        "ref": f"{pack}.{name}",
        "uid": triggerUid(pack, name, parameters),
        "name": name,
        "pack": pack,
        "type": typeRef,
        "parameters": copy.deepcopy(dict(parameters)),
    }


def publicTrigger(doc: Mapping[str, Any]) -> Dict[str, Any]:
    """
    A trigger as the API shows it.
    """
    keys = ("id", "ref", "uid", "name", "pack", "type", "parameters", "description")
    return {k: doc[k] for k in keys if k in doc}


def webhookUrl(trigger: Mapping[str, Any]) -> Optional[str]:
    """
    The normalised hook name of a webhook trigger (leading and trailing
    C{/} stripped, as StackStorm does), or None for other triggers.
    """
    if trigger.get("type") != WEBHOOK_TYPE:
        return None
    url = (trigger.get("parameters") or {}).get("url")
    if not isinstance(url, str):
        return None
    return url.strip("/")


# -- schema validation (pure) ------------------------------------------------


def _required(validator: Any, required: Any, instance: Any, schema: Any) -> Iterable[Any]:
    # Both spellings: draft-4 lists at object level and draft-3 booleans on
    # properties (handled by properties_draft3).
    if isinstance(required, list):
        if validator.is_type(instance, "object"):
            for name in required:
                if name not in instance:
                    yield jsonschema.ValidationError(f"{name!r} is a required property")


TriggerSchemaValidator = jsonschema.validators.extend(
    jsonschema.Draft4Validator,
    validators={"properties": _legacy_keywords.properties_draft3, "required": _required},
)


def schemaError(schema: Mapping[str, Any], instance: Any) -> Optional[str]:
    """
    The first problem of C{instance} against a trigger schema (draft 4 plus
    draft-3 boolean C{required}), or None.
    """
    if not schema:
        return None
    try:
        error = best_match(TriggerSchemaValidator(schema).iter_errors(instance))
    except jsonschema.SchemaError as e:
        return f"invalid schema: {e.message}"
    return None if error is None else error.message


def validateTriggerParameters(triggerType: Mapping[str, Any], parameters: Mapping[str, Any]) -> None:
    """
    @raise TriggerError: the parameters do not fit the type's
        C{parameters_schema}.
    """
    message = schemaError(triggerType.get("parameters_schema") or {}, dict(parameters))
    if message is not None:
        raise TriggerError(message)
    if triggerType.get("ref") == CRON_TIMER_TYPE:
        # As StackStorm: the schema lets any string through, APScheduler
        # decides.
        message = cronError(parameters)
        if message is not None:
            raise TriggerError(message)


def payloadError(triggerRef: str, triggerType: Optional[Mapping[str, Any]], payload: Any) -> Optional[str]:
    """
    StackStorm's 400 faultstring when a payload dispatched through the
    generic hook does not fit its type, or None when it does.
    """
    if triggerType is None:
        problem: Optional[str] = f'Trigger type with reference "{triggerRef}" doesn\'t exist in the database'
    else:
        problem = schemaError(triggerType.get("payload_schema") or {}, payload)
    if problem is None:
        return None
    return (
        "Trigger payload validation failed and validation is enabled, not dispatching a trigger "
        f'"{triggerRef}" ({payload!r}): {problem}'
    )


# -- the registry over the store ---------------------------------------------


async def _upsertByRef(store: IStore, collection: str, doc: Dict[str, Any]) -> Dict[str, Any]:
    """
    Insert C{doc}, or replace the document with its ref keeping the id; an
    insert that loses a race with another process reads the winner.
    """
    existing = await store.findOne(collection, {"ref": doc["ref"]})
    if existing is None:
        try:
            return await store.insert(collection, dict(doc, id=doc.get("id") or newId()))
        except DuplicateKey:
            existing = await store.findOne(collection, {"ref": doc["ref"]})
            if existing is None:
                raise
    wanted = dict(doc, id=existing["id"])
    if wanted == existing:
        return existing
    replaced = await store.replace(collection, wanted)
    return replaced if replaced is not None else wanted


async def registerTriggerType(store: IStore, triggerType: Mapping[str, Any]) -> Tuple[Dict[str, Any], Optional[Dict[str, Any]]]:
    """
    Store a trigger type (keeping its id when it exists) and, for a
    parameterless type, its shadow trigger.

    @return: the stored type and its shadow trigger (or None).
    """
    stored = await _upsertByRef(store, "triggertypes", dict(triggerType))
    shadow = None
    if not hasParameters(stored):
        shadow = await _upsertByRef(store, "triggers", shadowTrigger(stored))
    return stored, shadow


async def ensureSystemTriggerTypes(store: IStore) -> None:
    """
    Register bwcd's own trigger types; called at every start so a new
    version's types appear and changed schemas are updated.
    """
    for triggerType in SYSTEM_TRIGGER_TYPES:
        await registerTriggerType(store, triggerType)


def missingTriggerMessage(typeRef: str) -> str:
    return f'Trigger "{typeRef}" defined in the rule does not exist in system or it\'s missing required "parameters" attribute'


async def triggerForRule(store: IStore, typeRef: str, triggerType: Optional[Mapping[str, Any]], parameters: Mapping[str, Any]) -> Dict[str, Any]:
    """
    The trigger a rule with this trigger type and parameters points at,
    created when needed (even for a disabled rule: a webhook exists while
    any rule names it).

    @param triggerType: the stored type, or None when there is no such type.
    @raise TriggerError: StackStorm's messages for an unknown type, a
        parameterless type without its shadow trigger, and parameters that
        do not fit the type's C{parameters_schema}.
    """
    if triggerType is not None:
        validateTriggerParameters(triggerType, parameters)
    if not parameters:
        shadow = await store.findOne("triggers", {"ref": typeRef})
        if shadow is None or shadow.get("type") != typeRef:
            raise TriggerError(missingTriggerMessage(typeRef))
        return shadow
    if triggerType is None:
        raise TriggerError(f'Trigger type with reference "{typeRef}" doesn\'t exist in the database')
    wanted = parameterisedTrigger(typeRef, triggerType["pack"], parameters)
    existing = await store.findOne("triggers", {"ref": wanted["ref"]})
    if existing is not None:
        return existing
    try:
        return await store.insert("triggers", dict(wanted, id=newId()))
    except DuplicateKey:
        existing = await store.findOne("triggers", {"ref": wanted["ref"]})
        if existing is None:
            raise
        return existing


async def releaseTrigger(store: IStore, triggerRef: str) -> Optional[Dict[str, Any]]:
    """
    Delete a parameterised trigger no rule points at any more (a webhook is
    unregistered this way); shadow triggers stay with their type.

    @return: the deleted trigger, or None when it stays.
    """
    trigger = await store.findOne("triggers", {"ref": triggerRef})
    if trigger is None or not trigger.get("parameters"):
        return None
    if await store.count("rules", {"trigger.ref": triggerRef}):
        return None
    await store.deleteOne("triggers", trigger["id"])
    return trigger


__all__ = [
    "ACTION_TRIGGER_TYPE",
    "GENERIC_HOOK",
    "SYSTEM_TRIGGER_TYPES",
    "SYSTEM_TRIGGER_TYPE_REFS",
    "CRON_TIMER_TYPE",
    "DATE_TIMER_TYPE",
    "INTERVAL_TIMER_TYPE",
    "TIMER_TYPES",
    "TriggerError",
    "WEBHOOK_TYPE",
    "ensureSystemTriggerTypes",
    "hasParameters",
    "parameterisedTrigger",
    "payloadError",
    "publicTrigger",
    "registerTriggerType",
    "releaseTrigger",
    "schemaError",
    "shadowTrigger",
    "triggerForRule",
    "triggerTypeDocument",
    "triggerUid",
    "validateTriggerParameters",
    "webhookUrl",
]
