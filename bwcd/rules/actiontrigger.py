# -*- test-case-name: tests.test_rules_engine -*-
"""
The C{core.st2.generic.actiontrigger} event: what StackStorm says about an
execution that completed, for rules that follow executions.
"""

from __future__ import annotations

from typing import Any, Dict, Mapping

from bwcd.timeutil import parseIso


def actionTriggerPayload(execution: Mapping[str, Any]) -> Dict[str, Any]:
    """
    The payload of C{core.st2.generic.actiontrigger} for a completed
    execution (st2-api.md section 4), with StackStorm's Python-style
    C{start_timestamp}.
    """
    start = execution.get("start_timestamp")
    try:
        startText = str(parseIso(start)) if start else None
    except ValueError:
        startText = start
    action = execution.get("action") or {}
    ref = action.get("ref")
    return {
        "execution_id": execution.get("id"),
        "status": execution.get("status"),
        "start_timestamp": startText,
        "action_name": ref,
        "action_ref": ref,
        "runner_ref": (execution.get("runner") or {}).get("name") or action.get("runner_type"),
        "parameters": execution.get("parameters") or {},
        "result": execution.get("result") or {},
    }


__all__ = ["actionTriggerPayload"]
