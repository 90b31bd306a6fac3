# -*- test-case-name: tests.test_scoped_keys -*-
"""
Who is calling, as the credential check found it, and what a scoped API key
limits them to.

It lives with authentication, not with the HTTP layer, because the domain
decides with it (whose name an execution runs under, who may act for whom)
and must not import the API to do so.

Scopes exist for webhook senders that cannot sign their requests but can
carry a key (Grafana, Alertmanager, Jira): a leaked scoped key can only send
events to its hooks.  The one kind is C{webhooks:<url glob>}; its glob
language, defined here once, is matched against the hook url as the hooks
themselves are looked up (L{normaliseHookUrl}):

  - leading and trailing C{/} are ignored, in the glob and in the url
    (C{alerts/*/} is C{alerts/*}; C{/alerts/x/} is C{alerts/x});
  - C{*} matches any run of characters within one path segment (never a
    C{/}), C{**} any run including C{/}: C{alerts/*} matches
    C{alerts/grafana} but not C{alerts/a/b} (C{alerts/**} matches both), and
    neither matches C{alerts} itself;
  - C{?} matches one character other than C{/}; C{[abc]}, C{[a-z]},
    C{[!abc]} match one character of (not of) the set, never C{/};
  - everything else is literal and case-sensitive (as hook urls are);
  - the generic hook C{st2}, which dispatches any trigger named in its body,
    is matched only by the scope C{webhooks:st2} itself, never by a
    wildcard: C{webhooks:**} means "every hook of mine", not "any trigger".
"""

from __future__ import annotations

import functools
import re
from typing import Iterable, List, Optional, Pattern, Tuple

import attrs

from bwcd.errors import Invalid, Refused

#: the one scope kind: C{webhooks:<url glob>}
WEBHOOKS = "webhooks"

#: the hook that takes any trigger in its body (L{bwcd.rules.triggers.GENERIC_HOOK})
GENERIC_HOOK = "st2"

#: a scope longer than this is refused (a hook url is a path, not a document)
MAX_SCOPE_LENGTH = 1024

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class BadScope(Invalid, ValueError):
    """
    A scope that is not C{webhooks:<url glob>} (400, naming it).
    """

    def __init__(self, scope: object, reason: str) -> None:
        shown = scope if isinstance(scope, str) else repr(scope)
        if isinstance(shown, str) and len(shown) > 100:
            shown = shown[:100] + "..."
        super().__init__(f'Invalid scope "{shown}": {reason}')
        self.scope = scope

    def __str__(self) -> str:
        return self.faultstring


def normaliseHookUrl(url: str) -> str:
    """
    A hook url as hooks are looked up (L{bwcd.rules.index.RuleIndex.hooksFor}):
    leading and trailing C{/} dropped.
    """
    return url.strip("/")


def _translate(glob: str) -> str:
    """
    The regular expression (without anchors) for C{glob}.

    @raise ValueError: an unclosed C{[}.
    """
    out: List[str] = []
    i, n = 0, len(glob)
    while i < n:
        c = glob[i]
        if c == "*":
            j = i
            while j < n and glob[j] == "*":
                j += 1
            out.append(".*" if j - i >= 2 else "[^/]*")
            i = j
        elif c == "?":
            out.append("[^/]")
            i += 1
        elif c == "[":
            j = i + 1
            negate = j < n and glob[j] == "!"
            if negate:
                j += 1
            start = j
            if j < n and glob[j] == "]":
                j += 1
            while j < n and glob[j] != "]":
                j += 1
            if j >= n:
                raise ValueError("unclosed [ in the glob")
            members = "".join("\\" + ch if ch in "\\[]^&~|" else ch for ch in glob[start:j])
            out.append("(?!/)[" + ("^" if negate else "") + members + "]")
            i = j + 1
        else:
            out.append(re.escape(c))
            i += 1
    return "".join(out)


@functools.lru_cache(maxsize=1024)
def globPattern(glob: str) -> Pattern[str]:
    """
    The compiled form of a normalised url glob (cached: it runs on the
    webhook hot path).

    @raise ValueError: C{glob} is not a valid glob.
    """
    try:
        return re.compile(_translate(glob), re.DOTALL)
    except re.error as e:
        raise ValueError(f"not a valid glob: {e.msg}") from None


def parseScope(scope: object) -> str:
    """
    The canonical form of one scope (C{webhooks:} and the glob without
    leading or trailing C{/}).

    @raise BadScope: not a string, another kind, an empty glob or one that
        does not compile.
    """
    if not isinstance(scope, str):
        raise BadScope(scope, "a scope is a string, webhooks:<url glob>")
    if len(scope) > MAX_SCOPE_LENGTH:
        raise BadScope(scope, f"longer than {MAX_SCOPE_LENGTH} characters")
    if _CONTROL.search(scope):
        raise BadScope(scope.encode("unicode_escape").decode("ascii"), "control characters are not allowed")
    kind, colon, glob = scope.partition(":")
    if not colon or kind != WEBHOOKS:
        raise BadScope(scope, "the only scope kind is webhooks:<url glob>")
    glob = normaliseHookUrl(glob)
    if not glob:
        raise BadScope(scope, "the url glob is empty")
    try:
        globPattern(glob)
    except ValueError as e:
        raise BadScope(scope, str(e)) from None
    return f"{WEBHOOKS}:{glob}"


def parseScopes(scopes: Optional[Iterable[object]]) -> Tuple[str, ...]:
    """
    The canonical scopes of a key, in the order given, duplicates dropped;
    C{None} or an empty list is an unscoped (full-access) key.

    @raise BadScope: the first bad one, or C{scopes} is not a list.
    """
    if scopes is None:
        return ()
    if isinstance(scopes, (str, bytes)) or not isinstance(scopes, (list, tuple)):
        raise BadScope(scopes, "scopes is a list of webhooks:<url glob> strings")
    seen: List[str] = []
    for scope in scopes:
        canonical = parseScope(scope)
        if canonical not in seen:
            seen.append(canonical)
    return tuple(seen)


def scopeAllowsHook(scope: str, url: str) -> bool:
    """
    Whether one canonical C{webhooks:} scope covers the hook C{url} (see the
    module docstring for the rules).
    """
    kind, _, glob = scope.partition(":")
    glob = normaliseHookUrl(glob)
    if kind != WEBHOOKS or not glob:
        return False
    url = normaliseHookUrl(url)
    if url == GENERIC_HOOK:
        return glob == GENERIC_HOOK
    try:
        return globPattern(glob).fullmatch(url) is not None
    except ValueError:
        return False


def _scopeTuple(value: Optional[Iterable[str]]) -> Tuple[str, ...]:
    return tuple(value or ())


@attrs.frozen
class Principal:
    """
    The caller: the user name and how they proved it.

    @ivar method: C{"token"}, C{"apikey"} or C{"none"} (auth disabled).
    @ivar admin: what st2 without RBAC means by an admin: a full-access
        credential (a password token or an unscoped API key), which may
        name another C{user} for an execution.  Scoped keys never are.
    @ivar scopes: the canonical scopes of a scoped API key; empty for every
        full-access credential.
    """

    user: str
    method: str
    credentialId: Optional[str] = None
    admin: bool = True
    scopes: Tuple[str, ...] = attrs.field(default=(), converter=_scopeTuple)

    def __attrs_post_init__(self) -> None:
        if self.scopes and self.admin:
            raise ValueError("a scoped credential is never an admin")

    @property
    def scoped(self) -> bool:
        return bool(self.scopes)

    def allowsHook(self, url: str) -> bool:
        """
        Whether this caller may send events to the hook C{url}: always for a
        full-access credential, else when one of its scopes matches.
        """
        if not self.scopes:
            return True
        return any(scopeAllowsHook(scope, url) for scope in self.scopes)

    def refusal(self) -> Refused:
        """
        The 403 a scoped caller gets for anything its scopes do not cover,
        naming every scope (comma and space separated, as stored).
        """
        return Refused(scopeRefusalMessage(self.scopes))


def scopeRefusalMessage(scopes: Iterable[str]) -> str:
    return "API key is limited to " + ", ".join(scopes)


__all__ = [
    "BadScope",
    "GENERIC_HOOK",
    "MAX_SCOPE_LENGTH",
    "Principal",
    "WEBHOOKS",
    "globPattern",
    "normaliseHookUrl",
    "parseScope",
    "parseScopes",
    "scopeAllowsHook",
    "scopeRefusalMessage",
]
