# -*- test-case-name: tests.test_openapi -*-
"""
C{GET /v1/openapi.json}: the API's contract, for clients, code generators and
the fuzzing in CI (tests/test_fuzz.py).

The description is kept as YAML in the package (anchors keep the route
aliases in step) and served as JSON without credentials: it holds no secret,
and a client needs it before it has any.
"""

from __future__ import annotations

import json
from importlib import resources
from typing import Any, Dict

import yaml

from bwcd.api.framework import Api, Reply

SPEC_RESOURCE = "openapi.yaml"


def loadSpec() -> Dict[str, Any]:
    """
    The OpenAPI document shipped in C{bwcd.api}, anchors expanded.
    """
    text = resources.files("bwcd.api").joinpath(SPEC_RESOURCE).read_text(encoding="utf-8")
    return yaml.safe_load(text)


def installOpenApiRoutes(api: Api) -> None:
    """
    Serve the OpenAPI document at C{/v1/openapi.json}.  It is read and
    encoded once, here: a missing or broken file fails start-up, not a
    request.
    """
    encoded = json.dumps(loadSpec(), separators=(",", ":"), ensure_ascii=False).encode("utf-8")

    @api.route("/v1/openapi.json", ["GET"], auth=False, needsStore=False)
    async def openapi(request: Any, principal: Any) -> Reply:
        return Reply(raw=encoded)


__all__ = ["installOpenApiRoutes", "loadSpec"]
