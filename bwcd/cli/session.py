# -*- test-case-name: tests.test_cli_session -*-
"""
One CLI invocation's view of the daemon: resolved settings, credentials
and the calls commands make.

Commands never build URLs or headers themselves: they ask for
C{session.api("GET", "/rules/x")} and get a L{Response} or an L{HTTPError},
so credentials, C{--debug} and error texts are the same everywhere.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import sys
import time
from typing import IO, Any, Callable, List, Mapping, Optional, Tuple
from urllib.parse import quote, urlencode

from bwcd.cli.config import (
    Settings,
    cachedTokenPath,
    expiryToTimestamp,
    readCachedToken,
    writeCachedToken,
)
from bwcd.cli.errors import CLIError
from bwcd.cli.http import CLIHTTPClient, HTTPError, Response, formatHTTPError


class LoginFailed(CLIError):
    """
    The auth service refused the credentials, reported on one line.
    """

    def __init__(self, username: str, fault: str, detail: str) -> None:
        self.fault = fault
        self.detail = detail
        super().__init__(f"Failed to log in as {username}: {fault} ({detail})")


def basicAuthorization(username: str, password: str) -> str:
    raw = f"{username}:{password}".encode("utf-8")
    return "Basic " + base64.b64encode(raw).decode("ascii")


def quotePath(segment: str) -> str:
    """
    A ref, id or webhook url as one path segment (C{/} kept for webhook urls).
    """
    return quote(segment, safe="/:@!$&'()*+,;=-._~")


class Session:
    """
    @ivar token: the auth token in use (from a flag, the environment, the
        cache or an automatic login), or None.
    """

    def __init__(
        self,
        reactor,
        settings: Settings,
        http: CLIHTTPClient,
        out: IO[str],
        err: IO[str],
        clock: Callable[[], float] = time.time,
        color: bool = False,
        prog: str = "bwc",
    ) -> None:
        self.reactor = reactor
        self.prog = prog
        self.settings = settings
        self.http = http
        self.out = out
        self.err = err
        self.clock = clock
        self.color = color
        self.token: Optional[str] = settings.token

    # -- output ------------------------------------------------------------

    def write(self, text: str = "") -> None:
        self.out.write(text + "\n")
        self.out.flush()

    def warn(self, text: str) -> None:
        self.err.write(text + "\n")
        self.err.flush()

    def debug(self, text: str) -> None:
        if self.settings.debug:
            self.write(text)

    async def sleep(self, seconds: float) -> None:
        from twisted.internet.task import deferLater

        await deferLater(self.reactor, seconds, lambda: None)

    # -- credentials -------------------------------------------------------

    def credentialHeaders(self) -> List[Tuple[str, str]]:
        headers = []
        apiKey = self.settings.apiKey
        if self.token:
            headers.append(("X-Auth-Token", self.token))
        if apiKey:
            headers.append(("St2-Api-Key", apiKey))
        if self.settings.basicAuth and not self.token and not apiKey:
            user, _, password = self.settings.basicAuth.partition(":")
            headers.append(("Authorization", basicAuthorization(user, password)))
        return headers

    async def createToken(self, username: str, password: str, ttl: Optional[int] = None) -> Mapping[str, Any]:
        """
        C{POST <auth>/tokens} with Basic credentials; the token document.

        @raise LoginFailed: the credentials were refused (one-line message).
        """
        body = json.dumps({"ttl": ttl} if ttl else {}).encode("utf-8")
        url = self.settings.authURL + "/tokens"
        headers = [("content-type", "application/json"), ("Authorization", basicAuthorization(username, password))]
        response = await self.http.request("POST", url, headers, body, service="auth")
        if response.code >= 400:
            fault = response.faultstring() or response.phrase
            raise LoginFailed(username, fault, formatHTTPError(response.code, response.phrase, url, None))
        try:
            doc = response.json()
            doc["token"], doc["expiry"]
        except (ValueError, KeyError, TypeError):
            raise CLIError(f"The auth service at {url} answered {response.code} without a token document")
        return doc

    def cacheToken(self, doc: Mapping[str, Any]) -> None:
        """
        Store a token document in the cache; a failure is only a warning
        (the token is still used for this run).
        """
        try:
            expire = expiryToTimestamp(str(doc["expiry"]))
        except ValueError:
            self.warn(f'Warning: token expiry "{doc.get("expiry")}" is not a timestamp; the token was not cached')
            return
        try:
            path = writeCachedToken(self.settings.configDir, str(doc["user"]), str(doc["token"]), expire)
        except OSError as e:
            self.warn(f"Warning: unable to cache the token in {self.settings.configDir}: {e.strerror}")
            return
        self.debug(f'Token has been cached in "{path}"')

    async def authenticate(self) -> None:
        """
        st2's automatic login: unless a token or API key was given, use the
        cached token of C{[credentials] username}, or log in with the
        configured password and cache the new token.
        """
        settings = self.settings
        if settings.credentialsGiven or settings.skipConfig or not settings.username:
            return
        username = settings.username
        if settings.cacheToken:
            path = cachedTokenPath(settings.configDir, username)
            cached = readCachedToken(path, now=self.clock())
            if cached is not None:
                if cached.permissiveMode:
                    self.warn(
                        f'Warning: permissions ({cached.permissiveMode}) for cached token file "{path}" are too permissive. '
                        "Please restrict the permissions and make sure only your own user can read from the file"
                    )
                self.debug(f'Using cached token from file "{path}"')
                self.token = cached.token
                return
        if not settings.password:
            raise CLIError(
                f'No valid cached token for user "{username}" and no password in {settings.configPath}; run "{self.prog} login {username}" again'
            )
        # An unreachable auth service is reported as the error (st2 only warns
        # and then fails with a puzzling 401 from the API).
        try:
            doc = await self.createToken(username, settings.password)
        except LoginFailed as e:
            raise CLIError(f"Failed to authenticate as {username} with the credentials in {settings.configPath}: {e.fault} ({e.detail})")
        if settings.cacheToken:
            self.cacheToken(doc)
        self.token = str(doc["token"])

    # -- API calls ---------------------------------------------------------

    def apiURL(self, path: str, params: Optional[Mapping[str, Any]] = None) -> str:
        url = self.settings.apiURL + path
        if params:
            clean = {k: v for k, v in params.items() if v is not None}
            if clean:
                url += ("&" if "?" in url else "?") + urlencode(clean)
        return url

    async def api(
        self,
        method: str,
        path: str,
        data: Any = None,
        params: Optional[Mapping[str, Any]] = None,
        allow: Tuple[int, ...] = (),
    ) -> Response:
        """
        One API call with credentials; a status of 400 or more raises
        L{HTTPError} unless listed in C{allow}.
        """
        url = self.apiURL(path, params)
        headers = self.credentialHeaders()
        body = None
        if method.upper() in ("POST", "PUT", "PATCH"):
            headers.append(("content-type", "application/json"))
            body = json.dumps(data if data is not None else {}).encode("utf-8")
        response = await self.http.request(method, url, headers, body, service="api")
        if response.code >= 400 and response.code not in allow:
            raise HTTPError(response)
        return response

    async def getJSON(self, path: str, params: Optional[Mapping[str, Any]] = None) -> Any:
        response = await self.api("GET", path, params=params)
        return decodeJSON(response)

    async def getOrNone(self, path: str) -> Optional[Any]:
        """
        The document at C{path}, or None when the API says 404 (how st2's
        managers look resources up).
        """
        response = await self.api("GET", path, allow=(404,))
        if response.code == 404:
            return None
        return decodeJSON(response)

    async def sendJSON(self, method: str, path: str, data: Any) -> Any:
        response = await self.api(method, path, data=data)
        if not response.body:
            return None
        return decodeJSON(response)


def decodeJSON(response: Response) -> Any:
    try:
        return response.json()
    except ValueError:
        raise CLIError(f"The server answered {response.code} with a body that is not JSON for url: {response.url}")


#: st2's width when none can be found (output piped, no COLUMNS)
DEFAULT_TERMINAL_COLUMNS = 150


def terminalWidth() -> int:
    """
    C{COLUMNS}, else the width of the terminal on stdout, stderr or stdin
    (so C{bwc rule list | less} still fits), else st2's default of 150.
    """
    size = shutil.get_terminal_size((0, 0)).columns
    if size > 0:
        return size
    for fd in (2, 0):
        try:
            return os.get_terminal_size(fd).columns
        except OSError:
            continue
    return DEFAULT_TERMINAL_COLUMNS


def stdoutIsColorTerminal(stream: IO[str] = sys.stdout) -> bool:
    if os.environ.get("ST2_COLORIZE") or os.environ.get("NO_COLOR"):
        return False
    term = os.environ.get("TERM", "")
    return bool(getattr(stream, "isatty", lambda: False)()) and term.lower() in (
        "xterm",
        "xterm-color",
        "screen",
        "vt100",
        "vt100-color",
        "xterm-256color",
    )
