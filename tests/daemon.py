"""
Run the real daemon for end-to-end tests: C{twistd -n bwcd --config X} as a
child process on free loopback ports, with a user and an API key made the way
an operator makes them.
"""

from __future__ import annotations

import json
import os
import socket
import sys
from typing import Any, Dict, Iterable, Optional

import bcrypt
import treq
import yaml
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.protocol import ProcessProtocol
from twisted.internet.task import deferLater

# Tests must leave no idle keep-alive connection behind (trial checks the
# reactor is clean after each test), so every treq call here is one-shot.
from treq.api import set_global_pool
from twisted.web.client import HTTPConnectionPool

set_global_pool(HTTPConnectionPool(reactor, persistent=False))

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.dirname(sys.executable)


def freePort() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def childEnv(extra: Optional[Dict[str, str]] = None) -> Dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = REPO + os.pathsep + env.get("PYTHONPATH", "")
    env.pop("BWCD_CONFIG", None)
    env.pop("BWCD_STATE_DIR", None)
    if extra:
        env.update(extra)
    return env


class _Collector(ProcessProtocol):
    def __init__(self, logPath: str) -> None:
        self.ended: Deferred = Deferred()
        self.log = open(logPath, "ab")
        self.status: Any = None

    def outReceived(self, data: bytes) -> None:
        self.log.write(data)
        self.log.flush()

    errReceived = outReceived

    def processEnded(self, reason) -> None:
        self.status = reason.value
        self.log.close()
        self.ended.callback(reason.value)


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
        self.apiPort = int(configData["api"]["listen"].split(":")[1])
        self.authPort = int(configData["auth"]["listen"].split(":")[1])
        self.apiURL = f"http://127.0.0.1:{self.apiPort}"
        self.authURL = f"http://127.0.0.1:{self.authPort}"
        self.logPath = os.path.join(stateDir, "daemon.log")
        self.apiKey: Optional[str] = None
        self.process = None
        self._proto: Optional[_Collector] = None

    @property
    def headers(self) -> Dict[str, str]:
        return {"St2-Api-Key": self.apiKey or ""}

    def readLog(self) -> str:
        with open(self.logPath, encoding="utf-8", errors="replace") as f:
            return f.read()

    async def start(self, timeout: float = 30.0) -> None:
        self._proto = _Collector(self.logPath)
        argv = [os.path.join(BIN, "twistd"), "-n", "--pidfile=", "bwcd", "--config", self.configPath]
        self.process = reactor.spawnProcess(self._proto, argv[0], argv, env=childEnv(), path=self.stateDir)
        deadline = reactor.seconds() + timeout
        while True:
            if self._proto.ended.called:
                raise RuntimeError(f"bwcd exited during start-up:\n{self.readLog()}")
            try:
                response = await treq.get(self.apiURL + "/v1/actions?limit=1", headers=self.headers, timeout=2)
                await response.content()
                if response.code in (200, 401):
                    return
            except Exception:
                pass
            if reactor.seconds() > deadline:
                raise RuntimeError(f"bwcd did not answer within {timeout}s:\n{self.readLog()}")
            await deferLater(reactor, 0.1, lambda: None)

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

    async def waitFor(self, execId: str, timeout: float = 20.0) -> dict:
        """
        Poll an execution until it completes.
        """
        deadline = reactor.seconds() + timeout
        while True:
            _, doc = await self.get(f"/v1/executions/{execId}")
            if doc.get("status") in ("succeeded", "failed", "timeout", "canceled", "abandoned"):
                return doc
            if reactor.seconds() > deadline:
                raise AssertionError(f"execution {execId} still {doc.get('status')} after {timeout}s")
            await deferLater(reactor, 0.1, lambda: None)


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
    data: Dict[str, Dict[str, Any]] = {
        "api": {"listen": f"tcp:{freePort()}:interface=127.0.0.1", "public_url": "http://127.0.0.1:9101"},
        "auth": {"listen": f"tcp:{freePort()}:interface=127.0.0.1", "users_file": users},
        "storage": {"url": url},
        "packs": {"paths": list(packs)},
        "runner": {"kill_grace": 1.0},
        "system": {"state_dir": stateDir},
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
    await daemon.start()
    return daemon
