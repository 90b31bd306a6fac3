# -*- test-case-name: tests.test_auth -*-
"""
Who is calling, as the credential check found it.

It lives with authentication, not with the HTTP layer, because the domain
decides with it (whose name an execution runs under, who may act for whom)
and must not import the API to do so.
"""

from __future__ import annotations

from typing import Optional

import attrs


@attrs.frozen
class Principal:
    """
    The caller: the user name and how they proved it.

    @ivar method: C{"token"}, C{"apikey"} or C{"none"} (auth disabled).
    @ivar admin: what st2 without RBAC means by an admin: a full-access
        credential (a password token or an unscoped API key), which may
        name another C{user} for an execution.  Every credential bwcd
        issues today is full-access; scoped keys will not be.
    """

    user: str
    method: str
    credentialId: Optional[str] = None
    admin: bool = True


__all__ = ["Principal"]
