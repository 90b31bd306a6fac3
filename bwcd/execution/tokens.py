# -*- test-case-name: tests.test_executor -*-
"""
The token an action gets as C{ST2_ACTION_AUTH_TOKEN}: one per execution,
deleted when the execution ends, as StackStorm does.

A token shared between executions (or one that outlives its execution)
would let an action act for its user after it ended, and let one action
use another's credential.
"""

from __future__ import annotations

from typing import Any, Mapping, Optional, Protocol

from twisted.logger import Logger

log = Logger(namespace="bwcd.execution.tokens")

#: seconds a child token outlives the action's timeout
MARGIN = 300

#: the token's life when the action has no timeout
NO_TIMEOUT_TTL = 86400


class TokenIssuer(Protocol):
    """
    What L{ExecutionTokens} needs of L{bwcd.auth.tokens.Tokens}.
    """

    maxTtl: int

    async def issue(self, user: str, ttl: Optional[int] = None, metadata: Optional[Mapping[str, Any]] = None) -> dict: ...

    async def revoke(self, token: str) -> bool: ...


class ChildTokens(Protocol):
    """
    What the executor needs: L{ExecutionTokens}, or a fake.
    """

    async def issue(self, user: str, executionId: str, timeout: Optional[float]) -> str: ...

    async def revoke(self, token: str) -> None: ...


class ExecutionTokens:
    """
    Issues and revokes the child tokens of executions.
    """

    def __init__(self, tokens: TokenIssuer) -> None:
        self._tokens = tokens

    def ttlFor(self, timeout: Optional[float]) -> int:
        """
        A token's life for an action limited to C{timeout} seconds (None or
        0: no limit), within the configured maximum.
        """
        wanted = int(timeout) + MARGIN if timeout else NO_TIMEOUT_TTL + MARGIN
        return max(1, min(wanted, self._tokens.maxTtl))

    async def issue(self, user: str, executionId: str, timeout: Optional[float]) -> str:
        """
        A new token for C{user}, for execution C{executionId} alone.
        """
        doc = await self._tokens.issue(
            user, ttl=self.ttlFor(timeout), metadata={"service": "actions_container", "action_execution_id": executionId}
        )
        return doc["token"]

    async def revoke(self, token: str) -> None:
        """
        Delete the token of an execution that has ended.
        """
        await self._tokens.revoke(token)


__all__ = ["ChildTokens", "ExecutionTokens", "TokenIssuer"]
