# -*- test-case-name: tests.test_packs -*-
"""
Writing what the pack folders declare into the store, at start and on
SIGHUP.

Registration is an upsert by ref that keeps each action's id, so executions
and rules that point at an action stay valid across reloads.
"""

from __future__ import annotations

from typing import Dict, Iterable, List, Tuple

from twisted.logger import Logger

from bwcd.packs.loader import Pack, Problem, findPacks, loadActions
from bwcd.execution.runners.types import runnerNames, runnerTypeDict
from bwcd.store.interface import IStore, newId

log = Logger(namespace="bwcd.packs")


async def upsertByKey(store: IStore, collection: str, key: str, doc: dict) -> dict:
    """
    Insert C{doc}, or replace the document with the same C{key} keeping its
    id.
    """
    existing = await store.findOne(collection, {key: doc[key]})
    if existing is None:
        doc = dict(doc, id=doc.get("id") or newId())
        return await store.insert(collection, doc)
    doc = dict(doc, id=existing["id"])
    if existing == doc:
        return existing
    return await store.replace(collection, doc)


async def registerRunnerTypes(store: IStore) -> None:
    for name in runnerNames():
        await upsertByKey(store, "runnertypes", "name", runnerTypeDict(name))


async def registerActions(store: IStore, packPaths: Iterable[str]) -> Tuple[List[Pack], List[Problem], int]:
    """
    Find the packs, load their actions and store them.

    @return: the packs found, the problems met (already logged), and the
        number of actions registered.
    """
    packs, problems = findPacks(packPaths)
    count = 0
    for pack in packs:
        actions, packProblems = loadActions(pack)
        problems.extend(packProblems)
        for action in actions:
            await upsertByKey(store, "actions", "ref", action)
            count += 1
    for problem in problems:
        log.error("Skipped pack file {path}: {field}: {reason}", path=problem.path, field=problem.field, reason=problem.reason)
    log.info("Registered {count} actions from {packs} packs", count=count, packs=len(packs))
    return packs, problems, count


def packFolders(packs: Iterable[Pack]) -> Dict[str, str]:
    return {pack.name: pack.path for pack in packs}
