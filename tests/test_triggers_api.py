"""
Tests for L{bwcd.api.rule_routes}, L{bwcd.api.trigger_routes},
L{bwcd.rules.triggers}' store functions and L{bwcd.packs.rules}: rules, trigger
types, triggers, trigger instances and rule enforcements over the API, with
a real SQLite store and rules engine.
"""

from __future__ import annotations

import json
import os

from twisted.trial.unittest import TestCase

from bwcd.api.framework import Api
from bwcd.api.rule_routes import installRuleRoutes
from bwcd.api.trigger_routes import installTriggerRoutes
from bwcd.packs.loader import findPacks
from bwcd.packs.rules import registerPackContent
from bwcd.rules.triggers import SYSTEM_TRIGGER_TYPES, ensureSystemTriggerTypes
from tests.test_rules_engine import webhookRule
from tests.test_webhooks_api import ApiClient, apiHarness, authenticate, examplePack, header


class RuleApiTests(TestCase):
    async def setUp(self):
        self.h, self.client = await apiHarness(self)

    async def test_createShowList(self):
        """
        POST /v1/rules answers 201 with the stored rule (trigger ref set,
        creator in context); GET shows and lists it.
        """
        response, rule = await self.client.post("/v1/rules", webhookRule())
        self.assertEqual(response.code, 201)
        self.assertEqual(rule["ref"], "examples.sample_rule")
        self.assertEqual(rule["context"], {"user": "tester"})
        self.assertRegex(rule["trigger"]["ref"], r"^core\.[0-9a-f-]{36}$")
        self.assertRegex(rule["id"], r"^[0-9a-f]{24}$")
        for key in (rule["id"], rule["ref"]):
            response, shown = await self.client.get(f"/v1/rules/{key}")
            self.assertEqual((response.code, shown), (200, rule))
        response, listed = await self.client.get("/v1/rules")
        self.assertEqual(listed, [rule])
        self.assertEqual(header(response, "X-Total-Count"), "1")

    async def test_duplicate(self):
        """
        A second rule with the same pack and name is 409 with conflict-id.
        """
        _, rule = await self.client.post("/v1/rules", webhookRule())
        response, body = await self.client.post("/v1/rules", webhookRule(url="other"))
        self.assertEqual(response.code, 409)
        self.assertTrue(body["faultstring"].startswith("Tried to save duplicate unique keys"))
        self.assertEqual(body["conflict-id"], rule["id"])
        # The trigger created for the refused rule is not left behind.
        response, hooks = await self.client.get("/v1/webhooks")
        self.assertEqual([h["parameters"]["url"] for h in hooks], ["sample"])

    async def test_validation(self):
        """
        Invalid bodies, criteria and trigger parameters give StackStorm's
        400 messages.
        """
        cases = [
            ({"name": "r", "action": {"ref": "core.noop"}}, "'trigger' is a required property"),
            (webhookRule(criteria={"trigger.a": {"pattern": 1}}), "Operator not specified for field: trigger.a"),
            (webhookRule(criteria={"trigger.a": {"type": "exists"}}), "For field: trigger.a, no pattern specified for operator exists"),
            (dict(webhookRule(), trigger={"type": "core.st2.webhook"}), "'url' is a required property"),
            (dict(webhookRule(), trigger={"type": "core.st2.webhook", "parameters": {"url": "x", "y": 1}}), "Additional properties are not allowed ('y' was unexpected)"),
            (
                dict(webhookRule(), trigger={"type": "mypack.unknown"}),
                'Trigger "mypack.unknown" defined in the rule does not exist in system or it\'s missing required "parameters" attribute',
            ),
            (dict(webhookRule(), trigger={"type": "mypack.unknown", "parameters": {"a": 1}}), 'Trigger type with reference "mypack.unknown" doesn\'t exist in the database'),
        ]
        for body, message in cases:
            response, answer = await self.client.post("/v1/rules", body)
            self.assertEqual((response.code, answer), (400, {"faultstring": message}))
        response, answer = await self.client.post("/v1/rules", data=b"{", headers={"Content-Type": "application/json"})
        self.assertEqual(response.code, 400)
        self.assertEqual(await self.h.store.count("rules", {}), 0)
        self.assertEqual(await self.h.store.count("triggers", {"type": "core.st2.webhook"}), 0)

    async def test_filters(self):
        """
        GET /v1/rules filters by pack, action, trigger and enabled, sorted
        by pack and name.
        """
        _, a = await self.client.post("/v1/rules", webhookRule(name="b_rule", url="one"))
        _, b = await self.client.post("/v1/rules", dict(webhookRule(name="a_rule", url="two", enabled=False), action={"ref": "core.noop"}))
        _, c = await self.client.post("/v1/rules", dict(webhookRule(name="c_rule", url="one"), pack="other"))

        async def refs(query):
            _, body = await self.client.get("/v1/rules" + query)
            return [r["ref"] for r in body]

        self.assertEqual(await refs(""), ["examples.a_rule", "examples.b_rule", "other.c_rule"])
        self.assertEqual(await refs("?pack=other"), ["other.c_rule"])
        self.assertEqual(await refs("?action=core.noop"), ["examples.a_rule"])
        self.assertEqual(await refs(f"?trigger={a['trigger']['ref']}"), ["examples.b_rule", "other.c_rule"])
        self.assertEqual(await refs("?enabled=false"), ["examples.a_rule"])
        self.assertEqual(await refs("?enabled=true&limit=1"), ["examples.b_rule"])
        response, body = await self.client.get("/v1/rules?enabled=maybe")
        self.assertEqual((response.code, body), (400, {"faultstring": 'Parameter "enabled" is not of type boolean'}))

    async def test_changeTakesEffectForNextEvent(self):
        """
        Creating, changing (PUT) and deleting a rule through the API changes
        what the very next webhook does.
        """
        _, rule = await self.client.post("/v1/rules", webhookRule())
        response, _ = await self.client.post("/v1/webhooks/sample", {"key1": "value2"})
        await self.h.engine.whenIdle()
        self.assertEqual(await self.h.store.count("executions", {}), 0)
        changed = dict(webhookRule(criteria={"trigger.body.key1": {"type": "equals", "pattern": "value2"}}))
        response, updated = await self.client.put(f"/v1/rules/{rule['ref']}", changed)
        self.assertEqual(response.code, 200)
        self.assertEqual(updated["id"], rule["id"])
        await self.client.post("/v1/webhooks/sample", {"key1": "value2"})
        await self.h.engine.whenIdle()
        self.assertEqual(await self.h.store.count("executions", {}), 1)
        response, body = await self.client.delete(f"/v1/rules/{rule['id']}")
        self.assertEqual((response.code, body), (204, None))
        response, _ = await self.client.post("/v1/webhooks/sample", {"key1": "value2"})
        self.assertEqual(response.code, 404)
        response, body = await self.client.get(f"/v1/rules/{rule['id']}")
        self.assertEqual((response.code, body), (404, {"faultstring": f'Resource with a reference or id "{rule["id"]}" not found'}))

    async def test_putMovesWebhook(self):
        """
        Changing a rule's url registers the new hook and unregisters the old
        one when no other rule uses it.
        """
        _, rule = await self.client.post("/v1/rules", webhookRule())
        await self.client.put(f"/v1/rules/{rule['id']}", webhookRule(url="moved"))
        _, hooks = await self.client.get("/v1/webhooks")
        self.assertEqual([h["parameters"]["url"] for h in hooks], ["moved"])
        self.assertEqual(await self.h.store.count("triggers", {"type": "core.st2.webhook"}), 1)

    async def test_sharedTrigger(self):
        """
        Rules with the same webhook share one trigger, which stays while any
        of them exists.
        """
        _, a = await self.client.post("/v1/rules", webhookRule(name="a"))
        _, b = await self.client.post("/v1/rules", webhookRule(name="b"))
        self.assertEqual(a["trigger"]["ref"], b["trigger"]["ref"])
        await self.client.delete(f"/v1/rules/{a['id']}")
        response, _ = await self.client.post("/v1/webhooks/sample", {})
        self.assertEqual(response.code, 202)
        await self.client.delete(f"/v1/rules/{b['id']}")
        response, _ = await self.client.post("/v1/webhooks/sample", {})
        self.assertEqual(response.code, 404)

    async def test_hostileJsonIs400(self):
        """
        Deep, NaN, Infinity, 1e309, lone-surrogate and invalid UTF-8 bodies
        are 400s on create and replace, and store nothing.
        """
        _, stored = await self.client.post("/v1/rules", webhookRule(name="kept"))
        good = json.dumps(webhookRule()).encode()
        hostile = (
            good[:-1] + b', "context": ' + b"[" * 5000 + b"]" * 5000 + b"}",
            good.replace(b'"enabled": true', b'"enabled": NaN'),
            good.replace(b'"enabled": true', b'"enabled": Infinity'),
            good.replace(b'"enabled": true', b'"enabled": 1e309'),
            good.replace(b'"value1"', b'"\\ud800"'),
            good.replace(b'"value1"', b'"\xff"'),
        )
        self.assertEqual(len(set(hostile)), len(hostile))
        for path in ("/v1/rules", f"/v1/rules/{stored['id']}"):
            for raw in hostile:
                response, body = await self.client.request("POST" if path == "/v1/rules" else "PUT", path, data=raw, headers={"Content-Type": "application/json"})
                self.assertEqual(response.code, 400, raw[:80])
                self.assertTrue(body["faultstring"].startswith("Failed to parse request body: "), body)
        _, rules = await self.client.get("/v1/rules")
        self.assertEqual(rules, [stored])

    async def test_wrongShapesAre400(self):
        """
        A JSON value of the wrong shape, at the top or nested, is a 400 with
        a message, never a 500.
        """
        bodies = [[], "x", 1, None]
        for field in ("trigger", "criteria", "action", "context"):
            bodies.extend(dict(webhookRule(), **{field: v}) for v in ("s", [], 1, [{"a": 1}]))
        bodies.extend(dict(webhookRule(), tags=v) for v in ("s", 1, [1], [{"a": 1}]))
        bodies.append(webhookRule(criteria={"trigger.a": "s"}))
        bodies.append(dict(webhookRule(), action={"ref": "core.local", "parameters": []}))
        bodies.append(dict(webhookRule(), trigger={"type": "core.st2.webhook", "parameters": "s"}))
        for body in bodies:
            response, answer = await self.client.post("/v1/rules", data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
            self.assertEqual(response.code, 400, (body, answer))
            self.assertIsInstance(answer["faultstring"], str)
        self.assertEqual(await self.h.store.count("rules", {}), 0)

    async def test_missingRule(self):
        """
        PUT and DELETE of an unknown rule are 404.
        """
        response, _ = await self.client.put("/v1/rules/examples.nope", webhookRule())
        self.assertEqual(response.code, 404)
        response, _ = await self.client.delete("/v1/rules/examples.nope")
        self.assertEqual(response.code, 404)


class TriggerApiTests(TestCase):
    async def setUp(self):
        self.h, self.client = await apiHarness(self, packs=[examplePack(self)])

    async def test_triggerTypes(self):
        """
        The built-in and pack trigger types are listed and shown by ref or
        id.
        """
        response, types = await self.client.get("/v1/triggertypes")
        refs = {t["ref"] for t in types}
        self.assertTrue({t["ref"] for t in SYSTEM_TRIGGER_TYPES} <= refs)
        self.assertIn("mypack.mytrigger", refs)
        _, webhook = await self.client.get("/v1/triggertypes/core.st2.webhook")
        self.assertEqual(webhook["description"], "Trigger type for registering webhooks that can consume arbitrary payload.")
        _, same = await self.client.get(f"/v1/triggertypes/{webhook['id']}")
        self.assertEqual(same, webhook)
        _, mine = await self.client.get("/v1/triggertypes?pack=mypack")
        self.assertEqual([t["ref"] for t in mine], ["mypack.mytrigger"])
        response, _ = await self.client.get("/v1/triggertypes/nope.nope")
        self.assertEqual(response.code, 404)

    async def test_triggers(self):
        """
        Parameterless types have shadow triggers with the type's ref;
        webhook rules add parameterised ones.
        """
        _, shadow = await self.client.get("/v1/triggers/mypack.mytrigger")
        self.assertEqual(shadow["type"], "mypack.mytrigger")
        self.assertEqual(shadow["parameters"], {})
        self.assertNotIn("ref_count", shadow)
        _, rule = await self.client.post("/v1/rules", webhookRule())
        _, webhooks = await self.client.get("/v1/triggers?type=core.st2.webhook")
        self.assertEqual([t["ref"] for t in webhooks], [rule["trigger"]["ref"]])
        self.assertEqual(webhooks[0]["parameters"], {"url": "sample"})

    async def test_instancesAndEnforcements(self):
        """
        A webhook can be followed: its trigger instance (filters by trigger,
        trigger type, status, time), the enforcements of the rules it
        matched (filters by rule, instance, execution) and their
        executions.
        """
        _, rule = await self.client.post("/v1/rules", webhookRule())
        response, _ = await self.client.post("/v1/webhooks/sample", {"key1": "value1"})
        first = header(response, "X-BWC-Trigger-Instance")
        await self.client.post("/v1/webhooks/st2", {"trigger": "mypack.mytrigger", "payload": {"attribute1": "x"}})
        await self.h.engine.whenIdle()
        _, instance = await self.client.get(f"/v1/triggerinstances/{first}")
        self.assertEqual(instance["status"], "processed")
        self.assertEqual(instance["trigger"], rule["trigger"]["ref"])
        self.assertRegex(instance["occurrence_time"], r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")

        async def ids(query):
            response, body = await self.client.get("/v1/triggerinstances" + query)
            self.assertEqual(response.code, 200, body)
            return [i["id"] for i in body]

        self.assertEqual(len(await ids("")), 2)
        self.assertEqual(await ids(f"?trigger={rule['trigger']['ref']}"), [first])
        self.assertEqual(await ids("?trigger_type=core.st2.webhook"), [first])
        self.assertEqual(await ids("?trigger_type=nope.nothing"), [])
        self.assertEqual(len(await ids("?status=processed")), 2)
        self.assertEqual(await ids("?status=pending"), [])
        self.assertEqual(len(await ids("?timestamp_gt=2000-01-01T00:00:00.000000Z")), 2)
        self.assertEqual(await ids("?timestamp_lt=2000-01-01T00:00:00Z"), [])
        response, body = await self.client.get("/v1/triggerinstances?timestamp_gt=yesterday")
        self.assertEqual(response.code, 400)

        _, enforcements = await self.client.get(f"/v1/ruleenforcements?trigger_instance={first}")
        [enforcement] = enforcements
        self.assertEqual(enforcement["rule"]["ref"], "examples.sample_rule")
        self.assertEqual(enforcement["status"], "succeeded")
        _, shown = await self.client.get(f"/v1/ruleenforcements/{enforcement['id']}")
        self.assertEqual(shown, enforcement)
        for query in (f"rule_ref={rule['ref']}", f"rule_id={rule['id']}", f"execution={enforcement['execution_id']}", "enforced_at_gt=2000-01-01T00:00:00Z"):
            _, found = await self.client.get("/v1/ruleenforcements?" + query)
            self.assertEqual([e["id"] for e in found], [enforcement["id"]], query)
        _, none = await self.client.get("/v1/ruleenforcements?rule_ref=examples.other")
        self.assertEqual(none, [])
        execution = await self.h.store.get("executions", enforcement["execution_id"])
        self.assertEqual(execution["context"]["trigger_instance"]["id"], first)
        response, _ = await self.client.get("/v1/triggerinstances/000000000000000000000000")
        self.assertEqual(response.code, 404)

    async def test_reEmit(self):
        """
        re_emit dispatches the payload again as a new instance, which runs
        the rules again.
        """
        await self.client.post("/v1/rules", webhookRule())
        response, _ = await self.client.post("/v1/webhooks/sample", {"key1": "value1"})
        original = header(response, "X-BWC-Trigger-Instance")
        await self.h.engine.whenIdle()
        response, body = await self.client.post(f"/v1/triggerinstances/{original}/re_emit")
        self.assertEqual(response.code, 200)
        self.assertEqual(body["message"], f"Trigger instance {original} succesfully re-sent.")
        self.assertEqual(body["payload"]["__context"], {"original_id": original})
        again = header(response, "X-BWC-Trigger-Instance")
        self.assertNotEqual(again, original)
        await self.h.engine.whenIdle()
        executions = await self.h.store.find("executions", {})
        self.assertEqual(sorted(e["context"]["trigger_instance"]["id"] for e in executions), sorted([original, again]))
        response, _ = await self.client.post("/v1/triggerinstances/000000000000000000000000/re_emit")
        self.assertEqual(response.code, 404)


    async def test_jsonContentTypeWhenAuthDisabled(self):
        """
        With auth disabled, creating a rule or re-emitting an instance needs
        a JSON Content-Type: a cross-site text/plain POST is a 415.
        """
        api = Api(authenticate, requireJsonContentType=True)
        api.ready = True
        installRuleRoutes(api, self.h.store, self.h.index)
        installTriggerRoutes(api, self.h.store, self.h.index, self.h.engine)
        strict = ApiClient(api)
        body = json.dumps(webhookRule()).encode()
        response, answer = await strict.post("/v1/rules", data=body, headers={"Content-Type": "text/plain"})
        self.assertEqual(response.code, 415)
        self.assertIn("application/json", answer["faultstring"])
        response, rule = await strict.post("/v1/rules", data=body, headers={"Content-Type": "application/json"})
        self.assertEqual(response.code, 201)
        response, _ = await self.client.post("/v1/webhooks/sample", {"key1": "value1"})
        original = header(response, "X-BWC-Trigger-Instance")
        for headers in ({}, {"Content-Type": "text/plain"}):
            response, _ = await strict.post(f"/v1/triggerinstances/{original}/re_emit", data=b"", headers=headers)
            self.assertEqual(response.code, 415, headers)
        response, _ = await strict.post(f"/v1/triggerinstances/{original}/re_emit", data=b"{}", headers={"Content-Type": "application/json"})
        self.assertEqual(response.code, 200)
        await self.h.engine.whenIdle()


class PackRegistrationTests(TestCase):
    async def test_reloadIsIdempotentAndPicksUpChanges(self):
        """
        Registering packs again (SIGHUP) keeps rule ids, changes what
        changed, and reports broken files without stopping.
        """
        packsDir = examplePack(self)
        h, client = await apiHarness(self, packs=[packsDir])
        _, before = await client.get("/v1/rules/mypack.generic_rule")
        self.assertIs(before["enabled"], True)
        self.assertEqual(before["metadata_file"], os.path.join("rules", "generic.yaml"))
        ruleFile = os.path.join(packsDir, "mypack", "rules", "generic.yaml")
        with open(ruleFile) as f:
            text = f.read()
        with open(ruleFile, "w") as f:
            f.write(text.replace("pattern: value1", "pattern: value2"))
        with open(os.path.join(packsDir, "mypack", "rules", "broken.yaml"), "w") as f:
            f.write("name: broken\ntrigger: {type: mypack.mytrigger}\naction: {ref: core.local, bad: 1}\n")
        packs, _ = findPacks([packsDir])
        await ensureSystemTriggerTypes(h.store)
        problems = await registerPackContent(h.store, h.index, packs)
        self.assertEqual([(os.path.basename(p.path), p.field) for p in problems], [("broken.yaml", "action")])
        _, after = await client.get("/v1/rules/mypack.generic_rule")
        self.assertEqual(after["id"], before["id"])
        self.assertEqual(after["criteria"]["trigger.attribute1"]["pattern"], "value2")
        response, _ = await client.post("/v1/webhooks/st2", {"trigger": "mypack.mytrigger", "payload": {"attribute1": "value2"}})
        await h.engine.whenIdle()
        self.assertEqual(await h.store.count("executions", {}), 1)
        self.assertEqual(await h.store.count("rules", {}), 1)
