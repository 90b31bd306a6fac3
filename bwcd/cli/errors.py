# -*- test-case-name: tests.test_cli_http -*-
"""
The failures the CLI expects and reports as one C{ERROR:} line.

Anything raised as a L{CLIError} is a user-facing condition (bad input, a
server answer, an unreachable host), never a bug, so the entry point prints
its message instead of a traceback and exits with L{CLIError.exitCode}.
"""

from __future__ import annotations


class CLIError(Exception):
    """
    A failure worth one clear line; C{exitCode} follows st2's shell (1).
    """

    exitCode = 1


class OperationFailed(CLIError):
    """
    st2's C{OperationFailureException}: the message was already printed
    (for example C{Rule "x" is not found.}), the process exits 2.
    """

    exitCode = 2
