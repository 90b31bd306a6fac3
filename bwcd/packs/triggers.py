# -*- test-case-name: tests.test_rules_model -*-
"""
Trigger types shipped in packs: reading C{<pack>/triggers/*.yaml} into
trigger type documents and registering them.

This is the pack side of L{bwcd.rules.triggers}: it knows the pack layout
(L{bwcd.packs.loader}), while the rules side knows only documents, so that
C{bwcd.rules} does not depend on how packs are laid out on disk.
"""

from __future__ import annotations

import os
from typing import Any, Dict, Iterable, List, Mapping, Optional, Tuple

import jsonschema
from twisted.logger import Logger

from bwcd.packs.loader import Pack, Problem, loadFolder
from bwcd.rules.triggers import (
    SYSTEM_TRIGGER_TYPE_REFS,
    TriggerSchemaValidator,
    registerTriggerType,
    triggerTypeDocument,
)
from bwcd.store.interface import IStore

log = Logger(namespace="bwcd.packs.triggers")

_TYPE_KEYS = frozenset({"name", "pack", "description", "payload_schema", "parameters_schema", "tags", "metadata_file", "ref", "uid", "id"})


def triggerTypeFromYaml(pack: Pack, path: str, data: Mapping[str, Any]) -> Tuple[Optional[Dict[str, Any]], Optional[Problem]]:
    """
    Validate one C{<pack>/triggers/*.yaml} mapping into a trigger type
    document (without id).
    """
    name = data.get("name")
    if not isinstance(name, str) or not name.strip():
        return None, Problem(path, "name", "is required and must be a string")
    if data.get("pack") not in (None, pack.name):
        return None, Problem(path, "pack", f"must be {pack.name!r} (the pack's name), got {data.get('pack')!r}")
    unknown = sorted(set(data) - _TYPE_KEYS)
    if unknown:
        return None, Problem(path, unknown[0], "unknown attribute")
    for key in ("payload_schema", "parameters_schema"):
        value = data.get(key)
        if value is None:
            continue
        if not isinstance(value, dict):
            return None, Problem(path, key, "must be a mapping (a JSON schema)")
        try:
            TriggerSchemaValidator.check_schema(value)
        except jsonschema.SchemaError as e:
            return None, Problem(path, key, f"is not a valid JSON schema: {e.message}")
    description = data.get("description", "") or ""
    if not isinstance(description, str):
        return None, Problem(path, "description", "must be a string")
    tags = data.get("tags", []) or []
    if not isinstance(tags, list):
        return None, Problem(path, "tags", "must be a list")
    doc = triggerTypeDocument(
        pack.name,
        name,
        description,
        data.get("payload_schema"),
        data.get("parameters_schema"),
        tags,
        os.path.relpath(path, pack.path),
    )
    return doc, None


def loadTriggerTypes(pack: Pack) -> Tuple[List[Dict[str, Any]], List[Problem]]:
    """
    Every valid trigger type of C{pack}, and a problem for each file
    skipped.
    """
    return loadFolder(pack, "triggers", triggerTypeFromYaml)


async def registerPackTriggerTypes(store: IStore, packs: Iterable[Pack]) -> Tuple[int, List[Problem]]:
    """
    Load and store the trigger types of every pack.

    @return: how many were registered and the files skipped (logged).
    """
    count = 0
    problems: List[Problem] = []
    for pack in packs:
        types, packProblems = loadTriggerTypes(pack)
        problems.extend(packProblems)
        for triggerType in types:
            if triggerType["ref"] in SYSTEM_TRIGGER_TYPE_REFS:
                problems.append(Problem(os.path.join(pack.path, triggerType.get("metadata_file", "")), "name", f"{triggerType['ref']} is a built-in trigger type"))
                continue
            await registerTriggerType(store, triggerType)
            count += 1
    for problem in problems:
        log.error("Skipped trigger type file {path}: {field}: {reason}", path=problem.path, field=problem.field, reason=problem.reason)
    return count, problems


__all__ = ["loadTriggerTypes", "registerPackTriggerTypes", "triggerTypeFromYaml"]
