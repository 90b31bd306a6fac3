"""
Run the real daemon for end-to-end tests: C{twistd -n bwcd --config X} as a
child process on free loopback ports, with a user and an API key made the way
an operator makes them.

Tests wait for events, never by polling: the daemon's log lines (ready,
reloaded, a rule matched), the API's long poll for an execution's end
(C{GET /v1/executions/<id>?wait=N}, L{Daemon.waitFor}), a FIFO a child
process writes to (L{fifoMessage}), and for in-memory API tests a request's
end (L{PumpWhenFinished}).
"""

from __future__ import annotations

import json
import os
import re
import socket
import sys
from typing import Any, Dict, Iterable, List, Optional, Pattern, Tuple

import bcrypt
import treq
import yaml
from twisted.internet import reactor
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.interfaces import IReadDescriptor
from twisted.internet.protocol import ProcessProtocol
from zope.interface import implementer

# Tests must leave no idle keep-alive connection behind (trial checks the
# reactor is clean after each test), so every treq call here is one-shot.
from treq.api import set_global_pool
from treq.testing import StubTreq
from twisted.web.resource import IResource, Resource
from twisted.web.client import HTTPConnectionPool

set_global_pool(HTTPConnectionPool(reactor, persistent=False))

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.dirname(sys.executable)


def freePorts(count: int) -> List[int]:
    """
    C{count} distinct free ports: all held open until each is known, so the
    kernel cannot hand the same one out twice.
    """
    sockets = []
    try:
        for _ in range(count):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def freePort() -> int:
    return freePorts(1)[0]


def childEnv(extra: Optional[Dict[str, str]] = None) -> Dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = REPO + os.pathsep + env.get("PYTHONPATH", "")
    env.pop("BWCD_CONFIG", None)
    env.pop("BWCD_STATE_DIR", None)
    if extra:
        env.update(extra)
    return env


#: the statuses an execution ends in
COMPLETED = ("succeeded", "failed", "timeout", "canceled", "abandoned")


class _Collector(ProcessProtocol):
    """
    Keeps the daemon's output in its log file and, line by line, in memory,
    so that a test can wait for the line that says what it awaits happened
    (the daemon's log is the one event stream it offers a test).
    """

    def __init__(self, logPath: str, lines: List[str]) -> None:
        self.ended: Deferred = Deferred()
        self.log = open(logPath, "ab")
        self.status: Any = None
        self.lines = lines
        self._partial: Dict[int, bytes] = {}
        self._watchers: List[Tuple[Pattern[str], Deferred]] = []

    def childDataReceived(self, fd: int, data: bytes) -> None:
        self.log.write(data)
        self.log.flush()
        *complete, self._partial[fd] = (self._partial.get(fd, b"") + data).split(b"\n")
        for raw in complete:
            line = raw.decode("utf-8", "replace")
            self.lines.append(line)
            for watcher in list(self._watchers):
                match = watcher[0].search(line)
                if match is not None:
                    self._watchers.remove(watcher)
                    watcher[1].callback(match)

    def logged(self, pattern: str, since: int = 0) -> "Deferred[re.Match]":
        """
        Fire with the match of the first line from C{since} on matching
        C{pattern}; fail if the process ends before one is written.
        """
        compiled = re.compile(pattern)
        for line in self.lines[since:]:
            match = compiled.search(line)
            if match is not None:
                return succeed(match)
        if self.ended.called:
            return fail(RuntimeError(f"bwcd has exited; no line matches {pattern!r}"))
        d: Deferred = Deferred()
        self._watchers.append((compiled, d))
        return d

    def processEnded(self, reason) -> None:
        self.status = reason.value
        self.log.close()
        self.ended.callback(reason.value)
        watchers, self._watchers = self._watchers, []
        for pattern, d in watchers:
            d.errback(RuntimeError(f"bwcd exited ({reason.value}) before a line matched {pattern.pattern!r}"))


@implementer(IReadDescriptor)
class _FifoReader:
    def __init__(self, fd: int, received: Deferred) -> None:
        self.fd = fd
        self.received = received

    def fileno(self) -> int:
        return self.fd

    def doRead(self) -> None:
        data = os.read(self.fd, 65536)
        self.close()
        self.received.callback(data)

    def close(self) -> None:
        if self.fd >= 0:
            reactor.removeReader(self)
            os.close(self.fd)
            self.fd = -1

    def connectionLost(self, reason) -> None:
        self.close()

    def logPrefix(self) -> str:
        return "fifo"


def fifoMessage(testCase) -> Tuple[str, "Deferred[bytes]"]:
    """
    A FIFO for a child process to announce something (that it started, that
    its children exist) and a Deferred firing with the first bytes it
    writes there: an event, where a test would otherwise poll /proc or an
    API until the child is there.

    The FIFO is opened read-write, so a writer never blocks nor does the
    reader see end of file before the message; it is closed at clean-up.
    """
    path = os.path.abspath(testCase.mktemp())
    os.mkfifo(path)
    reader = _FifoReader(os.open(path, os.O_RDWR | os.O_NONBLOCK), Deferred())
    reactor.addReader(reader)
    testCase.addCleanup(reader.close)
    return path, reader.received


async def runCommand(argv: Iterable[str], stdin: bytes = b"", env: Optional[Dict[str, str]] = None) -> tuple:
    """
    Run a command to completion: (exit code, stdout, stderr).
    """
    from twisted.internet.utils import getProcessOutputAndValue

    argv = list(argv)
    if stdin:
        class _P(ProcessProtocol):
            def __init__(self):
                self.out, self.err, self.d = [], [], Deferred()

            def connectionMade(self):
                self.transport.write(stdin)
                self.transport.closeStdin()

            def outReceived(self, d):
                self.out.append(d)

            def errReceived(self, d):
                self.err.append(d)

            def processEnded(self, reason):
                self.d.callback((reason.value.exitCode, b"".join(self.out), b"".join(self.err)))

        p = _P()
        reactor.spawnProcess(p, argv[0], argv, env=env or childEnv())
        return await p.d
    out, err, code = await getProcessOutputAndValue(argv[0], argv[1:], env=env or childEnv())
    return code, out, err


class Daemon:
    """
    One bwcd process and what a test needs to talk to it.
    """

    user = "tester"
    password = "s3cret-pass"

    def __init__(self, testCase, configData: dict, stateDir: str) -> None:
        self.testCase = testCase
        self.stateDir = stateDir
        self.configData = configData
        self.configPath = os.path.join(stateDir, "bwcd.yaml")
        with open(self.configPath, "w") as f:
            yaml.safe_dump(configData, f)
        self.readPorts()
        self.logPath = os.path.join(stateDir, "daemon.log")
        self.apiKey: Optional[str] = None
        self.process = None
        self._proto: Optional[_Collector] = None
        #: every line logged, by this run and the ones before a restart
        self.lines: List[str] = []

    @property
    def headers(self) -> Dict[str, str]:
        return {"St2-Api-Key": self.apiKey or ""}

    def readLog(self) -> str:
        with open(self.logPath, encoding="utf-8", errors="replace") as f:
            return f.read()

    async def start(self) -> None:
        """
        Start the daemon; fire once it logs "bwcd ready" (the line systemd's
        unit and operators wait for: its listeners are bound and start-up
        recovery is done), fail with its log if it exits first.
        """
        since = len(self.lines)
        self._proto = _Collector(self.logPath, self.lines)
        argv = [os.path.join(BIN, "twistd"), "-n", "--pidfile=", "bwcd", "--config", self.configPath]
        self.process = reactor.spawnProcess(self._proto, argv[0], argv, env=childEnv(), path=self.stateDir)
        try:
            await self._proto.logged(r"\bbwcd ready: ", since)
        except RuntimeError:
            raise RuntimeError(f"bwcd exited during start-up:\n{self.readLog()}")

    def readPorts(self) -> None:
        self.apiPort = int(self.configData["api"]["listen"].split(":")[1])
        self.authPort = int(self.configData["auth"]["listen"].split(":")[1])
        self.apiURL = f"http://127.0.0.1:{self.apiPort}"
        self.authURL = f"http://127.0.0.1:{self.authPort}"

    def logged(self, pattern: str, since: int = 0) -> "Deferred[re.Match]":
        """
        Fire with the match of the first line logged, from line C{since} on,
        matching the regular expression C{pattern}; fail if the daemon
        exits before.
        """
        assert self._proto is not None
        return self._proto.logged(pattern, since)

    def matches(self, pattern: str, since: int = 0) -> List["re.Match"]:
        """
        The matches of C{pattern} in the lines logged so far, from C{since}.
        """
        compiled = re.compile(pattern)
        return [m for m in (compiled.search(line) for line in self.lines[since:]) if m is not None]

    async def loggedTimes(self, pattern: str, count: int, since: int = 0) -> List["re.Match"]:
        """
        Wait until C{count} lines from C{since} on match C{pattern} (the
        daemon's output reaches the test through a pipe, so a line can come
        after the HTTP answer it belongs to).
        """
        while True:
            found = self.matches(pattern, since)
            if len(found) >= count:
                return found
            await self.logged(pattern, self.linesLogged)

    @property
    def linesLogged(self) -> int:
        """
        How many lines have been logged: a C{since} for L{logged} that
        ignores what came before.
        """
        return len(self.lines)

    async def ruleExecutions(self, instanceId: str, expect: int) -> List[str]:
        """
        The ids of the executions rules started for trigger instance
        C{instanceId}, once there are C{expect} of them: woken by the
        engine's "Rule <ref> matched trigger instance <id>: execution <id>"
        lines.
        """
        pattern = rf"\bmatched trigger instance {re.escape(instanceId)}: execution (\w+)"
        while True:
            since = self.linesLogged
            ids = sorted({m.group(1) for m in self.matches(pattern)})
            if len(ids) >= expect:
                return ids
            await self.logged(pattern, since)

    @property
    def running(self) -> bool:
        return self._proto is not None and not self._proto.ended.called

    async def _signal(self, sig: str, timeout: float = 20.0) -> Any:
        if not self.running:
            return None
        assert self.process is not None and self._proto is not None
        self.process.signalProcess(sig)
        ended = self._proto.ended
        timer = reactor.callLater(timeout, lambda: self.running and self.process.signalProcess("KILL"))
        status = await ended
        if timer.active():
            timer.cancel()
        return status

    async def stop(self) -> Any:
        """
        SIGTERM, as systemd stops it; fires with the exit status.
        """
        return await self._signal("TERM")

    async def kill(self) -> Any:
        return await self._signal("KILL")

    async def restart(self) -> None:
        await self.stop()
        await self.start()

    async def get(self, path: str, **kw) -> Any:
        response = await treq.get(self.apiURL + path, headers=kw.pop("headers", self.headers), **kw)
        return response, await _body(response)

    async def post(self, path: str, body: Any = None, **kw) -> Any:
        headers = kw.pop("headers", None) or dict(self.headers, **{"Content-Type": "application/json"})
        data = kw.pop("data", None)
        if data is None and body is not None:
            data = json.dumps(body).encode()
        response = await treq.post(self.apiURL + path, data=data, headers=headers, **kw)
        return response, await _body(response)

    async def waitFor(self, execId: str) -> dict:
        """
        The execution once it has completed.

        Asked with C{GET /v1/executions/<id>?wait=30}, which the daemon
        answers as soon as the execution has completed: a long poll, with
        no dependence on the wording of a log line.  The daemon is woken by
        completions it makes itself; one that another process sharing the
        store makes is seen by the next ask, within 30 seconds.  A hang is
        left to trial's timeout.
        """
        while True:
            response, doc = await self.get(f"/v1/executions/{execId}?wait=30")
            if response.code != 200:
                raise AssertionError(f"GET /v1/executions/{execId} answered {response.code}: {doc}")
            if doc.get("status") in COMPLETED:
                return doc

class PumpWhenFinished(Resource):
    """
    A resource under test behind L{StubTreq}, for handlers that answer on a
    later turn of the real reactor (after the store or the engine): once a
    request has finished, the in-memory connection is pumped, so its
    answer reaches the client without the test polling C{flush}.
    """

    isLeaf = True

    def __init__(self, inner: IResource) -> None:
        super().__init__()
        self._inner = inner
        self.stub = StubTreq(self)

    def render(self, request):
        # on the next turn: the answer is written out of request.finish(),
        # which must return before the connection is pumped
        request.notifyFinish().addBoth(lambda _: reactor.callLater(0, self.stub.flush))
        return self._inner.render(request)


async def _body(response) -> Any:
    raw = await response.content()
    try:
        return json.loads(raw)
    except ValueError:
        return raw.decode("utf-8", "replace")


async def startDaemon(
    testCase,
    storage: str = "sqlite",
    packs: Iterable[str] = (),
    config: Optional[Dict[str, Dict[str, Any]]] = None,
) -> Daemon:
    """
    Start a daemon for C{testCase} (stopped at clean-up) with a user
    (L{Daemon.user}/L{Daemon.password}) and an API key (L{Daemon.apiKey}).

    @param storage: C{"sqlite"}, C{"mongodb"} (SecantusDB or
        C{$BWCD_TEST_MONGODB_URL}) or a storage URL.
    """
    stateDir = os.path.abspath(testCase.mktemp())
    os.makedirs(stateDir)
    if storage == "sqlite":
        url = "sqlite://" + os.path.join(stateDir, "bwcd.sqlite")
    elif storage == "mongodb":
        from tests.mongoserver import mongoURL

        url = await mongoURL(testCase)
    else:
        url = storage
    users = os.path.join(stateDir, "htpasswd")
    with open(users, "w") as f:
        hashed = bcrypt.hashpw(Daemon.password.encode(), bcrypt.gensalt(rounds=4)).decode()
        f.write(f"{Daemon.user}:{hashed}\n")
    apiPort, authPort, streamPort = freePorts(3)
    data: Dict[str, Dict[str, Any]] = {
        "api": {"listen": f"tcp:{apiPort}:interface=127.0.0.1", "public_url": "http://127.0.0.1:9101"},
        "auth": {"listen": f"tcp:{authPort}:interface=127.0.0.1", "users_file": users},
        "storage": {"url": url},
        "packs": {"paths": list(packs)},
        "runner": {"kill_grace": 1.0},
        "system": {"state_dir": stateDir},
        "stream": {"listen": f"tcp:{streamPort}:interface=127.0.0.1"},
    }
    for section, values in (config or {}).items():
        data.setdefault(section, {}).update(values)
    daemon = Daemon(testCase, data, stateDir)
    daemon.configData["api"]["public_url"] = daemon.apiURL
    with open(daemon.configPath, "w") as f:
        yaml.safe_dump(daemon.configData, f)
    code, out, err = await runCommand([os.path.join(BIN, "bwcd-admin"), "apikey-create", "--config", daemon.configPath])
    if code != 0:
        code, out, err = await runCommand([sys.executable, "-m", "bwcd.admin", "apikey-create", "--config", daemon.configPath])
    if code != 0:
        raise RuntimeError(f"bwcd-admin apikey-create failed ({code}): {err.decode()}")
    daemon.apiKey = out.decode().strip().splitlines()[-1]
    testCase.addCleanup(daemon.stop)
    try:
        await daemon.start()
    except RuntimeError as e:
        if "Address already in use" not in str(e):
            raise
        # justified retry: another process on this machine took one of the
        # free ports between our check and the daemon's bind
        for section, port in zip(("api", "auth", "stream"), freePorts(3)):
            if daemon.configData.get(section, {}).get("listen"):
                daemon.configData[section]["listen"] = f"tcp:{port}:interface=127.0.0.1"
        daemon.readPorts()
        daemon.configData["api"]["public_url"] = daemon.apiURL
        with open(daemon.configPath, "w") as f:
            yaml.safe_dump(daemon.configData, f)
        await daemon.start()
    return daemon
