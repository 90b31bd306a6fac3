# -*- test-case-name: tests.test_daemon -*-
"""
The daemon as one service tree: listeners, store, pack registration, the
rules engine and the executor, started and stopped in the order that keeps
every accepted request safe.

Start: bind the listeners (so a taken port fails C{twistd} at once), then
open the store, register packs and rules, recover unfinished work, and only
then let requests through (until then they get 503).  Stop (SIGTERM): stop
listening, stop claiming work and terminate running children (their
executions end C{abandoned}), then close the store.
"""

from __future__ import annotations

import gc
import os
import signal
from typing import Any, Dict, List

from twisted.application.internet import StreamServerEndpointService, TimerService
from twisted.application.service import MultiService
from twisted.internet import endpoints
from twisted.internet.defer import ensureDeferred
from twisted.logger import Logger

from bwcd.api.action_routes import installActionRoutes
from bwcd.api.auth_routes import installApiKeyRoutes, installTokenRoutes
from bwcd.api.execution_routes import installExecutionRoutes
from bwcd.api.framework import Api
from bwcd.api.health_routes import installHealthRoutes
from bwcd.api.site import BwcdSite
from bwcd.auth.apikeys import ApiKeys
from bwcd.auth.credentials import Authenticator
from bwcd.auth.htpasswd import Htpasswd
from bwcd.auth.tokens import Tokens
from bwcd.config import Config
from bwcd.execution.service import ExecutionService
from bwcd.execution.executor import Executor
from bwcd.metrics import Metrics
from bwcd.execution.nodes import NodeWatch
from bwcd.packs.registrar import packFolders, registerActions, registerRunnerTypes
from bwcd.execution.runners.local import LocalRunner
from bwcd.store.url import openStore
from bwcd.webhooks import RulesExtension

log = Logger(namespace="bwcd")


def nodeIdentity(stateDir: str) -> str:
    """
    A stable name for this daemon's state folder, so that after a crash it
    recognises the executions it had claimed.
    """
    path = os.path.join(stateDir, "node-id")
    try:
        with open(path, encoding="utf-8") as f:
            value = f.read().strip()
            if value:
                return value
    except FileNotFoundError:
        pass
    from bwcd.store.interface import newId

    value = newId()
    with open(path, "w", encoding="utf-8") as f:
        f.write(value + "\n")
    return value


def tuneGarbageCollector() -> None:
    """
    Collect less often, and never rescan what start-up built.

    Each request allocates many short-lived objects, and CPython's default
    (a young collection every 700 allocations) spent measurable time on them
    (about 6 % more webhooks/s in a pinned benchmark with these settings).
    Freezing after start-up moves the loaded modules, packs and rules index
    out of the collector's reach, so full collections stay cheap with
    thousands of rules loaded.
    """
    gc.set_threshold(50000, 20, 20)
    gc.collect()
    gc.freeze()


class BwcdService(MultiService):
    """
    The whole daemon.
    """

    def __init__(self, config: Config, reactor: Any) -> None:
        super().__init__()
        self.config = config
        self.reactor = reactor
        self.packFolders: Dict[str, str] = {}
        self.store = openStore(config.storage.url, reactor)
        self.tokens = Tokens(self.store, reactor, ttl=config.auth.token_ttl, maxTtl=config.auth.token_max_ttl)
        self.apikeys = ApiKeys(self.store, reactor)
        self.htpasswd = Htpasswd(config.auth.users_file, reactor=reactor)
        self.authenticator = Authenticator(self.tokens, self.apikeys, config.auth.enable, config.system.user)
        self.executions = ExecutionService(
            self.store, reactor, config.api.public_url, config.api.webui_base_url, maxQueued=config.runner.max_queued
        )
        self.runner = LocalRunner(reactor, config.runner.output_max_bytes, kill_grace=config.runner.kill_grace)
        self.executor = Executor(
            self.store,
            self.executions,
            self.runner,
            reactor,
            config.runner.max_concurrent,
            config.api.public_url,
            packPaths=lambda: self.packFolders,
            issueToken=self._issueChildToken,
        )
        self.nodes = NodeWatch(self.store, self.executions, reactor, config.runner.node_timeout)
        self.metrics = Metrics()
        self.api = Api(self.authenticator.authenticate)
        self.authApi = Api(self.authenticator.authenticate)
        self._extensions: List[Any] = []
        self._childTokens: Dict[str, tuple] = {}
        self.rules = RulesExtension(self.store, self.executions, reactor, self.api, systemUser=config.system.user)
        self._extensions.append(self.rules)
        self._buildRoutes()
        self._listen(config.api.listen, self.api)
        self._tokenPurge = TimerService(3600, self._purgeTokens)
        self._tokenPurge.clock = reactor
        if config.auth.enable:
            self._listen(config.auth.listen, self.authApi)

    def _buildRoutes(self) -> None:
        config = self.config
        installTokenRoutes(self.api, self.tokens, self.htpasswd, config, paths=("/auth/v1/tokens",))
        installTokenRoutes(self.authApi, self.tokens, self.htpasswd, config, paths=("/auth/v1/tokens", "/v1/tokens", "/tokens"))
        installApiKeyRoutes(self.api, self.apikeys)
        installActionRoutes(self.api, self.store)
        installExecutionRoutes(self.api, self.store, self.executions, self.executor)
        installHealthRoutes(self.api, self.store, self.reactor, self.metrics, lambda: self.executor.runningCount, config.api.metrics)

    def _listen(self, description: str, api: Api) -> None:
        site = BwcdSite(
            api.resource(), self.config.api.max_body_bytes, self.config.api.trusted_proxies,
            onRequestDone=self.metrics.observeRequest, reactor=self.reactor,
        )
        svc = StreamServerEndpointService(endpoints.serverFromString(self.reactor, description), site)
        svc._raiseSynchronously = True
        svc.setServiceParent(self)

    def _purgeTokens(self) -> None:
        if self.api.ready:
            d = ensureDeferred(self.tokens.purgeExpired())
            d.addErrback(lambda f: log.failure("Purging expired tokens failed", f))

    async def _issueChildToken(self, user: str, ttl: int) -> str:
        """
        A token for an action's C{ST2_ACTION_AUTH_TOKEN} that outlives the
        action.  One token per user is shared by the actions that start
        while it still has enough life left, which saves two writes per
        execution on the hot path.
        """
        now = self.reactor.seconds()
        cached = self._childTokens.get(user)
        if cached is not None and cached[1] - now >= ttl:
            return cached[0]
        lifetime = min(max(ttl * 2, 3600), self.config.auth.token_max_ttl)
        doc = await self.tokens.issue(user, ttl=lifetime)
        self._childTokens[user] = (doc["token"], now + lifetime)
        return doc["token"]

    # -- lifecycle -------------------------------------------------------

    def startService(self) -> None:
        super().startService()
        if not self.config.auth.enable:
            log.warn("Authentication is disabled (auth.enable: false): every caller acts as {user}", user=self.config.system.user)
        signal.signal(signal.SIGHUP, lambda *_: self.reactor.callFromThread(self.reload))
        d = ensureDeferred(self._start())
        d.addErrback(self._startFailed)

    async def _start(self) -> None:
        os.makedirs(self.config.system.state_dir, exist_ok=True)
        await self.store.start()
        self.executor.nodeId = nodeIdentity(self.config.system.state_dir)
        self.executions.nodeId = self.executor.nodeId
        await self._register()
        await self.executor.recover()
        for ext in self._extensions:
            await ext.start()
        self.executor.startService()
        self.nodes.start(self.executor.nodeId)
        self._tokenPurge.startService()
        tuneGarbageCollector()
        self.api.ready = True
        self.authApi.ready = True
        log.info("bwcd ready: API {api}, auth {auth}, storage {storage}", api=self.config.api.listen, auth=self.config.auth.listen if self.config.auth.enable else "disabled", storage=self.store.name)

    async def _register(self) -> None:
        await registerRunnerTypes(self.store)
        packs, _problems, _count = await registerActions(self.store, self.config.packs.paths)
        self.packFolders = packFolders(packs)
        for ext in self._extensions:
            if hasattr(ext, "register"):
                await ext.register(packs)

    def _startFailed(self, failure) -> None:
        log.failure("bwcd could not start", failure)
        self.reactor.addSystemEventTrigger("after", "shutdown", os._exit, 1)
        self.reactor.stop()

    def reload(self) -> None:
        """
        SIGHUP: register packs and rules again; requests keep flowing.
        """
        log.info("SIGHUP: reloading packs and rules")
        d = ensureDeferred(self._register())
        d.addCallback(lambda _: log.info("Reload complete"))
        d.addErrback(lambda f: log.failure("Reload failed; the previous registration stays in force", f))

    async def _stop(self) -> None:
        self.api.ready = False
        self.authApi.ready = False
        await MultiService.stopService(self)
        if self._tokenPurge.running:
            await self._tokenPurge.stopService()
        self.nodes.stop()
        if self.executor.running:
            await self.executor.stopService()
        for ext in reversed(self._extensions):
            await ext.stop()
        await self.store.stop()
        log.info("bwcd stopped")

    def stopService(self):
        return ensureDeferred(self._stop())
