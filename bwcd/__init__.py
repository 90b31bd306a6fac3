"""
bwcd: a StackStorm-compatible event-to-action daemon on Twisted.

Webhooks arrive over HTTP, rules decide what to run, and local actions run as
real child processes whose executions are recorded in a durable store.
"""

__version__ = "0.1.0"
__all__ = ["__version__"]
