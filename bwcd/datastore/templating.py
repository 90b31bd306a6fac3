# -*- test-case-name: tests.test_datastore_templating -*-
"""
C{st2kv.system.<name>}, C{st2kv.user.<name>} and the C{decrypt_kv} filter
for the synchronous Jinja renderer.

Rendering is synchronous and the store is not, so values are fetched
before rendering: L{referencedKeys} finds the C{st2kv} references in the
template sources (Jinja's own parser, so C{st2kv.system['a'].b} counts),
one query per scope fetches them, and the templates then render against a
L{Snapshot}.  A reference the scan cannot see (a name built at render time,
an alias made with C{set}) is recorded as missed while rendering;
L{renderWithDatastore} fetches the missed names and renders again, so the
answer is always that of a renderer with live lookups.

As in st2 (st2-api-more.md section 10): a dotted path names one key
(C{st2kv.system.a.b} is the key C{a.b}); a missing key renders as an empty
string, never as an error; a secret renders as its ciphertext unless passed
through C{decrypt_kv}, which fails on a missing or empty item with st2's
message.
"""

from __future__ import annotations

from typing import Any, Awaitable, Callable, Dict, FrozenSet, Iterable, Mapping, Optional, Set, Tuple, TypeVar

from jinja2 import Environment, nodes, pass_context

from bwcd.datastore.keys import SYSTEM_SCOPE, USER_SCOPE

SCOPES = {"system": SYSTEM_SCOPE, "user": USER_SCOPE}

Reference = Tuple[str, str]
"""(full scope, key name), e.g. C{("st2kv.system", "slack.token")}."""

Fetch = Callable[[str, FrozenSet[str]], Awaitable[Mapping[str, Optional[str]]]]
"""
Fetch the stored values of some names of one scope: C{{name: value}},
names without a live item left out (or mapped to C{None}).
"""

Decrypt = Callable[[str, str], str]
"""Decrypt (ciphertext, reference for messages) with the datastore key."""

T = TypeVar("T")

_parser = Environment()


def mentionsDatastore(sources: Iterable[Any]) -> bool:
    """
    Whether any template string in C{sources} names C{st2kv}: the cheap test
    that keeps the datastore out of renders that do not use it.
    """
    return any("st2kv" in source for source in _strings(sources))


def referencedKeys(sources: Iterable[Any]) -> Set[Reference]:
    """
    Every C{st2kv.<scope>.<path>} read in the template strings found in
    C{sources} (strings, or dicts and lists holding them); the prefixes of
    each path are included, since any of them may be what is rendered.
    Unparseable strings are skipped: rendering will report them.
    """
    found: Set[Reference] = set()
    for source in _strings(sources):
        if "st2kv" not in source:
            continue
        try:
            tree = _parser.parse(source)
        except Exception:
            continue
        for node in tree.find_all((nodes.Getattr, nodes.Getitem)):
            path = _path(node)
            if path is not None and len(path) >= 3 and path[0] == "st2kv" and path[1] in SCOPES:
                found.add((SCOPES[path[1]], ".".join(path[2:])))
    return found


def _path(node: nodes.Node) -> Optional[list]:
    parts: list = []
    while True:
        if isinstance(node, nodes.Getattr):
            parts.append(node.attr)
        elif isinstance(node, nodes.Getitem) and isinstance(node.arg, nodes.Const) and isinstance(node.arg.value, str):
            parts.append(node.arg.value)
        elif isinstance(node, nodes.Name):
            parts.append(node.name)
            return parts[::-1]
        else:
            return None
        node = node.node


def _strings(value: Any) -> Iterable[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, Mapping):
        for k, v in value.items():
            yield from _strings(k)
            yield from _strings(v)
    elif isinstance(value, (list, tuple, set, frozenset)):
        for item in value:
            yield from _strings(item)


class Snapshot:
    """
    The datastore values one rendering sees, and the names it asked for
    that were not fetched.

    @ivar values: C{{(scope, name): value or None}} for every fetched name.
    @ivar missed: references read while rendering but never fetched.
    """

    def __init__(self, decrypt: Optional[Decrypt] = None) -> None:
        self.values: Dict[Reference, Optional[str]] = {}
        self.missed: Set[Reference] = set()
        self._decrypt = decrypt

    async def fill(self, fetch: Fetch, references: Iterable[Reference]) -> None:
        """
        Fetch every reference not fetched yet (one query per scope).
        """
        wanted: Dict[str, Set[str]] = {}
        for scope, name in references:
            if (scope, name) not in self.values:
                wanted.setdefault(scope, set()).add(name)
        for scope, names in wanted.items():
            got = await fetch(scope, frozenset(names))
            for name in names:
                self.values[(scope, name)] = got.get(name)
        self.missed.difference_update(self.values)

    def resolve(self, scope: str, name: str) -> Optional[str]:
        key = (scope, name)
        if key not in self.values:
            self.missed.add(key)
            return None
        return self.values[key]

    def decrypt(self, ciphertext: str, reference: str) -> str:
        if self._decrypt is None:
            raise ValueError(f'Cannot decrypt "{reference}": no datastore key')
        return self._decrypt(ciphertext, reference)

    def context(self) -> "DatastoreRoot":
        """
        The object to put in the render context as C{st2kv}.
        """
        return DatastoreRoot(self)


class DatastoreRoot:
    """
    C{st2kv}: only C{.system} and C{.user} exist.
    """

    def __init__(self, snapshot: Snapshot) -> None:
        self._snapshot = snapshot

    def __getattr__(self, name: str) -> "KeyValueLookup":
        if name in SCOPES:
            return KeyValueLookup(self._snapshot, SCOPES[name], "")
        raise AttributeError(name)

    def __getitem__(self, name: str) -> "KeyValueLookup":
        try:
            return self.__getattr__(name)
        except AttributeError:
            raise KeyError(name) from None


class KeyValueLookup:
    """
    A path in one scope: attribute or item access extends it, C{str()}
    gives the value of the key it names (C{""} when there is none).

    Every other name is a key name, so this class has no public
    attributes: C{st2kv.system.items} must read the key C{items}.
    """

    def __init__(self, snapshot: Snapshot, scope: str, path: str) -> None:
        self._snapshot = snapshot
        self._scope = scope
        self._path = path

    def __getattr__(self, name: str) -> "KeyValueLookup":
        if name.startswith("__"):
            raise AttributeError(name)
        return KeyValueLookup(self._snapshot, self._scope, f"{self._path}.{name}" if self._path else name)

    def __getitem__(self, name: Any) -> "KeyValueLookup":
        return self.__getattr__(str(name))

    def _value(self) -> str:
        value = self._snapshot.resolve(self._scope, self._path) if self._path else None
        return "" if value is None else str(value)

    def _reference(self) -> str:
        return f"{self._scope}.{self._path}"

    def __str__(self) -> str:
        return self._value()

    def __html__(self) -> str:
        return self._value()

    def __repr__(self) -> str:
        return repr(self._value())

    def __int__(self) -> int:
        return int(self._value())

    def __float__(self) -> float:
        return float(self._value())

    def __bool__(self) -> bool:
        return bool(self._value())

    def __len__(self) -> int:
        return len(self._value())

    def __eq__(self, other: Any) -> bool:
        return self._value() == (str(other) if isinstance(other, KeyValueLookup) else other)

    def __ne__(self, other: Any) -> bool:
        return not self.__eq__(other)

    def __hash__(self) -> int:
        return hash(self._value())


@pass_context
def decryptKv(context: Any, value: Any) -> str:
    """
    The C{decrypt_kv} filter: the plaintext of a secret read through
    C{st2kv}, or of a ciphertext string (decrypted with the key of the
    C{st2kv} object in the render context).

    @raise ValueError: C{Referenced datastore item "<ref>" doesn't exist or
        it contains an empty string}, or the crypto error of a value that
        is not a ciphertext of this key (e.g. C{Non-hexadecimal digit
        found}).
    """
    if isinstance(value, KeyValueLookup):
        text, reference, snapshot = value._value(), value._reference(), value._snapshot
    else:
        text, reference = ("" if value is None else str(value)), "value"
        root = context.get("st2kv") if context is not None else None
        snapshot = root._snapshot if isinstance(root, DatastoreRoot) else Snapshot()
    if not text:
        raise ValueError(f'Referenced datastore item "{reference}" doesn\'t exist or it contains an empty string')
    return snapshot.decrypt(text, reference)


FILTERS: Mapping[str, Callable[..., Any]] = {"decrypt_kv": decryptKv}
"""Filters to add to the Jinja environment."""


async def renderWithDatastore(
    render: Callable[[DatastoreRoot], T],
    fetch: Fetch,
    sources: Iterable[Any] = (),
    decrypt: Optional[Decrypt] = None,
    maxPasses: int = 5,
) -> T:
    """
    Run C{render(st2kv)} with every datastore value it reads.

    C{sources} (the templates about to be rendered) are scanned and their
    references fetched first; a rendering that read a name not fetched is
    repeated once that name is fetched, up to C{maxPasses} renderings.  An
    error from a rendering that missed names is not final: the names it
    missed may be its cause.
    """
    snapshot = Snapshot(decrypt)
    await snapshot.fill(fetch, referencedKeys(sources))
    for attempt in range(maxPasses):
        try:
            result = render(snapshot.context())
        except Exception:
            if not snapshot.missed or attempt == maxPasses - 1:
                raise
        else:
            if not snapshot.missed or attempt == maxPasses - 1:
                return result
        await snapshot.fill(fetch, set(snapshot.missed))
    raise AssertionError("unreachable")  # pragma: no cover


def serviceFetch(keys: Any, user: Optional[str]) -> Fetch:
    """
    A L{Fetch} over a L{bwcd.datastore.keys.KeyService}: system items, and
    C{user}'s items for C{st2kv.user} (none when C{user} is None).
    """

    async def fetch(scope: str, names: FrozenSet[str]) -> Mapping[str, Optional[str]]:
        if scope == USER_SCOPE and not user:
            return {}
        docs = await keys.lookup(scope, user if scope == USER_SCOPE else None, names)
        return {name: doc.get("value") for name, doc in docs.items()}

    return fetch


def serviceDecrypt(keys: Any) -> Decrypt:
    """
    A L{Decrypt} with the key service's datastore key.
    """
    return lambda ciphertext, reference: keys.decryptValue(ciphertext, reference)


__all__ = [
    "mentionsDatastore",
    "DatastoreRoot",
    "FILTERS",
    "KeyValueLookup",
    "Snapshot",
    "decryptKv",
    "referencedKeys",
    "renderWithDatastore",
    "serviceDecrypt",
    "serviceFetch",
]
