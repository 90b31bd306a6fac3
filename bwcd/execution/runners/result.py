# -*- test-case-name: tests.test_runner_local -*-
"""
The result document of the local shell runners and the execution status it
implies, as pure functions of what the process did.

The shape is st2's (C{local_runner/base.py}): clients and rules read
C{result.stdout}, C{result.return_code} and so on, and rely on stdout that is
valid JSON arriving decoded (C{echo 10} gives the integer 10).
"""

from __future__ import annotations

import json
import re
from typing import Any, Dict, Optional

# Execution statuses a runner can end in (st2 constants/action.py).
SUCCEEDED = "succeeded"
FAILED = "failed"
TIMEOUT = "timeout"
ABANDONED = "abandoned"
CANCELED = "canceled"

SIGKILL_EXIT_CODE = -9
SIGTERM_EXIT_CODE = -15

_EXIT_CODE_STATUS = {0: SUCCEEDED, 1: FAILED, SIGKILL_EXIT_CODE: TIMEOUT, SIGTERM_EXIT_CODE: ABANDONED}

_SUDO_BAD_PASSWORD = re.compile(r"sudo: \d+ incorrect password attempts")
_SUDO_PROMPT_USER = re.compile(r"\[sudo\] password for (.+?)\:")


def timeoutError(timeout: Any) -> str:
    """
    The C{error} of a timed-out execution; C{timeout} as configured (the
    integer from the parameters), formatted with C{%s} like st2.
    """
    return "Action failed to complete in %s seconds" % (timeout,)


def statusForExitCode(return_code: int) -> str:
    """
    st2's exit code to status map: 0 succeeded, -9 timeout, -15 abandoned,
    anything else failed.
    """
    return _EXIT_CODE_STATUS.get(return_code, FAILED)


def stripShellChars(text: str) -> str:
    """
    Drop one trailing newline and then one trailing carriage return, the
    way st2 does, so C{echo hi} yields C{"hi"} (and C{"a\\n\\n"} keeps one
    newline).
    """
    if text.endswith("\n"):
        text = text[:-1]
    if text.endswith("\r"):
        text = text[:-1]
    return text


def jsonOrText(text: str) -> Any:
    """
    The JSON value C{text} holds, or C{text} itself when it is not JSON.
    """
    if not text:
        return text
    try:
        return json.loads(text, parse_constant=_rejectConstant)
    except ValueError:
        return text


def _rejectConstant(name: str) -> Any:
    # NaN and Infinity are not JSON; decoding them would put values in the
    # result that strict JSON clients cannot read back.
    raise ValueError(name)


def decodeOutput(data: bytes) -> str:
    """
    Output bytes as text.  Invalid UTF-8 (or a character cut by the output
    cap) becomes U+FFFD rather than failing the execution.
    """
    return data.decode("utf-8", errors="replace")


def buildResult(
    return_code: int,
    stdout: str,
    stderr: str,
    error: Optional[str] = None,
    sudo_password_used: bool = False,
) -> Dict[str, Any]:
    """
    The result document for a finished process.

    @param return_code: the exit status, or minus the signal number for a
        process killed by a signal; already forced to -9 for a timeout.
    @param error: an error to report (a timeout).
    @param sudo_password_used: a sudo password was fed on stdin; a refusal by
        sudo then turns into st2's "Invalid sudo password" error with return
        code -1.
    """
    if sudo_password_used and _SUDO_BAD_PASSWORD.search(stderr):
        match = _SUDO_PROMPT_USER.search(stderr)
        username = match.group(1) if match else "unknown"
        error = (
            "Invalid sudo password provided or sudo is not configured for this user (%s)"
            % (username,)
        )
        return_code = -1
    succeeded = return_code == 0
    result: Dict[str, Any] = {
        "failed": not succeeded,
        "succeeded": succeeded,
        "return_code": return_code,
        "stdout": jsonOrText(stripShellChars(stdout)),
        "stderr": jsonOrText(stripShellChars(stderr)),
    }
    if error:
        result["error"] = error
    return result
