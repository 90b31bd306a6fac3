# -*- test-case-name: tests.test_runner_http -*-
"""
The C{core.http} request, built from an execution's parameters as st2's
C{HTTPClient} builds it, and the redirect rules: pure functions (see
L{bwcd.execution.runners.http} for where bwcd differs from st2, on purpose).
"""

from __future__ import annotations

import ast
import base64
import json
import uuid
from typing import Any, List, Mapping, Optional, Sequence, Tuple
from urllib.parse import urlencode, urljoin, urlsplit

from attrs import field, frozen

from bwcd import __version__
from bwcd.execution.runners.result import ABANDONED, CANCELED

#: st2's C{SUCCESS_STATUS_CODES}
SUCCESS_STATUS_CODES = range(200, 207)
#: requests' C{DEFAULT_REDIRECT_LIMIT}
MAX_REDIRECTS = 30
REDIRECT_CODES = frozenset({301, 302, 303, 307, 308})
#: st2 sends C{st2/v<version>}; servers that look for the C{st2/} prefix
#: still find it
USER_AGENT = f"st2/v3.9.0 bwcd/{__version__}"
DEFAULT_TIMEOUT = 60
METHODS = frozenset({"HEAD", "GET", "POST", "PUT", "DELETE", "OPTIONS", "TRACE", "PATCH", "PURGE"})

_KILL_ERRORS = {
    CANCELED: "Action canceled by user.",
    ABANDONED: "bwcd stopped while the action was running",
}


class HttpError(ValueError):
    """
    The request cannot be made or completed (a bad parameter, a refused
    URL, too many redirects); the execution fails with this message.
    """


# -- the request ----------------------------------------------------------


@frozen
class HttpRequest:
    """
    One execution's request, as L{buildRequest} makes it.

    @ivar headers: in order; names unique regardless of case.
    @ivar params: the query parameters added to C{url}, as pairs.
    @ivar timeout: seconds for the whole exchange.
    """

    method: str
    url: str
    headers: Tuple[Tuple[str, str], ...] = field(repr=False)
    body: Optional[bytes] = field(repr=False)
    params: Tuple[Tuple[str, str], ...] = ()
    cookies: Tuple[Tuple[str, str], ...] = field(default=(), repr=False)
    timeout: float = DEFAULT_TIMEOUT
    allowRedirects: bool = False
    verify: bool = True
    httpProxy: Optional[str] = None
    httpsProxy: Optional[str] = None
    hostsBlacklist: Tuple[str, ...] = ()
    hostsWhitelist: Tuple[str, ...] = ()
    #: header names (lower case) that carry credentials, dropped when a
    #: redirect changes host
    credentialHeaders: Tuple[str, ...] = ("authorization",)


def _setHeader(headers: List[Tuple[str, str]], name: str, value: str) -> None:
    lower = name.lower()
    headers[:] = [(k, v) for k, v in headers if k.lower() != lower]
    headers.append((name, value))


def _headerValue(headers: Sequence[Tuple[str, str]], name: str) -> Optional[str]:
    lower = name.lower()
    for k, v in headers:
        if k.lower() == lower:
            return v
    return None


def _text(name: str, value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    raise HttpError(f"{name} must be a string, got {value!r}")


def _pairs(what: str, mapping: Any) -> Tuple[Tuple[str, str], ...]:
    """
    A mapping's items as text pairs: list values repeat the name (query
    parameters), C{None} values are left out, as requests does.
    """
    if mapping is None:
        return ()
    if not isinstance(mapping, Mapping):
        raise HttpError(f"{what} must be an object, got {mapping!r}")
    pairs: List[Tuple[str, str]] = []
    for key, value in mapping.items():
        for item in value if isinstance(value, (list, tuple)) else [value]:
            if item is not None:
                pairs.append((str(key), item if isinstance(item, str) else json.dumps(item) if isinstance(item, (dict, list)) else str(item)))
    return tuple(pairs)


def _jsonBody(body: Any) -> bytes:
    """
    st2's body for a C{Content-Type: application/json} request: a string is
    read as JSON, or else as a Python literal, and the value is sent as
    compact JSON.
    """
    if isinstance(body, (str, bytes)):
        text = body.decode("utf-8") if isinstance(body, bytes) else body
        try:
            value = json.loads(text)
        except ValueError:
            try:
                value = ast.literal_eval(text)
            except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError) as e:
                raise HttpError(f"Request body ({text}) can't be parsed as JSON: {e}") from None
    else:
        value = body
    try:
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode("utf-8")
    except (TypeError, ValueError):
        raise HttpError(f"Request body ({value!r}) can't be parsed as JSON") from None


def _multipart(fieldName: str, content: str, contentType: Optional[str]) -> Tuple[bytes, str]:
    """
    A multipart/form-data body with one file part, as requests builds it
    for C{files={file_name: file_content}}.
    """
    boundary = uuid.uuid4().hex
    quoted = fieldName.replace("\\", "\\\\").replace('"', '\\"')
    head = f'--{boundary}\r\nContent-Disposition: form-data; name="{quoted}"; filename="{quoted}"\r\n'
    if contentType:
        head += f"Content-Type: {contentType}\r\n"
    data = head.encode("utf-8") + b"\r\n" + content.encode("utf-8") + f"\r\n--{boundary}--\r\n".encode("ascii")
    return data, f"multipart/form-data; boundary={boundary}"


def buildRequest(actionName: str, params: Mapping[str, Any]) -> HttpRequest:
    """
    The request an execution of an C{http-request} action makes, from its
    full parameters (runner's and action's).

    @param actionName: the action's name (not its ref), sent as
        C{X-Stanley-Action}.
    @raise HttpError: a parameter cannot be used.
    """
    url = params.get("url")
    if not isinstance(url, str) or not url:
        raise HttpError("URL must be specified.")
    scheme = urlsplit(url).scheme.lower()
    if scheme not in ("http", "https"):
        raise HttpError(f'Invalid URL "{url}": only http:// and https:// URLs are supported')
    blacklist = tuple(params.get("url_hosts_blacklist") or ())
    whitelist = tuple(params.get("url_hosts_whitelist") or ())
    if blacklist and whitelist:
        raise HttpError(
            '"url_hosts_blacklist" and "url_hosts_whitelist" parameters are mutually exclusive. Only one should be provided.'
        )
    headers: List[Tuple[str, str]] = []
    for name, value in (params.get("headers") or {}).items():
        if str(name).lower() != "content-length":  # computed from the bytes sent
            _setHeader(headers, str(name), _text(f"Header {name!r}", value))
    credentials = ["authorization"]
    auth = params.get("auth")
    if auth:
        name, sep, value = str(auth).partition("=")
        if not sep or not name.strip():
            raise HttpError(f"auth must look like 'header-name=value' (for example 'x-auth-token=XYZ'), got {auth!r}")
        _setHeader(headers, name.strip(), value)
        credentials.append(name.strip().lower())
    username, password = params.get("username"), params.get("password")
    if username or password:
        pair = f"{username or ''}:{password or ''}".encode("utf-8")
        _setHeader(headers, "Authorization", "Basic " + base64.b64encode(pair).decode("ascii"))
    _setHeader(headers, "User-Agent", USER_AGENT)
    _setHeader(headers, "X-Stanley-Action", actionName)

    body = params.get("body")
    fileName, fileContent = params.get("file_name"), params.get("file_content")
    data: Optional[bytes] = None
    if fileName and fileContent:
        if body:
            raise HttpError("Data must not be a string.")  # requests' refusal of a body next to files
        data, contentType = _multipart(str(fileName), str(fileContent), params.get("file_content_type"))
        if _headerValue(headers, "Content-Type") is None:
            _setHeader(headers, "Content-Type", contentType)
    elif _headerValue(headers, "Content-Type") == "application/json" and body not in (None, ""):
        data = _jsonBody(body)
    elif isinstance(body, Mapping):
        # requests form-encodes a mapping
        data = urlencode(list(_pairs("body", body))).encode("ascii")
        if _headerValue(headers, "Content-Type") is None:
            _setHeader(headers, "Content-Type", "application/x-www-form-urlencoded")
    elif isinstance(body, str):
        data = body.encode("utf-8") if body else None
    elif body is not None:
        data = json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode("utf-8")

    method = params.get("method")
    if not method:
        method = "POST" if data else "GET"
    method = str(method).upper()

    given = params.get("timeout")
    try:
        timeout = float(DEFAULT_TIMEOUT if given is None else given)
    except (TypeError, ValueError):
        raise HttpError(f"timeout must be a number, got {params.get('timeout')!r}") from None
    if not timeout > 0:
        raise HttpError(f"timeout must be greater than 0, got {params.get('timeout')!r}")

    return HttpRequest(
        method=method,
        url=url,
        headers=tuple(headers),
        body=data,
        params=_pairs("params", params.get("params")),
        cookies=_pairs("cookies", params.get("cookies")),
        timeout=timeout,
        allowRedirects=bool(params.get("allow_redirects", False)),
        verify=params.get("verify_ssl_cert", True) is not False,
        httpProxy=params.get("http_proxy") or None,
        httpsProxy=params.get("https_proxy") or None,
        hostsBlacklist=blacklist,
        hostsWhitelist=whitelist,
        credentialHeaders=tuple(credentials),
    )


def hostOf(url: str) -> str:
    """
    st2's host of a URL for the host lists: the network location without
    brackets and port (userinfo is kept, as st2 keeps it).
    """
    parsed = urlsplit(url)
    host = parsed.netloc.replace("[", "").replace("]", "")
    try:
        port = parsed.port
    except ValueError:
        port = None
    if port is not None:
        host = host.replace(f":{port}", "")
    return host


def checkURL(url: str, request: HttpRequest) -> None:
    """
    Refuse a URL the request may not reach: not C{http}/C{https}, or its
    host excluded by the host lists.

    @raise HttpError: with st2's messages for the host lists.
    """
    if urlsplit(url).scheme.lower() not in ("http", "https"):
        raise HttpError(f'Invalid URL "{url}": only http:// and https:// URLs are supported')
    host = hostOf(url)
    if request.hostsBlacklist and host in request.hostsBlacklist:
        raise HttpError(f'URL "{url}" is blacklisted')
    if request.hostsWhitelist and host not in request.hostsWhitelist:
        raise HttpError(f'URL "{url}" is not whitelisted')


# -- redirects ------------------------------------------------------------


def origin(url: str) -> Tuple[str, Optional[str], int]:
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    try:
        port = parts.port
    except ValueError:
        port = None
    return scheme, parts.hostname, port or (443 if scheme == "https" else 80)


def _stripsAuth(old: str, new: str) -> bool:
    """
    requests' C{should_strip_auth}: credentials go to the same host only;
    an upgrade from http to https on the default ports keeps them.
    """
    a, b = origin(old), origin(new)
    if a[1] != b[1]:
        return True
    if a == ("http", a[1], 80) and b == ("https", b[1], 443):
        return False
    return a != b


def redirected(
    request: HttpRequest, method: str, url: str, headers: Tuple[Tuple[str, str], ...], body: Optional[bytes], code: int, location: str
) -> Tuple[str, str, Tuple[Tuple[str, str], ...], Optional[bytes]]:
    """
    The next hop of a redirect, with requests' rules (see the module
    docstring).

    @raise HttpError: the location is not an C{http} or C{https} URL.
    """
    target = urljoin(url, location)
    if urlsplit(target).scheme.lower() not in ("http", "https"):
        raise HttpError(f'Refused to follow the redirect to "{target}": only http:// and https:// URLs are followed')
    if code in (302, 303) and method != "HEAD":
        method = "GET"
    elif code == 301 and method == "POST":
        method = "GET"
    kept = list(headers)
    if code not in (307, 308):
        body = None
        kept = [(k, v) for k, v in kept if k.lower() not in ("content-type", "transfer-encoding")]
    if _stripsAuth(url, target):
        kept = [(k, v) for k, v in kept if k.lower() not in request.credentialHeaders]
    return method, target, tuple(kept), body
