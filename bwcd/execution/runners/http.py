# -*- test-case-name: tests.test_runner_http -*-
"""
The C{http-request} runner (st2's C{core.http}): one HTTP exchange made in
the daemon's reactor with treq, no child process.

The request is built from the execution's parameters by pure functions
(L{buildRequest}), as st2's C{HTTPClient} builds it: the method defaults to
C{POST} with a body and C{GET} without, C{User-Agent} and
C{X-Stanley-Action} are set over the caller's headers, a body sent as
exactly C{application/json} is re-serialised compactly.  The result is st2's
C{{status_code, body, parsed, headers}}, the body decoded from JSON when the
response says C{application/json}, and the execution succeeds only for
status codes 200 to 206.

Where bwcd differs, it is on purpose:

  - C{timeout} bounds the whole exchange (connecting, redirects, reading the
    body), not each socket read, and ends the execution C{timeout} with
    st2's C{{"error": ...}} result;
  - the body kept is capped at C{runner.output_max_bytes}: the rest is not
    read (the connection is closed), the body stays text and the result
    says C{"body_truncated": true} (absent otherwise, so ordinary results
    are exactly st2's);
  - redirects (with C{allow_redirects}) are followed here rather than by
    the HTTP library, with requests' rules (303 and 302 become C{GET}, 301
    turns C{POST} into C{GET}, C{Authorization} is dropped when the host
    changes, 30 at most), so that a redirect to anything but an C{http} or
    C{https} URL is refused, and the host lists apply to every hop;
  - C{auth} (a string st2 documents as C{x-auth-token=XYZ} but hands to
    requests unchanged, which fails) becomes that header;
  - C{https_proxy} cannot be honoured (Twisted's agents do not tunnel with
    C{CONNECT}): an C{https} request that would use it fails with a clear
    error rather than going direct.  C{http_proxy} works.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, Optional, Protocol as TypingProtocol, Tuple
from urllib.parse import urlsplit

from twisted.internet.defer import Deferred, ensureDeferred
from twisted.internet.endpoints import HostnameEndpoint
from twisted.internet.interfaces import IReactorTime
from twisted.internet.ssl import CertificateOptions
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.client import Agent, BrowserLikePolicyForHTTPS, HTTPConnectionPool, ProxyAgent
from twisted.web.iweb import IAgent, IPolicyForHTTPS
from zope.interface import implementer

from bwcd.execution.runners.interface import OutputCallback, RunResult
from bwcd.execution.runners.result import FAILED, TIMEOUT

from bwcd.execution.runners.httprequest import (
    HttpError,
    HttpRequest,
    MAX_REDIRECTS,
    REDIRECT_CODES,
    _KILL_ERRORS,
    buildRequest,
    checkURL,
    redirected,
)
from bwcd.execution.runners.httpresponse import (
    _CappedBody,
    _errorText,
    buildResult,
    responseHeaders,
    statusFor,
    timeoutText,
)

log = Logger(namespace="bwcd.execution.runners.http")

# -- clients ----------------------------------------------------------------


class IHttpClient(TypingProtocol):
    """
    What the runner uses of treq's C{HTTPClient} (and of
    C{treq.testing.StubTreq}).
    """

    def request(self, method: str, url: str, **kwargs: Any) -> Deferred:
        ...


#: C{clients(verify, httpProxy, httpsProxy)}: a client for one execution
ClientFactory = Callable[[bool, Optional[str], Optional[str]], IHttpClient]


@implementer(IPolicyForHTTPS)
class _NoVerification:
    """
    TLS without certificate verification (C{verify_ssl_cert: false}).
    """

    def creatorForNetloc(self, hostname: bytes, port: int) -> CertificateOptions:
        return CertificateOptions(verify=False)


class HttpsProxyUnsupported(HttpError):
    pass


@implementer(IAgent)
class _ProxyRouting:
    """
    Sends C{http} requests through the HTTP proxy and refuses C{https}
    ones when an HTTPS proxy was asked for (see the module docstring).
    """

    def __init__(self, direct: IAgent, httpProxy: Optional[IAgent], httpsProxy: Optional[str]) -> None:
        self._direct = direct
        self._httpProxy = httpProxy
        self._httpsProxy = httpsProxy

    def request(self, method: bytes, uri: bytes, headers: Any = None, bodyProducer: Any = None) -> Deferred:
        if uri.lower().startswith(b"https:"):
            if self._httpsProxy:
                raise HttpsProxyUnsupported(
                    f"https_proxy ({self._httpsProxy}) is not supported: bwcd cannot tunnel HTTPS through a proxy"
                )
            return self._direct.request(method, uri, headers, bodyProducer)
        agent = self._httpProxy or self._direct
        return agent.request(method, uri, headers, bodyProducer)


class TreqClients:
    """
    The real L{ClientFactory}: treq clients over agents on the reactor.

    Each execution gets its own client, so that cookies never pass from
    one execution to another; connections are not kept alive.
    """

    def __init__(self, reactor: Any) -> None:
        self._reactor = reactor
        self._pool = HTTPConnectionPool(reactor, persistent=False)
        self._agents: Dict[bool, IAgent] = {}

    def _agent(self, verify: bool) -> IAgent:
        agent = self._agents.get(verify)
        if agent is None:
            policy = BrowserLikePolicyForHTTPS() if verify else _NoVerification()
            agent = self._agents[verify] = Agent(self._reactor, contextFactory=policy, pool=self._pool)
        return agent

    def _proxy(self, url: str) -> IAgent:
        parts = urlsplit(url if "://" in url else "http://" + url)
        if not parts.hostname:
            raise HttpError(f"http_proxy must be a URL such as http://10.10.1.10:3128, got {url!r}")
        endpoint = HostnameEndpoint(self._reactor, parts.hostname, parts.port or 80)
        return ProxyAgent(endpoint, self._reactor, pool=self._pool)

    def __call__(self, verify: bool, httpProxy: Optional[str], httpsProxy: Optional[str]) -> IHttpClient:
        from treq.client import HTTPClient

        agent = self._agent(verify)
        if httpProxy or httpsProxy:
            agent = _ProxyRouting(agent, self._proxy(httpProxy) if httpProxy else None, httpsProxy)
        return HTTPClient(agent)


# -- running ----------------------------------------------------------------


class RunningRequest:
    """
    One execution's exchange (an
    L{bwcd.execution.runners.interface.IRunningAction}).
    """

    def __init__(
        self, clock: IReactorTime, request: HttpRequest, client: Callable[[], IHttpClient], cap: int, maxRedirects: int
    ) -> None:
        """
        @param client: makes the client, when the exchange begins (its
            errors, such as an unusable proxy URL, fail the execution).
        """
        self._clock = clock
        self._request = request
        self._client = client
        self._cap = cap
        self._maxRedirects = maxRedirects
        self._url = request.url
        self._endedBy: Optional[str] = None
        self.result: Deferred = Deferred()
        self._timer = clock.callLater(request.timeout, self.kill, TIMEOUT)
        self._task = ensureDeferred(self._exchange())
        self._task.addBoth(self._finished)

    def kill(self, reason: str) -> None:
        if self._endedBy is not None or self.result.called:
            return
        self._endedBy = reason
        self._task.cancel()

    async def _exchange(self) -> Dict[str, Any]:
        request = self._request
        method, url, headers, body = request.method, request.url, request.headers, request.body
        params: Optional[Tuple[Tuple[str, str], ...]] = request.params or None
        cookies: Optional[Dict[str, str]] = dict(request.cookies) or None
        client = self._client()
        for hop in range(self._maxRedirects + 1):
            checkURL(url, request)
            self._url = url
            response = await client.request(
                method, url, headers={k: [v] for k, v in headers}, data=body, params=params, cookies=cookies,
                allow_redirects=False, unbuffered=True,
            )
            # the query parameters and cookies go with the first request;
            # the location of a redirect is a whole URL and the cookie jar
            # carries the cookies
            params, cookies = None, None
            location = response.headers.getRawHeaders(b"location")
            if request.allowRedirects and response.code in REDIRECT_CODES and location:
                here = response.request.absoluteURI.decode("ascii") if response.request is not None else url
                await self._read(response, 0)
                method, url, headers, body = redirected(
                    request, method, here, headers, body, response.code, location[-1].decode("latin-1")
                )
                continue
            collected = await self._read(response, self._cap)
            return buildResult(response.code, responseHeaders(response), collected.data, collected.truncated)
        raise HttpError(f"Exceeded {self._maxRedirects} redirects.")

    async def _read(self, response: Any, cap: int) -> _CappedBody:
        collector = _CappedBody(cap)
        response.deliverBody(collector)
        await collector.done
        return collector

    def _finished(self, outcome: Any) -> None:
        if self._timer.active():
            self._timer.cancel()
        if isinstance(outcome, Failure):
            # a cancelled request may fail with the agent's own wrapper of
            # the cancellation (ResponseNeverReceived): the kill decides
            if self._endedBy is not None:
                if self._endedBy == TIMEOUT:
                    error = timeoutText(self._url, self._request.timeout)
                else:
                    error = _KILL_ERRORS.get(self._endedBy, self._endedBy)
                status, result = self._endedBy, {"error": error}
            else:
                if not outcome.check(HttpError):
                    log.info("Request to {url} failed: {error}", url=self._url, error=_errorText(outcome))
                status = FAILED
                result = {"error": _errorText(outcome), "traceback": repr(outcome.value)}
        else:
            status, result = statusFor(outcome["status_code"]), outcome
        self.result.callback(RunResult(status, result, None, None, self._endedBy, False, False))


class HttpRunner:
    """
    The runner of C{http-request} actions (an
    L{bwcd.execution.runners.interface.IActionRunner}).

    @param clients: makes the treq client of each execution (tests pass
        one returning a C{StubTreq}).
    @param outputMaxBytes: bytes of response body kept.
    """

    def __init__(
        self, clock: IReactorTime, clients: ClientFactory, outputMaxBytes: int, maxRedirects: int = MAX_REDIRECTS
    ) -> None:
        self._clock = clock
        self._clients = clients
        self._cap = outputMaxBytes
        self._maxRedirects = maxRedirects

    async def prepare(self, doc: Dict[str, Any]) -> HttpRequest:
        return buildRequest(doc["action"]["name"], doc.get("_parameters") or {})

    def start(self, doc: Dict[str, Any], prepared: HttpRequest, on_output: Optional[OutputCallback] = None) -> RunningRequest:
        def client() -> IHttpClient:
            return self._clients(prepared.verify, prepared.httpProxy, prepared.httpsProxy)

        return RunningRequest(self._clock, prepared, client, self._cap, self._maxRedirects)

    async def release(self, prepared: HttpRequest) -> None:
        return None


__all__ = ["ClientFactory", "HttpRunner", "IHttpClient", "RunningRequest", "TreqClients"]
