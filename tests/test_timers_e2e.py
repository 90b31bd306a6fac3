"""
Timers end to end: a real C{twistd bwcd} process (and two on one MongoDB),
timer rules created over HTTP, ticks counted from the store through the
API.  Every wait is an event (a log line); nothing asserts how long
anything took.
"""

from __future__ import annotations

import re
from datetime import datetime, timezone
from typing import Any, Dict, List

import treq
from twisted.internet.defer import DeferredList
from twisted.trial.unittest import TestCase

from tests.daemon import startDaemon


def timerRule(name: str, typeRef: str, parameters: Dict[str, Any]) -> Dict[str, Any]:
    return {
        "name": name,
        "pack": "timers",
        "enabled": True,
        "trigger": {"type": typeRef, "parameters": parameters},
        "action": {"ref": "core.local", "parameters": {"cmd": "echo tick {{ trigger.executed_at }}"}},
    }


FIRED = r"\bTimer {ref} fired for (\S+): trigger instance (\w+)"


async def firedTicks(daemons: List[Any], ref: str, count: int, since: List[int]) -> List[str]:
    """
    The ids of the trigger instances the timer C{ref} fired, across
    C{daemons}, once there are C{count}; woken by their "fired" lines.
    """
    pattern = FIRED.format(ref=re.escape(ref))
    while True:
        marks = [d.linesLogged for d in daemons]
        ids = sorted({m.group(2) for d, s in zip(daemons, since) for m in d.matches(pattern, s)})
        if len(ids) >= count:
            return ids
        await DeferredList([d.logged(pattern, m) for d, m in zip(daemons, marks)], fireOnOneCallback=True, consumeErrors=True)


def tickSecond(instanceId: str) -> int:
    return int(instanceId[:8], 16)


class TimersEndToEndMixin:
    storage = "sqlite"
    timeout = 120

    async def executionsOf(self, d, instanceIds: List[str]) -> List[Dict[str, Any]]:
        """
        The one completed execution of each instance (woken by the daemon's
        log lines).
        """
        executions = []
        for instanceId in instanceIds:
            [execId] = await d.ruleExecutions(instanceId, 1)
            executions.append(await d.waitFor(execId))
        return executions

    async def test_intervalEverySecond(self):
        """
        An IntervalTimer rule with C{delta: 1} seconds fires once a second:
        its first ticks are consecutive seconds, each a trigger instance of
        the rule's trigger run as one execution whose command saw the
        tick's C{executed_at}; deleting the rule unschedules it.
        """
        d = await startDaemon(self, storage=self.storage)
        since = d.linesLogged
        response, rule = await d.post("/v1/rules", timerRule("every_second", "core.st2.IntervalTimer", {"unit": "seconds", "delta": 1}))
        self.assertEqual(response.code, 201, rule)
        ref = rule["trigger"]["ref"]
        ids = (await firedTicks([d], ref, 3, [since]))[:3]
        seconds = [tickSecond(i) for i in ids]
        self.assertEqual(seconds, [seconds[0], seconds[0] + 1, seconds[0] + 2])
        executions = await self.executionsOf(d, ids)
        for instanceId, execution in zip(ids, executions):
            _, instance = await d.get(f"/v1/triggerinstances/{instanceId}")
            self.assertEqual(instance["trigger"], ref)
            self.assertEqual(instance["payload"]["schedule"], None)
            executedAt = datetime.fromisoformat(instance["payload"]["executed_at"])
            self.assertGreaterEqual(executedAt, datetime.fromtimestamp(tickSecond(instanceId), tz=timezone.utc))
            self.assertEqual(execution["status"], "succeeded", execution)
            self.assertEqual(execution["result"]["stdout"], "tick " + instance["payload"]["executed_at"])
        _, enforcements = await d.get("/v1/ruleenforcements?rule_ref=timers.every_second&limit=100")
        perInstance: Dict[str, int] = {}
        for e in enforcements:
            perInstance[e["trigger_instance_id"]] = perInstance.get(e["trigger_instance_id"], 0) + 1
        self.assertEqual(set(perInstance.values()), {1})
        _, timers = await d.get("/v1/timers")
        self.assertEqual([t["ref"] for t in timers], [ref])

        since = d.linesLogged
        response = await treq.delete(d.apiURL + f"/v1/rules/{rule['id']}", headers=d.headers)
        self.assertEqual(response.code, 204)
        await d.logged(rf"\bTimer {re.escape(ref)} unscheduled", since)

    async def test_cronSecond(self):
        """
        A CronTimer with a C{second} field fires on that second.
        """
        d = await startDaemon(self, storage=self.storage)
        second = (datetime.now(timezone.utc).second + 3) % 60
        since = d.linesLogged
        response, rule = await d.post("/v1/rules", timerRule("on_the_second", "core.st2.CronTimer", {"second": second, "timezone": "UTC"}))
        self.assertEqual(response.code, 201, rule)
        [instanceId] = await firedTicks([d], rule["trigger"]["ref"], 1, [since])
        self.assertEqual(datetime.fromtimestamp(tickSecond(instanceId), tz=timezone.utc).second, second)
        [execution] = await self.executionsOf(d, [instanceId])
        self.assertEqual(execution["status"], "succeeded", execution)


class SQLiteTimersEndToEndTests(TimersEndToEndMixin, TestCase):
    storage = "sqlite"


class MongoTimersEndToEndTests(TimersEndToEndMixin, TestCase):
    storage = "mongodb"

    async def test_twoProcessesOneExecutionPerTick(self):
        """
        Two bwcd processes on one MongoDB both schedule an every-second
        timer; each tick is still stored once and runs one execution, the
        other process's claim of it being refused.
        """
        a = await startDaemon(self, storage=self.storage)
        b = await startDaemon(self, storage=a.configData["storage"]["url"])
        since = [a.linesLogged, b.linesLogged]
        response, rule = await a.post("/v1/rules", timerRule("both", "core.st2.IntervalTimer", {"unit": "seconds", "delta": 1}))
        self.assertEqual(response.code, 201, rule)
        ref = rule["trigger"]["ref"]
        # b learns of the rule through the index's change marker.
        await b.logged(rf"\bTimer {re.escape(ref)} .* scheduled", since[1])
        taken = rf"\bTimer {re.escape(ref)} tick at \S+ was taken by another process"
        await DeferredList([a.logged(taken, since[0]), b.logged(taken, since[1])], fireOnOneCallback=True, consumeErrors=True)
        ids = await firedTicks([a, b], ref, 5, since)
        pattern = FIRED.format(ref=re.escape(ref))
        firedBy = [(d, m.group(2)) for d, s in zip((a, b), since) for m in d.matches(pattern, s)]
        self.assertEqual(len(firedBy), len({i for _, i in firedBy}))
        # each instance is processed by the process that stored it
        for d, instanceId in firedBy:
            if instanceId in ids:
                await self.executionsOf(d, [instanceId])
        _, enforcements = await a.get("/v1/ruleenforcements?rule_ref=timers.both&limit=100")
        perInstance: Dict[str, int] = {}
        for e in enforcements:
            perInstance[e["trigger_instance_id"]] = perInstance.get(e["trigger_instance_id"], 0) + 1
        self.assertTrue(set(ids) <= set(perInstance))
        self.assertEqual(set(perInstance.values()), {1})
        _, instances = await a.get(f"/v1/triggerinstances?trigger={ref}&limit=100")
        self.assertEqual(len(instances), len({i["id"] for i in instances}))
        self.assertEqual(len({tickSecond(i["id"]) for i in instances}), len(instances))
