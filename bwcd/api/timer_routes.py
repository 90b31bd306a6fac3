# -*- test-case-name: tests.test_timers -*-
"""
C{/v1/timers}: the timer triggers (st2-api-more.md section 12), as
StackStorm's API lists them: every trigger of a timer type, from the
in-memory rule index (StackStorm's API keeps its own in-memory copy too),
and any trigger by ref or id.
"""

from __future__ import annotations

from typing import Any

from bwcd.api.framework import Api, Principal
from bwcd.api.query import arg
from bwcd.errors import Invalid
from bwcd.rules.index import RuleIndex
from bwcd.rules.registry import requireByRefOrId
from bwcd.rules.triggers import CRON_TIMER_TYPE, DATE_TIMER_TYPE, INTERVAL_TIMER_TYPE, publicTrigger
from bwcd.store.interface import IStore

#: in StackStorm's order, which its 400 message shows
SUPPORTED = (INTERVAL_TIMER_TYPE, DATE_TIMER_TYPE, CRON_TIMER_TYPE)


def installTimerRoutes(api: Api, store: IStore, index: RuleIndex) -> None:
    """
    Add C{GET /v1/timers} and C{GET /v1/timers/<ref or id>} to C{api}.
    """

    @api.route("/v1/timers", ["GET"])
    async def listTimers(request, principal: Principal) -> Any:
        wanted = arg(request, "timer_type")
        if wanted is not None and wanted not in SUPPORTED:
            keys = ", ".join(repr(t) for t in SUPPORTED)
            raise Invalid(f"Timer type {wanted} not in supported types - dict_keys([{keys}]).")
        types = SUPPORTED if wanted is None else (wanted,)
        timers = [t for t in index.allTriggers() if t.get("type") in types]
        timers.sort(key=lambda t: (t.get("pack", ""), t.get("name", "")))
        return [publicTrigger(t) for t in timers]

    @api.route("/v1/timers/<string:refOrId>", ["GET"])
    async def showTimer(request, principal: Principal, refOrId: str) -> Any:
        # As StackStorm: any trigger, not only timers.
        return publicTrigger(await requireByRefOrId(store, "triggers", refOrId))


__all__ = ["installTimerRoutes"]
