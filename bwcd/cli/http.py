# -*- test-case-name: tests.test_cli_http -*-
"""
The CLI's one way to talk HTTP: treq, the C{--debug} trace and the mapping
of failures to st2's messages.

Every request goes through L{CLIHTTPClient.request} so that C{--debug} can
print, for each call, a C{curl} line that reproduces it exactly (the same
method, headers, body bytes and URL) followed by the raw response, in st2's
framing. Error texts copy what st2client gets from C{requests}:
C{404 Client Error: Not Found\\nMESSAGE: <faultstring> for url: <url>}.
"""

from __future__ import annotations

import json
import shlex
from typing import IO, Any, List, Mapping, Optional, Sequence, Tuple
from urllib.parse import urlsplit

import attrs

from bwcd.cli.errors import CLIError

#: which setting to change when a service cannot be reached
SERVICE_HINTS = {
    "api": 'Set the API URL with --api-url, "url" in the [api] section of the config file, or ST2_API_URL',
    "auth": 'Set the auth URL with --auth-url, "url" in the [auth] section of the config file, or ST2_AUTH_URL',
}

USER_AGENT = "bwc/0.1.0"


@attrs.frozen
class Response:
    """
    A complete answer: status, reason phrase, headers (lower-case names) and
    the body bytes.
    """

    code: int
    phrase: str
    headers: Mapping[str, List[str]]
    body: bytes
    url: str
    method: str

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")

    def json(self) -> Any:
        return json.loads(self.body.decode("utf-8"))

    def header(self, name: str) -> Optional[str]:
        values = self.headers.get(name.lower())
        return values[0] if values else None

    def faultstring(self) -> Optional[str]:
        """
        The C{faultstring} of a JSON error body, if there is one.
        """
        try:
            content = self.json()
        except ValueError:
            return None
        if isinstance(content, dict):
            fault = content.get("faultstring")
            if fault:
                return str(fault)
        return None


def formatHTTPError(code: int, phrase: str, url: str, faultstring: Optional[str]) -> str:
    """
    The text st2client shows for an error status: requests' C{raise_for_status}
    message with the faultstring appended to the reason.
    """
    kind = "Client" if code < 500 else "Server"
    reason = phrase
    if faultstring:
        reason += f"\nMESSAGE: {faultstring}"
    return f"{code} {kind} Error: {reason} for url: {url}"


class HTTPError(CLIError):
    """
    The server answered with a status of 400 or more.
    """

    def __init__(self, response: Response) -> None:
        self.response = response
        super().__init__(formatHTTPError(response.code, response.phrase, response.url, response.faultstring()))


class ConnectionFailed(CLIError):
    """
    No HTTP answer at all: refused, unresolvable, timed out, TLS failure.
    """

    def __init__(self, url: str, reason: str, service: str = "api") -> None:
        hint = SERVICE_HINTS.get(service, SERVICE_HINTS["api"])
        super().__init__(f"Unable to connect to {url} ({reason}). Is bwcd running and reachable there? {hint}.")


def curlLine(method: str, url: str, headers: Sequence[Tuple[str, str]], body: Optional[bytes]) -> str:
    """
    A shell command that repeats the request, in st2's layout: C{-H } and
    the shell-quoted header joined by a space (so two spaces), body as
    C{--data-binary}, HEAD as C{--head}.
    """
    parts = ["curl"]
    if method.upper() == "HEAD":
        parts.append("--head")
    else:
        parts.extend(["-X", shlex.quote(method.upper())])
    for name, value in headers:
        parts.extend(["-H ", shlex.quote(f"{name}: {value}")])
    if body:
        parts.extend(["--data-binary", shlex.quote(body.decode("utf-8", "replace"))])
    parts.append(shlex.quote(url))
    return " ".join(parts)


def debugBlock(clientId: int, curl: str, responseText: str) -> str:
    return (
        f"# -------- begin {clientId} request ----------\n"
        f"{curl}\n"
        f"# -------- begin {clientId} response ----------\n"
        f"{responseText}\n"
        f"# -------- end {clientId} response ------------\n"
        "\n"
    )


def describeFailure(error: BaseException) -> str:
    """
    A short human reason for a failure to get any HTTP response.
    """
    from twisted.internet import error as ierror
    from twisted.internet.defer import CancelledError
    from twisted.web._newclient import ResponseFailed, ResponseNeverReceived

    if isinstance(error, (ResponseNeverReceived, ResponseFailed)):
        reasons = getattr(error, "reasons", None) or []
        for failure in reasons:
            inner = getattr(failure, "value", None)
            if inner is not None and inner is not error:
                return describeFailure(inner)
        return "the connection closed before a response arrived"
    if isinstance(error, ierror.ConnectionRefusedError):
        return "connection refused"
    if isinstance(error, ierror.DNSLookupError):
        return "host name lookup failed"
    if isinstance(error, (ierror.TimeoutError, CancelledError)):
        return "timed out"
    if isinstance(error, ierror.ConnectionLost):
        return "connection lost"
    if isinstance(error, ierror.ConnectError):
        return str(getattr(error, "osError", None) or "") or error.__class__.__name__
    try:
        from OpenSSL import SSL

        if isinstance(error, SSL.Error):
            details = []
            for item in error.args[0] if error.args and isinstance(error.args[0], list) else []:
                if isinstance(item, tuple) and item:
                    details.append(str(item[-1]))
            return "TLS handshake failed: " + (", ".join(details) or str(error))
    except ImportError:  # pragma: no cover
        pass
    try:
        from service_identity.exceptions import VerificationError

        if isinstance(error, VerificationError):
            return f"TLS certificate does not match the host name: {error}"
    except ImportError:  # pragma: no cover
        pass
    return str(error) or error.__class__.__name__


def loadTrustRoot(cacert: str):
    """
    A trust root made of every certificate in the PEM file C{cacert}.
    """
    from twisted.internet.ssl import Certificate, trustRootFromCertificates

    try:
        with open(cacert, "rb") as f:
            data = f.read()
    except OSError as e:
        raise CLIError(f'CA certificate file "{cacert}" cannot be read: {e.strerror}')
    blocks = []
    marker = b"-----END CERTIFICATE-----"
    for chunk in data.split(marker)[:-1]:
        start = chunk.find(b"-----BEGIN CERTIFICATE-----")
        if start >= 0:
            blocks.append(chunk[start:] + marker + b"\n")
    if not blocks:
        raise CLIError(f'CA certificate file "{cacert}" contains no PEM certificate')
    try:
        return trustRootFromCertificates([Certificate.loadPEM(block) for block in blocks])
    except Exception as e:
        raise CLIError(f'CA certificate file "{cacert}" is not valid: {e}')


class CLIHTTPClient:
    """
    treq over one persistent connection pool, for one CLI invocation.

    @ivar out: where C{--debug} blocks are written.
    """

    def __init__(self, reactor, out: IO[str], debug: bool = False, cacert: Optional[str] = None, timeout: float = 60.0, connectTimeout: float = 10.0) -> None:
        from http.cookiejar import CookieJar, DefaultCookiePolicy

        from treq.client import HTTPClient
        from twisted.web.client import Agent, BrowserLikePolicyForHTTPS, HTTPConnectionPool

        self.reactor = reactor
        self.out = out
        self.debug = debug
        self.timeout = timeout
        self._pool = HTTPConnectionPool(reactor, persistent=True)
        policy = BrowserLikePolicyForHTTPS(loadTrustRoot(cacert)) if cacert else BrowserLikePolicyForHTTPS()
        agent = Agent(reactor, contextFactory=policy, connectTimeout=connectTimeout, pool=self._pool)
        # no cookies: every request must be exactly what its curl line shows
        self._treq = HTTPClient(agent, cookiejar=CookieJar(DefaultCookiePolicy(allowed_domains=[])))

    async def request(
        self,
        method: str,
        url: str,
        headers: Sequence[Tuple[str, str]] = (),
        body: Optional[bytes] = None,
        service: str = "api",
    ) -> Response:
        """
        Send one request and read the whole answer; any status is returned
        (callers decide what is an error).

        @raise ConnectionFailed: no response at all.
        """
        from twisted.web.http_headers import Headers

        # treq always asks for gzip; it is listed so the curl line is the request actually sent
        sent = [("User-Agent", USER_AGENT), ("Accept-Encoding", "gzip"), ("Accept", "*/*")] + [(k, v) for k, v in headers]
        twistedHeaders = Headers()
        for name, value in sent:
            twistedHeaders.addRawHeader(name.encode("latin-1"), value.encode("utf-8"))
        scheme = urlsplit(url).scheme
        if scheme not in ("http", "https"):
            raise CLIError(f'Invalid URL "{url}": only http:// and https:// are supported')
        try:
            raw = await self._treq.request(
                method,
                url,
                headers=twistedHeaders,
                data=body,
                allow_redirects=False,
                timeout=self.timeout,
                reactor=self.reactor,
            )
            content = await raw.content()
        except Exception as e:
            raise ConnectionFailed(url, describeFailure(e), service)
        responseHeaders = {k.decode("latin-1").lower(): [v.decode("latin-1") for v in vs] for k, vs in raw.headers.getAllRawHeaders()}
        phrase = raw.phrase.decode("latin-1") if isinstance(raw.phrase, bytes) else str(raw.phrase or "")
        response = Response(code=raw.code, phrase=phrase, headers=responseHeaders, body=content, url=url, method=method.upper())
        if self.debug:
            self.out.write(debugBlock(id(self), curlLine(method, url, sent, body), response.text))
            self.out.flush()
        return response

    async def close(self) -> None:
        await self._pool.closeCachedConnections()
