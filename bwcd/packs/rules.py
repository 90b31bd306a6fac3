# -*- test-case-name: tests.test_triggers_api -*-
"""
Registering what packs declare for the rules engine: trigger types from
C{<pack>/triggers/*.yaml} and rules from C{<pack>/rules/*.yaml}, at start
and on SIGHUP.

A broken file is reported (file, field, reason) and skipped; it never stops
the others.  A rule is stored by ref keeping its id, as StackStorm's
registrar does, so enforcements keep pointing at it across reloads.  Rules
whose file disappeared are left in place (StackStorm does the same; delete
them through the API).
"""

from __future__ import annotations

import os
from typing import Any, Dict, Iterable, List, Optional, Tuple

from twisted.logger import Logger

from bwcd.packs.loader import Pack, Problem, loadFolder
from bwcd.rules.index import RuleIndex
from bwcd.rules.model import RuleError, ruleFromYaml
from bwcd.rules.registry import saveRule
from bwcd.packs.triggers import registerPackTriggerTypes
from bwcd.rules.triggers import TriggerError, triggerForRule
from bwcd.store.interface import IStore, StoreError

log = Logger(namespace="bwcd.packs.rules")


def _ruleFromFile(pack: Pack, path: str, data: dict) -> Tuple[Optional[Tuple[str, Dict[str, Any]]], Optional[Problem]]:
    try:
        return (path, ruleFromYaml(data, pack.name, os.path.relpath(path, pack.path))), None
    except RuleError as e:
        return None, Problem(path, e.field, str(e))


def loadRules(pack: Pack) -> Tuple[List[Tuple[str, Dict[str, Any]]], List[Problem]]:
    """
    Every rule file of C{pack} that passes the checks that need no store:
    C{(path, document)} pairs, and a problem for each file skipped.
    """
    return loadFolder(pack, "rules", _ruleFromFile)


def _comparable(doc: Dict[str, Any]) -> Dict[str, Any]:
    return {k: v for k, v in doc.items() if k != "id"}


async def registerRule(store: IStore, index: RuleIndex, doc: Dict[str, Any]) -> bool:
    """
    Store one pack rule (by ref, keeping an existing rule's id) with its
    trigger.

    @return: whether anything changed.
    @raise TriggerError: the trigger is unusable.
    """
    typeRef = doc["trigger"]["type"]
    triggerType = await store.findOne("triggertypes", {"ref": typeRef})
    await index.lock()
    try:
        trigger = await triggerForRule(store, typeRef, triggerType, doc["trigger"]["parameters"])
        index.putTrigger(trigger)
        doc["trigger"]["ref"] = trigger["ref"]
        previous = await store.findOne("rules", {"ref": doc["ref"]})
        if previous is not None:
            doc["context"] = previous.get("context") or doc["context"]
            if _comparable(previous) == _comparable(doc):
                return False
        await saveRule(store, index, doc, previous)
        return True
    finally:
        index.unlock()


async def registerPackRules(store: IStore, index: RuleIndex, packs: Iterable[Pack]) -> Tuple[int, List[Problem]]:
    """
    Load and store the rules of every pack.

    @return: how many rules were created or changed, and the files skipped.
    """
    changed = 0
    problems: List[Problem] = []
    for pack in packs:
        rules, packProblems = loadRules(pack)
        problems.extend(packProblems)
        for path, doc in rules:
            try:
                if await registerRule(store, index, doc):
                    changed += 1
            except TriggerError as e:
                problems.append(Problem(path, "trigger", str(e)))
    return changed, problems


async def registerPackContent(store: IStore, index: RuleIndex, packs: Iterable[Pack]) -> List[Problem]:
    """
    Register the trigger types, then the rules, of C{packs}, log every file
    skipped, and make every process (this one included) see the result.

    Call after the system trigger types (L{bwcd.rules.triggers.ensureSystemTriggerTypes})
    and the actions are registered, at start and on SIGHUP.

    @return: the problems met.
    """
    packs = list(packs)
    typeCount, problems = await registerPackTriggerTypes(store, packs)
    ruleCount, ruleProblems = await registerPackRules(store, index, packs)
    for problem in ruleProblems:
        log.error("Skipped rule file {path}: {field}: {reason}", path=problem.path, field=problem.field, reason=problem.reason)
    problems.extend(ruleProblems)
    log.info("Registered {types} trigger types and {rules} new or changed rules from {packs} packs", types=typeCount, rules=ruleCount, packs=len(packs))
    try:
        await index.publish()
    except StoreError as e:
        log.warn("Could not publish pack changes to other processes: {error}", error=str(e))
    if index.loaded:
        await index.reload()
    return problems


__all__ = ["loadRules", "registerPackContent", "registerPackRules", "registerRule"]
