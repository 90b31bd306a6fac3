"""
Tests for L{bwcd.rules.timers} and L{bwcd.api.timer_routes}: timer
schedules computed by APScheduler's trigger classes, ticks as trigger
instances through the real rules engine, exactly once over several
processes sharing one database, and rule changes taking effect at once;
on a L{MemoryStore} driven by a L{Clock}.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from typing import Any, Dict, List, Optional
from zoneinfo import ZoneInfo

from treq.testing import StubTreq
from twisted.internet.defer import ensureDeferred
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from bwcd.api.framework import Api
from bwcd.api.rule_routes import installRuleRoutes
from bwcd.api.timer_routes import installTimerRoutes
from bwcd.errors import Invalid
from bwcd.execution.service import ExecutionService
from bwcd.packs.registrar import registerActions, registerRunnerTypes
from bwcd.rules.engine import RulesEngine
from bwcd.rules.index import RuleIndex
from bwcd.rules.registry import deleteRule, prepareRule, saveRule
from bwcd.rules.cron import cronError
from bwcd.rules.timers import TimerError, TimerScheduler, nextFireTime, scheduleFor, tickInstanceId, tickPayload
from bwcd.rules.triggers import CRON_TIMER_TYPE, DATE_TIMER_TYPE, INTERVAL_TIMER_TYPE, ensureSystemTriggerTypes, parameterisedTrigger
from bwcd.store.interface import newId
from bwcd.testing import MemoryDatabase, MemoryStore
from tests.test_webhooks_api import API_KEY, authenticate

UTC = timezone.utc
#: Monday 2026-01-05 00:00:00 UTC
T0 = datetime(2026, 1, 5, tzinfo=UTC)


def at(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def timerTrigger(typeRef: str, parameters: Dict[str, Any], docId: Optional[str] = None) -> Dict[str, Any]:
    return {"id": docId or newId(), "ref": "core.x", "type": typeRef, "parameters": parameters}


def fireTimes(trigger: Dict[str, Any], start: datetime, count: int) -> List[datetime]:
    schedule = scheduleFor(trigger, UTC)
    times: List[datetime] = []
    after = None
    now = start
    while len(times) < count:
        due = nextFireTime(schedule, now, after)
        if due is None:
            break
        times.append(due)
        after = now = due
    return times


class ScheduleTests(SynchronousTestCase):
    """
    Fire times, as APScheduler computes them for StackStorm's parameters.
    """

    def test_cronSecondField(self):
        """
        A cron timer with only C{second} fires on that second of every
        minute; unset more significant fields are C{*}.
        """
        trigger = timerTrigger(CRON_TIMER_TYPE, {"second": 30, "timezone": "UTC"})
        self.assertEqual(fireTimes(trigger, at(2026, 1, 5, 10, 0, 31), 3), [at(2026, 1, 5, 10, 1, 30), at(2026, 1, 5, 10, 2, 30), at(2026, 1, 5, 10, 3, 30)])

    def test_cronLowerFieldsMinimum(self):
        """
        Fields less significant than the least significant one given take
        their minimum: C{{hour: 0}} is 00:00:00 daily.
        """
        trigger = timerTrigger(CRON_TIMER_TYPE, {"hour": 0, "timezone": "UTC"})
        self.assertEqual(fireTimes(trigger, at(2026, 1, 5, 10), 2), [at(2026, 1, 6), at(2026, 1, 7)])

    def test_cronDayOfWeekZeroIsMonday(self):
        """
        C{day_of_week} 0 is Monday (APScheduler's numbering, not cron's).
        """
        trigger = timerTrigger(CRON_TIMER_TYPE, {"day_of_week": 0, "hour": 9, "timezone": "UTC"})
        [first] = fireTimes(trigger, at(2026, 1, 6), 1)
        self.assertEqual(first, at(2026, 1, 12, 9))
        self.assertEqual(first.weekday(), 0)

    def test_cronTimezone(self):
        """
        C{timezone} names the zone the fields are read in: 09:00 in Tokyo is
        00:00 UTC; a daylight-saving zone moves with its offset.
        """
        tokyo = timerTrigger(CRON_TIMER_TYPE, {"hour": 9, "timezone": "Asia/Tokyo"})
        self.assertEqual(fireTimes(tokyo, at(2026, 1, 5, 1), 1)[0].astimezone(UTC), at(2026, 1, 6, 0))
        berlin = timerTrigger(CRON_TIMER_TYPE, {"hour": 12, "timezone": "Europe/Berlin"})
        self.assertEqual(fireTimes(berlin, at(2026, 1, 5, 12), 1)[0].astimezone(UTC), at(2026, 1, 6, 11))
        self.assertEqual(fireTimes(berlin, at(2026, 7, 5, 12), 1)[0].astimezone(UTC), at(2026, 7, 6, 10))

    def test_cronNoTimezoneUsesLocalZone(self):
        """
        A timer without C{timezone} is read in the service's local zone (the
        host's by default, as APScheduler does).
        """
        trigger = timerTrigger(CRON_TIMER_TYPE, {"hour": 9})
        schedule = scheduleFor(trigger, ZoneInfo("Asia/Tokyo"))
        self.assertEqual(nextFireTime(schedule, at(2026, 1, 5, 1)).astimezone(UTC), at(2026, 1, 6, 0))

    def test_interval(self):
        """
        An interval timer counts from its trigger's creation (the time of
        its ObjectId), first firing one interval after it; every process
        computes the same ticks.
        """
        created = int(at(2026, 1, 5, 10).timestamp())
        trigger = timerTrigger(INTERVAL_TIMER_TYPE, {"unit": "minutes", "delta": 5}, docId="%08x" % created + "0" * 16)
        self.assertEqual(fireTimes(trigger, at(2026, 1, 5, 10, 0, 1), 2), [at(2026, 1, 5, 10, 5), at(2026, 1, 5, 10, 10)])
        self.assertEqual(fireTimes(trigger, at(2026, 1, 5, 10, 7, 3), 1), [at(2026, 1, 5, 10, 10)])

    def test_intervalSkipsMissedTicks(self):
        """
        After a tick, the next is the first one at or after now: ticks
        missed meanwhile are not replayed.
        """
        created = int(at(2026, 1, 5, 10).timestamp())
        trigger = timerTrigger(INTERVAL_TIMER_TYPE, {"unit": "seconds", "delta": 10}, docId="%08x" % created + "0" * 16)
        schedule = scheduleFor(trigger, UTC)
        self.assertEqual(nextFireTime(schedule, at(2026, 1, 5, 10, 1, 5), after=at(2026, 1, 5, 10, 0, 10)), at(2026, 1, 5, 10, 1, 10))

    def test_date(self):
        """
        A date timer fires once, at its date (parsed as StackStorm parses
        it, a naive date in the timer's zone); a date already past is not
        scheduled.
        """
        trigger = timerTrigger(DATE_TIMER_TYPE, {"date": "2026-01-05 12:00:00", "timezone": "Europe/Berlin"})
        self.assertEqual(fireTimes(trigger, at(2026, 1, 5), 5), [at(2026, 1, 5, 11)])
        offset = timerTrigger(DATE_TIMER_TYPE, {"date": "2026-01-05T12:00:00+02:00"})
        self.assertEqual(fireTimes(offset, at(2026, 1, 5), 5), [at(2026, 1, 5, 10)])
        self.assertEqual(fireTimes(trigger, at(2026, 1, 5, 11, 0, 1), 5), [])

    def test_unschedulable(self):
        """
        An unknown time zone or a date that is no date is a L{TimerError}.
        """
        with self.assertRaises(TimerError) as caught:
            scheduleFor(timerTrigger(INTERVAL_TIMER_TYPE, {"unit": "seconds", "delta": 1, "timezone": "Mars/Olympus"}))
        self.assertEqual(str(caught.exception), "No time zone found with key Mars/Olympus")
        with self.assertRaises(TimerError):
            scheduleFor(timerTrigger(DATE_TIMER_TYPE, {"date": "someday"}))

    def test_cronError(self):
        """
        APScheduler's own message for cron parameters it refuses.
        """
        self.assertEqual(cronError({"day_of_week": "abcdef"}), 'Invalid weekday name "abcdef"')
        self.assertEqual(cronError({"second": "*/5", "day_of_week": "mon-fri"}), None)

    def test_tickIds(self):
        """
        A tick's instance id depends only on the trigger and the tick time,
        is ObjectId-shaped and carries the tick's second.
        """
        tick = at(2026, 1, 5, 10, 0, 1)
        a = tickInstanceId("core.a", tick)
        self.assertEqual(a, tickInstanceId("core.a", tick.astimezone(ZoneInfo("Asia/Tokyo"))))
        self.assertNotEqual(a, tickInstanceId("core.b", tick))
        self.assertNotEqual(a, tickInstanceId("core.a", tick + timedelta(seconds=1)))
        self.assertRegex(a, r"^[0-9a-f]{24}$")
        self.assertEqual(int(a[:8], 16), int(tick.timestamp()))

    def test_payload(self):
        """
        The payload is St2Timer's: C{executed_at} as Python's str() of the
        aware UTC time, C{schedule} null.
        """
        self.assertEqual(tickPayload(at(2026, 1, 5, 10, 0, 0)), {"executed_at": "2026-01-05 10:00:00+00:00", "schedule": None})
        self.assertEqual(tickPayload(at(2026, 1, 5, 10, 0, 0) + timedelta(microseconds=1234))["executed_at"], "2026-01-05 10:00:00.001234+00:00")


def timerRule(typeRef: str, parameters: Dict[str, Any], name: str = "tick", enabled: bool = True) -> Dict[str, Any]:
    return {
        "name": name,
        "pack": "timers",
        "enabled": enabled,
        "trigger": {"type": typeRef, "parameters": parameters},
        "action": {"ref": "core.local", "parameters": {"cmd": "echo {{ trigger.executed_at }}"}},
    }


class Node:
    """
    One bwcd process's timer world: index, execution service, engine and
    timer service, on a store sharing C{database}.
    """

    def __init__(self, testCase: SynchronousTestCase, clock: Clock, database: MemoryDatabase) -> None:
        self.testCase = testCase
        self.store = MemoryStore(database)
        testCase.successResultOf(self.store.start())
        self.executions = ExecutionService(self.store, clock, "http://127.0.0.1:9101")
        self.index = RuleIndex(self.store, clock)
        testCase.successResultOf(ensureDeferred(self.index.reload()))
        self.engine = RulesEngine(self.store, self.executions, self.index, clock)
        self.engine.start(recover=False)
        self.timers = TimerScheduler(self.index, self.engine, clock, localZone=UTC)
        self.timers.startService()
        testCase.addCleanup(self.stop)

    def stop(self) -> None:
        self.timers.stopService()
        self.testCase.successResultOf(ensureDeferred(self.engine.stop()))

    def run(self, coroutine: Any) -> Any:
        return self.testCase.successResultOf(ensureDeferred(coroutine))

    def createRule(self, body: Dict[str, Any]) -> Dict[str, Any]:
        async def create() -> Dict[str, Any]:
            await self.index.lock()
            try:
                doc = await prepareRule(self.store, self.index, body, "tester")
                return await saveRule(self.store, self.index, doc, None)
            finally:
                self.index.unlock()

        rule = self.run(create())
        self.run(self.index.publish())
        return rule

    def updateRule(self, rule: Dict[str, Any], body: Dict[str, Any]) -> Dict[str, Any]:
        async def update() -> Dict[str, Any]:
            await self.index.lock()
            try:
                doc = await prepareRule(self.store, self.index, body, "tester", previous=rule)
                doc["id"] = rule["id"]
                return await saveRule(self.store, self.index, doc, rule)
            finally:
                self.index.unlock()

        updated = self.run(update())
        self.run(self.index.publish())
        return updated

    def deleteRule(self, rule: Dict[str, Any]) -> None:
        async def delete() -> None:
            await self.index.lock()
            try:
                await deleteRule(self.store, self.index, rule)
            finally:
                self.index.unlock()

        self.run(delete())
        self.run(self.index.publish())


class TimerServiceTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(T0.timestamp())
        self.database = MemoryDatabase()
        setupStore = MemoryStore(self.database)
        self.successResultOf(setupStore.start())
        for coroutine in (registerRunnerTypes(setupStore), registerActions(setupStore, []), ensureSystemTriggerTypes(setupStore)):
            self.successResultOf(ensureDeferred(coroutine))
        self.node = Node(self, self.clock, self.database)

    def intervalTrigger(self, parameters: Dict[str, Any], created: datetime = T0) -> Dict[str, Any]:
        """
        Store the trigger of an interval rule with C{parameters} as if made
        at C{created} (by the clock: store ids carry the wall clock's time,
        from which interval timers count).
        """
        trigger = parameterisedTrigger(INTERVAL_TIMER_TYPE, "core", parameters)
        trigger["id"] = "%08x" % int(created.timestamp()) + newId()[8:]
        return self.successResultOf(self.node.store.insert("triggers", trigger))

    def instances(self) -> List[Dict[str, Any]]:
        return sorted(self.database.collections["triggerinstances"].values(), key=lambda d: d["id"])

    def executions(self) -> List[Dict[str, Any]]:
        return list(self.database.collections["executions"].values())

    def advance(self, seconds: float, step: float = 0.25) -> None:
        """
        Let C{seconds} pass in small steps (a reactor's calls are never
        late by more than one step).
        """
        end = self.clock.seconds() + seconds
        while self.clock.seconds() < end - 1e-9:
            self.clock.advance(min(step, end - self.clock.seconds()))

    def ticks(self) -> List[datetime]:
        return [datetime.fromtimestamp(int(i["id"][:8], 16), tz=UTC) for i in self.instances()]

    def test_intervalTicksAreInstances(self):
        """
        An interval rule with C{delta: 1} second fires every second from its
        creation: each tick is a stored trigger instance of the rule's
        trigger with St2Timer's payload, processed by the engine into one
        execution of the rule's action.
        """
        self.clock.advance(0.5)
        self.intervalTrigger({"unit": "seconds", "delta": 1})
        rule = self.node.createRule(timerRule(INTERVAL_TIMER_TYPE, {"unit": "seconds", "delta": 1}))
        self.advance(3)
        instances = self.instances()
        self.assertEqual(self.ticks(), [T0 + timedelta(seconds=s) for s in (1, 2, 3)])
        for instance, second in zip(instances, (1, 2, 3)):
            self.assertEqual(instance["trigger"], rule["trigger"]["ref"])
            self.assertEqual(instance["payload"], {"executed_at": f"2026-01-05 00:00:0{second}+00:00", "schedule": None})
            self.assertEqual(instance["status"], "processed")
        executions = self.executions()
        self.assertEqual(len(executions), 3)
        self.assertEqual(sorted(e["parameters"]["cmd"] for e in executions), [f"echo 2026-01-05 00:00:0{s}+00:00" for s in (1, 2, 3)])

    def test_cronSecond(self):
        """
        A cron rule with C{second: 30} fires at second 30 of each minute and
        at no other.
        """
        self.node.createRule(timerRule(CRON_TIMER_TYPE, {"second": 30, "timezone": "UTC"}))
        self.advance(150, step=0.5)
        self.assertEqual(self.ticks(), [T0 + timedelta(seconds=s) for s in (30, 90, 150)])

    def test_cronTimezone(self):
        """
        A cron rule's C{timezone} decides when it fires: 09:00:00 in Tokyo is
        00:00:00 UTC the next day.
        """
        self.clock.advance(1)
        self.node.createRule(timerRule(CRON_TIMER_TYPE, {"hour": 9, "timezone": "Asia/Tokyo"}))
        self.clock.advance(0)
        self.assertEqual(self.node.timers.scheduled(), {self.instanceTriggerRef(): at(2026, 1, 6)})
        self.clock.advance(86400 - 2)
        self.assertEqual(self.instances(), [])
        self.clock.advance(1)
        self.assertEqual(self.ticks(), [at(2026, 1, 6)])

    def instanceTriggerRef(self) -> str:
        [ref] = self.node.timers.scheduled()
        return ref

    def test_dateFiresOnce(self):
        """
        A date rule fires once, at its date, and never again (not after a
        rule change either); one whose date is past is not scheduled.
        """
        rule = self.node.createRule(timerRule(DATE_TIMER_TYPE, {"date": "2026-01-05 00:00:10", "timezone": "UTC"}))
        self.advance(20)
        self.assertEqual(self.ticks(), [T0 + timedelta(seconds=10)])
        self.node.updateRule(rule, dict(timerRule(DATE_TIMER_TYPE, {"date": "2026-01-05 00:00:10", "timezone": "UTC"}), description="changed"))
        self.advance(5)
        self.assertEqual(len(self.instances()), 1)
        self.node.createRule(timerRule(DATE_TIMER_TYPE, {"date": "2020-01-01 00:00:00", "timezone": "UTC"}, name="past"))
        self.clock.advance(0)
        self.assertEqual(sorted(self.node.timers.scheduled().values(), key=str), [None, None])

    def test_lateTickSkipped(self):
        """
        Ticks whose call comes more than a second late (a blocked reactor)
        are skipped, not replayed, and the timer goes on from now: after
        five seconds in one step only the tick due then fires.
        """
        self.intervalTrigger({"unit": "seconds", "delta": 1})
        self.node.createRule(timerRule(INTERVAL_TIMER_TYPE, {"unit": "seconds", "delta": 1}))
        self.clock.advance(5)
        self.assertEqual(self.ticks(), [T0 + timedelta(seconds=5)])
        self.clock.advance(3.5)
        self.assertEqual(self.ticks(), [T0 + timedelta(seconds=5)])
        self.advance(1)
        self.assertEqual(self.ticks(), [T0 + timedelta(seconds=s) for s in (5, 9)])

    def test_exactlyOnceAcrossProcesses(self):
        """
        Two processes on one database both schedule the timer, and every
        tick is stored once and runs the action once: the second insert of
        a tick's instance is refused by its unique id and dropped quietly.
        """
        other = Node(self, self.clock, self.database)
        self.intervalTrigger({"unit": "seconds", "delta": 1})
        self.node.createRule(timerRule(INTERVAL_TIMER_TYPE, {"unit": "seconds", "delta": 1}))
        self.successResultOf(ensureDeferred(other.index.poll()))
        self.clock.advance(0)
        self.assertEqual(self.node.timers.scheduled(), other.timers.scheduled())
        self.advance(5)
        self.assertEqual(self.ticks(), [T0 + timedelta(seconds=s) for s in range(1, 6)])
        self.assertEqual(len(self.executions()), 5)

    def test_ruleChangesTakeEffect(self):
        """
        Creating, changing, disabling and deleting a timer rule takes effect
        at once in this process and, through the index's change marker, in
        another.
        """
        other = Node(self, self.clock, self.database)
        self.intervalTrigger({"unit": "seconds", "delta": 1})
        self.intervalTrigger({"unit": "seconds", "delta": 2})
        rule = self.node.createRule(timerRule(INTERVAL_TIMER_TYPE, {"unit": "seconds", "delta": 1}))
        self.clock.advance(0)
        [first] = self.node.timers.scheduled()
        self.assertEqual(other.timers.scheduled(), {})
        self.successResultOf(ensureDeferred(other.index.poll()))
        self.clock.advance(0)
        self.assertEqual(list(other.timers.scheduled()), [first])

        rule = self.node.updateRule(rule, timerRule(INTERVAL_TIMER_TYPE, {"unit": "seconds", "delta": 2}))
        self.clock.advance(0)
        [second] = self.node.timers.scheduled()
        self.assertNotEqual(first, second)
        self.successResultOf(ensureDeferred(other.index.poll()))
        self.clock.advance(0)
        self.assertEqual(list(other.timers.scheduled()), [second])

        rule = self.node.updateRule(rule, timerRule(INTERVAL_TIMER_TYPE, {"unit": "seconds", "delta": 2}, enabled=False))
        self.clock.advance(0)
        self.assertEqual(self.node.timers.scheduled(), {})
        self.successResultOf(ensureDeferred(other.index.poll()))
        self.clock.advance(0)
        self.assertEqual(other.timers.scheduled(), {})
        self.advance(3)
        self.assertEqual(self.instances(), [])

        rule = self.node.updateRule(rule, timerRule(INTERVAL_TIMER_TYPE, {"unit": "seconds", "delta": 2}))
        self.clock.advance(0)
        self.assertEqual(list(self.node.timers.scheduled()), [second])
        self.node.deleteRule(rule)
        self.clock.advance(0)
        self.assertEqual(self.node.timers.scheduled(), {})
        self.successResultOf(ensureDeferred(other.index.poll()))
        self.clock.advance(0)
        self.assertEqual(other.timers.scheduled(), {})
        self.advance(3)
        self.assertEqual(self.instances(), [])

    def test_validationAtRuleCreation(self):
        """
        Timer parameters are validated when the rule is created, with
        StackStorm's messages (the schema's, then APScheduler's for cron).
        """
        cases = [
            (CRON_TIMER_TYPE, {"minutex": 1}, "Additional properties are not allowed ('minutex' was unexpected)"),
            (DATE_TIMER_TYPE, {}, "'date' is a required property"),
            (CRON_TIMER_TYPE, {"day_of_week": 1000}, "1000 is greater than the maximum of 6"),
            (CRON_TIMER_TYPE, {"day_of_week": "abcdef"}, 'Invalid weekday name "abcdef"'),
            (INTERVAL_TIMER_TYPE, {"unit": "fortnights", "delta": 1}, "'fortnights' is not one of ['weeks', 'days', 'hours', 'minutes', 'seconds']"),
        ]
        for typeRef, parameters, message in cases:
            failure = self.failureResultOf(ensureDeferred(prepareRule(self.node.store, self.node.index, timerRule(typeRef, parameters), "tester")), Invalid)
            self.assertEqual(failure.value.faultstring, message)


class TimerRouteTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(T0.timestamp())
        self.store = MemoryStore()
        self.successResultOf(self.store.start())
        self.successResultOf(ensureDeferred(ensureSystemTriggerTypes(self.store)))
        self.index = RuleIndex(self.store, self.clock)
        self.successResultOf(ensureDeferred(self.index.reload()))
        api = Api(authenticate)
        installRuleRoutes(api, self.store, self.index, self.clock)
        installTimerRoutes(api, self.store, self.index)
        api.ready = True
        self.http = StubTreq(api.resource())

    def request(self, method: str, path: str, body: Any = None):
        headers = {"St2-Api-Key": API_KEY, "Content-Type": "application/json"}
        d = self.http.request(method, "http://bwcd.example" + path, headers=headers, data=None if body is None else json.dumps(body).encode())
        self.http.flush()
        response = self.successResultOf(d)
        return response.code, json.loads(self.successResultOf(self.http.content(response)))

    def test_listAndShow(self):
        """
        GET /v1/timers lists the timer triggers (filtered by
        C{timer_type}), GET /v1/timers/<ref or id> shows any trigger;
        StackStorm's 400 and 404 answers.
        """
        code, rule = self.request("POST", "/v1/rules", timerRule(CRON_TIMER_TYPE, {"second": 30}))
        self.assertEqual(code, 201, rule)
        code, _ = self.request("POST", "/v1/rules", timerRule(INTERVAL_TIMER_TYPE, {"unit": "seconds", "delta": 5}, name="other"))
        self.assertEqual(code, 201)
        code, timers = self.request("GET", "/v1/timers")
        self.assertEqual(code, 200)
        self.assertEqual(sorted(t["type"] for t in timers), [CRON_TIMER_TYPE, INTERVAL_TIMER_TYPE])
        code, cron = self.request("GET", "/v1/timers?timer_type=core.st2.CronTimer")
        self.assertEqual(code, 200)
        [trigger] = cron
        self.assertEqual((trigger["ref"], trigger["parameters"]), (rule["trigger"]["ref"], {"second": 30}))
        self.assertEqual(set(trigger), {"id", "ref", "uid", "name", "pack", "type", "parameters"})
        for key in (trigger["ref"], trigger["id"]):
            self.assertEqual(self.request("GET", f"/v1/timers/{key}"), (200, trigger))
        code, body = self.request("GET", "/v1/timers?timer_type=core.st2.webhook")
        self.assertEqual(code, 400)
        self.assertEqual(
            body["faultstring"],
            "Timer type core.st2.webhook not in supported types - dict_keys(['core.st2.IntervalTimer', 'core.st2.DateTimer', 'core.st2.CronTimer']).",
        )
        self.assertEqual(self.request("GET", "/v1/timers/core.nothing"), (404, {"faultstring": 'Resource with a reference or id "core.nothing" not found'}))
