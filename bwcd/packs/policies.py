# -*- test-case-name: tests.test_webhook_policies -*-
"""
Registering the webhook policies packs declare in C{<pack>/webhooks/*.yaml},
at start and on SIGHUP.

Unlike a broken rule, a broken policy is not skipped quietly at start: a
policy is a hook's lock, and starting with it missing would leave the hook
to whatever the operator meant to forbid.  At start every problem is
collected and start-up fails naming each file; on SIGHUP the problems are
logged and the policies already in force stay.  A policy a pack no longer
declares is removed (its hook then requires credentials again).
"""

from __future__ import annotations

import os
from typing import Any, Iterable, List, Optional, Tuple

from twisted.logger import Logger

from bwcd.packs.loader import Pack, Problem, loadFolder
from bwcd.webhooks.policy import Policy, PolicyError, parsePolicy
from bwcd.webhooks.registry import PolicyIndex, SecretError

__all__ = ["PolicyFileError", "loadPolicies", "registerPackPolicies"]

log = Logger(namespace="bwcd.packs.policies")


class PolicyFileError(Exception):
    """
    Start-up cannot go on: these policy files are broken.
    """

    def __init__(self, problems: List[Problem]) -> None:
        super().__init__("Broken webhook policy files: " + "; ".join(str(p) for p in problems))
        self.problems = problems


def _policyFromFile(pack: Pack, path: str, data: dict) -> Tuple[Optional[Tuple[str, Policy]], Optional[Problem]]:
    try:
        return (path, parsePolicy(data)), None
    except PolicyError as e:
        return None, Problem(path, e.field or "(file)", e.reason)


def loadPolicies(pack: Pack) -> Tuple[List[Tuple[str, Policy]], List[Problem]]:
    """
    Every policy file of C{pack}: C{(path, policy)} pairs, and a problem for
    each file that is broken.
    """
    return loadFolder(pack, "webhooks", _policyFromFile)


async def registerPackPolicies(index: PolicyIndex, packs: Iterable[Pack], strict: bool = True) -> List[Problem]:
    """
    Store the policies of C{packs} and remove those they no longer declare.

    @param strict: at start: any problem (a bad key or value, an unreadable
        secret, two files for one url) raises L{PolicyFileError} before
        anything is stored.
    @return: the problems (when not strict).
    """
    packs = list(packs)
    found: List[Tuple[Pack, str, Policy]] = []
    problems: List[Problem] = []
    seen: dict = {}
    for pack in packs:
        policies, packProblems = loadPolicies(pack)
        problems.extend(packProblems)
        for path, policy in policies:
            if policy.url in seen:
                problems.append(Problem(path, "url", f"hook {policy.url!r} already has a policy in {seen[policy.url]}"))
                continue
            try:
                await index.secretsOf(policy)
            except SecretError as e:
                problems.append(Problem(path, e.field, str(e).split(": ", 1)[-1]))
                continue
            seen[policy.url] = path
            found.append((pack, path, policy))
    if problems and strict:
        raise PolicyFileError(problems)
    for problem in problems:
        log.error("Skipped webhook policy file {path}: {field}: {reason}", path=problem.path, field=problem.field, reason=problem.reason)
    changed = 0
    for pack, path, policy in found:
        _, created = await index.put(policy, pack=pack.name, metadataFile=os.path.relpath(path, pack.path))
        changed += 1 if created else 0
    names = {p.name for p in packs}
    brokenPaths = {p.path for p in problems}
    for doc in await index.stored():
        pack: Any = doc.get("pack")
        if pack in names and doc["url"] not in seen:
            packPath = next((p.path for p in packs if p.name == pack), "")
            if os.path.join(packPath, doc.get("metadata_file") or "") in brokenPaths:
                continue  # broken on reload: the one in force stays
            await index.delete(doc["url"])
            log.info("Removed webhook policy {url}: pack {pack} no longer declares it", url=doc["url"], pack=pack)
    log.info("Registered {count} webhook policies from packs", count=len(found))
    return problems
