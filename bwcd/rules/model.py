# -*- test-case-name: tests.test_rules_model -*-
"""
Rule documents: what a POST/PUT body or a pack's rule YAML must look like,
and the normalised document bwcd stores and shows (st2-api.md section 6).

The checks and their messages are StackStorm's (the RuleAPI JSON schema,
then criteria validation), because clients and rule authors read them.  The
checks that need the store (the trigger type's C{parameters_schema}, the
trigger's existence) belong to the caller; everything here is pure.
"""

from __future__ import annotations

import copy
from typing import Any, Dict, Mapping, Optional

import jsonschema
from jsonschema.exceptions import best_match

from bwcd.rules.criteria import CriteriaError, validateCriteria

__all__ = ["RuleError", "RULE_SCHEMA", "RULE_TYPES", "normaliseRule", "ruleFromYaml", "publicRule", "DEFAULT_PACK"]

DEFAULT_PACK = "default"
STANDARD = "standard"
BACKSTOP = "backstop"
RULE_TYPES = (STANDARD, BACKSTOP)

_TAGS = {
    "type": "array",
    "items": {
        "type": "object",
        "properties": {"name": {"type": "string"}, "value": {"type": "string"}},
        "required": ["name"],
        "additionalProperties": False,
    },
}

#: StackStorm's RuleAPI schema (st2common/models/api/rule.py), with draft-4
#: C{required} lists giving the same messages as its draft-3 booleans
RULE_SCHEMA: Dict[str, Any] = {
    "type": "object",
    "properties": {
        "id": {"type": ["string", "null"]},
        "ref": {"type": "string"},
        "uid": {"type": "string"},
        "name": {"type": "string"},
        "pack": {"type": "string"},
        "description": {"type": ["string", "null"]},
        "type": {
            "type": "object",
            "properties": {"ref": {"type": "string"}, "parameters": {"type": "object"}},
            "required": ["ref"],
        },
        "trigger": {
            "type": "object",
            "properties": {
                "type": {"type": "string"},
                "parameters": {"type": "object"},
                "ref": {"type": "string"},
                "description": {"type": "string"},
            },
            "required": ["type"],
            "additionalProperties": True,
        },
        "criteria": {"type": "object"},
        "action": {
            "type": "object",
            "properties": {
                "ref": {"type": "string"},
                "description": {"type": "string"},
                "parameters": {"type": "object"},
            },
            "required": ["ref"],
            "additionalProperties": False,
        },
        "enabled": {"type": "boolean"},
        "context": {"type": "object"},
        "tags": _TAGS,
        "metadata_file": {"type": ["string", "null"]},
    },
    "required": ["name", "trigger", "action"],
    "additionalProperties": False,
}

_VALIDATOR = jsonschema.Draft4Validator(RULE_SCHEMA)


class RuleError(ValueError):
    """
    The rule is not acceptable; the message is the 400 faultstring.

    @ivar field: the offending field as a dotted path (for pack file
        reports), or C{"(rule)"} when no single field is to blame.
    """

    def __init__(self, message: str, field: str = "(rule)") -> None:
        super().__init__(message)
        self.field = field


def normaliseRule(body: Any, user: Optional[str] = None, enabledDefault: bool = False) -> Dict[str, Any]:
    """
    Check a rule body and build the stored document (without C{id} and
    without C{trigger.ref}, which depend on the store).

    @param user: recorded as C{context.user} (the API caller; StackStorm
        records the creator there).
    @param enabledDefault: C{enabled} when the body leaves it out; the
        API schema's default is false.
    @raise RuleError: with StackStorm's message.
    """
    if not isinstance(body, Mapping):
        raise RuleError(f"{body!r} is not of type 'object'")
    error = best_match(_VALIDATOR.iter_errors(body))
    if error is not None:
        path = ".".join(str(p) for p in error.absolute_path)
        if error.validator == "required" and isinstance(error.instance, Mapping):
            missing = [k for k in error.validator_value if k not in error.instance]
            path = ".".join(filter(None, [path, missing[0] if missing else ""]))
        raise RuleError(error.message, path or "(rule)")
    name = body["name"]
    pack = body.get("pack") or DEFAULT_PACK
    if not name.strip():
        raise RuleError("Both pack and name needed for building ref. pack=%s, name=%s" % (pack, name), "name")
    if "." in pack:
        raise RuleError(f'Pack name "{pack}" must not contain "."', "pack")
    ruleType = dict(body.get("type") or {"ref": STANDARD})
    if ruleType["ref"] not in RULE_TYPES:
        raise RuleError(f'Rule type "{ruleType["ref"]}" is not supported. Valid types: {", ".join(RULE_TYPES)}', "type.ref")
    ruleType.setdefault("parameters", {})
    criteria = body.get("criteria") or {}
    try:
        validateCriteria(criteria)
    except CriteriaError as e:
        raise RuleError(str(e), "criteria")
    trigger = copy.deepcopy(dict(body["trigger"]))
    trigger.pop("ref", None)
    trigger["parameters"] = trigger.get("parameters") or {}
    action = copy.deepcopy(dict(body["action"]))
    action["parameters"] = action.get("parameters") or {}
    context = copy.deepcopy(dict(body.get("context") or {}))
    if user is not None:
        context["user"] = user
    doc: Dict[str, Any] = {
        "ref": f"{pack}.{name}",
        "uid": f"rule:{pack}:{name}",
        "name": name,
        "pack": pack,
        "description": body.get("description") or "",
        "enabled": body.get("enabled", enabledDefault),
        "type": ruleType,
        "trigger": trigger,
        "criteria": copy.deepcopy(dict(criteria)),
        "action": action,
        "context": context,
        "tags": copy.deepcopy(list(body.get("tags") or [])),
    }
    if body.get("metadata_file"):
        doc["metadata_file"] = body["metadata_file"]
    return doc


def ruleFromYaml(data: Any, packName: str, metadataFile: str) -> Dict[str, Any]:
    """
    A pack's rule file (C{<pack>/rules/*.yaml}) as a stored document.

    @raise RuleError: the field and the reason, as for the API.
    """
    if not isinstance(data, Mapping):
        raise RuleError("must be a mapping", "(file)")
    given = data.get("pack")
    if given not in (None, packName):
        raise RuleError(f'Model is in pack "{packName}" but field "pack" is different: {given}', "pack")
    body = dict(data)
    body["pack"] = packName
    body["metadata_file"] = metadataFile
    return normaliseRule(body)


def publicRule(doc: Mapping[str, Any]) -> Dict[str, Any]:
    """
    A stored rule as the API shows it (internal fields, with a leading
    C{_}, dropped).
    """
    return {k: v for k, v in doc.items() if not k.startswith("_")}
