# -*- test-case-name: tests.test_web_ui -*-
"""
The web UI's static files, served at C{/} on the API listener in front of
the API's own resource.

The files are answered by this resource, not by Klein routes: they need no
credentials, no store and no JSON error bodies, and they stay out of the
OpenAPI description (which describes the API, not its pages).  Only the
files shipped in C{bwcd/web/} are ever answered (the list is read once, at
start): a request path is looked up, never joined to a folder, so no path
can reach another file.

Every answer carries a strict Content-Security-Policy (the page's scripts
are its own modules, never inline), C{nosniff} and a C{no-cache} policy, so
an upgraded daemon's files are fetched again.
"""

from __future__ import annotations

import json
import os
from typing import Dict, Optional, Tuple

from twisted.web.resource import IResource, Resource

#: where the UI's files are shipped (package data)
WEB_FOLDER = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "web")

#: the prefix the UI's assets are served under (C{/} serves index.html)
ASSET_PREFIX = b"/webui/"

CONTENT_TYPES: Dict[str, bytes] = {
    ".html": b"text/html; charset=utf-8",
    ".js": b"text/javascript; charset=utf-8",
    ".css": b"text/css; charset=utf-8",
    ".png": b"image/png",
    ".svg": b"image/svg+xml",
    ".ico": b"image/x-icon",
    ".txt": b"text/plain; charset=utf-8",
    ".json": b"application/json",
}

#: scripts, styles and connections from this origin only; nothing inline,
#: no frames, no plugins, forms posting nowhere else
CONTENT_SECURITY_POLICY = (
    b"default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    b"connect-src 'self'; font-src 'self'; manifest-src 'self'; base-uri 'none'; "
    b"form-action 'self'; frame-ancestors 'none'; object-src 'none'"
)

SECURITY_HEADERS: Tuple[Tuple[bytes, bytes], ...] = (
    (b"Content-Security-Policy", CONTENT_SECURITY_POLICY),
    (b"X-Content-Type-Options", b"nosniff"),
    (b"X-Frame-Options", b"DENY"),
    (b"Referrer-Policy", b"no-referrer"),
    (b"Cache-Control", b"no-cache"),
)

#: where the page finds the API: on the API listener itself, or behind
#: nginx with StackStorm's layout (etc/nginx/bwcd.conf)
DIRECT_LAYOUT = {"api": "/v1", "auth": "/auth/v1/tokens", "stream": "/v1/stream"}
PROXIED_LAYOUT = {"api": "/api/v1", "auth": "/auth/v1/tokens", "stream": "/stream/v1/stream"}


def loadFiles(folder: str = WEB_FOLDER) -> Dict[bytes, Tuple[bytes, bytes]]:
    """
    The UI's files by request path: C{/} for C{index.html}, C{/webui/<path>}
    for every other file under C{folder}, each as (content type, bytes).
    Files of a type not in L{CONTENT_TYPES} are not served.
    """
    files: Dict[bytes, Tuple[bytes, bytes]] = {}
    for root, _dirs, names in os.walk(folder):
        for name in names:
            contentType = CONTENT_TYPES.get(os.path.splitext(name)[1].lower())
            if contentType is None:
                continue
            path = os.path.join(root, name)
            relative = os.path.relpath(path, folder).replace(os.sep, "/")
            with open(path, "rb") as f:
                data = f.read()
            files[ASSET_PREFIX + relative.encode("utf-8")] = (contentType, data)
            if relative == "index.html":
                files[b"/"] = (contentType, data)
    return files


def isProxied(request) -> bool:
    """
    Whether the request came through a trusted proxy (the local nginx): the
    peer is one of the site's C{trustedProxies} and says whom it forwards.
    """
    peer = getattr(request.getClientAddress(), "host", "") or ""
    trusted = getattr(getattr(request, "site", None), "trustedProxies", frozenset())
    return peer in trusted and request.getHeader(b"x-forwarded-for") is not None


class WebUi(Resource):
    """
    The UI's files for C{GET}/C{HEAD} of their paths; every other request
    goes to C{api}, the API's resource, untouched.
    """

    isLeaf = True

    def __init__(self, api: IResource, files: Optional[Dict[bytes, Tuple[bytes, bytes]]] = None) -> None:
        super().__init__()
        self._api = api
        self._files = loadFiles() if files is None else files

    def render(self, request):
        if request.method in (b"GET", b"HEAD"):
            if request.path == ASSET_PREFIX + b"config.json":
                layout = PROXIED_LAYOUT if isProxied(request) else DIRECT_LAYOUT
                return self._answer(request, b"application/json", json.dumps(layout).encode("utf-8"))
            found = self._files.get(request.path)
            if found is not None:
                return self._answer(request, *found)
        return self._api.render(request)

    @staticmethod
    def _answer(request, contentType: bytes, data: bytes) -> bytes:
        request.setResponseCode(200)
        request.setHeader(b"Content-Type", contentType)
        for name, value in SECURITY_HEADERS:
            request.setHeader(name, value)
        request.setHeader(b"Content-Length", str(len(data)).encode("ascii"))
        return b"" if request.method == b"HEAD" else data


__all__ = ["ASSET_PREFIX", "CONTENT_SECURITY_POLICY", "DIRECT_LAYOUT", "PROXIED_LAYOUT", "WEB_FOLDER", "WebUi", "isProxied", "loadFiles"]
