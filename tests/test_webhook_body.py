"""
Tests for L{bwcd.webhooks.body} and L{bwcd.webhooks.headers}: what a webhook
request becomes in the trigger payload.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase
from twisted.web.http_headers import Headers

from bwcd.webhooks.body import BodyError, mediaType, parseBody
from bwcd.webhooks.headers import payloadHeaders, wsgiName


def multipartBody(boundary: str, parts) -> bytes:
    """
    Encode C{parts} (C{(name, value, filename, contentType)}) as a
    multipart/form-data body.
    """
    chunks = []
    for name, value, filename, contentType in parts:
        disposition = f'form-data; name="{name}"'
        if filename is not None:
            disposition += f'; filename="{filename}"'
        head = f"--{boundary}\r\nContent-Disposition: {disposition}\r\n"
        if contentType:
            head += f"Content-Type: {contentType}\r\n"
        chunks.append(head.encode() + b"\r\n" + (value if isinstance(value, bytes) else value.encode()) + b"\r\n")
    chunks.append(f"--{boundary}--\r\n".encode())
    return b"".join(chunks)


class JsonBodyTests(SynchronousTestCase):
    def test_missingContentTypeIsJson(self):
        """
        Without a Content-Type the body is read as JSON.
        """
        self.assertEqual(parseBody(b'{"key1": "value1"}', None), {"key1": "value1"})

    def test_parametersIgnored(self):
        """
        Parameters after the media type (charset) do not matter.
        """
        self.assertEqual(parseBody(b"[1, 2]", "application/json; charset=utf-8"), [1, 2])

    def test_emptyIsEmptyObject(self):
        """
        An empty JSON body is C{{}}.
        """
        self.assertEqual(parseBody(b"", "application/json"), {})
        self.assertEqual(parseBody(b"", None), {})

    def test_invalidJson(self):
        """
        Invalid JSON gives StackStorm's faultstring with the decoder's message.
        """
        with self.assertRaises(BodyError) as caught:
            parseBody(b"{nope", "application/json")
        self.assertTrue(caught.exception.faultstring.startswith("Failed to parse request body: Expecting property name"))

    def test_invalidUtf8(self):
        """
        Bytes that are not UTF-8 are a parse error too, not a crash.
        """
        with self.assertRaises(BodyError) as caught:
            parseBody(b'{"a": "\xff"}', None)
        self.assertIn("Failed to parse request body:", caught.exception.faultstring)

    def test_scalarRefused(self):
        """
        A scalar JSON body fails the object|array schema as in StackStorm.
        """
        for raw, message in ((b"5", "5 is not of type 'object', 'array'"), (b'"x"', "'x' is not of type 'object', 'array'"), (b"null", "None is not of type 'object', 'array'")):
            with self.assertRaises(BodyError) as caught:
                parseBody(raw, "application/json")
            self.assertEqual(caught.exception.faultstring, message)


class OtherTypesTests(SynchronousTestCase):
    def test_textPlainRefused(self):
        """
        text/plain stays a string, which the schema refuses.
        """
        with self.assertRaises(BodyError) as caught:
            parseBody(b"hello", "text/plain")
        self.assertEqual(caught.exception.faultstring, "'hello' is not of type 'object', 'array'")

    def test_unsupported(self):
        """
        Any other type gives the Unsupported Content-Type faultstring naming
        the media type as sent.
        """
        with self.assertRaises(BodyError) as caught:
            parseBody(b"<a/>", "Application/XML; charset=utf-8")
        self.assertEqual(caught.exception.faultstring, 'Failed to parse request body: Unsupported Content-Type: "Application/XML"')

    def test_mediaType(self):
        """
        The media type is lower-cased and its parameters are parsed
        (quoted values included).
        """
        self.assertEqual(mediaType('Multipart/Form-Data; Boundary="a b"'), ("multipart/form-data", {"boundary": "a b"}))
        self.assertEqual(mediaType(None), ("", {}))
        self.assertEqual(mediaType("  "), ("", {}))


class UrlencodedTests(SynchronousTestCase):
    def test_singleFieldIsString(self):
        """
        A field sent once is a string, so the guide's C{trigger.body.key1
        equals value1} matches form posts (unlike StackStorm, st2#4853).
        """
        self.assertEqual(parseBody(b"key1=value1", "application/x-www-form-urlencoded"), {"key1": "value1"})

    def test_repeatedFieldIsList(self):
        """
        A repeated field is a list in the order sent.
        """
        self.assertEqual(
            parseBody(b"a=1&b=x&a=2&a=3", "application/x-www-form-urlencoded"),
            {"a": ["1", "2", "3"], "b": "x"},
        )

    def test_decoding(self):
        """
        Percent-escapes are UTF-8, C{+} is a space, and empty values are
        kept.
        """
        self.assertEqual(
            parseBody(b"name=J%C3%BCrgen+M&empty=&x=a%26b", "application/x-www-form-urlencoded; charset=utf-8"),
            {"name": "Jürgen M", "empty": "", "x": "a&b"},
        )

    def test_emptyForm(self):
        """
        An empty form is an empty object.
        """
        self.assertEqual(parseBody(b"", "application/x-www-form-urlencoded"), {})


class MultipartTests(SynchronousTestCase):
    def test_fields(self):
        """
        Multipart text fields are parsed properly: once -> string,
        repeated -> list.
        """
        raw = multipartBody("XyZ", [("key1", "value1", None, None), ("tag", "a", None, None), ("tag", "b", None, None)])
        self.assertEqual(parseBody(raw, "multipart/form-data; boundary=XyZ"), {"key1": "value1", "tag": ["a", "b"]})

    def test_fileParts(self):
        """
        A file part becomes its name, type and content; binary content is
        given in base64.
        """
        raw = multipartBody(
            "b0und",
            [("doc", "hello\n", "a.txt", "text/plain"), ("blob", b"\xff\x00", "b.bin", "application/octet-stream")],
        )
        self.assertEqual(
            parseBody(raw, 'multipart/form-data; boundary="b0und"'),
            {
                "doc": {"filename": "a.txt", "content_type": "text/plain", "content": "hello\n"},
                "blob": {"filename": "b.bin", "content_type": "application/octet-stream", "content": "/wA=", "encoding": "base64"},
            },
        )

    def test_noBoundary(self):
        """
        multipart/form-data without a boundary is a 400.
        """
        with self.assertRaises(BodyError) as caught:
            parseBody(b"x", "multipart/form-data")
        self.assertIn("boundary", caught.exception.faultstring)

    def test_truncated(self):
        """
        A truncated multipart body is a 400, not an empty object.
        """
        raw = multipartBody("XX", [("a", "1", None, None)])[:-10]
        with self.assertRaises(BodyError) as caught:
            parseBody(raw, "multipart/form-data; boundary=XX")
        self.assertTrue(caught.exception.faultstring.startswith("Failed to parse request body: "))


class HeaderTests(SynchronousTestCase):
    def headers(self, pairs):
        h = Headers()
        for name, value in pairs:
            h.addRawHeader(name, value)
        return payloadHeaders(h.getAllRawHeaders(), newRequestId="rid")

    def test_wsgiTitleCase(self):
        """
        Names come out as a WSGI application sees them.
        """
        self.assertEqual(wsgiName("x-github-event"), "X-Github-Event")
        self.assertEqual(wsgiName("X-GitHub-Event"), "X-Github-Event")
        self.assertEqual(wsgiName("content-md5"), "Content-Md5")
        self.assertEqual(wsgiName("x_custom_header"), "X-Custom-Header")
        self.assertEqual(wsgiName("x-b3-traceid"), "X-B3-Traceid")

    def test_credentialsRemoved(self):
        """
        St2-Api-Key, X-Auth-Token, Cookie, Authorization and
        Proxy-Authorization never reach the payload (StackStorm keeps
        Authorization; bwcd stores no credential).
        """
        result = self.headers(
            [(b"St2-Api-Key", b"secret"), (b"x-auth-token", b"tok"), (b"Cookie", b"a=b"), (b"Authorization", b"Basic x"),
             (b"Proxy-Authorization", b"Basic y"), (b"X-GitHub-Event", b"push")]
        )
        self.assertEqual(result.headers, {"X-Github-Event": "push", "X-Request-Id": "rid"})
        self.assertEqual(result.lower, {"x-github-event": "push", "x-request-id": "rid"})

    def test_traceTagPopped(self):
        """
        St2-Trace-Tag is taken out of the headers and returned separately.
        """
        result = self.headers([(b"St2-Trace-Tag", b"deploy-42")])
        self.assertEqual(result.traceTag, "deploy-42")
        self.assertNotIn("St2-Trace-Tag", result.headers)

    def test_requestIdKept(self):
        """
        A request id sent by the client is kept; one is added otherwise.
        """
        self.assertEqual(self.headers([(b"X-Request-ID", b"abc")]).headers["X-Request-Id"], "abc")
        self.assertEqual(len(payloadHeaders([]).headers["X-Request-Id"]), 36)

    def test_repeatedJoined(self):
        """
        Repeated headers are joined with commas as WSGI servers do.
        """
        self.assertEqual(self.headers([(b"X-Multi", b"1"), (b"x-multi", b"2")]).headers["X-Multi"], "1,2")

    def test_utf8Values(self):
        """
        UTF-8 header values are decoded; other bytes fall back to latin-1.
        """
        result = self.headers([(b"X-Name", "Jürgen".encode()), (b"X-Raw", b"\xe9")])
        self.assertEqual(result.headers["X-Name"], "Jürgen")
        self.assertEqual(result.headers["X-Raw"], "é")
