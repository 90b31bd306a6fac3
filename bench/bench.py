"""
The bwcd benchmark (issue 6).  Run it through C{bench/run}; see
C{bench/README.md} for what each figure means and how to read it.

One run, on 127.0.0.1 only, with bounded windows:

  baselines   a  adnanh/webhook, hook without a command        req/s
              b  adnanh/webhook, hook that runs /bin/true      req/s, commands/s
              c  bare twisted.web Resource (json.loads, 202)   req/s
              d  the same behind a Klein route                 req/s
              e  reactor.spawnProcess(/bin/true), 16 at once   processes/s
  bwcd        P1 ingest: webhook whose 10 rules do not match   req/s            / c
              P4 the same with 10,000 rules over 1,000 hooks   req/s            / P1
              P2 a rule runs /bin/true per webhook             commands/s       / b
              P3 fixed rate at half of P2: accepted -> running p99 ms
              P5 RSS idle with 10,000 rules; growth under P1 load
              overload: every 202 has a stored trigger instance; 503s carry Retry-After
  noise       c and e again at the end of the run

Servers (and the children they spawn) are pinned to CPU 1, everything else
(wrk, the open-loop generator, this script) to CPU 0.  Every process this
script starts is ended by its PID, also on Ctrl-C or an error.
"""

from __future__ import annotations

import argparse
import ctypes
import http.client
import json
import os
import platform
import re
import resource
import shutil
import signal
import socket
import stat
import struct
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from typing import Any, Dict, IO, List, Optional, Tuple
from urllib.parse import quote, urlsplit, urlunsplit

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
BIN = os.path.dirname(os.path.abspath(sys.executable))
BODY_FILE = os.path.join(HERE, "body.json")
LUA = os.path.join(HERE, "post.lua")
RESULTS = os.path.join(HERE, "results")
HZ = os.sysconf("SC_CLK_TCK")
TERMINAL = ("succeeded", "failed", "timeout", "canceled", "abandoned")

GOALS = {
    "p1_ingest_ratio": (">=", 0.50),
    "p2_commands_ratio": (">=", 1.0),
    "p3_start_latency_p99_ms": ("<=", 50.0),
    "p4_rule_scale_ratio": (">=", 0.90),
    "p5_rss_idle_mb": ("<=", 100.0),
    "p5_rss_growth_pct": ("<=", 10.0),
}

_started = time.monotonic()


def say(message: str) -> None:
    sys.stderr.write("[%5.0fs] %s\n" % (time.monotonic() - _started, message))
    sys.stderr.flush()


class BenchError(Exception):
    pass


# --------------------------------------------------------------- processes --


class Processes:
    """
    Every process this run starts, so that each is ended by its PID.
    """

    def __init__(self, serverCpu: Optional[int], loadCpu: Optional[int]) -> None:
        self.serverCpu = serverCpu
        self.loadCpu = loadCpu
        self.live: Dict[int, Tuple[str, subprocess.Popen]] = {}

    def start(self, name: str, argv: List[str], where: str, log: Optional[str] = None, capture: bool = False, **kw: Any) -> subprocess.Popen:
        cpu = self.serverCpu if where == "server" else self.loadCpu
        if cpu is not None:
            argv = ["taskset", "-c", str(cpu)] + list(argv)
        out: Any = subprocess.DEVNULL
        if log:
            out = open(log, "ab")
        elif capture:
            out = subprocess.PIPE
        try:
            p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, **kw)
        finally:
            if log:
                out.close()
        self.live[p.pid] = (name, p)
        return p

    def run(self, name: str, argv: List[str], where: str, timeout: float, **kw: Any) -> Tuple[int, str]:
        """
        Run to completion (bounded), capturing output.
        """
        p = self.start(name, argv, where, capture=True, **kw)
        try:
            out, _ = p.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.stop(p)
            raise BenchError(f"{name} did not finish within {timeout:.0f} s")
        self.live.pop(p.pid, None)
        return p.returncode, out.decode("utf-8", "replace")

    def stop(self, p: subprocess.Popen, timeout: float = 20.0) -> Optional[int]:
        if p.poll() is None:
            try:
                p.send_signal(signal.SIGTERM)
                p.wait(timeout)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(10)
        if p.stdout:
            p.stdout.close()
        self.live.pop(p.pid, None)
        return p.returncode

    def stopAll(self) -> None:
        for pid in sorted(self.live, reverse=True):
            name, p = self.live[pid]
            if p.poll() is None:
                say(f"stopping {name} (pid {pid})")
            self.stop(p, timeout=10)


# ------------------------------------------------------------ measurement --


def snapshot(pid: Optional[int] = None) -> Dict[str, Any]:
    """
    Kernel counters: per-CPU busy/total/steal jiffies, forks since boot,
    and a process's own CPU time and thread count.
    """
    snap: Dict[str, Any] = {"t": time.monotonic(), "cpus": {}, "forks": 0, "pcpu": 0, "threads": 0}
    with open("/proc/stat") as f:
        for line in f:
            parts = line.split()
            if parts[0].startswith("cpu") and parts[0] != "cpu":
                v = [int(x) for x in parts[1:9]]
                busy = v[0] + v[1] + v[2] + v[5] + v[6]
                snap["cpus"][parts[0]] = (busy, busy + v[3] + v[4] + v[7], v[7])
            elif parts[0] == "processes":
                snap["forks"] = int(parts[1])
    if pid:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            snap["pcpu"] = int(fields[11]) + int(fields[12])
            snap["threads"] = int(fields[17])
            with open(f"/proc/{pid}/task/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            snap["mcpu"] = int(fields[11]) + int(fields[12])
        except (OSError, IndexError):
            pass
    return snap


def usage(a: Dict[str, Any], b: Dict[str, Any]) -> Dict[str, Any]:
    wall = max(b["t"] - a["t"], 1e-6)
    out: Dict[str, Any] = {"srv_pct": round(100.0 * (b["pcpu"] - a["pcpu"]) / HZ / wall, 1)}
    if "mcpu" in a and "mcpu" in b:
        # the main (reactor) thread apart from the others (bwcd's SQLite thread...)
        out["srv_main_thread_pct"] = round(100.0 * (b["mcpu"] - a["mcpu"]) / HZ / wall, 1)
        out["srv_other_threads_pct"] = round(out["srv_pct"] - out["srv_main_thread_pct"], 1)
    steal = total = 0
    for name in sorted(b["cpus"]):
        busy1, tot1, st1 = b["cpus"][name]
        busy0, tot0, st0 = a["cpus"].get(name, (busy1, tot1, st1))
        span = max(tot1 - tot0, 1)
        out[f"{name}_pct"] = round(100.0 * (busy1 - busy0) / span, 1)
        steal += st1 - st0
        total += span
    out["steal_pct"] = round(100.0 * steal / max(total, 1), 1)
    out["forks"] = b["forks"] - a["forks"]
    out["threads_delta"] = b["threads"] - a["threads"]
    return out


def rssMb(pid: int) -> Optional[float]:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return round(int(line.split()[1]) / 1024.0, 1)
    except OSError:
        return None
    return None


class Acct:
    """
    Exact command counts from BSD process accounting: the kernel appends one
    64-byte C{acct_v3} record per process exit, with its parent's pid and
    command name, so "commands completed in a window" is the number of
    C{true} records whose parent is the server, between the file sizes at
    the window's start and end.  This replaces the C{/proc/stat} fork
    counter, which counts every fork (and thread) on the machine.  Turned
    off again at the end of the run (it is a system-wide switch).
    """

    RECORD = 64

    def __init__(self, directory: str) -> None:
        self.path = os.path.join(directory, "pacct")
        self.enabled = False
        self.error = ""
        self._libc = ctypes.CDLL(None, use_errno=True)

    def enable(self) -> bool:
        open(self.path, "wb").close()
        if self._libc.acct(self.path.encode()) != 0:
            self.error = os.strerror(ctypes.get_errno())
            return False
        self.enabled = True
        return True

    def disable(self) -> None:
        if self.enabled:
            self._libc.acct(None)
            self.enabled = False

    def mark(self) -> int:
        if not self.enabled:
            return 0
        size = os.path.getsize(self.path)
        return size - size % self.RECORD

    def count(self, start: int, end: int, ppid: int, comm: bytes = b"true") -> Dict[str, int]:
        ok = failed = 0
        if not self.enabled:
            return {"ok": 0, "failed": 0}
        with open(self.path, "rb") as f:
            f.seek(start)
            data = f.read(max(end - start, 0))
        for off in range(0, len(data) - self.RECORD + 1, self.RECORD):
            exitcode, _uid, _gid, _pid, parent = struct.unpack_from("=IIIII", data, off + 4)
            if parent == ppid and data[off + 48:off + 64].split(b"\0", 1)[0] == comm:
                if exitcode == 0:
                    ok += 1
                else:
                    failed += 1
        return {"ok": ok, "failed": failed}


def waitPort(port: int, proc: subprocess.Popen, log: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise BenchError(f"server exited ({proc.returncode}) before listening; log:\n{tail(log)}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    raise BenchError(f"nothing listens on 127.0.0.1:{port} after {timeout:.0f} s; log:\n{tail(log)}")


def tail(path: str, n: int = 3000) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(0, 2)
            f.seek(max(0, f.tell() - n))
            return f.read().decode("utf-8", "replace")
    except OSError:
        return "(no log)"


def freePort() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def percentile(values: List[float], q: float) -> Optional[float]:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100.0 * (len(ordered) - 1))))]


def parseKv(line: str) -> Dict[str, float]:
    out: Dict[str, float] = {}
    for item in line.split()[1:]:
        k, _, v = item.partition("=")
        try:
            out[k] = float(v)
        except ValueError:
            pass
    return out


def epoch(iso: str) -> float:
    return datetime.strptime(iso, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=timezone.utc).timestamp()


class Bench:
    def __init__(self, args: argparse.Namespace, tmp: str, procs: Processes, acct: Acct) -> None:
        self.args = args
        self.tmp = tmp
        self.procs = procs
        self.acct = acct
        self.raw: Dict[str, Any] = {}

    # -- load -------------------------------------------------------------

    def wrk(self, id: str, url: str, duration: float, pid: Optional[int], apiKey: str = "", conns: int = 32, profile: bool = False) -> Dict[str, Any]:
        """
        One closed-loop wrk window (keep-alive, C{conns} connections, one
        thread, on the load CPU) against C{url}; with C{profile} (and
        C{--profile}), py-spy samples the server during the window.
        """
        spy = self.profiler(id, pid, duration) if profile and pid else None
        env = dict(os.environ, BENCH_BODY_FILE=BODY_FILE, BENCH_API_KEY=apiKey, BENCH_CONN_CLOSE="1" if self.args.conn_close else "0",
                   BENCH_COUNT_STATUS="1" if apiKey else "0")
        argv = ["wrk", "-t1", f"-c{conns}", f"-d{duration:g}s", "--timeout", "5s", "-s", LUA, url]
        mark0 = self.acct.mark()
        before = snapshot(pid)
        t0 = time.time()
        code, out = self.procs.run(f"wrk {id}", argv, "load", timeout=duration + 60, env=env)
        t1 = time.time()
        after = snapshot(pid)
        mark1 = self.acct.mark()
        line = next((l for l in out.splitlines() if l.startswith("WRKRESULT")), None)
        if line is None:
            raise BenchError(f"wrk gave no result for {id} ({code}):\n{out}")
        w = parseKv(line)
        result: Dict[str, Any] = {k: int(v) for k, v in w.items()}
        result["rps"] = round(w["reqs"] * 1e6 / w["dur_us"], 1) if w["dur_us"] else 0.0
        result["errors"] = int(w["connect"] + w["read"] + w["write"] + w["timeout"] + w["status"])
        result["wall_start"] = t0
        result["wall_end"] = t1
        result["duration_s"] = round(t1 - t0, 3)
        result["acct_marks"] = [mark0, mark1]
        result["conns"] = conns
        result.update(usage(before, after))
        if spy is not None:
            result["profile"] = self.profileSummary(id, spy)
        self.raw[id] = result
        threads = f" (main thread {result['srv_main_thread_pct']}%, others {result['srv_other_threads_pct']}%)" if "srv_main_thread_pct" in result else ""
        say(f"  {id}: {result['rps']:.0f} req/s, p99 {result['p99_us'] / 1000:.1f} ms, errors {result['errors']}, srv {result['srv_pct']}%{threads}, cpu0 {result.get('cpu0_pct', '-')}%, cpu1 {result.get('cpu1_pct', '-')}%")
        return result

    def profiler(self, id: str, pid: int, duration: float) -> Optional[Tuple[subprocess.Popen, str]]:
        if not self.args.profile:
            return None
        spy = os.path.join(BIN, "py-spy")
        if not os.path.exists(spy):
            say("--profile: py-spy is not installed in the venv (.venv/bin/pip install py-spy); no profile")
            return None
        out = os.path.join(self.tmp, f"profile-{id}.txt")
        argv = [spy, "record", "--pid", str(pid), "--duration", str(max(int(duration) - 1, 1)), "--rate", "200", "--nonblocking", "--threads", "--format", "raw", "--output", out]
        return self.procs.start(f"py-spy {id}", argv, "load", log=os.path.join(self.tmp, f"py-spy-{id}.log")), out

    def profileSummary(self, id: str, spy: Tuple[subprocess.Popen, str]) -> Dict[str, Any]:
        """
        Where the server's time went: the functions most often on top of
        the stack (self) and anywhere on it (inclusive), in % of samples.
        The collapsed stacks go to bench/results/profile-<storage>-<id>.json.
        """
        proc, path = spy
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            pass
        self.procs.stop(proc)
        try:
            with open(path) as f:
                lines = f.read().splitlines()
        except OSError:
            return {"error": tail(os.path.join(self.tmp, f"py-spy-{id}.log"), 500)}
        selfCount: Dict[str, int] = {}
        incl: Dict[str, int] = {}
        files: Dict[str, int] = {}
        threads: Dict[str, int] = {}
        total = 0
        for line in lines:
            stack, _, n = line.rpartition(" ")
            if not stack or not n.isdigit():
                continue
            count = int(n)
            total += count
            frames = [f.strip() for f in stack.split(";") if f.strip()]
            thread = frames.pop(0) if frames and frames[0].startswith("thread (") else "?"
            frames = [re.sub(r":\d+\)$", ")", f).replace(REPO + "/", "").replace(sys.prefix + "/lib/python3.11/site-packages/", "") for f in frames]
            if not frames:
                continue
            name = thread.split("): ", 1)[-1].split(" ")[0]  # MainThread (the reactor), bwcd-sqlite, ...
            threads[name] = threads.get(name, 0) + count
            selfCount[frames[-1]] = selfCount.get(frames[-1], 0) + count
            for f in set(frames):
                if f.split("(")[-1].startswith("bwcd/"):
                    incl[f] = incl.get(f, 0) + count
            top = frames[-1]
            mod = top[top.find("(") + 1:].split(")")[0] if "(" in top else top
            files[mod] = files.get(mod, 0) + count

        def table(counts: Dict[str, int], n: int) -> List[Tuple[str, float]]:
            return [(k, round(100.0 * v / max(total, 1), 1)) for k, v in sorted(counts.items(), key=lambda kv: -kv[1])[:n]]

        summary = {"samples": total, "by_thread": table(threads, 5), "top_self": table(selfCount, 30), "top_inclusive_bwcd": table(incl, 30), "self_by_file": table(files, 20)}
        with open(os.path.join(RESULTS, f"profile-{self.args.storageName}-{id}.json"), "w") as f:
            json.dump(dict(summary, collapsed=lines), f, indent=1)
        return summary

    def post(self, url: str, headers: Optional[Dict[str, str]] = None, expect: int = 202) -> None:
        u = urlsplit(url)
        conn = http.client.HTTPConnection(u.hostname, u.port, timeout=10)
        with open(BODY_FILE, "rb") as f:
            body = f.read()
        conn.request("POST", u.path, body=body, headers=dict({"Content-Type": "application/json"}, **(headers or {})))
        r = conn.getresponse()
        data = r.read()
        conn.close()
        if r.status != expect:
            raise BenchError(f"sanity POST {url}: {r.status} {data[:300]!r} (expected {expect})")

    def server(self, name: str, argv: List[str], port: int, url: str) -> subprocess.Popen:
        log = os.path.join(self.tmp, f"{name}.log")
        p = self.procs.start(name, argv, "server", log=log, cwd=self.tmp)
        waitPort(port, p, log)
        self.post(url)
        return p

    # -- baselines --------------------------------------------------------

    def webhook(self) -> None:
        hooks = os.path.join(self.tmp, "hooks.json")
        common = {
            "response-message": '{"status":"accepted"}',
            "success-http-response-code": 202,
            "response-headers": [{"name": "Content-Type", "value": "application/json"}],
        }
        with open(hooks, "w") as f:
            json.dump([dict(common, id="noop", **{"execute-command": ""}), dict(common, id="true", **{"execute-command": "/bin/true"})], f)
        port = freePort()
        base = f"http://127.0.0.1:{port}/v1/webhooks"
        argv = ["webhook", "-hooks", hooks, "-ip", "127.0.0.1", "-port", str(port), "-urlprefix", "v1/webhooks"]

        say("a: webhook, hook without a command")
        p = self.server("webhook-a", argv, port, base + "/noop")
        self.wrk("a", base + "/noop", self.args.duration, p.pid)
        self.procs.stop(p)

        say("b: webhook, hook running /bin/true")
        p = self.server("webhook-b", argv, port, base + "/true")
        time.sleep(0.5)  # the sanity request's command
        b = self.wrk("b", base + "/true", self.args.duration, p.pid)
        # webhook answers 202 before it runs the command (go handleHook()),
        # so commands/s is counted from what actually ran.
        if self.acct.enabled:
            ran = self.acct.count(*b["acct_marks"], ppid=p.pid)
            b["cmds"] = ran["ok"]
            b["cmds_failed"] = ran["failed"]
            b["cmds_method"] = "process accounting: /bin/true exits whose parent is webhook, inside the window"
        else:
            a = self.raw["a"]
            background = max(a["forks"] - a["threads_delta"], 0) * b["duration_s"] / max(a["duration_s"], 1e-6)
            b["cmds"] = max(int(b["forks"] - b["threads_delta"] - background), 0)
            b["cmds_failed"] = None
            b["cmds_method"] = "/proc/stat forks less webhook threads less the background of window a"
        b["cmds_per_s"] = round(b["cmds"] / (b["dur_us"] / 1e6), 1)
        # Its backlog: commands that ran after the window, and answered
        # requests that never ran (webhook has no backpressure).
        mark = b["acct_marks"][1]
        later = 0
        t0 = time.monotonic()
        quiet = 0
        while self.acct.enabled and time.monotonic() - t0 < self.args.drain_max and quiet < 3:
            time.sleep(1)
            now = self.acct.mark()
            n = self.acct.count(mark, now, ppid=p.pid)["ok"]
            mark = now
            later += n
            quiet = quiet + 1 if n == 0 else 0
        b["drain_s"] = round(time.monotonic() - t0, 1)
        b["cmds_after_window"] = later if self.acct.enabled else None
        b["answered_never_ran"] = max(b["s202"] - b["cmds"] - later, 0) if self.acct.enabled else None
        self.procs.stop(p)
        say(f"  b: {b['cmds_per_s']:.0f} commands/s ({b['cmds']} in the window, {later} after it)")

    def twisted(self, id: str, kind: str) -> None:
        say(f"{id}: {kind} Twisted server")
        port = freePort()
        url = f"http://127.0.0.1:{port}/v1/webhooks/bench"
        p = self.server(f"twisted-{id}", [sys.executable, os.path.join(HERE, "baselines.py"), kind, str(port)], port, url)
        self.wrk(id, url, self.args.duration, p.pid)
        self.procs.stop(p)

    def spawn(self, id: str) -> None:
        say(f"{id}: reactor.spawnProcess(/bin/true), 16 at once")
        before = snapshot()
        mark0 = self.acct.mark()
        code, out = self.procs.run(
            f"spawn {id}",
            [sys.executable, os.path.join(HERE, "baselines.py"), "spawn", "--concurrency", "16", "--duration", f"{self.args.duration:g}"],
            "server", timeout=self.args.duration + 60, cwd=self.tmp,
        )
        after = snapshot()
        line = next((l for l in out.splitlines() if l.startswith("SPAWNRESULT")), None)
        if line is None:
            raise BenchError(f"spawn loop gave no result ({code}):\n{out}")
        s = parseKv(line)
        result: Dict[str, Any] = dict(s)
        result["procs_per_s"] = s["per_s"]
        result.update(usage(before, after))
        result["srv_pct"] = round(100.0 * s["parent_cpu_s"] / self.args.duration, 1)
        self.raw[id] = result
        say(f"  {id}: {s['per_s']:.0f} processes/s")

    def idleSample(self, seconds: float = 2.0) -> Dict[str, Any]:
        a = snapshot()
        time.sleep(seconds)
        b = snapshot()
        u = usage(a, b)
        u["forks_per_s"] = round(u.pop("forks") / seconds, 1)
        u.pop("srv_pct", None)
        u.pop("threads_delta", None)
        u["loadavg"] = os.getloadavg()
        return u


# ------------------------------------------------------------------- bwcd --


class Api:
    """
    A small blocking client for bwcd's API: one keep-alive connection per
    thread.
    """

    def __init__(self, port: int, key: str) -> None:
        self.port = port
        self.key = key
        self._local = threading.local()

    def _conn(self, fresh: bool = False) -> http.client.HTTPConnection:
        conn = getattr(self._local, "conn", None)
        if conn is None or fresh:
            if conn is not None:
                conn.close()
            conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=120)
            self._local.conn = conn
        return conn

    def call(self, method: str, path: str, body: Any = None) -> Tuple[int, Dict[str, str], Any]:
        headers = {"St2-Api-Key": self.key}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        for attempt in range(2):
            conn = self._conn(fresh=attempt > 0)
            try:
                conn.request(method, path, body=data, headers=headers)
                r = conn.getresponse()
                raw = r.read()
                break
            except (http.client.HTTPException, ConnectionError, OSError):
                if attempt:
                    raise
        try:
            parsed = json.loads(raw) if raw else None
        except ValueError:
            parsed = raw.decode("utf-8", "replace")
        return r.status, {k.lower(): v for k, v in r.getheaders()}, parsed

    def total(self, path: str) -> int:
        sep = "&" if "?" in path else "?"
        status, headers, body = self.call("GET", f"{path}{sep}limit=1")
        if status != 200:
            raise BenchError(f"GET {path}: {status} {str(body)[:300]}")
        return int(headers.get("x-total-count", "0"))

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None


def ruleBody(name: str, hook: str, criteria: Dict[str, Any], action: str) -> Dict[str, Any]:
    return {
        "name": name,
        "pack": "bench",
        "enabled": True,
        "trigger": {"type": "core.st2.webhook", "parameters": {"url": hook}},
        "criteria": criteria,
        "action": {"ref": action, "parameters": {}},
    }


def noMatch(i: int) -> Dict[str, Any]:
    """
    Criteria the benchmark body (C{"event": "push"}) never meets.
    """
    return {"trigger.body.event": {"type": "equals", "pattern": f"release-{i}"}}


class Bwcd:
    """
    One bwcd from a throw-away configuration: state in a temp folder, a
    C{bench} pack whose C{true} action is a copy of /bin/true run by the
    local-shell-script runner (argv, no shell: one fork+exec per execution,
    as webhook's hook does).
    """

    def __init__(self, bench: Bench, storage: Optional[str]) -> None:
        self.bench = bench
        self.dir = os.path.join(bench.tmp, "bwcd")
        os.makedirs(self.dir)
        self.packs = os.path.join(bench.tmp, "packs")
        actions = os.path.join(self.packs, "bench", "actions")
        os.makedirs(actions)
        with open(os.path.join(self.packs, "bench", "pack.yaml"), "w") as f:
            f.write("ref: bench\nname: bench\ndescription: bwcd benchmark actions\nversion: 1.0.0\nauthor: bench\n")
        shutil.copy2("/bin/true", os.path.join(actions, "true"))
        os.chmod(os.path.join(actions, "true"), 0o755)
        with open(os.path.join(actions, "true.yaml"), "w") as f:
            f.write("name: 'true'\nrunner_type: local-shell-script\nentry_point: 'true'\ndescription: /bin/true, exec'd directly\nenabled: true\nparameters: {}\n")
        self.apiPort = freePort()
        self.authPort = freePort()
        self.url = storage or "sqlite:///" + os.path.join(self.dir, "bwcd.sqlite")
        self.config = os.path.join(self.dir, "bwcd.yaml")
        users = os.path.join(self.dir, "htpasswd")
        open(users, "w").close()
        config = {
            "api": {"listen": f"tcp:{self.apiPort}:interface=127.0.0.1", "public_url": f"http://127.0.0.1:{self.apiPort}"},
            "auth": {"listen": f"tcp:{self.authPort}:interface=127.0.0.1", "users_file": users},
            "storage": {"url": self.url},
            "packs": {"paths": [self.packs]},
            "system": {"state_dir": self.dir},
        }
        with open(self.config, "w") as f:
            json.dump(config, f, indent=2)  # JSON is YAML
        self.log = os.path.join(self.dir, "daemon.log")
        self.env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
        self.env.pop("BWCD_CONFIG", None)
        self.env.pop("BWCD_STATE_DIR", None)
        self.proc: Optional[subprocess.Popen] = None
        self.api: Optional[Api] = None
        self.hookUrl = f"http://127.0.0.1:{self.apiPort}/v1/webhooks/"

    def createKey(self) -> str:
        code, out = self.bench.procs.run(
            "bwcd-admin", [os.path.join(BIN, "bwcd-admin"), "apikey-create", "--config", self.config], "load", timeout=120, cwd=self.dir, env=self.env
        )
        if code != 0:
            raise BenchError(f"bwcd-admin apikey-create failed ({code}):\n{out}")
        key = out.strip().splitlines()[-1].strip()
        self.api = Api(self.apiPort, key)
        return key

    @property
    def key(self) -> str:
        assert self.api is not None
        return self.api.key

    def start(self, timeout: float = 90.0) -> float:
        argv = [os.path.join(BIN, "twistd"), "-n", "--pidfile=", "bwcd", "--config", self.config]
        t0 = time.monotonic()
        self.proc = self.bench.procs.start("bwcd", argv, "server", log=self.log, cwd=self.dir, env=self.env)
        while True:
            if self.proc.poll() is not None:
                raise BenchError(f"bwcd exited ({self.proc.returncode}) during start-up:\n{tail(self.log)}")
            try:
                status, _, _ = self.api.call("GET", "/v1/actions?limit=1")
                if status == 200:
                    return round(time.monotonic() - t0, 2)
            except (OSError, http.client.HTTPException):
                self.api.close()
            if time.monotonic() - t0 > timeout:
                raise BenchError(f"bwcd not ready after {timeout:.0f} s:\n{tail(self.log)}")
            time.sleep(0.2)

    def stop(self) -> Optional[int]:
        self.api.close()
        if self.proc is None:
            return None
        code = self.bench.procs.stop(self.proc, timeout=60)
        self.proc = None
        return code

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def settle(self, maxWait: float = 20.0) -> float:
        """
        Wait (bounded) until the daemon is idle, so that a window measures
        the steady state and not the tail of the previous step (a WAL
        checkpoint after 10,000 rule inserts, queued engine work...).
        """
        t0 = time.monotonic()
        while time.monotonic() - t0 < maxWait:
            a = snapshot(self.pid)
            time.sleep(1.0)
            b = snapshot(self.pid)
            if usage(a, b)["srv_pct"] < 5.0:
                break
        return round(time.monotonic() - t0, 1)

    def webhooksWired(self) -> bool:
        status, _, _ = self.api.call("GET", "/v1/webhooks")
        return status == 200

    def createRules(self, bodies: List[Dict[str, Any]], workers: int = 16) -> Dict[str, Any]:
        """
        POST every rule body, C{workers} at a time; fail on any non-201.
        """
        failures: List[str] = []
        refs: Dict[str, str] = {}
        lock = threading.Lock()

        def one(body: Dict[str, Any]) -> None:
            status, _, doc = self.api.call("POST", "/v1/rules", body)
            with lock:
                if status != 201:
                    failures.append(f"{body['name']}: {status} {str(doc)[:200]}")
                else:
                    refs[body["name"]] = doc["trigger"]["ref"]

        t0 = time.monotonic()
        with ThreadPoolExecutor(max_workers=workers) as pool:
            list(pool.map(one, bodies))
        elapsed = time.monotonic() - t0
        if failures:
            raise BenchError(f"{len(failures)} of {len(bodies)} rules were refused, e.g. {failures[:3]}")
        return {"count": len(bodies), "seconds": round(elapsed, 2), "per_s": round(len(bodies) / max(elapsed, 1e-6), 1), "trigger_refs": refs}

    def drain(self, ruleName: Optional[str], triggerRef: str, maxWait: float) -> Dict[str, Any]:
        """
        Wait until every stored trigger instance of C{triggerRef} is
        processed and every execution of rule C{ruleName} has completed
        (bounded by C{maxWait}); return the counts seen last.  Instances
        left C{pending} while nothing else moves for 5 s are reported as
        C{instances_stuck} (the engine will only see them at a restart).
        """
        t0 = time.monotonic()
        last: Any = None
        since = t0
        while True:
            counts = self.counts(ruleName, triggerRef)
            now = time.monotonic()
            state = (counts["instances_unprocessed"], counts["executions"], counts["executions_open"])
            if state != last:
                last, since = state, now
            quiet = counts["executions_open"] == 0
            done = quiet and counts["instances_unprocessed"] == 0
            stuck = quiet and now - since >= 5.0
            if done or stuck or now - t0 > maxWait:
                counts["drained"] = done or stuck
                counts["instances_stuck"] = counts["instances_unprocessed"] if stuck and not done else 0
                counts["drain_s"] = round(now - t0, 1)
                return counts
            time.sleep(2 if counts["executions_open"] > 2000 else 1)

    def counts(self, ruleName: Optional[str], triggerRef: str) -> Dict[str, Any]:
        api = self.api
        c: Dict[str, Any] = {"instances": api.total(f"/v1/triggerinstances?trigger={quote(triggerRef)}")}
        c["instances_unprocessed"] = sum(api.total(f"/v1/triggerinstances?trigger={quote(triggerRef)}&status={s}") for s in ("pending", "processing"))
        if ruleName is None:
            c["executions"] = c["executions_open"] = 0
            return c
        c["enforcements"] = api.total(f"/v1/ruleenforcements?rule_ref=bench.{ruleName}")
        c["executions"] = api.total(f"/v1/executions?rule={ruleName}")
        byStatus = {s: api.total(f"/v1/executions?rule={ruleName}&status={s}") for s in ("requested", "scheduled", "running", "succeeded", "failed")}
        c["executions_by_status"] = byStatus
        c["executions_open"] = byStatus["requested"] + byStatus["scheduled"] + byStatus["running"]
        return c

    def executions(self, ruleName: str, status: str = "", withInstance: bool = False) -> List[Dict[str, Any]]:
        exclude = "result" if withInstance else "result,trigger_instance"
        path = f"/v1/executions?rule={ruleName}&limit=-1&exclude_attributes={exclude}"
        if status:
            path += f"&status={status}"
        code, _, docs = self.api.call("GET", path)
        if code != 200:
            raise BenchError(f"GET {path}: {code} {str(docs)[:300]}")
        return docs


def storageFor(url: Optional[str]) -> Tuple[Optional[str], Optional[str]]:
    """
    The storage URL bwcd gets (a MongoDB URL with a database of this run's
    own), and that database's name (to drop at the end).
    """
    if not url:
        return None, None
    if not url.startswith("mongodb://"):
        raise BenchError("--storage takes a mongodb://HOST:PORT[/DB] URL (the default is the embedded SQLite store)")
    parts = urlsplit(url)
    db = "bwcdbench_%d_%d" % (int(time.time()), os.getpid())
    return urlunsplit((parts.scheme, parts.netloc, "/" + db, parts.query, "")), db


def dropMongo(url: str, db: str) -> None:
    try:
        import pymongo

        client = pymongo.MongoClient(url, serverSelectionTimeoutMS=5000)
        client.drop_database(db)
        client.close()
    except Exception as e:  # best effort: a leftover database is only disk
        say(f"could not drop MongoDB database {db}: {e}")


# -------------------------------------------------------------- the run --


def runBwcd(bench: Bench, storage: Optional[str]) -> None:
    args, raw = bench.args, bench.raw
    bw = Bwcd(bench, storage)
    bw.createKey()
    raw["bwcd_start_s"] = bw.start()
    say(f"bwcd ready in {raw['bwcd_start_s']} s (pid {bw.pid}, storage {bw.url.split('?')[0]})")
    raw["bwcd_rss_start_mb"] = rssMb(bw.pid)
    if not bw.webhooksWired():
        raise BenchError("bwcd does not serve /v1/webhooks yet (webhooks and rules are not wired into the daemon)")
    key = bw.key

    # P1: 10 rules on one hook, none matching.
    made = bw.createRules([ruleBody(f"p1_r{i}", "bench-p1", noMatch(i), "core.noop") for i in range(10)], workers=4)
    p1Trigger = made["trigger_refs"]["p1_r0"]
    bw.bench.post(bw.hookUrl + "bench-p1", {"St2-Api-Key": key})
    say("P1: webhook ingest, 10 rules that do not match")
    raw["p1_settle_s"] = bw.settle()
    before = bw.api.total(f"/v1/triggerinstances?trigger={quote(p1Trigger)}")
    p1 = bench.wrk("p1", bw.hookUrl + "bench-p1", args.duration, bw.pid, key, profile=True)
    p1["stored_instances"] = bw.api.total(f"/v1/triggerinstances?trigger={quote(p1Trigger)}") - before
    p1["lost"] = max(p1["s202"] - p1["stored_instances"], 0)
    p1["rss_mb"] = rssMb(bw.pid)

    # P4: 10,000 rules over 1,000 hooks (bench-p1 keeps its 10).
    hooks = max(args.rules // 10, 1)
    bodies = [ruleBody(f"h{h:04d}_r{i}", f"bench-h{h:04d}", noMatch(i), "core.noop") for h in range(1, hooks) for i in range(10)]
    say(f"P4: creating {len(bodies)} rules over {hooks - 1} more hooks through POST /v1/rules")
    created = bw.createRules(bodies)
    created.pop("trigger_refs")
    raw["p4_rule_creation"] = created
    say(f"  {created['count']} rules in {created['seconds']} s ({created['per_s']:.0f}/s)")
    raw["p4_rules_total"] = bw.api.total("/v1/rules")
    raw["p4_settle_s"] = bw.settle()
    before = bw.api.total(f"/v1/triggerinstances?trigger={quote(p1Trigger)}")
    p4 = bench.wrk("p4", bw.hookUrl + "bench-p1", args.duration, bw.pid, key)
    p4["stored_instances"] = bw.api.total(f"/v1/triggerinstances?trigger={quote(p1Trigger)}") - before
    p4["lost"] = max(p4["s202"] - p4["stored_instances"], 0)
    p4["rss_mb"] = rssMb(bw.pid)
    p1counts = bw.drain(None, p1Trigger, args.drain_max)
    raw["p1_instances_after_drain"] = p1counts

    # P2: a matching rule runs /bin/true per webhook.
    made = bw.createRules([ruleBody("p2", "bench-p2", {"trigger.body.event": {"type": "equals", "pattern": "push"}}, "bench.true")], workers=1)
    p2Trigger = made["trigger_refs"]["p2"]
    say("P2: a rule runs /bin/true per webhook")
    p2 = bench.wrk("p2", bw.hookUrl + "bench-p2", args.duration, bw.pid, key, profile=True)
    p2["rss_mb"] = rssMb(bw.pid)
    p2["at_window_end"] = bw.counts("p2", p2Trigger)
    say(f"  at the end of the window: {p2['at_window_end']['executions_open']} executions not completed; draining (at most {args.drain_max:.0f} s)")
    counts = bw.drain("p2", p2Trigger, args.drain_max)
    p2.update({f"after_drain_{k}": v for k, v in counts.items()})
    t0, t1 = p2["wall_start"], p2["wall_end"]
    done = bw.executions("p2", "succeeded")
    ends = [epoch(d["end_timestamp"]) for d in done if d.get("end_timestamp")]
    p2["cmds"] = sum(1 for e in ends if t0 <= e <= t1)
    p2["cmds_per_s"] = round(p2["cmds"] / max(t1 - t0, 1e-6), 1)
    p2["cmds_method"] = "stored executions of the rule with status succeeded and end_timestamp inside the wrk window"
    p2["stored_instances"] = counts["instances"]
    p2["lost"] = max(p2["s202"] - counts["instances"], 0)
    if bench.acct.enabled:
        inWindow = bench.acct.count(*p2["acct_marks"], ppid=bw.pid)
        total = bench.acct.count(p2["acct_marks"][0], bench.acct.mark(), ppid=bw.pid)
        p2["acct_cmds_in_window"] = inWindow["ok"]
        p2["acct_cmds_total"] = total["ok"]
        p2["acct_cmds_failed"] = total["failed"]
    say(f"  P2: {p2['cmds_per_s']:.0f} commands/s; {p2['s202']} accepted, {counts['instances']} instances, "
        f"{counts.get('enforcements')} enforcements, {counts['executions']} executions ({counts['executions_by_status']}), drained={counts['drained']} in {counts['drain_s']} s")

    # P3: fixed rate at half of P2's commands/s; latency from stored timestamps.
    rate = max(p2["cmds_per_s"] / 2.0, 1.0)
    made = bw.createRules([ruleBody("p3", "bench-p3", {"trigger.body.event": {"type": "equals", "pattern": "push"}}, "bench.true")], workers=1)
    p3Trigger = made["trigger_refs"]["p3"]
    say(f"P3: open loop at {rate:.0f} req/s for {args.p3_duration:g} s")
    code, out = bench.procs.run(
        "openloop",
        [sys.executable, os.path.join(HERE, "openloop.py"), "--url", bw.hookUrl + "bench-p3", "--rate", f"{rate:.2f}",
         "--duration", f"{args.p3_duration:g}", "--body-file", BODY_FILE, "--api-key", key],
        "load", timeout=args.p3_duration + 60,
    )
    line = next((l for l in out.splitlines() if l.startswith("OPENLOOP")), None)
    if line is None:
        raise BenchError(f"open-loop generator gave no result ({code}):\n{out}")
    p3: Dict[str, Any] = {"target_rate": round(rate, 1), "duration_s": args.p3_duration, "client": parseKv(line)}
    p3["backlog_before"] = counts["executions_open"] + counts["instances_unprocessed"] - counts.get("instances_stuck", 0)
    counts = bw.drain("p3", p3Trigger, args.drain_max)
    p3.update({f"after_drain_{k}": v for k, v in counts.items()})
    lat: List[float] = []
    for d in bw.executions("p3", withInstance=True):
        occurred = (d.get("trigger_instance") or {}).get("occurrence_time")
        running = next((e["timestamp"] for e in d.get("log") or [] if e.get("status") == "running"), None)
        if occurred and running:
            lat.append((epoch(running) - epoch(occurred)) * 1000.0)
    p3["samples"] = len(lat)
    for q in (50, 90, 99):
        v = percentile(lat, q)
        p3[f"p{q}_ms"] = round(v, 2) if v is not None else None
    p3["max_ms"] = round(max(lat), 2) if lat else None
    p3["lost"] = max(int(p3["client"].get("s202", 0)) - counts["instances"], 0)
    raw["p3"] = p3
    say(f"  P3: accepted -> running p50 {p3['p50_ms']} ms, p99 {p3['p99_ms']} ms over {len(lat)} executions (client p99 {p3['client'].get('p99_ms')} ms)")

    # P5: exactly the P4 rule set, fresh process, idle RSS; then growth under P1 load.
    for name in ("p2", "p3"):
        bw.api.call("DELETE", f"/v1/rules/bench.{name}")
    raw["p5_rules_total"] = bw.api.total("/v1/rules")
    time.sleep(2)
    raw["p5_rss_before_restart_mb"] = rssMb(bw.pid)
    say("P5: restarting bwcd to measure idle RSS with the rules loaded from the store")
    raw["bwcd_stop_code"] = bw.stop()
    raw["bwcd_restart_s"] = bw.start()
    time.sleep(args.settle)
    raw["unprocessed_instances_after_restart"] = sum(bw.api.total(f"/v1/triggerinstances?status={s}") for s in ("pending", "processing"))
    samples = []
    for _ in range(3):
        samples.append(rssMb(bw.pid))
        time.sleep(1)
    raw["p5_rss_idle_samples_mb"] = samples
    raw["p5_rss_idle_mb"] = max(s for s in samples if s is not None)
    say(f"  idle RSS {raw['p5_rss_idle_mb']} MB with {raw['p5_rules_total']} rules")
    say(f"P5: P1 load for {args.p5_duration:g} s, RSS sampled every second")
    series: List[Tuple[float, Optional[float]]] = []
    stopSampling = threading.Event()
    pid = bw.pid

    def sample() -> None:
        t0 = time.monotonic()
        while not stopSampling.wait(1.0):
            series.append((round(time.monotonic() - t0, 1), rssMb(pid)))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    before = bw.api.total(f"/v1/triggerinstances?trigger={quote(p1Trigger)}")
    p5 = bench.wrk("p5_load", bw.hookUrl + "bench-p1", args.p5_duration, pid, key)
    stopSampling.set()
    sampler.join()
    p5["stored_instances"] = bw.api.total(f"/v1/triggerinstances?trigger={quote(p1Trigger)}") - before
    p5["lost"] = max(p5["s202"] - p5["stored_instances"], 0)
    firstMinute = min(60.0, args.p5_duration / 2.0)
    base = next((r for t, r in series if t >= firstMinute and r is not None), None)
    end = next((r for t, r in reversed(series) if r is not None), None)
    raw["p5_rss_series_mb"] = series
    raw["p5_rss_reference_at_s"] = firstMinute
    raw["p5_rss_reference_mb"] = base
    raw["p5_rss_end_mb"] = end
    raw["p5_rss_growth_pct"] = round(100.0 * (end - base) / base, 1) if base and end else None
    say(f"  RSS {base} MB at {firstMinute:g} s -> {end} MB at the end ({raw['p5_rss_growth_pct']} %)")
    # Overload: many more connections on a hook whose rule runs a command;
    # every 202 must have a stored instance, refusals must be 503 + Retry-After.
    made = bw.createRules([ruleBody("ovl", "bench-ovl", {}, "bench.true")], workers=1)
    ovlTrigger = made["trigger_refs"]["ovl"]
    say(f"overload: wrk -c{args.overload_connections} on a hook whose rule runs /bin/true, {args.duration:g} s")
    before = bw.api.total(f"/v1/triggerinstances?trigger={quote(ovlTrigger)}")
    ovl = bench.wrk("overload", bw.hookUrl + "bench-ovl", args.duration, bw.pid, key, conns=args.overload_connections)
    ovl["stored_instances"] = bw.api.total(f"/v1/triggerinstances?trigger={quote(ovlTrigger)}") - before
    ovl["lost"] = max(ovl["s202"] - ovl["stored_instances"], 0)
    ovl["executions_open_at_end"] = bw.counts("ovl", ovlTrigger)["executions_open"]
    ovl["rss_mb"] = rssMb(bw.pid)
    say(f"  {ovl['s202']} accepted, {ovl['s503']} refused with 503 ({ovl['s503_retry_after']} with Retry-After), {ovl['sother']} other, "
        f"{ovl['stored_instances']} stored, {ovl['executions_open_at_end']} executions waiting at the end")
    raw["bwcd_log_bytes"] = os.path.getsize(bw.log)
    if bw.url.startswith("sqlite:///"):
        path = bw.url[len("sqlite:///"):]
        raw["sqlite_bytes"] = sum(os.path.getsize(p) for p in (path, path + "-wal") if os.path.exists(p))
    raw["bwcd_stop_code_final"] = bw.stop()
    text = open(bw.log, encoding="utf-8", errors="replace").read()
    errors = re.findall(r"^\S+ \[[^\]]*#(?:critical|error)\] .*$", text, re.M)
    raw["bwcd_log_error_lines"] = len(errors)
    raw["bwcd_log_errors_first"] = errors[:10]
    # the exception that ended each of the first few tracebacks
    raw["bwcd_log_exceptions"] = sorted(set(re.findall(r"^\t(\w[\w.]*(?:Error|Exception|Failure)\b.*)$", text, re.M)))[:10]


def ratio(a: Optional[float], b: Optional[float]) -> Optional[float]:
    if a is None or not b:
        return None
    return round(a / b, 3)


def summarize(raw: Dict[str, Any]) -> Dict[str, Any]:
    g = lambda id, k: (raw.get(id) or {}).get(k)  # noqa: E731
    out: Dict[str, Any] = {
        "p1_ingest_ratio": ratio(g("p1", "rps"), g("c", "rps")),
        "p2_commands_ratio": ratio(g("p2", "cmds_per_s"), g("b", "cmds_per_s")),
        "p3_start_latency_p99_ms": g("p3", "p99_ms"),
        "p4_rule_scale_ratio": ratio(g("p4", "rps"), g("p1", "rps")),
        "p5_rss_idle_mb": raw.get("p5_rss_idle_mb"),
        "p5_rss_growth_pct": raw.get("p5_rss_growth_pct"),
    }
    out["other_ratios"] = {
        "klein_vs_bare (d/c)": ratio(g("d", "rps"), g("c", "rps")),
        "bare_vs_webhook (c/a)": ratio(g("c", "rps"), g("a", "rps")),
        "bwcd_p1_vs_klein (P1/d)": ratio(g("p1", "rps"), g("d", "rps")),
        "bwcd_p1_vs_webhook (P1/a)": ratio(g("p1", "rps"), g("a", "rps")),
        "webhook_cmds_vs_spawn_limit (b/e)": ratio(g("b", "cmds_per_s"), g("e", "procs_per_s")),
        "bwcd_cmds_vs_spawn_limit (P2/e)": ratio(g("p2", "cmds_per_s"), g("e", "procs_per_s")),
        "bwcd_p5_load_vs_p1 (P5 load/P1)": ratio(g("p5_load", "rps"), g("p1", "rps")),
    }
    return out


def goalTable(summary: Dict[str, Any]) -> Dict[str, Any]:
    out = {}
    for key, (op, target) in GOALS.items():
        v = summary.get(key)
        met = None if v is None else (v >= target if op == ">=" else v <= target)
        out[key] = {"value": v, "goal": f"{op} {target:g}", "met": met}
    return out


def overload(raw: Dict[str, Any]) -> Dict[str, Any]:
    windows = {}
    for id in ("p1", "p4", "p2", "p5_load", "overload"):
        w = raw.get(id)
        if w:
            windows[id] = {k: w.get(k) for k in ("s202", "s503", "s503_retry_after", "sother", "stored_instances", "lost", "timeout")}
    p3 = raw.get("p3") or {}
    if p3:
        c = p3.get("client", {})
        windows["p3"] = {"s202": int(c.get("s202", 0)), "s503": int(c.get("s503", 0)), "sother": int(c.get("sother", 0)),
                         "stored_instances": p3.get("after_drain_instances"), "lost": p3.get("lost")}
    lost = sum((w.get("lost") or 0) for w in windows.values())
    s503 = sum((w.get("s503") or 0) for w in windows.values())
    without = sum(((w.get("s503") or 0) - (w.get("s503_retry_after") or 0)) for w in windows.values() if "s503_retry_after" in w)
    stuck = sum(((raw.get(k) or {}).get(f) or 0) for k, f in (("p1_instances_after_drain", "instances_stuck"), ("p2", "after_drain_instances_stuck"), ("p3", "after_drain_instances_stuck")))
    ovl = raw.get("overload") or {}
    return {
        "windows": windows,
        "instances_left_pending_until_restart": stuck,
        "unprocessed_instances_after_restart": raw.get("unprocessed_instances_after_restart"),
        "executions_waiting_max": max([v for v in ((raw.get("p2") or {}).get("at_window_end", {}).get("executions_open"), ovl.get("executions_open_at_end")) if v is not None] or [None]) if (raw.get("p2") or ovl) else None,
        "accepted_but_not_stored": lost,
        "refused_503": s503,
        "refused_503_without_retry_after": without,
        "correct": lost == 0 and without == 0,
    }


def fmt(v: Any, digits: int = 0) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


def report(result: Dict[str, Any]) -> str:
    raw = result["raw"]
    lines = []
    m = result["machine"]
    lines.append(f"== bench/run  {result['started']}  storage: {result['storage']}  mode: {result['mode']}")
    lines.append(f"bwcd    : commit {m.get('bwcd_commit')}{' with uncommitted changes in bwcd/' if m.get('bwcd_tree_modified') else ''}")
    lines.append(f"machine : {m['cpus']} CPUs ({m['cpu_model']}), kernel {m['kernel']}; {m['software']}")
    lines.append(f"load    : wrk -t1 -c32 keep-alive {'off' if result['settings']['conn_close'] else 'on'}, {m['body_bytes']}-byte JSON, windows {result['settings']['duration_s']:g} s; pinning: {result['pinning']}")
    lines.append(f"before  : cpu busy {raw.get('idle_before', {}).get('cpu0_pct', '-')}% / {raw.get('idle_before', {}).get('cpu1_pct', '-')}%, "
                 f"{raw.get('idle_before', {}).get('forks_per_s', '-')} forks/s, loadavg {fmt(raw.get('idle_before', {}).get('loadavg', [None])[0], 2)} (other work on the machine)")
    busy = max(raw.get("idle_before", {}).get("cpu0_pct", 0), raw.get("idle_before", {}).get("cpu1_pct", 0))
    if busy > 15:
        lines.append(f"WARNING : a CPU was {busy:.0f}% busy before the run started: other work shares this machine, figures are perturbed")
    lines.append("")
    head = f"{'id':<8}{'what':<46}{'req/s':>8}{'p50 ms':>8}{'p99 ms':>8}{'errors':>7}{'cmds/s':>8}{'srv%':>6}{'cpu0%':>6}{'cpu1%':>6}{'steal':>6}"
    lines.append(head)

    def row(id: str, what: str, cmds: Any = None) -> None:
        w = raw.get(id)
        if not w:
            lines.append(f"{id:<8}{what:<46}{'(not measured)':>20}")
            return
        if "rps" in w:
            lines.append(f"{id:<8}{what:<46}{fmt(w['rps']):>8}{fmt(w['p50_us'] / 1000, 2):>8}{fmt(w['p99_us'] / 1000, 2):>8}{fmt(w['errors']):>7}{fmt(cmds):>8}"
                         f"{fmt(w.get('srv_pct')):>6}{fmt(w.get('cpu0_pct')):>6}{fmt(w.get('cpu1_pct')):>6}{fmt(w.get('steal_pct')):>6}")
        else:
            lines.append(f"{id:<8}{what:<46}{'-':>8}{'-':>8}{'-':>8}{fmt(int(w.get('failed', 0))):>7}{fmt(w.get('procs_per_s')):>8}"
                         f"{fmt(w.get('srv_pct')):>6}{fmt(w.get('cpu0_pct')):>6}{fmt(w.get('cpu1_pct')):>6}{fmt(w.get('steal_pct')):>6}")

    row("a", "webhook: hook without command")
    row("b", "webhook: hook runs /bin/true", (raw.get("b") or {}).get("cmds_per_s"))
    row("c", "twisted.web Resource, json.loads, 202")
    row("d", "Klein route, json.loads, 202")
    row("e", "spawnProcess(/bin/true), 16 at once")
    row("p1", "bwcd P1: 10 rules, none match")
    row("p4", f"bwcd P4: {raw.get('p4_rules_total', '?')} rules, none match")
    row("p2", "bwcd P2: rule runs bench.true (/bin/true)", (raw.get("p2") or {}).get("cmds_per_s"))
    row("p5_load", f"bwcd P5: P1 load for {result['settings']['p5_duration_s']:g} s")
    row("overload", "bwcd overload: rule runs /bin/true, many conns")
    row("c2", "twisted.web Resource again (noise)")
    row("e2", "spawnProcess again (noise)")
    lines.append("")
    b = raw.get("b")
    if b:
        lines.append(f"b : {b['s202']} answered 202, {b['cmds']} commands ran in the window ({b['cmds_method']}), "
                     f"{fmt(b.get('cmds_after_window'))} after it, {fmt(b.get('answered_never_ran'))} answered but never ran")
    p2 = raw.get("p2")
    if p2:
        lines.append(f"P2: {p2['s202']} accepted, {p2.get('after_drain_instances')} instances, {p2.get('after_drain_enforcements')} enforcements, "
                     f"{p2.get('after_drain_executions')} executions {p2.get('after_drain_executions_by_status')}; drained={p2.get('after_drain_drained')} "
                     f"in {p2.get('after_drain_drain_s')} s; /bin/true processes (acct): {fmt(p2.get('acct_cmds_in_window'))} in window, {fmt(p2.get('acct_cmds_total'))} in all")
    p3 = raw.get("p3")
    if p3:
        c = p3["client"]
        lines.append(f"P3: {p3['target_rate']} req/s open loop for {p3['duration_s']:g} s: {int(c.get('sent', 0))} sent, {int(c.get('s202', 0))} accepted, {int(c.get('missed', 0))} missed; "
                     f"accepted -> running p50 {fmt(p3.get('p50_ms'), 1)} / p90 {fmt(p3.get('p90_ms'), 1)} / p99 {fmt(p3.get('p99_ms'), 1)} / max {fmt(p3.get('max_ms'), 1)} ms over {p3['samples']} executions "
                     f"(client latency p99 {fmt(c.get('p99_ms'), 1)} ms)")
    if "p4_rule_creation" in raw:
        rc = raw["p4_rule_creation"]
        lines.append(f"P4: {rc['count']} rules created through POST /v1/rules in {rc['seconds']} s ({fmt(rc['per_s'])}/s, 16 concurrent); {raw.get('p4_rules_total')} rules in all")
    if "p5_rss_idle_mb" in raw:
        lines.append(f"P5: RSS idle {raw['p5_rss_idle_mb']} MB with {raw.get('p5_rules_total')} rules (fresh start; {raw.get('p5_rss_before_restart_mb')} MB before the restart); "
                     f"under load {raw.get('p5_rss_reference_mb')} MB at {fmt(raw.get('p5_rss_reference_at_s'))} s -> {raw.get('p5_rss_end_mb')} MB at {result['settings']['p5_duration_s']:g} s")
    ov = result.get("overload")
    if ov:
        o = raw.get("overload") or {}
        if o:
            lines.append(f"overload window (wrk -c{o.get('conns', '?')}): {o['rps']:.0f} req/s, {o['s202']} accepted, {o['s503']} refused 503, {o['sother']} other status, "
                         f"{o['timeout']} timeouts, {o['stored_instances']} instances stored, {o['executions_open_at_end']} executions waiting at the end")
        if raw.get("bwcd_log_error_lines"):
            lines.append(f"bwcd log: {raw['bwcd_log_error_lines']} error/critical lines, exceptions {raw.get('bwcd_log_exceptions')}")
        lines.append(f"overload, all windows: {ov['accepted_but_not_stored']} accepted-but-not-stored, {ov['refused_503']} refused with 503 "
                     f"({ov['refused_503_without_retry_after']} without Retry-After) -> {'correct' if ov['correct'] else 'NOT CORRECT'}; "
                     f"most executions waiting: {ov['executions_waiting_max']}; instances stored but left pending until a restart: "
                     f"{ov['instances_left_pending_until_restart']} (still unprocessed after the restart: {ov['unprocessed_instances_after_restart']})")
    lines.append("")
    lines.append("== goals (ratios against baselines measured in this run)")
    if not result.get("goals_apply", True):
        lines.append(f"(bwcd ran on {result['storage']}: the goals are stated for the embedded SQLite store; shown for information only)")
    for key, g in result["goals"].items():
        state = {True: "met", False: "NOT met", None: "n/a"}[g["met"]]
        lines.append(f"{key:<28}{fmt(g['value'], 3) if isinstance(g['value'], float) else fmt(g['value']):>10}   goal {g['goal']:<8} {state}")
    lines.append("")
    lines.append("== other ratios")
    for key, v in result["summary"]["other_ratios"].items():
        lines.append(f"{key:<40}{fmt(v, 3):>8}")
    for id in ("p1", "p2"):
        prof = (raw.get(id) or {}).get("profile")
        if prof and prof.get("samples"):
            lines.append("")
            lines.append(f"== py-spy profile of bwcd during {id} ({prof['samples']} samples of busy threads; % of samples)")
            lines.append("   threads: " + ", ".join(f"{name} {pct}%" for name, pct in prof["by_thread"]))
            lines.append("   self (on top of the stack):")
            for name, pct in prof["top_self"][:15]:
                lines.append(f"   {pct:5.1f}%  {name}")
            lines.append("   inclusive, bwcd functions:")
            for name, pct in prof["top_inclusive_bwcd"][:15]:
                lines.append(f"   {pct:5.1f}%  {name}")
    n = result.get("noise", {})
    if n:
        lines.append("")
        lines.append("== noise (the same baseline measured at the start and at the end of the run)")
        for key, v in n.items():
            lines.append(f"{key:<40}{v}")
    lines.append("")
    lines.append("columns: errors = wrk socket errors + non-2xx (for e: children that exited non-zero); cmds/s = commands completed per")
    lines.append("  second inside the window; srv% = the server's own CPU (100 = one core); cpu0%/cpu1% = busy share of each CPU")
    lines.append("  (cpu0 = load generator, cpu1 = server); steal = CPU taken by the hypervisor.")
    return "\n".join(lines)


def spread(a: Optional[float], b: Optional[float]) -> str:
    if not a or not b:
        return "-"
    return f"{a:.0f} / {b:.0f}  spread {100.0 * abs(a - b) / ((a + b) / 2):.1f}%"


def machineInfo() -> Dict[str, Any]:
    model = ""
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    import twisted
    import klein

    versions = [f"Python {platform.python_version()}", f"Twisted {twisted.__version__}", f"Klein {klein.__version__}"]
    for tool, flag in (("webhook", "-version"), ("wrk", "-v")):
        if shutil.which(tool):
            out = subprocess.run([tool, flag], capture_output=True, text=True, timeout=10)
            text = (out.stdout + out.stderr).strip().splitlines()
            versions.append(f"{tool} {text[0].split()[-1 if tool == 'webhook' else 1] if text else '?'}")
    with open(BODY_FILE, "rb") as f:
        bodyBytes = len(f.read())
    mem = 0
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                mem = int(line.split()[1]) // 1024
    commit = dirty = None
    try:
        commit = subprocess.run(["git", "-C", REPO, "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=10).stdout.strip() or None
        status = subprocess.run(["git", "-C", REPO, "status", "--porcelain", "--untracked-files=no", "--", "bwcd", "twisted"], capture_output=True, text=True, timeout=10).stdout
        dirty = bool(status.strip())
    except (OSError, subprocess.SubprocessError):
        pass
    return {
        "bwcd_commit": commit,
        "bwcd_tree_modified": dirty,
        "cpus": os.cpu_count(),
        "cpu_model": model,
        "kernel": platform.release(),
        "mem_mb": mem,
        "software": ", ".join(versions),
        "body_bytes": bodyBytes,
        "nofile_limit": resource.getrlimit(resource.RLIMIT_NOFILE),
    }


def ensureTools() -> Dict[str, bool]:
    """
    wrk is required, webhook optional; install both as root when missing.
    """
    missing = [t for t in ("wrk", "webhook") if not shutil.which(t)]
    if missing and os.geteuid() == 0 and shutil.which("apt-get"):
        say(f"installing {' '.join(missing)} with apt-get")
        quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL, "env": dict(os.environ, DEBIAN_FRONTEND="noninteractive")}
        if subprocess.run(["apt-get", "install", "-y"] + missing, timeout=600, **quiet).returncode != 0:
            subprocess.run(["apt-get", "update"], timeout=600, **quiet)
            subprocess.run(["apt-get", "install", "-y"] + missing, timeout=600, **quiet)
    have = {t: bool(shutil.which(t)) for t in ("wrk", "webhook", "taskset")}
    if not have["wrk"]:
        raise BenchError("wrk is required (apt-get install wrk)")
    return have


def main(argv: List[str]) -> int:
    parser = argparse.ArgumentParser(prog="bench/run", description="bwcd benchmark (issue 6): baselines and bwcd in one run, results in bench/results/latest.json")
    parser.add_argument("--storage", default=None, help="mongodb://HOST:PORT[/DB] runs bwcd on that MongoDB (a database of its own, dropped at the end), reported separately; default: embedded SQLite")
    parser.add_argument("--quick", action="store_true", help="short windows (about 2 minutes in all) for development; not for quoting")
    parser.add_argument("--duration", type=float, default=None, help="seconds per load window (default 10, quick 4)")
    parser.add_argument("--p3-duration", type=float, default=None, help="seconds of the P3 open-loop window (default 20, quick 8)")
    parser.add_argument("--p5-duration", type=float, default=None, help="seconds of the P5 memory window (default 120, quick 20; the issue's goal is stated for 600)")
    parser.add_argument("--rules", type=int, default=None, help="rules for P4/P5, 10 per hook (default 10000, quick 2000)")
    parser.add_argument("--drain-max", type=float, default=None, help="most seconds to wait for a backlog of executions to finish (default 120, quick 60)")
    parser.add_argument("--overload-connections", type=int, default=256, help="wrk connections of the overload window (default 256)")
    parser.add_argument("--settle", type=float, default=3.0, help="seconds between bwcd being ready and the idle RSS samples")
    parser.add_argument("--no-pin", action="store_true", help="do not pin servers and load generators to CPUs")
    parser.add_argument("--no-webhook", action="store_true", help="skip adnanh/webhook even when installed")
    parser.add_argument("--no-acct", action="store_true", help="count webhook's commands from /proc/stat forks instead of process accounting")
    parser.add_argument("--conn-close", action="store_true", help="send Connection: close (a new TCP connection per request)")
    parser.add_argument("--skip-baselines", action="store_true", help="measure bwcd only (ratios become null); for development")
    parser.add_argument("--skip-bwcd", action="store_true", help="measure the baselines only")
    parser.add_argument("--output", default=None, help="results file (default bench/results/latest.json, or latest-mongodb.json with --storage)")
    parser.add_argument("--profile", action="store_true", help="sample bwcd with py-spy during P1 and P2 (summaries in the results, stacks in bench/results/profile-*.json); perturbs the figures")
    parser.add_argument("--keep-temp", action="store_true", help="keep the temporary folder (logs, database) for inspection")
    args = parser.parse_args(argv)
    quick = args.quick
    for name, full, short in (("duration", 10.0, 4.0), ("p3_duration", 20.0, 8.0), ("p5_duration", 120.0, 20.0), ("rules", 10000, 2000), ("drain_max", 120.0, 60.0)):
        if getattr(args, name) is None:
            setattr(args, name, short if quick else full)

    def terminate(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, terminate)
    signal.signal(signal.SIGHUP, terminate)

    have = ensureTools()
    ncpu = os.cpu_count() or 1
    pin = not args.no_pin and have["taskset"] and ncpu >= 2
    serverCpu, loadCpu = (1, 0) if pin else (None, None)
    if pin:
        os.sched_setaffinity(0, {loadCpu})
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

    storage, mongoDb = storageFor(args.storage)
    args.storageName = "mongodb" if storage else "sqlite"
    output = args.output or os.path.join(RESULTS, "latest-mongodb.json" if storage else "latest.json")
    os.makedirs(RESULTS, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix="bwcd-bench-")
    procs = Processes(serverCpu, loadCpu)
    acct = Acct(tmp)
    acctOk = False
    if not args.no_acct:
        acctOk = acct.enable()
        if not acctOk:
            say(f"process accounting unavailable ({acct.error}); counting webhook's commands from /proc/stat")
    bench = Bench(args, tmp, procs, acct)
    raw = bench.raw
    started = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    machine = machineInfo()  # before the run: the commit measured
    t0 = time.monotonic()
    failure: Optional[str] = None
    try:
        raw["idle_before"] = bench.idleSample()
        if not args.skip_baselines:
            if have["webhook"] and not args.no_webhook:
                bench.webhook()
            else:
                say("webhook not installed: rows a and b skipped, p2_commands_ratio will be null")
            bench.twisted("c", "bare")
            bench.twisted("d", "klein")
            bench.spawn("e")
        if not args.skip_bwcd:
            try:
                runBwcd(bench, storage)
            except BenchError as e:
                # keep the baselines' noise repeats: they still say something
                failure = f"bwcd: {e}"
                say(failure)
                procs.stopAll()
        if not args.skip_baselines:
            bench.twisted("c2", "bare")
            bench.spawn("e2")
        raw["idle_after"] = bench.idleSample()
    except KeyboardInterrupt as e:
        failure = f"interrupted ({str(e) or 'Ctrl-C'})"
    except BenchError as e:
        failure = str(e)
    except Exception as e:  # report what was measured, then the error
        import traceback

        failure = f"{type(e).__name__}: {e}\n{traceback.format_exc()}"
    finally:
        procs.stopAll()
        acct.disable()
        if mongoDb:
            dropMongo(storage, mongoDb)
        if args.keep_temp:
            say(f"temporary folder kept: {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)

    summary = summarize(raw)
    result: Dict[str, Any] = {
        "started": started,
        "elapsed_s": round(time.monotonic() - t0, 1),
        "mode": "quick" if quick else "full",
        "storage": "mongodb" if storage else "sqlite",
        "goals_apply": not storage,
        "complete": failure is None,
        "error": failure,
        "machine": machine,
        "pinning": "servers and their children on CPU 1, load generators on CPU 0" if pin else "none",
        "settings": {
            "duration_s": args.duration, "p3_duration_s": args.p3_duration, "p5_duration_s": args.p5_duration,
            "rules": args.rules, "drain_max_s": args.drain_max, "profiled": args.profile, "overload_connections": args.overload_connections, "conn_close": args.conn_close, "connections": 32,
            "webhook": have["webhook"] and not args.no_webhook, "command_count": "process accounting" if acctOk else "/proc/stat forks",
        },
    }
    for key in GOALS:
        result[key] = summary[key]
    result["goals"] = goalTable(summary)
    result["summary"] = summary
    result["overload"] = overload(raw)
    result["noise"] = {
        "c bare Twisted req/s, first / last": spread((raw.get("c") or {}).get("rps"), (raw.get("c2") or {}).get("rps")),
        "e spawnProcess /s, first / last": spread((raw.get("e") or {}).get("procs_per_s"), (raw.get("e2") or {}).get("procs_per_s")),
    }
    result["raw"] = raw
    with open(output, "w") as f:
        json.dump(result, f, indent=2, sort_keys=False)
    print(report(result))
    print(f"\nresults: {os.path.relpath(output, REPO)} ({result['elapsed_s']:.0f} s)")
    if failure:
        print(f"\nbench/run did not complete: {failure}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
