# -*- test-case-name: tests.test_timers -*-
"""
Checking C{core.st2.CronTimer} parameters the way StackStorm does, with
APScheduler's C{CronTrigger}: used by rule validation (L{bwcd.rules.triggers})
and by the timer service (L{bwcd.rules.timers}), which imports the trigger
types in turn, so it lives apart from both.
"""

from __future__ import annotations

from typing import Any, Mapping, Optional

from apscheduler.triggers.cron import CronTrigger

__all__ = ["cronError", "errorText"]


def errorText(error: Exception) -> str:
    """
    The message of an APScheduler or time-zone error, as StackStorm shows it.
    """
    # ZoneInfoNotFoundError is a KeyError, whose str() adds quotes.
    return str(error.args[0]) if isinstance(error, KeyError) and error.args else str(error)


def cronError(parameters: Mapping[str, Any]) -> Optional[str]:
    """
    Why APScheduler's C{CronTrigger} refuses these C{core.st2.CronTimer}
    parameters (StackStorm's 400 at rule creation), or None.
    """
    try:
        CronTrigger(**dict(parameters))
    except (ValueError, KeyError, TypeError) as e:
        return errorText(e)
    return None
