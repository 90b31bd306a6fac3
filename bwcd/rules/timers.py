# -*- test-case-name: tests.test_timers -*-
"""
Timers: the C{core.st2.IntervalTimer}, C{core.st2.CronTimer} and
C{core.st2.DateTimer} triggers (st2-api-more.md section 12).

When they fire is APScheduler's business, as in StackStorm: its trigger
classes compute every fire time (cron fields, C{day_of_week} 0 = Monday,
time zones, daylight saving).  Its schedulers and executors are not used:
L{TimerScheduler} keeps one pending C{callLater} of the daemon's reactor per
timer and asks the APScheduler trigger for the next time after each tick,
so tests drive timers with a L{twisted.internet.task.Clock}.

Every tick is an ordinary trigger instance (payload C{executed_at},
C{schedule}) accepted by the rules engine like a webhook's.  Several bwcd
processes on one database all schedule every timer, and each tick still
fires once: the instance id is derived from the trigger and the tick's
time, so the first process to store it wins and the others' inserts fail on
the unique id (and are dropped quietly).  For that the processes must agree
on the tick times: cron and date timers do by nature; an interval timer
counts from its trigger's creation (the time in its ObjectId), not from
each process's start.

Nothing about timers is stored: ticks missed while no bwcd ran are not
replayed (StackStorm neither), and a tick whose call comes more than
L{MISFIRE_GRACE} seconds late (a blocked reactor, a suspended machine) is
skipped, as APScheduler's default C{misfire_grace_time} skips it.

A timer is scheduled while at least one enabled rule points at its
trigger (StackStorm fires every timer trigger, whether or not a rule
would take the instance); the set follows the rule index, which tells this
service of every change, its own and (through its marker) other
processes'.
"""

from __future__ import annotations

import hashlib
from datetime import datetime, timedelta, timezone, tzinfo
from typing import Any, Dict, List, Mapping, Optional

import attrs
from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.date import DateTrigger
from apscheduler.triggers.interval import IntervalTrigger
from apscheduler.util import astimezone
from dateutil import parser as dateParser
from twisted.application.service import Service
from twisted.internet.defer import Deferred, DeferredList, ensureDeferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from tzlocal import get_localzone

from bwcd.errors import Unavailable
from bwcd.rules.cron import errorText
from bwcd.rules.triggers import CRON_TIMER_TYPE, DATE_TIMER_TYPE, INTERVAL_TIMER_TYPE, TIMER_TYPES
from bwcd.store.interface import DuplicateKey, StoreError

log = Logger(namespace="bwcd.rules.timers")

#: seconds a tick may come late and still fire (APScheduler 3's default)
MISFIRE_GRACE = 1.0

_ONE_MICROSECOND = timedelta(microseconds=1)


class TimerError(ValueError):
    """
    A timer's parameters cannot be scheduled (unknown time zone, a date
    that is no date, a cron expression APScheduler refuses).
    """


# -- schedules (pure) ----------------------------------------------------------


def _zone(parameters: Mapping[str, Any], localZone: Optional[tzinfo]) -> tzinfo:
    name = parameters.get("timezone")
    if name is None:
        # APScheduler gives a trigger without a time zone the host's.
        return localZone if localZone is not None else get_localzone()
    try:
        return astimezone(name)
    except (ValueError, KeyError) as e:
        raise TimerError(errorText(e)) from None


def parseDate(text: str, zone: tzinfo) -> datetime:
    """
    A C{core.st2.DateTimer} C{date}, parsed as StackStorm parses it
    (C{dateutil}: C{2014-12-31 23:59:59}, ISO forms, offsets); a naive one
    is read in C{zone}.

    @raise TimerError: it is no date.
    """
    try:
        parsed = dateParser.parse(text)
    except (ValueError, OverflowError, TypeError) as e:
        raise TimerError(f"Invalid date {text!r}: {e}") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=zone)
    return parsed


def _anchor(trigger: Mapping[str, Any]) -> datetime:
    """
    When an interval timer's count starts: its trigger's creation, read
    from its ObjectId, so every process counts from the same instant (the
    Unix epoch for an id that is no ObjectId).
    """
    docId = str(trigger.get("id") or "")
    try:
        seconds = int(docId[:8], 16) if len(docId) == 24 else 0
    except ValueError:
        seconds = 0
    return datetime.fromtimestamp(seconds, tz=timezone.utc)


def scheduleFor(trigger: Mapping[str, Any], localZone: Optional[tzinfo] = None) -> BaseTrigger:
    """
    The APScheduler trigger computing the fire times of a timer trigger
    document (C{type} and C{parameters}).

    @param localZone: the zone of timers without C{timezone} (default: the
        host's, as APScheduler does).
    @raise TimerError: the parameters cannot be scheduled.
    """
    typeRef = trigger.get("type")
    parameters = dict(trigger.get("parameters") or {})
    zone = _zone(parameters, localZone)
    try:
        if typeRef == INTERVAL_TIMER_TYPE:
            delta = parameters["delta"]
            if delta < 0:
                raise TimerError(f"delta must not be negative, got {delta}")
            interval = timedelta(**{parameters["unit"]: delta})
            return IntervalTrigger(**{parameters["unit"]: delta}, start_date=_anchor(trigger) + interval, timezone=zone)
        if typeRef == CRON_TIMER_TYPE:
            fields = {k: v for k, v in parameters.items() if k != "timezone"}
            return CronTrigger(**fields, timezone=zone)
        if typeRef == DATE_TIMER_TYPE:
            return DateTrigger(parseDate(parameters["date"], zone), timezone=zone)
    except TimerError:
        raise
    except (ValueError, KeyError, TypeError, OverflowError) as e:
        raise TimerError(errorText(e)) from None
    raise TimerError(f"{typeRef} is not a timer trigger type")


def nextFireTime(schedule: BaseTrigger, now: datetime, after: Optional[datetime] = None) -> Optional[datetime]:
    """
    The first fire time at or after C{now} (and strictly after C{after}, the
    tick just fired), or None when the schedule is over.  Runs between
    C{after} and C{now} are not returned: missed ticks are not replayed.
    """
    if isinstance(schedule, DateTrigger):
        runDate = schedule.run_date
        if after is not None or runDate < now:
            return None
        return runDate
    if after is not None and after + _ONE_MICROSECOND > now:
        now = after + _ONE_MICROSECOND
    return schedule.get_next_fire_time(None, now)


def tickInstanceId(triggerRef: str, tick: datetime) -> str:
    """
    The id of the trigger instance of C{triggerRef}'s tick at C{tick}: the
    same in every process (so the store's unique id lets only one of them
    store it), shaped like an ObjectId whose time is the tick's.
    """
    stamp = tick.astimezone(timezone.utc)
    digest = hashlib.sha1(f"{triggerRef}\n{stamp.isoformat()}".encode("utf-8")).hexdigest()
    return "%08x" % (int(stamp.timestamp()) & 0xFFFFFFFF) + digest[:16]


def tickPayload(now: datetime) -> Dict[str, Any]:
    """
    The payload StackStorm's St2Timer emits: C{executed_at} as Python's
    str() of the aware UTC time, C{schedule} always null.
    """
    return {"executed_at": str(now.astimezone(timezone.utc)), "schedule": None}


def timerTriggers(index: Any) -> Dict[str, Dict[str, Any]]:
    """
    The timer triggers (by ref) at least one enabled rule points at.
    """
    wanted = {}
    for trigger in index.allTriggers():
        if trigger.get("type") in TIMER_TYPES:
            rules = index.rulesFor(trigger["ref"])
            if rules.standard or rules.backstop:
                wanted[trigger["ref"]] = trigger
    return wanted


# -- the service ---------------------------------------------------------------


@attrs.define
class _Timer:
    trigger: Dict[str, Any]
    schedule: Optional[BaseTrigger]
    #: the tick the pending call fires, and the call
    due: Optional[datetime] = None
    call: Optional[IDelayedCall] = None

    def cancel(self) -> None:
        if self.call is not None and self.call.active():
            self.call.cancel()
        self.call = None
        self.due = None


class TimerScheduler(Service):
    """
    Schedules every timer trigger an enabled rule points at, and turns each
    tick into a trigger instance given to the rules engine.

    @param index: the L{bwcd.rules.index.RuleIndex} (its triggers and rules,
        and its change listener).
    @param engine: the L{bwcd.rules.engine.RulesEngine} (C{admit},
        C{release}, C{newInstance}, C{accept}).
    @param localZone: the zone of timers without C{timezone} (default: the
        host's).
    """

    def __init__(self, index: Any, engine: Any, clock: IReactorTime, localZone: Optional[tzinfo] = None) -> None:
        self._index = index
        self._engine = engine
        self._clock = clock
        self._localZone = localZone
        self._timers: Dict[str, _Timer] = {}
        self._syncCall: Optional[IDelayedCall] = None
        self._inFlight: List[Deferred] = []
        self._listening = False

    # -- what is scheduled ---------------------------------------------------

    def scheduled(self) -> Dict[str, Optional[datetime]]:
        """
        Trigger ref -> the time of its next tick (None: nothing more).
        """
        return {ref: timer.due for ref, timer in self._timers.items()}

    def _now(self) -> datetime:
        return datetime.fromtimestamp(self._clock.seconds(), tz=timezone.utc)

    def _indexChanged(self) -> None:
        # Called inside the index's own updates: look on the next turn,
        # once for a burst of changes.
        if self.running and self._syncCall is None:
            self._syncCall = self._clock.callLater(0, self.sync)

    def sync(self) -> None:
        """
        Make the scheduled timers those the index wants now: new ones are
        scheduled, gone or changed ones dropped; unchanged ones keep their
        pending tick.
        """
        self._syncCall = None
        if not self.running:
            return
        wanted = timerTriggers(self._index)
        for ref in list(self._timers):
            current = self._timers[ref]
            trigger = wanted.get(ref)
            if trigger is None or trigger.get("parameters") != current.trigger.get("parameters") or trigger.get("type") != current.trigger.get("type"):
                current.cancel()
                del self._timers[ref]
                log.info("Timer {ref} unscheduled", ref=ref)
        for ref, trigger in wanted.items():
            if ref not in self._timers:
                self._add(trigger)

    def _add(self, trigger: Dict[str, Any]) -> None:
        ref = trigger["ref"]
        try:
            schedule: Optional[BaseTrigger] = scheduleFor(trigger, self._localZone)
        except TimerError as e:
            log.error("Timer {ref} ({type} {parameters}) cannot be scheduled: {error}", ref=ref, type=trigger.get("type"), parameters=trigger.get("parameters"), error=str(e))
            schedule = None
        timer = _Timer(trigger, schedule)
        self._timers[ref] = timer
        if schedule is None:
            return
        self._plan(ref, timer, None)
        if timer.due is None and trigger.get("type") == DATE_TIMER_TYPE:
            log.warn("Not scheduling expired timer {ref}: {date}", ref=ref, date=(trigger.get("parameters") or {}).get("date"))
        elif timer.due is not None:
            log.info("Timer {ref} ({type} {parameters}) scheduled; next tick {due}", ref=ref, type=trigger.get("type"), parameters=trigger.get("parameters"), due=timer.due.isoformat())

    def _plan(self, ref: str, timer: _Timer, after: Optional[datetime]) -> None:
        assert timer.schedule is not None
        due = nextFireTime(timer.schedule, self._now(), after)
        timer.due = due
        timer.call = None
        if due is not None:
            delay = max(due.timestamp() - self._clock.seconds(), 0.0)
            timer.call = self._clock.callLater(delay, self._tick, ref, timer)

    def _tick(self, ref: str, timer: _Timer) -> None:
        due = timer.due
        assert due is not None
        now = self._now()
        lateness = (now - due).total_seconds()
        self._plan(ref, timer, due)
        if lateness > MISFIRE_GRACE:
            log.warn("Timer {ref} missed its tick at {due} by {late:.1f}s; skipped", ref=ref, due=due.isoformat(), late=lateness)
            return
        d = ensureDeferred(self._fire(timer.trigger, due, now))
        self._inFlight.append(d)
        d.addBoth(lambda _: self._inFlight.remove(d))

    async def _fire(self, trigger: Dict[str, Any], due: datetime, now: datetime) -> Optional[Dict[str, Any]]:
        ref = trigger["ref"]
        instance = self._engine.newInstance(ref, tickPayload(now))
        instance["id"] = tickInstanceId(ref, due)
        try:
            self._engine.admit(1)
        except Unavailable as e:
            log.warn("Timer {ref} tick at {due} skipped: {error}", ref=ref, due=due.isoformat(), error=e.faultstring)
            return None
        try:
            await self._engine.accept([instance], reserved=1)
        except DuplicateKey:
            log.debug("Timer {ref} tick at {due} was taken by another process", ref=ref, due=due.isoformat())
            return None
        except Unavailable as e:
            log.warn("Timer {ref} tick at {due} skipped: {error}", ref=ref, due=due.isoformat(), error=e.faultstring)
            return None
        except StoreError as e:
            log.warn("Timer {ref} tick at {due} could not be stored: {error}", ref=ref, due=due.isoformat(), error=str(e))
            return None
        log.info("Timer {ref} fired for {due}: trigger instance {id}", ref=ref, due=due.isoformat(), id=instance["id"])
        return instance

    # -- service ---------------------------------------------------------------

    def startService(self) -> None:
        super().startService()
        if not self._listening:
            self._listening = True
            self._index.addChangeListener(self._indexChanged)
        self.sync()

    def stopService(self) -> Deferred:  # type: ignore[override]
        super().stopService()
        if self._syncCall is not None and self._syncCall.active():
            self._syncCall.cancel()
        self._syncCall = None
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
        return DeferredList(list(self._inFlight), consumeErrors=True)


__all__ = [
    "MISFIRE_GRACE",
    "TimerError",
    "TimerScheduler",
    "nextFireTime",
    "parseDate",
    "scheduleFor",
    "tickInstanceId",
    "tickPayload",
    "timerTriggers",
]
