"""
The layering of L{bwcd}, checked on the source so that it stays:

  - only C{bwcd/api/} itself and the wiring (C{bwcd/service.py},
    C{bwcd/tap.py}) import C{bwcd.api}: domain code raises
    L{bwcd.errors} kinds and never knows about HTTP;
  - C{bwcd/rules/} imports no store backend (only the store interface)
    and nothing of C{bwcd.execution} (the engine is given what it needs);
  - no module is over 500 lines.

Imports are read with L{ast}, including those inside functions, which is
where a cycle-dodging upward import would hide.
"""

from __future__ import annotations

import ast
import os
from typing import Dict, Iterable, List, Set, Tuple

from twisted.trial.unittest import SynchronousTestCase

import bwcd

MAX_LINES = 500

#: may import bwcd.api besides bwcd.api itself
WIRING = frozenset({"bwcd.service", "bwcd.tap"})

STORE_BACKENDS = ("bwcd.store.sqlite", "bwcd.store.mongo", "bwcd.store.url")


def within(name: str, package: str) -> bool:
    """
    Whether module C{name} is C{package} or inside it.
    """
    return name == package or name.startswith(package + ".")


def importsOf(source: str, module: str, isPackage: bool) -> Set[str]:
    """
    Every module name C{source} (the text of C{module}) imports, anywhere
    in it, relative imports resolved.  For C{from a import b} both C{a}
    and C{a.b} are listed, since C{b} may be a submodule.
    """
    package = module if isPackage else module.rpartition(".")[0]
    found: Set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - (node.level - 1)])
                name = f"{base}.{node.module}" if node.module else base
            else:
                name = node.module or ""
            found.add(name)
            found.update(f"{name}.{alias.name}" for alias in node.names if alias.name != "*")
    return found


def bwcdModules() -> Dict[str, Tuple[str, bool]]:
    """
    Every module of the installed C{bwcd} package: name -> (path, is a
    package's C{__init__}).
    """
    root = os.path.dirname(os.path.abspath(bwcd.__file__))
    modules: Dict[str, Tuple[str, bool]] = {}
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if d != "__pycache__")
        relative = os.path.relpath(folder, os.path.dirname(root))
        prefix = relative.replace(os.sep, ".")
        for filename in sorted(files):
            if not filename.endswith(".py"):
                continue
            if filename == "__init__.py":
                modules[prefix] = (os.path.join(folder, filename), True)
            else:
                modules[f"{prefix}.{filename[:-3]}"] = (os.path.join(folder, filename), False)
    return modules


def readSource(path: str) -> str:
    with open(path, encoding="utf-8") as f:
        return f.read()


def violations(importer: Iterable[str], forbidden: Iterable[str]) -> List[str]:
    """
    C{"module -> imported"} for each module in C{importer} (names) that
    imports something within one of C{forbidden}.
    """
    modules = bwcdModules()
    found = []
    for name in importer:
        path, isPackage = modules[name]
        for imported in sorted(importsOf(readSource(path), name, isPackage)):
            if any(within(imported, f) for f in forbidden):
                found.append(f"{name} -> {imported}")
    return found


class ImportWalkerTests(SynchronousTestCase):
    """
    The walker the rules rely on finds what it must.
    """

    def test_findsNestedAndRelativeImports(self) -> None:
        """
        Imports inside functions and classes are found, relative ones are
        resolved against the module's package (or the package itself for an
        C{__init__}), and C{from a import b} lists C{a.b}.
        """
        source = (
            "import os\n"
            "from . import sibling\n"
            "from ..api.framework import Api\n"
            "def f():\n"
            "    from bwcd.execution import service\n"
            "class C:\n"
            "    def m(self):\n"
            "        import bwcd.store.sqlite as s\n"
        )
        found = importsOf(source, "bwcd.rules.engine", isPackage=False)
        self.assertTrue(
            {"os", "bwcd.rules", "bwcd.rules.sibling", "bwcd.api.framework", "bwcd.api.framework.Api", "bwcd.execution", "bwcd.execution.service", "bwcd.store.sqlite"}
            <= found,
            found,
        )
        self.assertIn("bwcd.webhooks.body", importsOf("from .body import parseBody\n", "bwcd.webhooks", isPackage=True))

    def test_within(self) -> None:
        """
        A package contains itself and its submodules, not names that only
        start alike.
        """
        self.assertTrue(within("bwcd.api", "bwcd.api"))
        self.assertTrue(within("bwcd.api.framework", "bwcd.api"))
        self.assertFalse(within("bwcd.apikeys", "bwcd.api"))

    def test_seesThePackage(self) -> None:
        """
        The module list covers the package (so a rule cannot pass by looking
        at nothing).
        """
        modules = bwcdModules()
        for name in ("bwcd", "bwcd.api.framework", "bwcd.rules.registry", "bwcd.auth.principal", "bwcd.errors", "bwcd.service"):
            self.assertIn(name, modules)


class LayerTests(SynchronousTestCase):
    """
    The layering rules of the architecture (issue 9).
    """

    def test_onlyApiAndWiringImportApi(self) -> None:
        """
        Nothing outside C{bwcd/api/}, C{bwcd/service.py} and C{bwcd/tap.py}
        imports C{bwcd.api}.
        """
        outside = [m for m in bwcdModules() if not within(m, "bwcd.api") and m not in WIRING]
        self.assertEqual(violations(outside, ["bwcd.api"]), [])

    def test_rulesImportNoStoreBackend(self) -> None:
        """
        C{bwcd/rules/} uses the store through its interface only.
        """
        rules = [m for m in bwcdModules() if within(m, "bwcd.rules")]
        self.assertEqual(violations(rules, STORE_BACKENDS), [])

    def test_rulesImportNoExecution(self) -> None:
        """
        C{bwcd/rules/} does not import the execution wing: the engine asks
        for executions through what it is given.
        """
        rules = [m for m in bwcdModules() if within(m, "bwcd.rules")]
        self.assertEqual(violations(rules, ["bwcd.execution"]), [])

    def test_domainRaisesDomainErrors(self) -> None:
        """
        The modules this step moved out of the API (rule registry, principal,
        credential check) name no HTTP status type.
        """
        modules = bwcdModules()
        for name in ("bwcd.rules.registry", "bwcd.auth.principal", "bwcd.auth.credentials", "bwcd.packs.rules"):
            self.assertNotIn("ApiError", readSource(modules[name][0]), name)

    def test_modulesAreSmall(self) -> None:
        """
        No module under C{bwcd/} is over 500 lines.
        """
        tooLong = []
        for name, (path, _) in sorted(bwcdModules().items()):
            with open(path, "rb") as f:
                count = sum(1 for _ in f)
            if count > MAX_LINES:
                tooLong.append(f"{name}: {count} lines")
        self.assertEqual(tooLong, [])
