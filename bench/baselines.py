"""
The yardsticks bwcd is measured against, each run as its own process by
C{bench/bench.py} (pinned to the server CPU):

    python bench/baselines.py bare PORT     # twisted.web Resource: json.loads, 202
    python bench/baselines.py klein PORT    # the same handler behind a Klein route
    python bench/baselines.py spawn --concurrency 16 --duration 10 [--command /bin/true]

C{bare} is the physical limit of a Twisted HTTP application on one core:
what is left of bwcd's ingest path once auth, rules and storage are taken
away.  C{klein} shows what Klein's routing costs on top (bwcd uses Klein).
Neither writes an access log: Twisted's C{Site} logs every request by
default, which would measure the logger.

C{spawn} is the executor's limit: one reactor starting C{/bin/true} through
C{reactor.spawnProcess} with at most N children alive, each with the three
stdio pipes a daemon that captures output gives it.  No C{path=}, C{uid} or
C{gid} is passed, so Twisted can use C{posix_spawnp}; with C{path=} it
falls back to C{fork()} and is about five times slower.  Only children that
ended inside the window count.  It prints one line::

    SPAWNRESULT completed=.. failed=.. window_s=.. per_s=.. max_running=.. parent_cpu_s=..
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import List, Optional

ACCEPTED = b'{"status":"accepted"}'
NOT_JSON = b'{"faultstring":"body is not JSON"}'


def accept(request) -> bytes:
    """
    The whole "application": parse the body, answer 202.
    """
    request.setHeader(b"content-type", b"application/json")
    try:
        json.loads(request.content.read())
    except ValueError:
        request.setResponseCode(400)
        return NOT_JSON
    request.setResponseCode(202)
    return ACCEPTED


def bareResource():
    from twisted.web import resource

    class Hooks(resource.Resource):
        """
        One leaf at the root that serves C{POST /v1/webhooks/<name>}.
        """

        isLeaf = True

        def render_POST(self, request):
            parts = request.postpath
            if len(parts) != 3 or parts[0] != b"v1" or parts[1] != b"webhooks" or not parts[2]:
                request.setResponseCode(404)
                return b""
            return accept(request)

    return Hooks()


def kleinResource():
    from klein import Klein

    app = Klein()

    @app.route("/v1/webhooks/<name>", methods=["POST"])
    def hook(request, name):
        return accept(request)

    return app.resource()


def serve(kind: str, port: int) -> int:
    from twisted.internet import reactor
    from twisted.web import server

    class QuietSite(server.Site):
        def log(self, request):
            pass

    root = bareResource() if kind == "bare" else kleinResource()
    site = QuietSite(root)
    site.noisy = False
    reactor.listenTCP(port, site, interface="127.0.0.1", backlog=1024)
    reactor.run()
    return 0


def spawn(concurrency: int, duration: float, command: List[str]) -> int:
    from twisted.internet import protocol, reactor

    state = {"running": 0, "max": 0, "completed": 0, "failed": 0}
    deadline: List[Optional[float]] = [None]

    class Child(protocol.ProcessProtocol):
        def processEnded(self, reason):
            state["running"] -= 1
            if time.monotonic() <= deadline[0]:
                state["completed"] += 1
                if getattr(reason.value, "exitCode", None) != 0:
                    state["failed"] += 1
            fill()

    def fill():
        while state["running"] < concurrency and time.monotonic() < deadline[0]:
            state["running"] += 1
            state["max"] = max(state["max"], state["running"])
            reactor.spawnProcess(Child(), command[0], command, env=None)
        if state["running"] == 0 and reactor.running:
            reactor.stop()

    def begin():
        deadline[0] = time.monotonic() + duration
        reactor.callLater(duration + 15, lambda: reactor.running and reactor.stop())
        fill()

    reactor.callWhenRunning(begin)
    reactor.run()
    t = os.times()
    print(
        "SPAWNRESULT completed=%d failed=%d window_s=%.3f per_s=%.1f max_running=%d parent_cpu_s=%.2f"
        % (state["completed"], state["failed"], duration, state["completed"] / duration, state["max"], t.user + t.system),
        flush=True,
    )
    return 0


def main(argv: List[str]) -> int:
    parser = argparse.ArgumentParser(description="bwcd benchmark yardsticks")
    sub = parser.add_subparsers(dest="kind", required=True)
    for kind in ("bare", "klein"):
        p = sub.add_parser(kind)
        p.add_argument("port", type=int)
    p = sub.add_parser("spawn")
    p.add_argument("--concurrency", type=int, default=16)
    p.add_argument("--duration", type=float, default=10.0)
    p.add_argument("--command", nargs="+", default=["/bin/true"])
    args = parser.parse_args(argv)
    if args.kind == "spawn":
        return spawn(args.concurrency, args.duration, args.command)
    return serve(args.kind, args.port)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
