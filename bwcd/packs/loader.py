# -*- test-case-name: tests.test_packs -*-
"""
Reading StackStorm-style pack folders into action documents.

Loading is pure (files in, documents and problems out) so that a broken action
file is reported with its path, field and reason and simply skipped: one bad
pack file must never stop the daemon from starting or reloading.
"""

from __future__ import annotations

import os
from typing import Any, Callable, Iterable, List, Optional, Tuple

import attrs
import yaml

from bwcd.execution.runners.types import LOCAL_SHELL_CMD, LOCAL_SHELL_SCRIPT, RUNNER_TYPES

CORE_PACK_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "core")

_PARAM_KEYS = frozenset(
    {"type", "description", "default", "required", "immutable", "secret", "position", "enum",
     "minimum", "maximum", "minLength", "maxLength", "pattern", "items", "properties",
     "additionalProperties", "format", "title", "minItems", "maxItems", "uniqueItems", "anyOf", "oneOf"}
)
_SIMPLE_TYPES = frozenset({"string", "integer", "number", "boolean", "object", "array", "null"})


@attrs.frozen
class Problem:
    """
    Why one file of a pack was skipped.
    """

    path: str
    field: str
    reason: str

    def __str__(self) -> str:
        return f"{self.path}: {self.field}: {self.reason}"


@attrs.frozen
class Pack:
    name: str
    path: str
    meta: dict


def packName(path: str) -> Tuple[Optional[Pack], Optional[Problem]]:
    """
    The pack in folder C{path}: its name from C{pack.yaml} (C{ref}, else
    C{name}), else the folder name.
    """
    metaPath = os.path.join(path, "pack.yaml")
    meta: dict = {}
    if os.path.exists(metaPath):
        try:
            with open(metaPath, encoding="utf-8") as f:
                meta = yaml.safe_load(f) or {}
        except (OSError, yaml.YAMLError) as e:
            return None, Problem(metaPath, "(file)", f"cannot be read as YAML: {str(e).splitlines()[0]}")
        if not isinstance(meta, dict):
            return None, Problem(metaPath, "(file)", "must be a mapping")
    name = meta.get("ref") or meta.get("name") or os.path.basename(os.path.normpath(path))
    if not isinstance(name, str) or not name.replace("_", "").replace("-", "").isalnum():
        return None, Problem(metaPath, "ref", f"invalid pack name {name!r}")
    return Pack(name=name, path=os.path.abspath(path), meta=meta), None


def findPacks(paths: Iterable[str]) -> Tuple[List[Pack], List[Problem]]:
    """
    The core pack, then every pack folder directly inside each of C{paths}
    (a folder with a C{pack.yaml} or an C{actions/} folder).  A later pack
    with the same name as an earlier one is reported and skipped.
    """
    packs: List[Pack] = []
    problems: List[Problem] = []
    core, _ = packName(CORE_PACK_DIR)
    assert core is not None
    packs.append(core)
    seen = {core.name}
    for base in paths:
        try:
            entries = sorted(os.listdir(base))
        except OSError as e:
            problems.append(Problem(base, "packs.paths", e.strerror or str(e)))
            continue
        for entry in entries:
            path = os.path.join(base, entry)
            if not os.path.isdir(path):
                continue
            if not (os.path.exists(os.path.join(path, "pack.yaml")) or os.path.isdir(os.path.join(path, "actions"))):
                continue
            pack, problem = packName(path)
            if problem:
                problems.append(problem)
                continue
            assert pack is not None
            if pack.name in seen:
                problems.append(Problem(path, "ref", f"pack {pack.name!r} is already registered from another folder"))
                continue
            seen.add(pack.name)
            packs.append(pack)
    return packs, problems


def yamlFiles(folder: str) -> List[str]:
    try:
        names = sorted(os.listdir(folder))
    except OSError:
        return []
    return [os.path.join(folder, n) for n in names if n.endswith((".yaml", ".yml")) and not n.startswith(".")]


def readYaml(path: str) -> Tuple[Optional[dict], Optional[Problem]]:
    try:
        with open(path, encoding="utf-8") as f:
            data = yaml.safe_load(f)
    except (OSError, yaml.YAMLError) as e:
        return None, Problem(path, "(file)", f"cannot be read as YAML: {str(e).splitlines()[0]}")
    if not isinstance(data, dict):
        return None, Problem(path, "(file)", "must be a mapping")
    return data, None


def actionFromMetadata(pack: Pack, path: str, data: dict) -> Tuple[Optional[dict], Optional[Problem]]:
    """
    Validate one action metadata mapping and build the Action API document
    (without C{id}, which the registrar assigns).
    """
    def bad(field: str, reason: str):
        return None, Problem(path, field, reason)

    name = data.get("name")
    if not isinstance(name, str) or not name:
        return bad("name", "is required and must be a string")
    if "." in name:
        return bad("name", "must not contain '.'")
    runner = data.get("runner_type")
    if runner not in RUNNER_TYPES:
        return bad("runner_type", f"unknown runner {runner!r} (known: {', '.join(sorted(RUNNER_TYPES))})")
    if data.get("pack") not in (None, pack.name):
        return bad("pack", f"must be {pack.name!r} (the pack's name), got {data.get('pack')!r}")
    enabled = data.get("enabled", True)
    if not isinstance(enabled, bool):
        return bad("enabled", "must be true or false")
    entry = data.get("entry_point", "") or ""
    if not isinstance(entry, str):
        return bad("entry_point", "must be a string")
    if runner == LOCAL_SHELL_SCRIPT:
        if not entry:
            return bad("entry_point", "is required for the local-shell-script runner")
        script = os.path.normpath(os.path.join(pack.path, "actions", entry))
        if not script.startswith(os.path.join(pack.path, "actions") + os.sep):
            return bad("entry_point", "must stay inside the pack's actions/ folder")
        if not os.path.isfile(script):
            return bad("entry_point", f"no such file {script!r}")
    elif runner == LOCAL_SHELL_CMD and entry:
        return bad("entry_point", "must be empty for the local-shell-cmd runner")
    params = data.get("parameters", {}) or {}
    if not isinstance(params, dict):
        return bad("parameters", "must be a mapping of parameter name to schema")
    runnerParams = RUNNER_TYPES[runner]["runner_parameters"]
    for pname, spec in params.items():
        field = f"parameters.{pname}"
        if not isinstance(spec, dict):
            return bad(field, "must be a mapping")
        unknown = set(spec) - _PARAM_KEYS
        if unknown:
            return bad(field, f"unknown attribute(s) {sorted(unknown)}")
        ptype = spec.get("type")
        if ptype is not None and (not isinstance(ptype, str) or ptype not in _SIMPLE_TYPES):
            return bad(f"{field}.type", f"must be one simple type, got {ptype!r}")
        for flag in ("required", "immutable", "secret"):
            if flag in spec and not isinstance(spec[flag], bool):
                return bad(f"{field}.{flag}", "must be true or false")
        if "position" in spec and (not isinstance(spec["position"], int) or isinstance(spec["position"], bool) or spec["position"] < 0):
            return bad(f"{field}.position", "must be a whole number >= 0")
        if pname in runnerParams:
            overridable = {"default", "description", "enum", "immutable", "required"}
            for attr in spec:
                if attr not in overridable and spec[attr] != runnerParams[pname].get(attr):
                    return bad(field, f'The attribute "{attr}" for the runner parameter "{pname}" in action "{pack.name}.{name}" cannot be overridden.')
    tags = data.get("tags", []) or []
    if not isinstance(tags, list):
        return bad("tags", "must be a list")
    doc = {
        "ref": f"{pack.name}.{name}",
        "uid": f"action:{pack.name}:{name}",
        "name": name,
        "pack": pack.name,
        "description": data.get("description", "") or "",
        "enabled": enabled,
        "runner_type": runner,
        "entry_point": entry,
        "parameters": params,
        "tags": tags,
        "notify": data.get("notify", {}) or {},
        "metadata_file": os.path.relpath(path, pack.path),
    }
    if "output_schema" in data:
        doc["output_schema"] = data["output_schema"]
    return doc, None


Builder = Callable[[Pack, str, dict], Tuple[Optional[Any], Optional[Problem]]]


def loadFolder(pack: Pack, folder: str, build: Builder) -> Tuple[List[Any], List[Problem]]:
    """
    Read every YAML file of C{<pack>/<folder>/} with C{build(pack, path,
    data)}, which returns a value or the problem that skips the file.
    """
    values: List[Any] = []
    problems: List[Problem] = []
    for path in yamlFiles(os.path.join(pack.path, folder)):
        data, problem = readYaml(path)
        if problem is None:
            assert data is not None
            value, problem = build(pack, path, data)
            if value is not None:
                values.append(value)
        if problem is not None:
            problems.append(problem)
    return values, problems


def loadActions(pack: Pack) -> Tuple[List[dict], List[Problem]]:
    """
    Every valid action of C{pack}, and a problem for each file skipped.
    """
    return loadFolder(pack, "actions", actionFromMetadata)


def scriptPath(packPath: str, entryPoint: str) -> str:
    """
    Where an action's script lives: relative to the pack's C{actions/}.
    """
    return os.path.normpath(os.path.join(packPath, "actions", entryPoint))
