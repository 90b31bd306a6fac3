"""
Tests for L{bwcd.cli.http}: the --debug curl lines, st2's error texts, and
real HTTP and HTTPS requests through treq against a local server.
"""

from __future__ import annotations

import datetime
import io
import json
import shlex

from twisted.internet import reactor
from twisted.internet.ssl import PrivateCertificate
from twisted.internet.utils import getProcessOutputAndValue
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web.resource import Resource
from twisted.web.server import Site

from bwcd.cli.http import CLIHTTPClient, ConnectionFailed, HTTPError, Response, curlLine, debugBlock, formatHTTPError


class CurlLineTests(SynchronousTestCase):
    def test_layout(self) -> None:
        """
        st2's layout: -X METHOD, '-H ' plus the quoted header (two spaces), body, quoted URL.
        """
        line = curlLine("post", "http://h:1/v1/executions", [("X-Auth-Token", "abc"), ("content-type", "application/json")], b'{"a": 1}')
        self.assertEqual(
            line,
            "curl -X POST -H  'X-Auth-Token: abc' -H  'content-type: application/json' --data-binary '{\"a\": 1}' http://h:1/v1/executions",
        )

    def test_quotingRoundTrips(self) -> None:
        """
        Quotes, spaces, '$' and '&' survive shell word splitting exactly.
        """
        body = b"""{"cmd": "echo 'it''s' \\"$HOME\\" && date"}"""
        url = "http://h/v1/runnertypes/?name=local-shell-cmd&x=$y"
        line = curlLine("POST", url, [("X-Header", "a 'b' \"c\"")], body)
        words = shlex.split(line)
        self.assertEqual(words, ["curl", "-X", "POST", "-H", "X-Header: a 'b' \"c\"", "--data-binary", body.decode(), url])

    def test_head(self) -> None:
        """
        HEAD uses --head; no body means no --data-binary.
        """
        self.assertEqual(curlLine("HEAD", "http://h/", [], None), "curl --head http://h/")

    def test_debugBlock(self) -> None:
        """
        The request/response framing of st2's --debug.
        """
        self.assertEqual(
            debugBlock(7, "curl x", "{}"),
            "# -------- begin 7 request ----------\ncurl x\n# -------- begin 7 response ----------\n{}\n# -------- end 7 response ------------\n\n",
        )


class ErrorTextTests(SynchronousTestCase):
    def test_clientError(self) -> None:
        """
        4xx: 'Client Error', the faultstring on a MESSAGE line, then the URL.
        """
        self.assertEqual(
            formatHTTPError(404, "Not Found", "http://h/v1/rules/x", "Rule not found"),
            "404 Client Error: Not Found\nMESSAGE: Rule not found for url: http://h/v1/rules/x",
        )

    def test_serverErrorWithoutFault(self) -> None:
        """
        5xx says 'Server Error'; no faultstring means no MESSAGE line.
        """
        self.assertEqual(formatHTTPError(500, "Internal Server Error", "http://h/", None), "500 Server Error: Internal Server Error for url: http://h/")

    def test_httpErrorReadsBody(self) -> None:
        """
        The faultstring comes from the JSON error body.
        """
        response = Response(401, "Unauthorized", {}, b'{"faultstring": "Unauthorized - Token has expired."}', "http://h/v1/x", "GET")
        error = HTTPError(response)
        self.assertEqual(str(error), "401 Client Error: Unauthorized\nMESSAGE: Unauthorized - Token has expired. for url: http://h/v1/x")
        self.assertEqual(error.exitCode, 1)
        notJSON = HTTPError(Response(502, "Bad Gateway", {}, b"<html>", "http://h/", "GET"))
        self.assertEqual(str(notJSON), "502 Server Error: Bad Gateway for url: http://h/")


class Echo(Resource):
    """
    Answers every request with what it received, as JSON; C{/fail} answers 409.
    """

    isLeaf = True

    def render(self, request):
        body = request.content.read()
        if request.path == b"/fail":
            request.setResponseCode(409)
            request.setHeader(b"content-type", b"application/json")
            return json.dumps({"faultstring": "Tried to save duplicate unique keys", "conflict-id": "1"}).encode()
        request.setHeader(b"content-type", b"application/json")
        request.setHeader(b"x-total-count", b"3")
        request.addCookie(b"auth-token", b"from-server", path=b"/")
        headers = {k.decode().lower(): v[0].decode() for k, v in request.requestHeaders.getAllRawHeaders()}
        return json.dumps({"method": request.method.decode(), "uri": request.uri.decode(), "headers": headers, "body": body.decode()}, sort_keys=True).encode()


class ClientTests(TestCase):
    def setUp(self):
        self.port = reactor.listenTCP(0, Site(Echo()), interface="127.0.0.1")
        self.addCleanup(self.port.stopListening)
        self.base = f"http://127.0.0.1:{self.port.getHost().port}"
        self.out = io.StringIO()
        self.client = CLIHTTPClient(reactor, self.out, debug=True)
        self.addCleanup(self.client.close)

    async def test_request(self) -> None:
        """
        Method, headers, body and query reach the server; the answer is read whole.
        """
        response = await self.client.request("PUT", self.base + "/v1/rules/x?a=1", [("X-Auth-Token", "t")], b'{"k": "v"}')
        self.assertEqual(response.code, 200)
        self.assertEqual(response.header("X-Total-Count"), "3")
        echoed = response.json()
        self.assertEqual((echoed["method"], echoed["uri"], echoed["body"]), ("PUT", "/v1/rules/x?a=1", '{"k": "v"}'))
        self.assertEqual(echoed["headers"]["x-auth-token"], "t")
        self.assertEqual(echoed["headers"]["user-agent"][:4], "bwc/")

    async def test_errorStatusReturned(self) -> None:
        """
        Error statuses are returned to the caller with the body and reason.
        """
        response = await self.client.request("POST", self.base + "/fail", [], b"{}")
        self.assertEqual((response.code, response.phrase, response.faultstring()), (409, "Conflict", "Tried to save duplicate unique keys"))

    async def test_debugCurlReproduces(self) -> None:
        """
        The printed curl line, run by a shell, gets the same response.
        """
        body = json.dumps({"cmd": "echo 'quoted' \"$HOME\" && true"}).encode()
        response = await self.client.request("POST", self.base + "/v1/executions?x=a&y=$b", [("X-Auth-Token", "tok"), ("content-type", "application/json")], body)
        lines = self.out.getvalue().splitlines()
        begin = [i for i, l in enumerate(lines) if l.startswith("# -------- begin ") and l.endswith(" request ----------")]
        self.assertEqual(len(begin), 1)
        curl = lines[begin[0] + 1]
        self.assertTrue(curl.startswith("curl -X POST -H  'User-Agent: bwc/"), curl)
        self.assertEqual(lines[begin[0] + 3], response.text)
        self.assertTrue(lines[begin[0] + 4].startswith("# -------- end "))
        stdout, stderr, code = await getProcessOutputAndValue("/bin/sh", ["-c", curl + " --silent"])
        self.assertEqual(code, 0, stderr)
        self.assertEqual(json.loads(stdout), response.json())

    async def test_cookiesNotReplayed(self) -> None:
        """
        A cookie set by the server (st2 sets auth-token) is not sent back, so
        each request is exactly its curl line.
        """
        await self.client.request("GET", self.base + "/a", [])
        second = await self.client.request("GET", self.base + "/b", [])
        self.assertNotIn("cookie", second.json()["headers"])

    async def test_noDebugNoOutput(self) -> None:
        """
        Without --debug nothing is printed.
        """
        quiet = CLIHTTPClient(reactor, self.out, debug=False)
        self.addCleanup(quiet.close)
        await quiet.request("GET", self.base + "/", [])
        self.assertEqual(self.out.getvalue(), "")

    async def test_connectionRefused(self) -> None:
        """
        A closed port is one message naming the URL and the setting to change.
        """
        port = reactor.listenTCP(0, Site(Echo()), interface="127.0.0.1")
        number = port.getHost().port
        await port.stopListening()
        url = f"http://127.0.0.1:{number}/v1/actions/core.local"
        with self.assertRaises(ConnectionFailed) as caught:
            await self.client.request("GET", url, [])
        message = str(caught.exception)
        self.assertIn(f"Unable to connect to {url} (connection refused)", message)
        self.assertIn("--api-url", message)
        self.assertNotIn("\n", message)
        with self.assertRaises(ConnectionFailed) as caught:
            await self.client.request("POST", f"http://127.0.0.1:{number}/tokens", [], b"{}", service="auth")
        self.assertIn("--auth-url", str(caught.exception))

    async def test_badScheme(self) -> None:
        """
        Only http and https URLs are accepted.
        """
        from bwcd.cli.errors import CLIError

        with self.assertRaises(CLIError) as caught:
            await self.client.request("GET", "ftp://h/v1", [])
        self.assertIn("only http:// and https://", str(caught.exception))


def selfSignedPEM(hostname: str) -> bytes:
    """
    A fresh key and a self-signed certificate for C{hostname}, as PEM.
    """
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostname)])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(hostname)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    keyPEM = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    return cert.public_bytes(serialization.Encoding.PEM) + keyPEM


class TLSTests(TestCase):
    def setUp(self):
        pem = selfSignedPEM("localhost")
        certificate = PrivateCertificate.loadPEM(pem)
        self.port = reactor.listenSSL(0, Site(Echo()), certificate.options(), interface="127.0.0.1")
        self.addCleanup(self.port.stopListening)
        self.number = self.port.getHost().port
        self.cacert = self.mktemp()
        with open(self.cacert, "wb") as f:
            f.write(pem.split(b"-----END CERTIFICATE-----")[0] + b"-----END CERTIFICATE-----\n")

    async def request(self, url: str, cacert=None) -> Response:
        client = CLIHTTPClient(reactor, io.StringIO(), cacert=cacert)
        try:
            return await client.request("GET", url, [])
        finally:
            await client.close()

    async def test_untrustedRefused(self) -> None:
        """
        Without --cacert a self-signed server certificate is rejected.
        """
        with self.assertRaises(ConnectionFailed) as caught:
            await self.request(f"https://localhost:{self.number}/v1/actions")
        self.assertIn("TLS", str(caught.exception))

    async def test_cacertTrusted(self) -> None:
        """
        With --cacert naming the certificate, the request succeeds.
        """
        response = await self.request(f"https://localhost:{self.number}/v1/actions", self.cacert)
        self.assertEqual(response.code, 200)

    async def test_hostnameChecked(self) -> None:
        """
        A trusted certificate for another name is still rejected (service_identity).
        """
        with self.assertRaises(ConnectionFailed):
            await self.request(f"https://127.0.0.1:{self.number}/v1/actions", self.cacert)

    def test_badCacertFile(self) -> None:
        """
        A missing or non-PEM CA file is a clear error before any request.
        """
        from bwcd.cli.errors import CLIError

        e = self.assertRaises(CLIError, CLIHTTPClient, reactor, io.StringIO(), cacert="/nonexistent/ca.pem")
        self.assertIn('CA certificate file "/nonexistent/ca.pem" cannot be read', str(e))
        bogus = self.mktemp()
        with open(bogus, "w") as f:
            f.write("hello")
        e = self.assertRaises(CLIError, CLIHTTPClient, reactor, io.StringIO(), cacert=bogus)
        self.assertIn("contains no PEM certificate", str(e))
