# -*- test-case-name: tests.test_webhooks_e2e -*-
"""
Receiving webhooks and running rules: the pieces (body and header parsing
here, L{bwcd.rules}, L{bwcd.rules.triggers}, the API routes) and
L{RulesExtension}, which assembles them for the daemon.

Imports happen inside L{RulesExtension} so that importing
C{bwcd.webhooks.body} stays cheap and free of cycles.
"""

from __future__ import annotations

from typing import Any, Iterable


class RulesExtension:
    """
    Webhooks, triggers and the rules engine as one part of the daemon, with
    the C{register(packs)}, C{start()} and C{stop()} steps
    L{bwcd.service.BwcdService} runs for its extensions.

    Built with the service (it adds its routes to C{api} at once); the
    service then calls, in order:

      - C{await register(packs)} after the actions are registered, at start
        and on SIGHUP: built-in trigger types, pack trigger types and rules;
      - C{await start()} once the store is open: loads the rule index, polls
        it for other processes' changes, starts the engine and processes
        trigger instances an earlier run left unprocessed (in the
        background);
      - C{await stop()} at shutdown: instances still queued stay stored as
        C{pending} and are processed at the next start.

    @ivar index: the L{bwcd.rules.index.RuleIndex}.
    @ivar engine: the L{bwcd.rules.engine.RulesEngine}.
    """

    def __init__(
        self,
        store: Any,
        executions: Any,
        clock: Any,
        api: Any,
        systemUser: str = "stanley",
        maxQueued: int = 10000,
        pollInterval: float = 1.0,
        emitActionTriggers: bool = True,
    ) -> None:
        from bwcd.api.rule_routes import installRuleRoutes
        from bwcd.api.trigger_routes import installTriggerRoutes
        from bwcd.api.webhook_routes import installWebhookRoutes
        from bwcd.rules.engine import RulesEngine
        from bwcd.rules.index import RuleIndex

        self._store = store
        self.index = RuleIndex(store, clock, pollInterval=pollInterval)
        self.engine = RulesEngine(
            store, executions, self.index, clock, systemUser=systemUser, maxQueued=maxQueued, emitActionTriggers=emitActionTriggers
        )
        installWebhookRoutes(api, self.index, self.engine, executions, store, clock)
        installRuleRoutes(api, store, self.index)
        installTriggerRoutes(api, store, self.index, self.engine)

    async def register(self, packs: Iterable[Any]) -> None:
        from bwcd.packs.rules import registerPackContent
        from bwcd.rules.triggers import ensureSystemTriggerTypes

        await ensureSystemTriggerTypes(self._store)
        await registerPackContent(self._store, self.index, packs)

    async def start(self) -> None:
        await self.index.reload()
        self.index.start()
        self.engine.start(recover=True)

    async def stop(self) -> None:
        self.index.stop()
        await self.engine.stop()


__all__ = ["RulesExtension"]
