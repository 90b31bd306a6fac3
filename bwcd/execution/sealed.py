# -*- test-case-name: tests.test_sealed -*-
"""
Secret parameters at rest: sealed with the datastore key.

An execution keeps what it was given (for re-run) and its full parameters
(for the runner) in internal fields.  Parameters an action marks C{secret}
must not sit there in clear: they are masked in those fields like
everywhere else, and their values are kept in one ciphertext
(C{_sealed}, st2's datastore scheme) that only the process about to run or
re-run the execution opens.  Pure functions: the caller passes the
encrypt/decrypt functions of its key.
"""

from __future__ import annotations

import json
from typing import Any, Callable, Dict, Mapping, Optional

from bwcd.execution.runners.params import MASKED_VALUE

__all__ = ["secretNames", "seal", "unseal"]

FIELDS = ("_given", "_parameters")


def secretNames(schema: Mapping[str, Mapping[str, Any]]) -> frozenset:
    return frozenset(name for name, spec in schema.items() if spec and spec.get("secret"))


def seal(doc: Dict[str, Any], schema: Mapping[str, Mapping[str, Any]], encrypt: Callable[[str], str]) -> None:
    """
    Move the secret values of C{doc}'s internal parameter fields into one
    ciphertext in C{doc["_sealed"]}, leaving masks in their place.  Nothing
    happens when no secret parameter has a value.
    """
    names = secretNames(schema)
    hidden: Dict[str, Dict[str, Any]] = {}
    for field in FIELDS:
        params = doc.get(field)
        if not params:
            continue
        secrets = {name: params[name] for name in names if name in params and params[name] is not None}
        if secrets:
            hidden[field] = secrets
            doc[field] = {k: (MASKED_VALUE if k in secrets else v) for k, v in params.items()}
    if hidden:
        doc["_sealed"] = encrypt(json.dumps(hidden, separators=(",", ":"), ensure_ascii=False))


def unseal(doc: Mapping[str, Any], decrypt: Optional[Callable[[str], str]]) -> Dict[str, Any]:
    """
    A copy of C{doc} with its sealed secret values back in place (for the
    runner and for re-run).

    @raise ValueError: the document is sealed and no key can open it.
    """
    sealed = doc.get("_sealed")
    if not sealed:
        return dict(doc)
    if decrypt is None:
        raise ValueError("The execution's secret parameters are encrypted and the datastore key is not available")
    hidden: Dict[str, Dict[str, Any]] = json.loads(decrypt(sealed))
    out = dict(doc)
    for field, secrets in hidden.items():
        out[field] = dict(out.get(field) or {}, **secrets)
    return out
