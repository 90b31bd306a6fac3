"""
A MongoDB for tests, so that MongoDB tests never skip.

When C{BWCD_TEST_MONGODB_URL} is set, that server is used.  Otherwise one
SecantusDB process (a MongoDB wire-protocol server from PyPI C{secantusdb})
is started on a free port the first time a test asks, shared by the whole
test run, and killed when the interpreter exits.  Either way every test gets
a database of its own, dropped when the test ends, so tests cannot see each
other's documents.

Usage, in a C{twisted.trial.unittest.TestCase}::

    url = await mongoURL(self)     # mongodb://127.0.0.1:P/bwcdtest_...
"""

from __future__ import annotations

import atexit
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from typing import Optional
from urllib.parse import urlsplit, urlunsplit

from twisted.internet import reactor
from twisted.internet.defer import Deferred, ensureDeferred
from twisted.internet.task import deferLater
from twisted.trial.unittest import TestCase
from txmongo.connection import ConnectionPool

ENVIRONMENT_VARIABLE = "BWCD_TEST_MONGODB_URL"
STARTUP_SECONDS = 30.0


class _Server:
    """
    The shared SecantusDB process.
    """

    def __init__(self) -> None:
        self.directory = tempfile.mkdtemp(prefix="bwcd-secantus-")
        self.port = _freePort()
        self.logPath = os.path.join(self.directory, "server.log")
        self._log = open(self.logPath, "wb")
        self._spawn()
        atexit.register(self.kill)

    def _spawn(self) -> None:
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "secantus",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--storage-path",
                os.path.join(self.directory, "data"),
                "--log-level",
                "WARNING",
            ],
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            cwd=self.directory,
        )
        self.listening = False

    def restart(self) -> None:
        """
        Kill the server (SIGKILL: an outage, not a shutdown) and start it
        again on the same port and storage path, as an operator would after
        a crash.  Await L{waitUntilListening} after this.
        """
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self._spawn()

    @property
    def url(self) -> str:
        return f"mongodb://127.0.0.1:{self.port}/"

    def logTail(self) -> str:
        with open(self.logPath, "rb") as f:
            return f.read()[-2000:].decode("utf-8", "replace")

    async def waitUntilListening(self) -> None:
        deadline = time.monotonic() + STARTUP_SECONDS
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"SecantusDB exited with {self.process.returncode}:\n{self.logTail()}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return
            except ConnectionRefusedError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"SecantusDB did not listen within {STARTUP_SECONDS}s:\n{self.logTail()}")
            # Justified wait: a bounded retry of a refused connect while the
            # server binds its port (it logs nothing at start at WARNING).
            await deferLater(reactor, 0.05, lambda: None)

    def kill(self) -> None:
        if self._log.closed:
            return
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGCONT)  # a paused server cannot act on SIGTERM
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()
        shutil.rmtree(self.directory, ignore_errors=True)


_server: Optional[_Server] = None


def _freePort() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def _baseURL() -> str:
    configured = os.environ.get(ENVIRONMENT_VARIABLE)
    if configured:
        return configured
    global _server
    if _server is None or _server.process.poll() is not None:
        _server = _Server()
    if not _server.listening:
        # Concurrent callers each poll; polling is idempotent.
        await _server.waitUntilListening()
        _server.listening = True
    return _server.url


async def privateServer(testCase: TestCase) -> _Server:
    """
    A SecantusDB process of C{testCase}'s own, which it may stop, pause
    (SIGSTOP) or L{_Server.restart} without disturbing other tests; killed
    and removed at cleanup.
    """
    server = _Server()
    testCase.addCleanup(server.kill)
    await server.waitUntilListening()
    server.listening = True
    return server


def withDatabase(url: str, database: str) -> str:
    """
    C{url} with its database path replaced by C{database}, options kept.
    """
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, "/" + database, parts.query, parts.fragment))


async def _dropDatabase(url: str, database: str) -> None:
    pool = ConnectionPool(url)
    try:
        await pool[database].command("dropDatabase", timeout=10)
    finally:
        await pool.disconnect()


async def _mongoURL(testCase: TestCase) -> str:
    base = await _baseURL()
    database = "bwcdtest_" + uuid.uuid4().hex[:16]
    url = withDatabase(base, database)
    testCase.addCleanup(lambda: ensureDeferred(_dropDatabase(url, database)))
    return url


def mongoURL(testCase: TestCase) -> Deferred[str]:
    """
    The URL of a fresh, empty MongoDB database for C{testCase}, dropped at
    its cleanup.
    """
    return ensureDeferred(_mongoURL(testCase))


__all__ = ["ENVIRONMENT_VARIABLE", "mongoURL", "privateServer", "withDatabase"]
