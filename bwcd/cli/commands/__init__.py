# -*- test-case-name: tests.test_cli_main -*-
"""
One module per resource; each has C{register(subparsers)}.

The modules import nothing heavier than the standard library at import time,
so building the parser (and answering C{-h}) stays fast.
"""

from bwcd.cli.commands import action, apikey, auth, execution, key, rule, triggerinstance, webhook

MODULES = (auth, action, execution, rule, webhook, triggerinstance, apikey, key)


def registerAll(subparsers) -> None:
    for module in MODULES:
        module.register(subparsers)
