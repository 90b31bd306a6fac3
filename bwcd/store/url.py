# -*- test-case-name: tests.test_store_contract -*-
"""
The C{storage.url} setting: one string picks the backend and where its data
lives, so that configuration needs no backend-specific sections.

  - C{sqlite:///var/lib/bwcd/bwcd.sqlite}: an absolute path (three slashes);
  - C{sqlite:data/bwcd.sqlite}: a path relative to the working directory;
  - C{mongodb://host:27017/bwcd?journal=true}: MongoDB through txmongo.

Nothing is opened here (that is C{IStore.start}), so this is safe to call from
C{makeService}.
"""

from __future__ import annotations

from typing import Any

from bwcd.store.interface import IStore
from bwcd.store.mongo import MongoStore
from bwcd.store.sqlite import SQLiteStore


def openStore(url: str, reactor: Any) -> IStore:
    """
    The store that C{url} names, not yet started.

    @param reactor: the reactor the store delivers its results on.
    @raise ValueError: for an unknown scheme or a malformed URL; the message
        starts with C{storage.url:} so that it can be shown as is.
    """
    scheme = url.split(":", 1)[0] if ":" in url else url
    if scheme == "sqlite":
        rest = url[len("sqlite:") :]
        if rest.startswith("///"):
            path = rest[2:]
        elif rest.startswith("//"):
            raise ValueError(f"storage.url: {url!r}: an absolute SQLite path needs three slashes (sqlite:///path)")
        else:
            path = rest
        if not path or path == "/" or "?" in path:
            raise ValueError(f"storage.url: {url!r}: expected sqlite:///absolute/path or sqlite:relative/path")
        return SQLiteStore(path, reactor)
    if scheme == "mongodb":
        # MongoStore checks the rest of the URL and raises ValueError.
        return MongoStore(url, reactor)
    raise ValueError(f"storage.url: unknown scheme {scheme!r} (use sqlite:/// or mongodb://)")


__all__ = ["openStore"]
