# -*- test-case-name: tests.test_api_basics -*-
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


def paging(request, defaultLimit: Optional[int] = 100, maxPage: int = 100) -> Tuple[Optional[int], int]:
    """
    C{(limit, offset)} with st2's validation; a limit of -1 means everything
    (allowed: bwcd has no RBAC, so every caller is an admin).
    """
    limit = intArg(request, "limit")
    offset = intArg(request, "offset") or 0
    if limit is None:
        limit = defaultLimit
    elif limit == 0:
        raise ApiError(400, 'Limit, "0" specified, must be a positive number or -1 for full result set.')
    elif limit == -1:
        limit = None
    elif limit < -1:
        raise ApiError(400, f'Limit, "{limit}" specified, must be a positive number.')
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
    defaultLimit: Optional[int],
    present: Callable[[dict], Any] = lambda doc: doc,
) -> Reply:
    """
    One page of a list route, with st2's paging rules and its
    C{X-Total-Count}/C{X-Limit} headers.
    """
    limit, offset = paging(request, defaultLimit=defaultLimit)
    total = await store.count(collection, filters)
    docs = await store.find(collection, filters, sort=sort, limit=limit, offset=offset)
    return Reply([present(d) for d in docs], 200, listHeaders(total, limit))
