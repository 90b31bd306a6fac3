"""
A fixed-rate, open-loop HTTP load generator (wrk2 is not in Debian).

    python bench/openloop.py --url http://127.0.0.1:PORT/v1/webhooks/x --rate 300 \
        --duration 20 --body-file bench/body.json [--api-key KEY] [--connections 16]

wrk is a closed loop: each connection sends its next request when the last
answer arrives, so a slow server is simply sent less, and the latency it
reports hides the stalls (coordinated omission).  Here request i is due at
C{start + i / rate} whatever happened before; it goes out on an idle
keep-alive connection, or on a new one when all are busy (up to
C{--max-connections}; beyond that it is counted as C{missed}).  Latency is
measured from the time the request was *due*, so a stall shows up in full.

One line is printed at the end::

    OPENLOOP due=.. sent=.. missed=.. s202=.. s503=.. sother=.. errors=.. rate=..
             p50_ms=.. p99_ms=.. max_ms=.. connections=.. (the most open at once)
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import List, Optional
from urllib.parse import urlsplit

from twisted.internet import reactor
from twisted.internet.protocol import ClientFactory, Protocol


class Stats:
    def __init__(self) -> None:
        self.sent = 0
        self.missed = 0
        self.codes: dict = {}
        self.errors = 0
        self.latencies: List[float] = []


class HttpConnection(Protocol):
    """
    One keep-alive connection with at most one request in flight.
    """

    def __init__(self, gen: "Generator") -> None:
        self.gen = gen
        self.buffer = b""
        self.due: Optional[float] = None
        self.need: Optional[int] = None  # body bytes once the head is in; -1 for chunked
        self.code = 0

    def connectionMade(self) -> None:
        self.gen.connected(self)

    def send(self, request: bytes, due: float) -> None:
        self.due = due
        self.transport.write(request)

    def dataReceived(self, data: bytes) -> None:
        self.buffer += data
        while self.due is not None:
            if self.need is None:
                end = self.buffer.find(b"\r\n\r\n")
                if end < 0:
                    return
                head = self.buffer[:end].split(b"\r\n")
                self.code = int(head[0].split(b" ", 2)[1])
                length, chunked = 0, False
                for line in head[1:]:
                    name, _, value = line.partition(b":")
                    name = name.strip().lower()
                    if name == b"content-length":
                        length = int(value.strip())
                    elif name == b"transfer-encoding" and b"chunked" in value.lower():
                        chunked = True
                self.buffer = self.buffer[end + 4:]
                self.need = -1 if chunked else length
            if self.need == -1:
                end = self.chunkedEnd()
                if end is None:
                    return
            else:
                if len(self.buffer) < self.need:
                    return
                end = self.need
            self.buffer = self.buffer[end:]
            self.need = None
            due, self.due = self.due, None
            self.gen.answered(self, self.code, time.monotonic() - due)

    def chunkedEnd(self) -> Optional[int]:
        """
        Where a complete chunked body ends in the buffer, or None.
        """
        pos = 0
        while True:
            eol = self.buffer.find(b"\r\n", pos)
            if eol < 0:
                return None
            size = int(self.buffer[pos:eol].split(b";", 1)[0], 16)
            if size == 0:
                # last chunk, (no trailers) then CRLF
                end = self.buffer.find(b"\r\n", eol + 2)
                return None if end < 0 else end + 2
            pos = eol + 2 + size + 2
            if pos > len(self.buffer):
                return None

    def connectionLost(self, reason) -> None:
        self.gen.lost(self)


class Generator(ClientFactory):
    def __init__(self, host: str, port: int, request: bytes, rate: float, duration: float, connections: int, maxConnections: int) -> None:
        self.host, self.port = host, port
        self.request = request
        self.rate = rate
        self.duration = duration
        self.initial = connections
        self.maxConnections = maxConnections
        self.idle: List[HttpConnection] = []
        self.open = 0
        self.maxOpen = 0
        self.pending = 0  # connections being opened
        self.backlog: List[float] = []  # due times waiting for a connection being opened
        self.stats = Stats()
        self.start = 0.0
        self.issued = 0
        self.inFlight = 0

    def buildProtocol(self, addr):
        return HttpConnection(self)

    def clientConnectionFailed(self, connector, reason) -> None:
        self.pending -= 1
        self.stats.errors += 1

    def connect(self) -> None:
        self.pending += 1
        reactor.connectTCP(self.host, self.port, self, timeout=5)

    def connected(self, conn: HttpConnection) -> None:
        self.pending -= 1
        self.open += 1
        self.maxOpen = max(self.maxOpen, self.open)
        self.release(conn)

    def release(self, conn: HttpConnection) -> None:
        if self.backlog:
            self.inFlight += 1
            self.stats.sent += 1
            conn.send(self.request, self.backlog.pop(0))
        else:
            self.idle.append(conn)

    def answered(self, conn: HttpConnection, code: int, latency: float) -> None:
        self.inFlight -= 1
        self.stats.codes[code] = self.stats.codes.get(code, 0) + 1
        self.stats.latencies.append(latency)
        self.release(conn)
        self.maybeDone()

    def lost(self, conn: HttpConnection) -> None:
        self.open -= 1
        if conn in self.idle:
            self.idle.remove(conn)
        if conn.due is not None:
            self.inFlight -= 1
            self.stats.errors += 1
        self.maybeDone()

    def warmUp(self) -> None:
        for _ in range(self.initial):
            self.connect()
        reactor.callLater(0.5, self.begin)

    def begin(self) -> None:
        self.start = time.monotonic()
        reactor.callLater(self.duration + 10, self.finish)
        self.tick()

    def tick(self) -> None:
        now = time.monotonic()
        elapsed = min(now - self.start, self.duration)
        due = int(elapsed * self.rate)
        while self.issued < due:
            dueAt = self.start + self.issued / self.rate
            self.issued += 1
            if self.idle:
                conn = self.idle.pop()
                self.inFlight += 1
                self.stats.sent += 1
                conn.send(self.request, dueAt)
            elif self.open + self.pending < self.maxConnections:
                self.backlog.append(dueAt)
                self.connect()
            else:
                self.stats.missed += 1
        if now - self.start < self.duration:
            nextDue = self.start + self.issued / self.rate
            reactor.callLater(max(0.0, nextDue - time.monotonic()), self.tick)
        else:
            self.maybeDone()

    def maybeDone(self) -> None:
        if self.start and time.monotonic() - self.start >= self.duration and self.inFlight <= 0 and not self.backlog:
            self.finish()

    def finish(self) -> None:
        if reactor.running:
            reactor.stop()


def percentile(values: List[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100.0 * (len(ordered) - 1))))]


def main(argv: List[str]) -> int:
    parser = argparse.ArgumentParser(description="fixed-rate open-loop HTTP POST load")
    parser.add_argument("--url", required=True)
    parser.add_argument("--rate", type=float, required=True, help="requests per second")
    parser.add_argument("--duration", type=float, default=20.0)
    parser.add_argument("--body-file", required=True)
    parser.add_argument("--api-key", default="")
    parser.add_argument("--connections", type=int, default=16, help="keep-alive connections opened at start")
    parser.add_argument("--max-connections", type=int, default=512)
    args = parser.parse_args(argv)

    url = urlsplit(args.url)
    with open(args.body_file, "rb") as f:
        body = f.read()
    headers = [
        f"POST {url.path} HTTP/1.1",
        f"Host: {url.hostname}:{url.port}",
        "Content-Type: application/json",
        f"Content-Length: {len(body)}",
    ]
    if args.api_key:
        headers.append(f"St2-Api-Key: {args.api_key}")
    request = ("\r\n".join(headers) + "\r\n\r\n").encode("latin-1") + body

    gen = Generator(url.hostname, url.port, request, args.rate, args.duration, args.connections, args.max_connections)
    reactor.callWhenRunning(gen.warmUp)
    reactor.run()

    s = gen.stats
    lat = s.latencies
    print(
        "OPENLOOP due=%d sent=%d missed=%d s202=%d s503=%d sother=%d errors=%d rate=%.1f p50_ms=%.2f p99_ms=%.2f max_ms=%.2f connections=%d"
        % (
            gen.issued, s.sent, s.missed, s.codes.get(202, 0), s.codes.get(503, 0),
            sum(v for k, v in s.codes.items() if k not in (202, 503)), s.errors,
            s.sent / args.duration, percentile(lat, 50) * 1000, percentile(lat, 99) * 1000,
            (max(lat) if lat else float("nan")) * 1000, gen.maxOpen,
        ),
        flush=True,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
