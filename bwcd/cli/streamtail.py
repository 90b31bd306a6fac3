# -*- test-case-name: tests.test_stream_e2e -*-
"""
C{bwc execution tail} over the event stream: open C{/stream} with st2's
query for one execution, print the output stored so far, then the live
chunks until the execution completes.  Imported only when tailing, so that
C{bwc -h} stays free of Twisted.
"""

from __future__ import annotations

import json
from typing import Any, List, Optional
from urllib.parse import urlencode

from twisted.internet.defer import Deferred, DeferredQueue
from twisted.internet.protocol import Protocol

from bwcd.cli import format as fmt
from bwcd.cli.commands.action import EXECUTIONS
from bwcd.cli.errors import CLIError
from bwcd.stream.sse import SSEMessage, SSEParser


class StreamUnavailable(Exception):
    """
    The stream listener could not be reached (nothing was printed).
    """


class _SSEBody(Protocol):
    """
    A response body read as Server-Sent Events into a queue; C{None} marks
    its end.
    """

    def __init__(self) -> None:
        self.parser = SSEParser()
        self.messages: DeferredQueue = DeferredQueue()
        self.ended: Deferred = Deferred()

    def dataReceived(self, data: bytes) -> None:
        for message in self.parser.feed(data):
            self.messages.put(message)

    def connectionLost(self, reason: Any = None) -> None:
        self.messages.put(None)
        self.ended.callback(None)


def streamQuery(session, executionId: str) -> str:
    """
    The query st2's C{execution tail} sends to the stream (plus
    C{execution_ids}, so that only this execution's events travel).
    """
    params: List[tuple] = []
    if session.token:
        params.append(("x-auth-token", session.token))
    elif session.settings.apiKey:
        params.append(("st2-api-key", session.settings.apiKey))
    params += [
        ("end_event", "st2.execution__update"),
        ("end_execution_id", executionId),
        ("events", "st2.execution__update,st2.execution.output__create"),
        ("execution_ids", executionId),
    ]
    return urlencode(params)


async def _openStream(session, url: str) -> _SSEBody:
    from twisted.web.client import Agent, BrowserLikePolicyForHTTPS, readBody
    from twisted.web.http_headers import Headers

    from bwcd.cli.http import loadTrustRoot

    cacert = session.settings.cacert
    policy = BrowserLikePolicyForHTTPS(loadTrustRoot(cacert)) if cacert else BrowserLikePolicyForHTTPS()
    agent = Agent(session.reactor, contextFactory=policy, connectTimeout=10)
    try:
        response = await agent.request(b"GET", url.encode("utf-8"), Headers({b"Accept": [b"text/event-stream"]}))
    except Exception as e:
        raise StreamUnavailable(f"{type(e).__name__}: {e}") from None
    if response.code != 200:
        body = await readBody(response)
        try:
            fault = json.loads(body).get("faultstring")
        except (ValueError, AttributeError):
            fault = None
        if response.code == 404:
            raise StreamUnavailable(f"{url.split('?')[0]} answered 404")
        raise CLIError(fault or f"The event stream answered {response.code}")
    body = _SSEBody()
    response.deliverBody(body)
    return body


def _chunkText(message: SSEMessage, outputType: Optional[str]) -> Optional[str]:
    try:
        doc = json.loads(message.data)
    except ValueError:
        return None
    if not isinstance(doc, dict) or "execution_id" not in doc:
        return None
    if outputType and doc.get("output_type") != outputType:
        return None
    return str(doc.get("data") or "")


def _statusOf(message: SSEMessage) -> Optional[str]:
    try:
        doc = json.loads(message.data)
    except ValueError:
        return None
    if isinstance(doc, dict) and "status" in doc and "execution_id" not in doc:
        return doc["status"]
    return None


def _unseen(printed: str, chunks: List[str]) -> List[str]:
    """
    The chunks (received while the stored output was read) that the stored
    output does not already end with: the stored ones are a prefix of them.
    """
    for k in range(len(chunks), 0, -1):
        if printed.endswith("".join(chunks[:k])):
            return chunks[k:]
    return chunks


async def streamTail(session, executionId: str, outputType: Optional[str] = None) -> None:
    """
    Print the execution's output as the stream delivers it, until the
    update that completes it.

    @raise StreamUnavailable: the stream listener cannot be reached.
    """
    url = f"{session.settings.streamURL}/stream?{streamQuery(session, executionId)}"
    session.debug(f"Following the event stream at {session.settings.streamURL}/stream")
    body = await _openStream(session, url)
    try:
        await _follow(session, body, executionId, outputType)
    finally:
        transport = getattr(body, "transport", None)
        if transport is not None and not body.ended.called:
            transport.stopProducing()
            await body.ended


async def _follow(session, body: _SSEBody, executionId: str, outputType: Optional[str]) -> None:
    # the stream is open: what was stored before is in the output now
    execution = await session.getJSON(EXECUTIONS.at(executionId))
    stored = await session.api("GET", EXECUTIONS.at(executionId) + "/output", params={"output_type": outputType}, allow=(404,))
    printed = stored.body.decode("utf-8", "replace") if stored.code == 200 else ""
    pending: List[SSEMessage] = list(body.messages.pending)
    body.messages.pending.clear()
    chunks = [t for t in (_chunkText(m, outputType) for m in pending) if t is not None]
    text = printed + "".join(_unseen(printed, chunks))
    status = execution.get("status") if isinstance(execution, dict) else None
    for message in pending:
        status = _statusOf(message) or status
    while True:
        if text:
            session.out.write(text)
            session.out.flush()
            printed, text = text, ""
        if status in fmt.COMPLETED_STATES:
            break
        message = await body.messages.get()
        if message is None:
            # the stream ended before the execution did: read its state
            doc = await session.getJSON(EXECUTIONS.at(executionId))
            status = doc.get("status") if isinstance(doc, dict) else status
            if status not in fmt.COMPLETED_STATES:
                raise CLIError("The event stream ended before the execution completed.")
            break
        chunk = _chunkText(message, outputType)
        if chunk is not None:
            text = chunk
        status = _statusOf(message) or status
    if printed and not printed.endswith("\n"):
        session.out.write("\n")
    session.write(f"Execution {executionId} has completed (status={status}).")
