# -*- test-case-name: tests.test_tap -*-
"""
The daemon as one tree of services: the one place where bwcd's parts are
built and connected.

The root is an L{OrderedServices}: its children start one after another,
each awaited, and stop in the reverse order, each awaited, so the order of
the tree I{is} the start-up and shut-down sequence::

    BwcdService
      store            open the store (creating the state folder)
      datastore key    read or create the datastore's encryption key
      registration     runner types, packs' actions, trigger types and rules
      rule index       load the rules, then follow other processes' changes
      webhook policies load the hooks' policies and secrets, then follow changes
      rules engine     process events (and an earlier run's leftovers)
      timers           interval, cron and date timer ticks, as trigger instances
      executor         settle what this node left behind, then run executions
      node watch       heartbeat; settle dead nodes' executions
      token purge      delete expired tokens hourly
      retention        purge documents past their retention TTLs (one node at a time)
      stream           live events for /v1/stream (bwcd.stream)
      api listener     (bound at once; see below)
      auth listener    (when authentication is enabled)
      stream listener  /stream and /v1/stream (unless stream.listen is empty)
      readiness        requests get 503 until this stage; "bwcd ready"

The listeners bind in C{privilegedStartService}, which runs for the whole
tree before anything else starts, so a taken port fails C{twistd} at once;
until the readiness stage, requests are answered 503.  Stopping (SIGTERM)
runs the tree backwards: requests get 503, the listeners stop, nothing more
is claimed and running children are ended (their executions end
C{abandoned}), the engine lets the instances in hand finish, and the store
closes last.  SIGHUP registers packs and rules again.
"""

from __future__ import annotations

import gc
import os
import signal
from typing import Any, Dict, Iterable, List, Optional

from twisted.application.internet import StreamServerEndpointService, TimerService
from twisted.application.service import IService, MultiService, Service
from twisted.internet import endpoints
from twisted.internet.defer import Deferred, ensureDeferred, maybeDeferred
from twisted.logger import Logger

from bwcd.api.action_routes import installActionRoutes
from bwcd.api.auth_routes import installApiKeyRoutes, installTokenRoutes
from bwcd.api.execution_routes import installExecutionRoutes
from bwcd.api.framework import Api
from bwcd.api.health_routes import installHealthRoutes
from bwcd.api.key_routes import installKeyRoutes
from bwcd.api.openapi_routes import installOpenApiRoutes
from bwcd.api.policy_routes import installPolicyRoutes
from bwcd.api.rule_routes import installRuleRoutes
from bwcd.api.site import BwcdSite
from bwcd.api.stream_routes import STREAM_PATHS, installStreamRoutes
from bwcd.api.timer_routes import installTimerRoutes
from bwcd.api.trigger_routes import installTriggerRoutes
from bwcd.api.webhook_routes import installWebhookRoutes
from bwcd.api.webui import WebUi
from bwcd.auth.apikeys import ApiKeys
from bwcd.auth.credentials import Authenticator
from bwcd.auth.htpasswd import Htpasswd
from bwcd.auth.tokens import Tokens
from bwcd.config import Config
from bwcd.datastore.keyfile import DatastoreKeyFile
from bwcd.datastore.keys import KeyService
from bwcd.execution.executor import Executor
from bwcd.execution.nodes import NodeWatch
from bwcd.execution.runners.http import HttpRunner, TreqClients
from bwcd.execution.runners.local import LocalRunner
from bwcd.execution.runners.types import HTTP_REQUEST
from bwcd.execution.service import ExecutionService
from bwcd.execution.tokens import ExecutionTokens
from bwcd.metrics import Metrics
from bwcd.packs.loader import scriptPath
from bwcd.packs.policies import registerPackPolicies
from bwcd.packs.registrar import packFolders, registerActions, registerRunnerTypes
from bwcd.packs.rules import registerPackContent
from bwcd.retention import RetentionService
from bwcd.rules.engine import RulesEngine
from bwcd.rules.index import RuleIndex
from bwcd.rules.timers import TimerScheduler
from bwcd.rules.triggers import ensureSystemTriggerTypes
from bwcd.store.health import StoreHealth
from bwcd.store.interface import IStore, newId
from bwcd.store.url import openStore
from bwcd.stream.hub import StreamHub
from bwcd.webhooks.registry import PolicyIndex

log = Logger(namespace="bwcd")


class OrderedServices(MultiService):
    """
    A L{MultiService} whose children start one after another (each one's
    C{startService} Deferred awaited before the next starts) and stop in
    reverse order, each awaited.  Twisted's own starts them all at once,
    which cannot express "open the store, then use it".

    @ivar started: fires once every child has started; fails with the first
        child's failure (the children after it are not started).
    """

    started: Optional[Deferred] = None

    def startService(self) -> Deferred:  # type: ignore[override]
        Service.startService(self)
        self.started = ensureDeferred(self._startChildren())
        return self.started

    async def _startChildren(self) -> None:
        for child in list(self):
            if not self.running:
                return  # stopped while starting: start nothing more
            await maybeDeferred(child.startService)

    def stopService(self) -> Deferred:  # type: ignore[override]
        Service.stopService(self)
        return ensureDeferred(self._stopChildren())

    async def _stopChildren(self) -> None:
        for child in reversed(list(self)):
            if not child.running:
                continue  # never started (a stage before it failed)
            try:
                await maybeDeferred(child.stopService)
            except Exception:
                log.failure("Stopping {service} failed", service=child.name)


class NodeIdentity:
    """
    A stable name for this daemon's state folder, so that after a crash it
    recognises the executions it had claimed: read from (or first written
    to) C{<state_dir>/node-id} when first asked, which is after the store
    stage has created the folder.
    """

    def __init__(self, stateDir: str) -> None:
        self._path = os.path.join(stateDir, "node-id")
        self._value: Optional[str] = None

    def __call__(self) -> str:
        if self._value is None:
            self._value = self._read() or self._write()
        return self._value

    def _read(self) -> Optional[str]:
        try:
            with open(self._path, encoding="utf-8") as f:
                return f.read().strip() or None
        except FileNotFoundError:
            return None

    def _write(self) -> str:
        value = newId()
        with open(self._path, "w", encoding="utf-8") as f:
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


class StoreService(Service):
    """
    The store, open while the service runs.
    """

    def __init__(self, store: IStore, stateDir: str) -> None:
        self.store = store
        self._stateDir = stateDir

    def startService(self) -> Deferred:  # type: ignore[override]
        super().startService()
        os.makedirs(self._stateDir, exist_ok=True)
        return maybeDeferred(self.store.start)

    def stopService(self) -> Deferred:  # type: ignore[override]
        super().stopService()
        return maybeDeferred(self.store.stop)


class PackRegistration(Service):
    """
    Registers runner types, the packs' actions, trigger types and rules
    when it starts and again on L{reload} (SIGHUP), and knows where each
    pack lives on this node (for script actions).
    """

    def __init__(self, store: IStore, index: RuleIndex, paths: Iterable[str], policies: Optional[PolicyIndex] = None) -> None:
        self._store = store
        self._index = index
        self._paths = list(paths)
        self._folders: Dict[str, str] = {}
        self._policies = policies

    def startService(self) -> Deferred:  # type: ignore[override]
        super().startService()
        return ensureDeferred(self.register())

    async def register(self) -> None:
        await registerRunnerTypes(self._store)
        packs, _problems, _count = await registerActions(self._store, self._paths)
        self._folders = packFolders(packs)
        await ensureSystemTriggerTypes(self._store)
        await registerPackContent(self._store, self._index, packs)
        if self._policies is not None:
            # strict at start: a broken policy file stops start-up, naming it
            await registerPackPolicies(self._policies, packs, strict=not self._policies.loaded)
            if self._policies.loaded:
                await self._policies.reload()

    def scriptPath(self, pack: str, entryPoint: str) -> str:
        """
        The entry point of a script action of C{pack} on this node.

        @raise ValueError: the pack is not installed here.
        """
        folder = self._folders.get(pack)
        if folder is None:
            raise ValueError(f'Pack "{pack}" is not installed on this node')
        return scriptPath(folder, entryPoint)

    def reload(self) -> None:
        """
        SIGHUP: register packs and rules again; requests keep flowing.
        """
        if not self.running:
            log.warn("SIGHUP before start-up completed; ignored")
            return
        log.info("SIGHUP: reloading packs and rules")
        d = ensureDeferred(self.register())
        d.addCallback(lambda _: log.info("Reload complete"))
        d.addErrback(lambda f: log.failure("Reload failed; the previous registration stays in force", f))


class Readiness(Service):
    """
    The last stage: once it runs, requests are served; stopping it (the
    first thing at shutdown) makes them 503 again.
    """

    def __init__(self, apis: List[Api], announce: str) -> None:
        self._apis = apis
        self._announce = announce

    def startService(self) -> None:
        super().startService()
        tuneGarbageCollector()
        for api in self._apis:
            api.ready = True
        log.info("bwcd ready: {what}", what=self._announce)

    def stopService(self) -> None:
        super().stopService()
        for api in self._apis:
            api.ready = False


class BwcdService(OrderedServices):
    """
    The whole daemon (see the module docstring for the tree).
    """

    def __init__(self, config: Config, reactor: Any) -> None:
        super().__init__()
        self.config = config
        self.reactor = reactor
        self._privilegedStarted = False
        # every consumer gets the health wrapper: once the store fails, they are refused at once (503)
        self.store = StoreHealth(openStore(config.storage.url, reactor), reactor)
        nodeId = NodeIdentity(config.system.state_dir)
        # -- auth
        self.tokens = Tokens(self.store, reactor, ttl=config.auth.token_ttl, maxTtl=config.auth.token_max_ttl)
        self.apikeys = ApiKeys(self.store, reactor)
        self.htpasswd = Htpasswd(config.auth.users_file, reactor=reactor)
        self.authenticator = Authenticator(self.tokens, self.apikeys, config.auth.enable, config.system.user)
        # -- datastore, rules and executions
        self.keys = KeyService(self.store, reactor, None, config.datastore.encryption_key_path)
        self.executions = ExecutionService(
            self.store, reactor, config.api.public_url, config.api.webui_base_url, maxQueued=config.runner.max_queued,
            keys=self.keys,
        )
        self.index = RuleIndex(self.store, reactor)
        self.policies = PolicyIndex(self.store, reactor, self.keys)
        self.registration = PackRegistration(self.store, self.index, config.packs.paths, self.policies)
        self.engine = RulesEngine(self.store, self.executions, self.index, reactor, systemUser=config.system.user, nodeId=nodeId)
        self.timers = TimerScheduler(self.index, self.engine, reactor)
        self.executor = Executor(
            self.store,
            self.executions,
            LocalRunner(reactor, config.runner.output_max_bytes, kill_grace=config.runner.kill_grace),
            reactor,
            config.runner.max_concurrent,
            config.api.public_url,
            nodeId=nodeId,
            resolveScript=self.registration.scriptPath,
            tokens=ExecutionTokens(self.tokens),
            runners={HTTP_REQUEST: HttpRunner(reactor, TreqClients(reactor), config.runner.output_max_bytes)},
            resultMaxBytes=config.runner.result_max_bytes,
        )
        self.nodes = NodeWatch(self.store, self.executions, reactor, config.runner.node_timeout, nodeId=nodeId)
        self.nodes.addDeadNodeListener(self.engine.takeOver)
        self.nodes.gateClaims(self.executor)
        self.streams = StreamHub(
            self.store, reactor, self.executions, self.index, ringSize=config.stream.buffer_events, heartbeat=config.stream.heartbeat
        )
        # -- HTTP
        self.metrics = Metrics()
        # with authentication off, a JSON content type is required so that a
        # web page cannot post a "simple" cross-site request to the daemon
        self.api = Api(self.authenticator.authenticate, requireJsonContentType=not config.auth.enable)
        self.authApi = Api(self.authenticator.authenticate, requireJsonContentType=not config.auth.enable)
        self.streamApi = Api(self.authenticator.authenticate, requireJsonContentType=not config.auth.enable)
        self._installRoutes()
        # -- the tree, in start-up order
        tokenPurge = TimerService(3600, self._purgeTokens)
        tokenPurge.clock = reactor
        stages: List[tuple] = [
            ("store", StoreService(self.store, config.system.state_dir)),
            ("datastore key", DatastoreKeyFile(self.keys, config.datastore.encryption_key_path)),
            ("registration", self.registration),
            ("rule index", self.index),
            ("webhook policies", self.policies),
            ("rules engine", self.engine),
            ("timers", self.timers),
            ("executor", self.executor),
            ("node watch", self.nodes),
            ("token purge", tokenPurge),
            ("retention", self._retention(config)),
            ("stream", self.streams),
            ("api listener", self._listener(config.api.listen, self.api, webUi=True)),
        ]
        if config.auth.enable:
            stages.append(("auth listener", self._listener(config.auth.listen, self.authApi)))
        if config.stream.listen:
            stages.append(("stream listener", self._listener(config.stream.listen, self.streamApi)))
        announce = "API {}, auth {}, storage {}".format(
            config.api.listen, config.auth.listen if config.auth.enable else "disabled", self.store.name
        )
        stages.append(("readiness", Readiness([self.api, self.authApi, self.streamApi], announce)))
        for name, service in stages:
            service.setName(name)
            service.setServiceParent(self)

    def _installRoutes(self) -> None:
        config = self.config
        installWebhookRoutes(self.api, self.index, self.engine, self.executions, self.store, self.reactor, policies=self.policies)
        installPolicyRoutes(self.api, self.policies)
        installRuleRoutes(self.api, self.store, self.index, clock=self.reactor, keys=self.keys, systemUser=config.system.user)
        installTriggerRoutes(self.api, self.store, self.index, self.engine)
        installTimerRoutes(self.api, self.store, self.index)
        installTokenRoutes(self.api, self.tokens, self.htpasswd, config, paths=("/auth/v1/tokens",))
        installTokenRoutes(self.authApi, self.tokens, self.htpasswd, config, paths=("/auth/v1/tokens", "/v1/tokens", "/tokens"))
        installApiKeyRoutes(self.api, self.apikeys)
        installActionRoutes(self.api, self.store)
        installExecutionRoutes(self.api, self.store, self.executions, self.executor)
        installHealthRoutes(self.api, self.store, self.reactor, self.metrics, lambda: self.executor.runningCount, config.api.metrics)
        installKeyRoutes(self.api, self.keys, systemUser=config.system.user)
        installOpenApiRoutes(self.api)
        installStreamRoutes(self.api, self.streams)
        installStreamRoutes(self.streamApi, self.streams, STREAM_PATHS)

    def _listener(self, description: str, api: Api, webUi: bool = False) -> IService:
        # the web UI's files at / (bwcd/web/), in front of the API's routes
        resource = WebUi(api.resource()) if webUi else api.resource()
        site = BwcdSite(
            resource, self.config.api.max_body_bytes, self.config.api.trusted_proxies,
            onRequestDone=self.metrics.observeRequest, reactor=self.reactor, allowOrigins=self.config.api.allow_origins,
        )
        site.hookBodyLimit = self.policies.bodyLimit
        svc = StreamServerEndpointService(endpoints.serverFromString(self.reactor, description), site)
        svc._raiseSynchronously = True
        return svc

    def _retention(self, config: Config) -> RetentionService:
        r = config.retention
        ttls = {
            "executions": r.executions,
            "execution_output": r.execution_output,
            "trigger_instances": r.trigger_instances,
            "rule_enforcements": r.rule_enforcements,
        }
        return RetentionService(self.store, self.reactor, ttls, interval=r.interval, batchSize=r.batch_size, pause=r.pause)

    def _purgeTokens(self) -> Deferred:
        d = ensureDeferred(self.tokens.purgeExpired())
        d.addErrback(lambda f: log.failure("Purging expired tokens failed", f))
        return d

    # -- lifecycle -------------------------------------------------------

    def privilegedStartService(self) -> None:
        self._privilegedStarted = True
        super().privilegedStartService()

    def startService(self) -> Deferred:  # type: ignore[override]
        if not self._privilegedStarted:
            # Not run by twistd: bind the listeners first all the same.
            self.privilegedStartService()
        if not self.config.auth.enable:
            log.warn("Authentication is disabled (auth.enable: false): every caller acts as {user}", user=self.config.system.user)
        signal.signal(signal.SIGHUP, lambda *_: self.reactor.callFromThread(self.registration.reload))
        d = super().startService()
        d.addErrback(self._startFailed)
        return d

    def stopService(self) -> Deferred:  # type: ignore[override]
        d = super().stopService()
        d.addCallback(lambda _: log.info("bwcd stopped"))
        return d

    def _startFailed(self, failure: Any) -> None:
        log.failure("bwcd could not start", failure)
        self.reactor.addSystemEventTrigger("after", "shutdown", os._exit, 1)
        self.reactor.stop()
