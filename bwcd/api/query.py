# -*- test-case-name: tests.test_query,tests.test_api_basics -*-
"""
Query-string handling shared by the list routes: StackStorm's limit/offset
rules and messages, and reading single query values.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, Mapping, Optional, Tuple

from bwcd.api.framework import ApiError, Reply
from bwcd.store.interface import IStore, Sort


def arg(request, name: str) -> Optional[str]:
    """
    The first value of query parameter C{name}, decoded, or None.
    """
    values = request.args.get(name.encode("utf-8"))
    if not values:
        return None
    return values[0].decode("utf-8", "replace")


def intArg(request, name: str) -> Optional[int]:
    value = arg(request, name)
    if value is None or value == "":
        return None
    try:
        return int(value)
    except ValueError:
        raise ApiError(400, f'Parameter "{name}" is not of type integer')


def boolArg(request, name: str) -> Optional[bool]:
    value = arg(request, name)
    if value is None or value == "":
        return None
    lowered = value.lower()
    if lowered in ("true", "1", "yes", "y"):
        return True
    if lowered in ("false", "0", "no", "n"):
        return False
    raise ApiError(400, f'Parameter "{name}" is not of type boolean')


MAX_PAGE_SIZE = 100
"""
st2's C{[api] max_page_size}: the largest C{limit} a caller who is not an
admin may ask for.
"""


def callerIsAdmin(principal: Any) -> bool:
    """
    Whether the caller is an admin in st2's sense without RBAC: with
    authentication off (no principal) everyone is; otherwise the
    credential says (C{Principal.admin}; full-access credentials are, a
    scoped key will not be).
    """
    return principal is None or bool(getattr(principal, "admin", True))


def checkLimit(limit: Optional[int], isAdmin: bool, maxPage: int = MAX_PAGE_SIZE) -> Optional[int]:
    """
    st2's rule for a requested C{limit} (C{None}: not given), as
    C{validate_limit_query_param} applies it: C{-1} (everything) and more
    than C{maxPage} are for admins only (403); C{0} and below C{-1} are
    malformed (400).

    @param isAdmin: what st2 without RBAC means by an admin: a caller with
        a full-access credential (a password token or an unscoped API key).
    @return: the limit to use, C{None} for everything or for not given.
    """
    if limit is None:
        return None
    if limit == -1:
        if not isAdmin:
            raise ApiError(403, "Administrator access required to be able to specify limit=-1 and retrieve all the records")
        return None
    if limit <= -2:
        raise ApiError(400, f'Limit, "{limit}" specified, must be a positive number.')
    if limit == 0:
        raise ApiError(400, 'Limit, "0" specified, must be a positive number or -1 for full result set.')
    if limit > maxPage and not isAdmin:
        raise ApiError(403, f'Limit "{limit}" specified, maximum value is "{maxPage}"')
    return limit


def paging(
    request, defaultLimit: Optional[int] = 100, maxPage: int = MAX_PAGE_SIZE, isAdmin: bool = True
) -> Tuple[Optional[int], int]:
    """
    C{(limit, offset)} with st2's validation (L{checkLimit}); a limit of
    C{None} means everything.  C{isAdmin} defaults to true because every
    credential bwcd issues today is full-access; routes pass the caller's.
    """
    requested = intArg(request, "limit")
    offset = intArg(request, "offset") or 0
    limit = defaultLimit if requested is None else checkLimit(requested, isAdmin, maxPage)
    if offset < 0:
        raise ApiError(400, f'Offset "{offset}" specified must be a positive number.')
    if offset >= 2 ** 31:
        raise ApiError(400, f'Offset "{offset}" specified is more than 32-bit int')
    return limit, offset


def listHeaders(total: int, limit: Optional[int]) -> dict:
    headers = {"X-Total-Count": str(total)}
    if limit is not None:
        headers["X-Limit"] = str(limit)
    return headers


def filtersFrom(request, names: Mapping[str, str]) -> Dict[str, Any]:
    """
    Equality filters from query parameters: C{names} maps each accepted
    query name to the document path it filters on.
    """
    filters: Dict[str, Any] = {}
    for name, path in names.items():
        value = arg(request, name)
        if value is not None:
            filters[path] = value
    return filters


async def listPage(
    store: IStore,
    collection: str,
    filters: Dict[str, Any],
    sort: Sort,
    request,
    principal: Any,
    defaultLimit: Optional[int],
    present: Callable[[dict], Any] = lambda doc: doc,
) -> Reply:
    """
    One page of a list route, with st2's paging rules (L{paging}: the
    caller decides whether C{limit} may exceed the page size) and its
    C{X-Total-Count}/C{X-Limit} headers.
    """
    limit, offset = paging(request, defaultLimit=defaultLimit, isAdmin=callerIsAdmin(principal))
    total = await store.count(collection, filters)
    docs = await store.find(collection, filters, sort=sort, limit=limit, offset=offset)
    return Reply([present(d) for d in docs], 200, listHeaders(total, limit))
