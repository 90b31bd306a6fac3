# -*- test-case-name: tests.test_templating -*-
"""
Jinja rendering for rule patterns and action parameters, following st2's
C{st2common.util.jinja}, C{util.param} and C{util.casts}.

Differences from st2, all on the safe side:

  - the environment is a C{SandboxedEnvironment}: templates come from rule
    authors and webhook payloads flow through them, so attribute access to
    dunder internals is refused (st2 uses a plain environment);
  - an extra C{shell_quote} filter exists so a C{cmd} can embed payload
    values safely (the filters are L{bwcd.rules.filters});
  - inside object/array parameters each string is rendered on its own
    instead of st2's render-the-JSON-text trick, so a rendered value that
    contains a quote or a newline no longer breaks the parameter.  The
    visible rule is the same: a string that is exactly C{"{{name}}"} keeps
    the variable's type, anything else renders to a string;
  - Jinja global names (C{range}, C{dict}, ...) do not count as missing
    parameter dependencies.

The environment is built once per process and compiled templates are cached
by source text, because the same rule templates are rendered for every
matching trigger instance.
"""

from __future__ import annotations

import ast
import json
import re
from functools import lru_cache
from typing import Any, Callable, Dict, FrozenSet, List, Mapping, Optional, Set, Tuple

from jinja2 import StrictUndefined, Template, TemplateSyntaxError, meta
from jinja2.sandbox import SandboxedEnvironment

from bwcd.datastore.templating import FILTERS as DATASTORE_FILTERS
from bwcd.rules.filters import FILTERS, NONE_MAGIC_VALUE

__all__ = [
    "NONE_MAGIC_VALUE",
    "ParameterRenderError",
    "FILTERS",
    "environment",
    "isTemplate",
    "renderTemplate",
    "renderValue",
    "renderParameters",
    "castValue",
]


class ParameterRenderError(ValueError):
    """
    Parameters could not be rendered; the message is st2's, word for word.
    """


def _buildEnvironment() -> SandboxedEnvironment:
    env = SandboxedEnvironment(undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    env.filters.update(FILTERS)
    env.filters.update(DATASTORE_FILTERS)
    env.tests["in"] = lambda item, container: item in container
    return env


environment = _buildEnvironment()

# ---------------------------------------------------------------------------
# Rendering


@lru_cache(maxsize=4096)
def _compiled(source: str) -> Template:
    return environment.from_string(source)


@lru_cache(maxsize=4096)
def _variablesOf(source: str) -> FrozenSet[str]:
    names = meta.find_undeclared_variables(environment.parse(source))
    return frozenset(name for name in names if name not in environment.globals)


def isTemplate(value: Any) -> bool:
    """
    Whether a value is a string st2 treats as a Jinja template (it contains
    C{{{} or C{{%}).
    """
    return isinstance(value, str) and ("{{" in value or "{%" in value)


def renderTemplate(source: str, context: Mapping[str, Any]) -> str:
    """
    Render one template string, always (no literal shortcut).

    @raise jinja2.TemplateError: on syntax errors, undefined names
        (C{StrictUndefined}) and sandbox violations.
    """
    return _compiled(source).render(context)


def renderValue(value: Any, context: Mapping[str, Any]) -> Any:
    """
    Render the strings inside C{value} against C{context}.

    Strings that contain no C{{{} or C{{%} come back unchanged; dict keys and
    values and list items are rendered recursively; other values are
    returned as they are.  Rendered strings stay strings.
    """
    if isinstance(value, str):
        if "{{" not in value and "{%" not in value:
            return value
        return _compiled(value).render(context)
    if isinstance(value, dict):
        return {renderValue(k, context): renderValue(v, context) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(renderValue(item, context) for item in value)
    return value


# A string inside an object/array parameter that is exactly "{{name}}"
# keeps the type of the variable (st2's '"{{([A-z0-9_-]+)}}"' substitution).
_WHOLE_VARIABLE = re.compile(r"\{\{([A-Za-z0-9_-]+)\}\}\Z")


def _renderComplexLeaf(value: str, context: Mapping[str, Any]) -> Any:
    whole = _WHOLE_VARIABLE.match(value)
    if whole is not None:
        rendered = _compiled("{{%s | to_complex}}" % (whole.group(1),)).render(context)
        return json.loads(rendered)
    if "{{" in value or "{%" in value:
        return _compiled(value).render(context)
    return value


def _renderComplex(value: Any, context: Mapping[str, Any]) -> Any:
    if isinstance(value, str):
        return _renderComplexLeaf(value, context)
    if isinstance(value, dict):
        return {_renderComplex(k, context): _renderComplex(v, context) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_renderComplex(item, context) for item in value]
    return value


def _stringsIn(value: Any) -> List[str]:
    if isinstance(value, str):
        return [value]
    found: List[str] = []
    if isinstance(value, dict):
        for k, v in value.items():
            found.extend(_stringsIn(k))
            found.extend(_stringsIn(v))
    elif isinstance(value, (list, tuple)):
        for item in value:
            found.extend(_stringsIn(item))
    return found


def _dependencies(value: Any) -> Optional[FrozenSet[str]]:
    """
    The names a parameter value's templates refer to, or C{None} when the
    value is not a template at all (no markers, or not valid Jinja: st2
    passes such values through literally).
    """
    templates = [s for s in _stringsIn(value) if "{{" in s or "{%" in s]
    if not templates:
        return None
    names: Set[str] = set()
    try:
        for source in templates:
            names.update(_variablesOf(source))
    except TemplateSyntaxError:
        return None
    return frozenset(names)


def _cycleNames(edges: Mapping[str, FrozenSet[str]]) -> List[str]:
    """
    One name per simple cycle (its smallest member), like st2's report of
    C{cycle[0]} for each of networkx's simple cycles; empty when acyclic.
    """
    # Peel off parameters whose dependencies are all resolvable; whatever
    # remains is on a cycle or depends on one.
    remaining = {name: set(deps) & set(edges) for name, deps in edges.items()}
    ready = [name for name, deps in remaining.items() if not deps]
    while ready:
        done = ready.pop()
        del remaining[done]
        for name, deps in remaining.items():
            if done in deps:
                deps.discard(done)
                if not deps:
                    ready.append(name)
    if not remaining:
        return []
    names: Set[str] = set()
    for start in sorted(remaining):
        # Only walk through nodes sorting after `start`, so each cycle is
        # found once, from its smallest node; the walk is bounded because
        # the number of simple cycles can grow exponentially.
        stack: List[Tuple[str, List[str]]] = [(start, [start])]
        explored = 0
        while stack and explored < 10000:
            node, path = stack.pop()
            explored += 1
            for following in sorted(remaining[node]):
                if following == start:
                    names.add(start)
                elif following > start and following not in path:
                    stack.append((following, path + [following]))
    return sorted(names) or [min(remaining)]


def _topologicalOrder(names: List[str], edges: Mapping[str, FrozenSet[str]]) -> List[str]:
    # edges[name] = the parameters `name` depends on; the graph is acyclic.
    ordered: List[str] = []
    done: Set[str] = set()

    def visit(name: str) -> None:
        if name in done:
            return
        done.add(name)
        for dependency in sorted(edges.get(name, ())):
            visit(dependency)
        ordered.append(name)

    for name in names:
        visit(name)
    return ordered


def _noneFromMagic(value: Any) -> Any:
    if isinstance(value, str):
        return None if value == NONE_MAGIC_VALUE else value
    if isinstance(value, dict):
        return {k: _noneFromMagic(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_noneFromMagic(item) for item in value]
    return value


def renderParameters(params: Mapping[str, Any], context: Mapping[str, Any]) -> Dict[str, Any]:
    """
    Render parameter values that may refer to each other and to C{context}
    (C{trigger}, C{action_context}, C{config_context}, C{st2kv}, ...).

    Each parameter is a node of a dependency graph whose edges are the
    variables its templates use; parameters are rendered in topological
    order so that C{{"b": "{{ a }}x", "a": "{{ trigger.v }}"}} works.  A
    parameter shadows a context entry of the same name.

    Plain strings render to strings (a dict or list renders as its Python
    repr, as in st2).  Inside object/array parameters a string that is
    exactly C{"{{name}}"} keeps the variable's type.  The C{use_none}
    magic string becomes C{None}.

    @raise ParameterRenderError: C{Dependency unsatisfied in variable "<v>"},
        C{Cyclic dependency found in the following variables: <names>.
        Likely the variable is referencing itself}, or
        C{Failed to render parameter "<p>": <jinja message>}.
    """
    edges: Dict[str, FrozenSet[str]] = {}
    for name, value in params.items():
        dependencies = _dependencies(value)
        if dependencies is not None:
            edges[name] = dependencies

    for name in params:
        for dependency in sorted(edges.get(name, ())):
            if dependency not in params and dependency not in context:
                raise ParameterRenderError('Dependency unsatisfied in variable "%s"' % (dependency,))

    parameterEdges = {name: frozenset(d for d in deps if d in params) for name, deps in edges.items()}
    cycles = _cycleNames(parameterEdges)
    if cycles:
        raise ParameterRenderError(
            "Cyclic dependency found in the following variables: %s. Likely the variable is "
            "referencing itself" % (", ".join(cycles),)
        )

    scope: Dict[str, Any] = dict(context)
    rendered: Dict[str, Any] = {}
    for name in _topologicalOrder(list(params), parameterEdges):
        value = params[name]
        if name in edges:
            try:
                if isinstance(value, str):
                    value = _compiled(value).render(scope)
                else:
                    value = _renderComplex(value, scope)
            except Exception as e:
                raise ParameterRenderError('Failed to render parameter "%s": %s' % (name, e)) from e
        scope[name] = value
        rendered[name] = value
    return {name: _noneFromMagic(rendered[name]) for name in params}


# ---------------------------------------------------------------------------
# Casts (st2common/util/casts.py)


def _castNone(value: Any) -> Any:
    if isinstance(value, str) and value == NONE_MAGIC_VALUE:
        return None
    return value


def _castObject(value: Any) -> Any:
    value = _castNone(value)
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return ast.literal_eval(value)
    return value


def _castBoolean(value: Any) -> Any:
    value = _castNone(value)
    if isinstance(value, str):
        return ast.literal_eval(value.capitalize())
    return value


def _castInteger(value: Any) -> Any:
    value = _castNone(value)
    return None if value is None else int(value)


def _castNumber(value: Any) -> Any:
    value = _castNone(value)
    return None if value is None else float(value)


def _castString(value: Any) -> Any:
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValueError(
            'Value "%s" must either be a string or None. Got "%s".' % (value, type(value).__name__)
        )
    return _castNone(value)


_CASTS: Dict[str, Callable[[Any], Any]] = {
    "array": _castObject,
    "boolean": _castBoolean,
    "integer": _castInteger,
    "number": _castNumber,
    "object": _castObject,
    "string": _castString,
}


def castValue(value: Any, type_name: Optional[str]) -> Any:
    """
    Convert a rendered parameter to its declared JSON Schema type, as st2
    does after rendering: C{integer} via C{int()}, C{number} via
    C{float()}, C{boolean} via C{literal_eval} of the capitalised string,
    C{object}/C{array} via JSON then Python literal syntax, and C{string}
    only accepts strings.  C{None}, unknown types and a missing type leave
    the value alone; the C{use_none} magic string becomes C{None}.

    @raise ValueError: when the value cannot be converted.
    """
    if value is None or not isinstance(type_name, str):
        return value
    cast = _CASTS.get(type_name)
    if cast is None:
        return value
    try:
        return cast(value)
    except (TypeError, SyntaxError) as e:
        # One exception type for callers (st2 lets these escape as they are).
        raise ValueError(str(e)) from e
