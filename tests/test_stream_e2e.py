"""
The event stream of a real daemon: an SSE client on the stream listener
sees a webhook's execution start, print and end; resumes with
C{Last-Event-ID}; on a shared MongoDB, one process streams what another
ran; and C{bwc execution tail} follows live output through the stream.

Every wait is for an event on the stream (or a log line, a FIFO message):
no sleeps, and no timed assertions.
"""

from __future__ import annotations

import json
import os
from typing import Any, Callable, Dict, List, Optional
from urllib.parse import urlencode

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.protocol import ProcessProtocol, Protocol
from twisted.trial.unittest import TestCase
from twisted.web.client import Agent, HTTPConnectionPool, readBody
from twisted.web.http_headers import Headers

from bwcd.stream.sse import SSEMessage, SSEParser
from tests.daemon import BIN, childEnv, fifoMessage, startDaemon

HOOK_RULE = {
    "name": "stream_rule",
    "pack": "examples",
    "enabled": True,
    "trigger": {"type": "core.st2.webhook", "parameters": {"url": "streamed"}},
    "criteria": {},
    "action": {"ref": "core.local", "parameters": {"cmd": "echo out-{{ trigger.body.n }}; echo err-{{ trigger.body.n }} >&2"}},
}


class EventStream(Protocol):
    """
    An SSE client reading the body as it comes; tests wait for the
    message they expect with L{until}.
    """

    def __init__(self, response: Any) -> None:
        self.response = response
        self.parser = SSEParser()
        self.messages: List[SSEMessage] = []
        self.ended: Deferred = Deferred()
        self._waiters: List[tuple] = []

    def dataReceived(self, data: bytes) -> None:
        for message in self.parser.feed(data):
            self.messages.append(message)
            for waiter in list(self._waiters):
                if waiter[0](message):
                    self._waiters.remove(waiter)
                    waiter[1].callback(message)

    def connectionLost(self, reason: Any = None) -> None:
        self.ended.callback(None)
        for _, d in self._waiters:
            d.errback(AssertionError(f"the stream ended while waiting; received {self.names()}"))
        self._waiters = []

    def until(self, predicate: Callable[[SSEMessage], bool]) -> Deferred:
        """
        Fire with the first message (received or to come) matching.
        """
        for message in self.messages:
            if predicate(message):
                return Deferred.fromCoroutine(_value(message))
        d: Deferred = Deferred()
        self._waiters.append((predicate, d))
        return d

    def close(self) -> Deferred:
        if not self.ended.called:
            self.transport.stopProducing()
        return self.ended

    def names(self) -> List[str]:
        return [m.event for m in self.messages]

    def docs(self, *names: str) -> List[Dict[str, Any]]:
        return [json.loads(m.data) for m in self.messages if m.event in names]


async def _value(v: Any) -> Any:
    return v


def about(execId: str, name: str, status: Optional[str] = None) -> Callable[[SSEMessage], bool]:
    def match(message: SSEMessage) -> bool:
        if message.event != name:
            return False
        doc = json.loads(message.data)
        if name == "st2.execution.output__create":
            return doc.get("execution_id") == execId
        return doc.get("id") == execId and (status is None or doc.get("status") == status)

    return match


class StreamEndToEndMixin:
    timeout = 120
    storage = "sqlite"

    def setUp(self) -> None:
        self.pool = HTTPConnectionPool(reactor, persistent=False)
        self.agent = Agent(reactor, pool=self.pool)

    def streamURL(self, daemon: Any) -> str:
        return "http://127.0.0.1:" + daemon.configData["stream"]["listen"].split(":")[1]

    async def open(self, base: str, path: str = "/v1/stream", headers: Optional[Dict[str, str]] = None, **params: str) -> EventStream:
        url = base + path + ("?" + urlencode(params) if params else "")
        raw = Headers({k.encode(): [v.encode()] for k, v in (headers or {}).items()})
        response = await self.agent.request(b"GET", url.encode(), raw)
        if response.code != 200:
            raise AssertionError(f"{response.code}: {await readBody(response)!r}")
        stream = EventStream(response)
        response.deliverBody(stream)
        self.addCleanup(stream.close)
        return stream

    async def postHook(self, daemon: Any, n: int) -> str:
        response, body = await daemon.post("/v1/webhooks/streamed", {"n": n})
        self.assertEqual(response.code, 202, body)
        return response.headers.getRawHeaders("X-BWC-Trigger-Instance")[0]

    async def followExecution(self, stream: EventStream, instanceId: str) -> str:
        """
        The execution the rule started for the instance, once the stream
        has shown it created, printing and succeeded.
        """
        created = await stream.until(lambda m: m.event == "st2.execution__create" and json.loads(m.data).get("trigger_instance", {}).get("id") == instanceId)
        execId = json.loads(created.data)["id"]
        await stream.until(about(execId, "st2.execution__update", "succeeded"))
        return execId


class StreamEndToEndTests(StreamEndToEndMixin, TestCase):
    async def test_webhookExecution(self) -> None:
        """
        On the stream listener, with the API key in the query as an
        EventSource sends it: a webhook's trigger instance, its
        execution's creation, updates to running and succeeded, and its
        stdout and stderr chunks, in order, with st2's payloads.
        """
        d = await startDaemon(self)
        response, rule = await d.post("/v1/rules", HOOK_RULE)
        self.assertEqual(response.code, 201, rule)
        stream = await self.open(self.streamURL(d), "/stream", **{"events": "*", "st2-api-key": d.apiKey})
        instanceId = await self.postHook(d, 1)
        execId = await self.followExecution(stream, instanceId)
        await stream.until(lambda m: m.event == "st2.execution.output__create" and json.loads(m.data)["output_type"] == "stderr")
        # trigger instances come with the store poll, not pushed: not ordered with the rest
        instance = await stream.until(lambda m: m.event == "st2.trigger_instance__create")
        self.assertEqual(json.loads(instance.data)["id"], instanceId)
        self.assertEqual(json.loads(instance.data)["payload"]["body"], {"n": 1})
        execution = [doc for doc in stream.docs("st2.execution__create", "st2.execution__update") if doc["id"] == execId]
        self.assertEqual([doc["status"] for doc in execution][0], "requested")
        self.assertIn("running", [doc["status"] for doc in execution])
        self.assertEqual(execution[-1]["status"], "succeeded")
        self.assertEqual(execution[-1]["result"]["stdout"], "out-1")
        self.assertEqual(execution[-1]["web_url"], f"{d.apiURL}/#/history/{execId}/general")
        output = stream.docs("st2.execution.output__create")
        self.assertEqual(sorted((o["output_type"], o["data"]) for o in output), [("stderr", "err-1\n"), ("stdout", "out-1\n")])
        self.assertEqual(set(output[0]), {"id", "execution_id", "action_ref", "runner_ref", "timestamp", "output_type", "data"})
        self.assertEqual(output[0]["action_ref"], "core.local")
        ids = [m.id for m in stream.messages]
        self.assertEqual(len(set(ids)), len(ids))

    async def test_resumeAndFilters(self) -> None:
        """
        A client reconnecting with Last-Event-ID gets exactly the events it
        missed; the API listener serves the stream too, with header
        credentials; the default filter sends no output; no credentials is
        an ordinary 401.
        """
        d = await startDaemon(self)
        await d.post("/v1/rules", HOOK_RULE)
        first = await self.open(self.streamURL(d), "/v1/stream", events="*", **{"st2-api-key": d.apiKey})
        default = await self.open(d.apiURL, headers={"St2-Api-Key": d.apiKey})
        instanceId = await self.postHook(d, 2)
        created = await first.until(lambda m: m.event == "st2.execution__create")
        execId = json.loads(created.data)["id"]
        await first.close()
        await default.until(about(execId, "st2.execution__update", "succeeded"))
        self.assertEqual(set(default.names()), {"st2.execution__create", "st2.execution__update"})
        resumed = await self.open(self.streamURL(d), "/stream", headers={"Last-Event-ID": created.id}, events="*", **{"st2-api-key": d.apiKey})
        await resumed.until(about(execId, "st2.execution__update", "succeeded"))
        replayed = [m for m in resumed.messages if m.event.startswith("st2.execution")]
        self.assertEqual([m.event for m in replayed if m.event == "st2.execution__create"], [])
        self.assertTrue(all(int(m.id.rsplit("-", 1)[1]) > int(created.id.rsplit("-", 1)[1]) for m in resumed.messages))
        self.assertIn("st2.execution.output__create", [m.event for m in replayed])
        self.assertEqual(instanceId, json.loads(created.data)["trigger_instance"]["id"])

        response = await self.agent.request(b"GET", (self.streamURL(d) + "/v1/stream").encode())
        body = json.loads(await readBody(response))
        self.assertEqual((response.code, sorted(body)), (401, ["faultstring"]))

    async def test_endEvent(self) -> None:
        """
        A stream asked to end on an execution's completing update ends
        after sending it.
        """
        d = await startDaemon(self)
        path, started = fifoMessage(self)
        response, execution = await d.post("/v1/executions", {"action": "core.local", "parameters": {"cmd": f"echo go > {path}; read x < {path}.in; echo done"}})
        self.assertEqual(response.code, 201, execution)
        os.mkfifo(path + ".in")
        execId = execution["id"]
        stream = await self.open(
            self.streamURL(d), "/stream", events="st2.execution__update", end_event="st2.execution__update", end_execution_id=execId,
            **{"st2-api-key": d.apiKey},
        )
        await started
        with open(path + ".in", "w") as f:
            f.write("x\n")
        await stream.ended
        self.assertEqual(json.loads(stream.messages[-1].data)["status"], "succeeded")

    async def test_tailFollowsStream(self) -> None:
        """
        bwc execution tail prints what a running execution printed before
        it started and what it prints after, read from the stream, then
        the completion line.
        """
        d = await startDaemon(self)
        path, started = fifoMessage(self)
        os.mkfifo(path + ".in")
        response, execution = await d.post(
            "/v1/executions", {"action": "core.local", "parameters": {"cmd": f"echo first; echo go > {path}; read x < {path}.in; echo second"}}
        )
        execId = execution["id"]
        await started
        env = childEnv({
            "ST2_API_URL": d.apiURL + "/v1", "ST2_AUTH_URL": d.authURL, "ST2_STREAM_URL": self.streamURL(d) + "/v1",
            "ST2_API_KEY": d.apiKey, "HOME": os.path.abspath(self.mktemp()),
        })
        tail = TailProcess()
        argv = [os.path.join(BIN, "bwc"), "execution", "tail", execId]
        reactor.spawnProcess(tail, argv[0], argv, env=env)
        # printed once the CLI has opened the stream and read the stored output
        await tail.saw("first\n")
        with open(path + ".in", "w") as f:
            f.write("x\n")
        code = await tail.ended
        self.assertEqual((code, tail.err), (0, ""))
        self.assertEqual(tail.out, f"first\nsecond\nExecution {execId} has completed (status=succeeded).\n")


class TailProcess(ProcessProtocol):
    def __init__(self) -> None:
        self.out = ""
        self.err = ""
        self.ended: Deferred = Deferred()
        self._waiting: List[tuple] = []

    def outReceived(self, data: bytes) -> None:
        self.out += data.decode()
        for text, d in list(self._waiting):
            if text in self.out:
                self._waiting.remove((text, d))
                d.callback(None)

    def errReceived(self, data: bytes) -> None:
        self.err += data.decode()

    def saw(self, text: str) -> Deferred:
        d: Deferred = Deferred()
        if text in self.out:
            d.callback(None)
        else:
            self._waiting.append((text, d))
        return d

    def processEnded(self, reason: Any) -> None:
        self.ended.callback(reason.value.exitCode)


class MongoStreamEndToEndTests(StreamEndToEndMixin, TestCase):
    async def test_otherProcessEvents(self) -> None:
        """
        Two processes on one MongoDB: a stream on one shows the execution
        a webhook to the other started, its output and its end.
        """
        a = await startDaemon(self, storage="mongodb")
        b = await startDaemon(self, storage=a.configData["storage"]["url"])
        since = a.linesLogged
        response, rule = await b.post("/v1/rules", HOOK_RULE)
        self.assertEqual(response.code, 201, rule)
        await a.logged(r"\bRule index loaded: 1 rules", since)
        stream = await self.open(self.streamURL(b), "/stream", events="*", **{"st2-api-key": b.apiKey})
        instanceId = await self.postHook(a, 3)
        execId = await self.followExecution(stream, instanceId)
        await stream.until(lambda m: m.event == "st2.execution.output__create" and json.loads(m.data)["data"] == "err-3\n")
        done = [doc for doc in stream.docs("st2.execution__update") if doc["id"] == execId][-1]
        self.assertEqual(done["result"]["stdout"], "out-3")
        self.assertEqual(stream.docs("st2.trigger_instance__create")[0]["id"], instanceId)
        self.assertIn("out-3\n", [o["data"] for o in stream.docs("st2.execution.output__create")])
        # each event once, however many polls saw it
        keys = [(m.event, m.data) for m in stream.messages]
        self.assertEqual(len(set(keys)), len(keys))
