"""
The OpenAPI description (bwcd/api/openapi.yaml, served at
C{/v1/openapi.json}) is valid OpenAPI 3.1 and matches the routes the daemon
really has, both ways, so that it cannot drift from the code.
"""

from __future__ import annotations

import json
import os
import re
from typing import Dict, Set, Tuple

from openapi_spec_validator import OpenAPIV31SpecValidator
from treq.testing import StubTreq
from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import TestCase

from bwcd.api.openapi_routes import loadSpec
from bwcd.config import parseConfig
from bwcd.service import BwcdService

HTTP_METHODS = {"get", "put", "post", "delete", "options", "head", "patch", "trace"}

Route = Tuple[str, str]


def normalisePath(path: str) -> str:
    """
    A path with every parameter, Werkzeug's C{<conv:name>} or OpenAPI's
    C{{name}}, as C{{}}: the two spell the same route differently.
    """
    return re.sub(r"<[^>]*>|\{[^}]*\}", "{}", path)


def kleinRoutes(api) -> Set[Route]:
    """
    Every (path, method) the Klein app of C{api} routes; HEAD (added by
    Werkzeug to every GET) left out.
    """
    routes = set()
    for rule in api.app.url_map.iter_rules():
        for method in rule.methods or ():
            if method not in ("HEAD", "OPTIONS"):
                routes.add((normalisePath(rule.rule), method))
    return routes


def describedRoutes(spec: dict) -> Dict[Route, dict]:
    """
    Every (path, method) the document describes, with its path item.
    """
    routes = {}
    for path, item in spec["paths"].items():
        for method in item:
            if method in HTTP_METHODS:
                routes[(normalisePath(path), method.upper())] = item
    return routes


def buildService(testCase: TestCase) -> BwcdService:
    """
    The daemon's service tree, built as twistd builds it (nothing bound,
    no store opened), with the default configuration.
    """
    state = os.path.abspath(testCase.mktemp())
    config = parseConfig({"system": {"state_dir": state}}, environ={})
    return BwcdService(config, MemoryReactorClock())


class ValidityTests(TestCase):
    def test_validOpenApi31(self) -> None:
        """
        The shipped document passes an OpenAPI 3.1 validator (structure,
        references, path templates, unique parameters).
        """
        spec = loadSpec()
        self.assertEqual(spec["openapi"], "3.1.0")
        errors = [str(e) for e in OpenAPIV31SpecValidator(spec).iter_errors()]
        self.assertEqual(errors, [])

    def test_validatorCatchesBrokenDocument(self) -> None:
        """
        The validator used above does find errors (a path template whose
        parameter is not declared), so the check above can fail.
        """
        spec = loadSpec()
        del spec["paths"]["/v1/rules/{refOrId}"]["parameters"]
        self.assertNotEqual(list(OpenAPIV31SpecValidator(spec).iter_errors()), [])

    def test_errorsUseFaultstring(self) -> None:
        """
        Every 4xx/5xx answer described as JSON is the C{{"faultstring": ...}}
        body that L{bwcd.api.framework.renderError} writes (health's 503
        carries one too, inside its own schema).
        """
        spec = loadSpec()
        responses = spec["components"]["responses"]
        problems = []
        for (path, method), item in describedRoutes(spec).items():
            for code, answer in item[method.lower()]["responses"].items():
                if not code.startswith(("4", "5")):
                    continue
                if "$ref" in answer:
                    answer = responses[answer["$ref"].rsplit("/", 1)[1]]
                schema = answer["content"]["application/json"]["schema"]
                if "$ref" in schema:
                    schema = spec["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]]
                if "faultstring" not in schema.get("properties", {}):
                    problems.append((path, method, code))
        self.assertEqual(problems, [])

    def test_securitySchemes(self) -> None:
        """
        The four ways st2 clients present a credential, and basic auth for
        logins, are declared; the default requirement accepts any of the
        four.
        """
        spec = loadSpec()
        schemes = spec["components"]["securitySchemes"]
        found = {(s.get("in"), s.get("name")) for s in schemes.values() if s["type"] == "apiKey"}
        self.assertEqual(
            found,
            {("header", "St2-Api-Key"), ("header", "X-Auth-Token"), ("query", "st2-api-key"), ("query", "x-auth-token")},
        )
        self.assertIn({"type": "http", "scheme": "basic"}, [{k: s[k] for k in ("type", "scheme") if k in s} for s in schemes.values()])
        self.assertEqual(sorted(next(iter(r)) for r in spec["security"]), sorted(n for n, s in schemes.items() if s["type"] == "apiKey"))


class CompletenessTests(TestCase):
    def setUp(self) -> None:
        self.service = buildService(self)
        self.spec = loadSpec()
        self.described = describedRoutes(self.spec)

    def test_everyRouteDescribed(self) -> None:
        """
        Every route of the API and auth listeners' Klein apps, as the
        service builds them, is described.
        """
        routes = kleinRoutes(self.service.api) | kleinRoutes(self.service.authApi)
        self.assertEqual(sorted(routes - set(self.described)), [])

    def test_everyDescribedRouteExists(self) -> None:
        """
        Every described path and method is a route of one of the listeners.
        """
        routes = kleinRoutes(self.service.api) | kleinRoutes(self.service.authApi)
        self.assertEqual(sorted(set(self.described) - routes), [])

    def test_authListenerPathsMarked(self) -> None:
        """
        The routes only the auth listener has are exactly the path items
        with their own C{servers} (the auth listener's address).
        """
        api, auth = kleinRoutes(self.service.api), kleinRoutes(self.service.authApi)
        onlyAuth = {route for route in auth - api}
        marked = {route for route, item in self.described.items() if "servers" in item}
        self.assertEqual(sorted(marked), sorted(onlyAuth))

    def test_routeWalkSeesRoutes(self) -> None:
        """
        The walk over Klein's URL map finds the routes (so the two checks
        above compare real sets), and a route added to the app shows up as
        undescribed.
        """
        before = kleinRoutes(self.service.api)
        self.assertIn(("/v1/executions/{}", "GET"), before)
        self.assertIn(("/v1/webhooks/{}", "POST"), before)

        @self.service.api.route("/v1/undescribed", ["PATCH"])
        async def undescribed(request, principal):
            return {}

        self.assertEqual(kleinRoutes(self.service.api) - before, {("/v1/undescribed", "PATCH")})
        self.assertNotIn(("/v1/undescribed", "PATCH"), self.described)


class ServedTests(TestCase):
    async def test_servedWithoutCredentials(self) -> None:
        """
        C{GET /v1/openapi.json} answers the shipped document as JSON without
        credentials, even before the store is open.
        """
        service = buildService(self)
        self.assertFalse(service.api.ready)
        client = StubTreq(service.api.resource())
        response = await client.get("http://127.0.0.1/v1/openapi.json")
        body = await response.content()
        self.assertEqual(response.code, 200)
        self.assertEqual(response.headers.getRawHeaders(b"content-type"), [b"application/json"])
        self.assertEqual(json.loads(body), loadSpec())
        client.flush()

    async def test_otherRoutesStillNeedCredentials(self) -> None:
        """
        Serving the document opens nothing else: a described route that
        needs credentials still refuses a request without them.
        """
        service = buildService(self)
        service.api.ready = True
        client = StubTreq(service.api.resource())
        response = await client.get("http://127.0.0.1/v1/rules")
        body = json.loads(await response.content())
        self.assertEqual(response.code, 401)
        self.assertIn("faultstring", body)
        client.flush()
