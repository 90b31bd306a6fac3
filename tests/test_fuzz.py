"""
Property-based fuzzing of a running daemon from its own OpenAPI description
(C{GET /v1/openapi.json}) with schemathesis, as CI runs it.

The runs are reproducible (fixed seed, fixed example count, one worker, no
example database) and fail on any 5xx, any request slower than
L{MAX_SECONDS} (a hang), and any answer whose status, Content-Type, headers
or body the description does not allow.  They run with credentials (an API
key made for the test, and the test user's password for logins) so that
requests reach the handlers, and without any, so that every refusal is
checked too.  At the end the daemon must still be up and must have logged
no unhandled error.
"""

from __future__ import annotations

import json
import os
import re
from typing import List, Sequence, Tuple

import treq
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.protocol import ProcessProtocol
from twisted.trial.unittest import TestCase

from tests.daemon import BIN, childEnv, startDaemon
from tests.test_hostile_http import errorEvents

#: the seed and the examples per operation and phase: the same requests
#: on every run
SEED = 20261203
EXAMPLES = 20

#: a request slower than this is a hang
MAX_SECONDS = 5

#: what a run checks: no 5xx, and every answer as described
CHECKS = ",".join(
    [
        "not_a_server_error",
        "status_code_conformance",
        "content_type_conformance",
        "response_headers_conformance",
        "response_schema_conformance",
    ]
)

#: paths only the auth listener serves (they carry their own "servers")
AUTH_ONLY = r"^/(v1/)?tokens"

#: the fewest requests the authenticated run must send
MIN_REQUESTS = 2000

_ACCESS_LINE = re.compile(r"\[bwcd\.http#info\] \S+ .* (\d{3}) [\d.]+ms$", re.MULTILINE)


class _Output(ProcessProtocol):
    def __init__(self) -> None:
        self.data: List[bytes] = []
        self.ended: Deferred = Deferred()

    def outReceived(self, data: bytes) -> None:
        self.data.append(data)

    errReceived = outReceived

    def processEnded(self, reason) -> None:
        self.ended.callback(reason.value.exitCode)


async def schemathesis(workDir: str, spec: str, url: str, args: Sequence[str], timeout: float = 240.0) -> Tuple[int, str]:
    """
    Run C{st run} on C{spec} against C{url}: its exit code and output.
    The run is killed after C{timeout} seconds (exit code -1 then).
    """
    argv = [
        os.path.join(BIN, "st"),
        "run",
        spec,
        "--url",
        url,
        "--workers",
        "1",
        "--seed",
        str(SEED),
        "--generation-database",
        "none",
        "--checks",
        CHECKS,
        "--max-response-time",
        str(MAX_SECONDS),
        "--request-timeout",
        str(MAX_SECONDS),
        "--request-retries",
        "0",
        "--no-color",
        "--output-truncate",
        "false",
        *args,
    ]
    proto = _Output()
    process = reactor.spawnProcess(proto, argv[0], argv, env=childEnv({"NO_COLOR": "1", "COLUMNS": "160"}), path=workDir)
    timer = reactor.callLater(timeout, lambda: proto.ended.called or process.signalProcess("KILL"))
    code = await proto.ended
    if timer.active():
        timer.cancel()
    else:
        code = -1
    output = b"".join(proto.data).decode("utf-8", "replace")
    with open(os.path.join(workDir, "schemathesis.out"), "w", encoding="utf-8") as f:
        f.write(output)
    return code, output


def accessStatuses(log: str) -> List[int]:
    """
    The status of every request in the daemon's access log.
    """
    return [int(code) for code in _ACCESS_LINE.findall(log)]


class FuzzTests(TestCase):
    timeout = 300

    async def startFuzzTarget(self):
        """
        A daemon and its description, fetched without credentials as a
        client would, saved for schemathesis.
        """
        self.daemon = await startDaemon(self)
        self.workDir = os.path.abspath(self.mktemp())
        os.makedirs(self.workDir)
        response = await treq.get(self.daemon.apiURL + "/v1/openapi.json")
        self.assertEqual(response.code, 200)
        spec = json.loads(await response.content())
        self.specPath = os.path.join(self.workDir, "openapi.json")
        with open(self.specPath, "w", encoding="utf-8") as f:
            json.dump(spec, f)
        return spec

    async def fuzz(self, listener: str, args: Sequence[str], withCredentials: bool = True) -> List[int]:
        """
        Run schemathesis against a fresh daemon's C{listener} URL
        (C{"apiURL"} or C{"authURL"}), with its API key and the test user's
        password unless told otherwise, and return the statuses the daemon
        logged, once L{assertClean} holds.
        """
        await self.startFuzzTarget()
        d = self.daemon
        if withCredentials:
            args = ["--max-examples", str(EXAMPLES), "--header", f"St2-Api-Key: {d.apiKey}", "--auth", f"{d.user}:{d.password}", *args]
        before = len(accessStatuses(d.readLog()))
        code, output = await schemathesis(self.workDir, self.specPath, getattr(d, listener), args)
        return await self.assertClean(code, output, before)

    async def assertClean(self, code: int, output: str, before: int = 0) -> List[int]:
        """
        The run passed, the daemon is up and healthy, and its log shows no
        5xx and no unhandled error; returns the statuses of the requests
        made since line C{before} of the access log.
        """
        log = self.daemon.readLog()
        statuses = accessStatuses(log)[before:]
        serverErrors = [s for s in statuses if s >= 500]
        problems = errorEvents(log)
        response = await treq.get(self.daemon.apiURL + "/v1/health")
        health = await response.content()
        self.assertTrue(self.daemon.running, "the daemon died")
        self.assertEqual(response.code, 200, health)
        summary = output[output.find("=== FAILURES") :] if "=== FAILURES" in output else output[-6000:]
        self.assertEqual(
            (code, len(serverErrors), problems),
            (0, 0, []),
            f"schemathesis exit {code}; {len(serverErrors)} 5xx in the access log; errors logged:\n"
            + "\n".join(problems)
            + "\n--- schemathesis ---\n"
            + summary,
        )
        return statuses

    async def test_authenticated(self) -> None:
        """
        With a valid API key (and the test user's password for logins),
        every operation of the API listener is fuzzed in all four phases
        (examples, coverage, fuzzing, stateful) with no 5xx, no hang and no
        answer outside the description, over at least L{MIN_REQUESTS}
        requests.
        """
        statuses = await self.fuzz(
            "apiURL",
            # an accepted stream never ends (tests.test_stream_e2e covers it)
            ["--exclude-path-regex", AUTH_ONLY, "--exclude-path", "/v1/stream"],
        )
        self.assertGreaterEqual(len(statuses), MIN_REQUESTS)
        # the credentials worked: most requests got past authentication
        self.assertGreater(sum(1 for s in statuses if s != 401), len(statuses) // 2)

    async def test_unauthenticated(self) -> None:
        """
        Without credentials every operation is fuzzed too: each answer is a
        described refusal (401) or, for the open routes, a described answer.
        """
        statuses = await self.fuzz(
            "apiURL", ["--max-examples", "5", "--exclude-path-regex", AUTH_ONLY, "--phases", "examples,coverage,fuzzing"], withCredentials=False
        )
        self.assertIn(401, statuses)

    async def test_authListener(self) -> None:
        """
        The auth listener's login and validation routes, under all their
        paths, are fuzzed with the test user's password and the API key.
        """
        statuses = await self.fuzz("authURL", ["--include-path-regex", r"tokens"])
        self.assertIn(201, statuses)

    async def test_harnessFindsMismatches(self) -> None:
        """
        The harness can fail: against a description that leaves out the
        401 answer, an unauthenticated run reports undocumented statuses
        and exits non-zero.
        """
        spec = await self.startFuzzTarget()
        for item in spec["paths"].values():
            for operation in item.values():
                if isinstance(operation, dict):
                    operation.get("responses", {}).pop("401", None)
        with open(self.specPath, "w", encoding="utf-8") as f:
            json.dump(spec, f)
        code, output = await schemathesis(
            self.workDir,
            self.specPath,
            self.daemon.apiURL,
            ["--max-examples", "2", "--include-path", "/v1/rules", "--include-method", "GET", "--phases", "examples,fuzzing"],
            timeout=120.0,
        )
        self.assertNotEqual(code, 0, output)
        self.assertIn("401", output)
        self.assertTrue(self.daemon.running)
