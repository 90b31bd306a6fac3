# -*- test-case-name: tests.test_tap -*-
"""
The C{twistd bwcd} plugin: options and the service tree.

C{makeService} only builds objects; every bit of I/O (binding ports aside,
which twistd does before dropping privileges) starts in C{startService}.
"""

from __future__ import annotations

import sys

from twisted.python import usage

from bwcd.config import ConfigError, loadConfig


class Options(usage.Options):
    synopsis = "[--config PATH]"
    longdesc = (
        "Run bwcd: StackStorm-compatible webhooks, rules and executions. "
        "Without --config, reads $BWCD_CONFIG, then /etc/bwcd/bwcd.yaml, then "
        "built-in defaults that keep all state under ./var."
    )
    optParameters = [["config", "c", None, "Path of the YAML configuration file."]]

    def postOptions(self) -> None:
        try:
            self["loaded"] = loadConfig(self["config"])
        except ConfigError as e:
            sys.stderr.write(f"bwcd: configuration error: {e}\n")
            raise SystemExit(1)


def makeService(options: Options):
    from twisted.internet import reactor

    from bwcd.service import BwcdService

    try:
        return BwcdService(options["loaded"], reactor)
    except ValueError as e:
        # the store URL is checked in full only when the backend is chosen
        if not str(e).startswith("storage.url"):
            raise
        sys.stderr.write(f"bwcd: configuration error: {e}\n")
        raise SystemExit(1)
