# -*- test-case-name: tests.test_runner_params -*-
"""
Action parameter schemas: merging runner and action definitions, validating
the parameters of an execution request, and masking secrets for display.

Vocabulary used throughout:

  - a I{parameter map} is C{{name: spec}} as written in runner types and in
    action metadata (C{{"cmd": {"type": "string", "required": True}}}).
    L{mergeSchema} returns one, and every other function here takes one as
    its C{schema} argument;
  - the JSON Schema document that jsonschema sees is built from a parameter
    map by L{jsonSchemaFor}; callers rarely need it.

Validation follows st2 closely, including its quirks, because API clients
match the error messages and because an action that st2 accepts must be
accepted here:

  - draft-4 keywords, but C{required: true} inside a property (draft-3
    style) and no top-level C{required} list;
  - C{additionalProperties: false};
  - a parameter with an empty spec accepts any non-null JSON type;
  - an optional parameter whose default is null (or absent) also accepts
    null; for a spec with neither C{type} nor C{anyOf}/C{oneOf} st2 writes
    C{type: ["string", "null"]} into the schema, so such parameters accept
    only strings.  That is st2's behaviour and is kept on purpose;
  - defaults (also for given-but-null values) are filled in before
    validation, so a required parameter with a default never fails;
  - immutable parameters may not be supplied at all, checked after schema
    validation.

Jinja templates in defaults are I{not} rendered here: L{validateParameters}
copies template defaults through as the literal strings they are.  Rendering
(with the dependency graph, C{action_context}, C{st2kv} and so on) belongs to
the parameter renderer, which runs before validation on the live parameters
and again on the full set before the runner is invoked.
"""

from __future__ import annotations

import copy
import json
from typing import Any, Dict, Iterable, List, Mapping, Tuple

import jsonschema
from jsonschema import _legacy_keywords
from jsonschema.exceptions import best_match

MASKED_VALUE = "********"

# Runner parameter attributes an action may override (st2
# util/schema RUNNER_PARAM_OVERRIDABLE_ATTRS).
OVERRIDABLE_ATTRIBUTES = frozenset(["default", "description", "enum", "immutable", "required"])

SCHEMA_ANY_TYPE: Dict[str, Any] = {
    "anyOf": [
        {"type": "array"},
        {"type": "boolean"},
        {"type": "integer"},
        {"type": "number"},
        {"type": "object"},
        {"type": "string"},
    ]
}


class ParameterError(ValueError):
    """
    Parameters (or parameter definitions) are not acceptable.  The message is
    the one st2 returns, and the API layer sends it as a 400 faultstring.
    """


class ParameterOverrideError(ParameterError):
    """
    An action's metadata overrides a runner parameter attribute it may not.
    """


def _deepUpdate(target: Dict[str, Any], update: Mapping[str, Any]) -> Dict[str, Any]:
    """
    Merge C{update} into C{target} recursively: an action that overrides only
    C{default} keeps the runner's C{type} and C{description}.  Non-mapping
    values (lists such as C{enum} included) replace wholesale.
    """
    for key, value in update.items():
        if isinstance(value, Mapping):
            existing = target.get(key)
            if not isinstance(existing, dict):
                existing = {}
            target[key] = _deepUpdate(existing, value)
        else:
            target[key] = copy.deepcopy(value)
    return target


def mergeSchema(
    runner_params: Mapping[str, Mapping[str, Any]],
    action_params: Mapping[str, Mapping[str, Any]],
    action_ref: str,
) -> Dict[str, Dict[str, Any]]:
    """
    The parameter map an action really takes: the runner's parameters
    deep-merged with the action's.

    Restating a runner attribute with the same value is allowed (st2 compares
    values), so metadata that repeats C{type: string} for C{cmd} is fine.

    @raise ParameterOverrideError: when the action changes a runner parameter
        attribute other than default, description, enum, immutable or
        required.
    """
    action_params = action_params or {}
    for name, spec in action_params.items():
        if name not in runner_params:
            continue
        runnerSpec = runner_params[name] or {}
        for attribute, value in (spec or {}).items():
            if attribute in OVERRIDABLE_ATTRIBUTES:
                continue
            if value != runnerSpec.get(attribute):
                raise ParameterOverrideError(
                    'The attribute "%s" for the runner parameter "%s" in action '
                    '"%s" cannot be overridden.' % (attribute, name, action_ref)
                )
    merged: Dict[str, Dict[str, Any]] = {}
    _deepUpdate(merged, runner_params)
    _deepUpdate(merged, action_params)
    return merged


def jsonSchemaFor(schema: Mapping[str, Mapping[str, Any]]) -> Dict[str, Any]:
    """
    The JSON Schema (object, one property per parameter, no additional
    properties) used to validate a parameter set, with st2's null-allowance
    for optional parameters whose default is null already applied.
    """
    if not schema:
        return {}
    properties = {
        name: copy.deepcopy(dict(spec)) if spec else copy.deepcopy(SCHEMA_ANY_TYPE)
        for name, spec in schema.items()
    }
    return _allowDefaultNone(
        {"type": "object", "properties": properties, "additionalProperties": False}
    )


def _isNullable(types: Any) -> bool:
    if isinstance(types, list):
        return any(t == "null" or (isinstance(t, dict) and t.get("type") == "null") for t in types)
    return isinstance(types, dict) and types.get("type") == "null"


def _hasType(attributeType: Any, name: str) -> bool:
    return attributeType == name or (isinstance(attributeType, list) and name in attributeType)


def _allowDefaultNone(schema: Dict[str, Any]) -> Dict[str, Any]:
    """
    Let null through for every optional property whose default is null or
    absent (st2 C{modify_schema_allow_default_none}); it mutates and returns
    C{schema}, which the caller has already copied.
    """
    properties = schema.get("properties", {})
    for name, prop in properties.items():
        if not isinstance(prop, dict):
            continue
        optional = not prop.get("required", False)
        hasDefault = "default" in prop
        if (hasDefault or optional) and prop.get("default") is None:
            if "anyOf" in prop:
                if not _isNullable(prop["anyOf"]):
                    prop["anyOf"].append({"type": "null"})
            elif "oneOf" in prop:
                if not _isNullable(prop["oneOf"]):
                    prop["oneOf"].append({"type": "null"})
            elif isinstance(prop.get("type"), list):
                if "null" not in prop["type"]:
                    prop["type"].append("null")
            elif prop.get("type", "string") != "null":
                prop["type"] = [prop.get("type", "string"), "null"]
        attributeType = prop.get("type")
        items = prop.get("items")
        if _hasType(attributeType, "array") and isinstance(items, dict) and items.get("properties"):
            _allowDefaultNone(items)
        if _hasType(attributeType, "object") and prop.get("properties"):
            _allowDefaultNone(prop)
    return schema


def _assignDefaults(instance: Any, schema: Mapping[str, Any]) -> Any:
    """
    Fill defaults for missing or null values, recursing into object
    properties and arrays of objects (st2 C{assign_default_values}).
    """
    if isinstance(instance, dict):
        instances = [instance]
    elif isinstance(instance, list):
        instances = [i for i in instance if isinstance(i, dict)]
    else:
        return instance
    for name, prop in (schema.get("properties") or {}).items():
        if not isinstance(prop, Mapping):
            continue
        if "default" in prop:
            for one in instances:
                if one.get(name) is None:
                    one[name] = copy.deepcopy(prop["default"])
        if not isinstance(instance, dict) or instance.get(name) is None:
            continue
        attributeType = prop.get("type")
        items = prop.get("items")
        if _hasType(attributeType, "array") and isinstance(items, Mapping) and items.get("properties"):
            _assignDefaults(instance[name], items)
        if _hasType(attributeType, "object") and prop.get("properties"):
            _assignDefaults(instance[name], prop)
    return instance


def _ignored(validator: Any, value: Any, instance: Any, schema: Any) -> Iterable[Any]:
    """
    st2's validator has no top-level C{required} keyword; a boolean
    C{required} on an object-typed parameter must not be read as a list.
    """
    return iter(())


ParameterValidator = jsonschema.validators.extend(
    jsonschema.Draft4Validator,
    validators={
        "properties": _legacy_keywords.properties_draft3,
        "required": _ignored,
    },
)


def immutableNames(schema: Mapping[str, Mapping[str, Any]]) -> List[str]:
    """
    Names of the parameters whose value is fixed by their definition.
    """
    return [name for name, spec in schema.items() if spec and spec.get("immutable", False)]


def validateParameters(
    schema: Mapping[str, Mapping[str, Any]], given: Mapping[str, Any]
) -> Dict[str, Any]:
    """
    Validate the parameters of an execution request and return the full
    parameter set: the given values plus every default (template defaults
    verbatim, see the module docstring).

    C{given} is not modified.

    @raise ParameterError: with jsonschema's message for the most relevant
        error (C{'cmd' is a required property}, C{Additional properties are
        not allowed ('foo' was unexpected)}, ...), or C{Override of immutable
        parameter(s) ['sudo'] is unsupported.}
    """
    instance = copy.deepcopy(dict(given or {}))
    jsonSchema = jsonSchemaFor(schema)
    instance = _assignDefaults(instance, jsonSchema)
    error = best_match(ParameterValidator(jsonSchema).iter_errors(instance))
    if error is not None:
        raise ParameterError(error.message)
    immutables = set(immutableNames(schema))
    overridden = [name for name in (given or {}) if name in immutables]
    if overridden:
        raise ParameterError("Override of immutable parameter(s) %s is unsupported." % (overridden,))
    return instance


def _maskValue(spec: Mapping[str, Any], value: Any) -> Any:
    if spec.get("secret", False):
        return MASKED_VALUE
    attributeType = spec.get("type")
    properties = spec.get("properties")
    if isinstance(value, dict) and isinstance(properties, Mapping):
        return {
            k: _maskValue(properties[k], v) if isinstance(properties.get(k), Mapping) else copy.deepcopy(v)
            for k, v in value.items()
        }
    items = spec.get("items")
    if _hasType(attributeType, "array") and isinstance(value, list) and isinstance(items, Mapping):
        return [_maskValue(items, v) for v in value]
    return copy.deepcopy(value)


def maskSecrets(schema: Mapping[str, Mapping[str, Any]], params: Mapping[str, Any]) -> Dict[str, Any]:
    """
    A copy of C{params} fit for display: values of C{secret: true}
    parameters (also inside object properties and array items) become
    C{"********"}.  Parameters that are not present stay absent.
    """
    masked: Dict[str, Any] = {}
    for name, value in params.items():
        spec = schema.get(name)
        masked[name] = _maskValue(spec, value) if isinstance(spec, Mapping) else copy.deepcopy(value)
    return masked


def _secretsIn(spec: Mapping[str, Any], value: Any, found: List[Any]) -> None:
    if spec.get("secret", False):
        found.append(value)
        return
    properties = spec.get("properties")
    if isinstance(value, dict) and isinstance(properties, Mapping):
        for k, v in value.items():
            if isinstance(properties.get(k), Mapping):
                _secretsIn(properties[k], v, found)
    items = spec.get("items")
    if isinstance(value, list) and isinstance(items, Mapping):
        for v in value:
            _secretsIn(items, v, found)


def secretValues(schema: Mapping[str, Mapping[str, Any]], params: Mapping[str, Any]) -> List[Any]:
    """
    The values of C{params} that L{maskSecrets} would hide.
    """
    found: List[Any] = []
    for name, value in params.items():
        spec = schema.get(name)
        if isinstance(spec, Mapping):
            _secretsIn(spec, value, found)
    return found


def maskText(text: str, schema: Mapping[str, Mapping[str, Any]], params: Mapping[str, Any]) -> str:
    """
    C{text} (an error message) with every secret value of C{params}
    replaced by C{"********"}: as Python shows it (jsonschema quotes values
    with C{repr}), as JSON, and, for strings of four characters or more,
    as it is (shorter ones would mask unrelated words).
    """
    for value in secretValues(schema, params):
        if value is None or value == "":
            continue
        forms = {repr(value)}
        try:
            forms.add(json.dumps(value))
        except (TypeError, ValueError):
            pass
        if isinstance(value, str) and len(value) >= 4:
            forms.add(value)
        for form in sorted(forms, key=len, reverse=True):
            text = text.replace(form, MASKED_VALUE)
    return text


def splitRunnerAndAction(
    runner_params: Mapping[str, Any],
    action_params: Mapping[str, Any],
    params: Mapping[str, Any],
) -> Tuple[Dict[str, Any], Dict[str, Any]]:
    """
    Split a full parameter set into the runner's share (cwd, env, timeout,
    ...) and the action's own parameters, which are what a script receives
    as arguments.  A name defined by both (an action overriding a runner
    parameter) belongs to the runner, as in st2.

    @param runner_params: the runner's parameter map.
    @param action_params: the action's parameter map (its metadata).
    """
    runner = {k: v for k, v in params.items() if k in runner_params}
    action = {k: v for k, v in params.items() if k in action_params and k not in runner_params}
    return runner, action
