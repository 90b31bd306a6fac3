# -*- test-case-name: tests.test_execution_service -*-
"""
The parameters an execution records, rendered as StackStorm renders them:
what the caller gave plus template defaults, with C{action_context} (and,
for rule-started executions, the trigger) in scope, and the datastore
values the templates read fetched first.
"""

from __future__ import annotations

from typing import Any, Dict, Mapping, Optional

from bwcd.errors import Invalid
from bwcd.datastore.templating import mentionsDatastore, renderWithDatastore, serviceDecrypt, serviceFetch
from bwcd.rules.templating import ParameterRenderError, renderParameters

__all__ = ["ExecutionRequestError", "liveParameters", "renderLive"]


class ExecutionRequestError(Invalid, ValueError):
    """
    The request cannot become an execution; the message is the API's 400
    faultstring.
    """

    def __str__(self) -> str:
        return self.faultstring


def _hasTemplate(value: Any) -> bool:
    return isinstance(value, str) and ("{{" in value or "{%" in value)


def liveParameters(schema: Mapping[str, Mapping[str, Any]], given: Mapping[str, Any], context: Mapping[str, Any]) -> Dict[str, Any]:
    """
    The parameters an execution records: those given, rendered, plus defaults
    that are templates (C{core.echo}'s C{cmd}), rendered with the others in
    scope, as StackStorm does.  Static defaults are left to validation.

    @raise ExecutionRequestError: a template could not be rendered.
    """
    toRender = dict(given)
    for name, spec in schema.items():
        if name not in toRender and spec and _hasTemplate(spec.get("default")):
            toRender[name] = spec["default"]
    if not any(_hasTemplate(v) or isinstance(v, (dict, list)) for v in toRender.values()):
        return toRender
    try:
        return renderParameters(toRender, dict(context))
    except ParameterRenderError as e:
        raise ExecutionRequestError(str(e))


async def renderLive(
    schema: Mapping[str, Mapping[str, Any]], given: Mapping[str, Any], scope: Dict[str, Any], user: str, keys: Optional[Any]
) -> Dict[str, Any]:
    """
    L{liveParameters}, with the datastore values the templates read
    fetched first (Jinja renders synchronously; the store is not).
    """
    sources = [given, [spec.get("default") for spec in schema.values() if spec]]
    if keys is None or not mentionsDatastore(sources):
        return liveParameters(schema, given, scope)
    return await renderWithDatastore(
        lambda st2kv: liveParameters(schema, given, dict(scope, st2kv=st2kv)),
        serviceFetch(keys, user),
        sources,
        serviceDecrypt(keys),
    )
