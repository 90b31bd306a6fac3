"""
The daemon core driven the way a user drives it: a real C{twistd bwcd}
process, real HTTP, real child processes, on SQLite and on MongoDB
(SecantusDB or C{$BWCD_TEST_MONGODB_URL}).
"""

import os
import time

import treq
from twisted.internet import reactor
from twisted.trial.unittest import TestCase

from tests.daemon import fifoMessage, startDaemon


def processesWith(marker: str):
    """
    PIDs of live processes whose command line contains C{marker}.
    """
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmdline = f.read().replace(b"\0", b" ").decode("utf-8", "replace")
            with open(f"/proc/{entry}/stat") as f:
                state = f.read().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if marker in cmdline and state != "Z":
            found.append(int(entry))
    return found


def outlivingMarker(tag: int) -> str:
    """
    A sleep duration unique to one test, longer than the test may last: a
    child the daemon failed to stop is still there when the test looks.
    """
    return f"3600.{tag}{os.getpid()}{int(time.time() * 1000) % 100000}"


class DaemonCoreMixin:
    storage = "sqlite"
    timeout = 120

    async def daemon(self, **kw):
        return await startDaemon(self, storage=self.storage, **kw)

    async def runAction(self, d, params, action="core.local"):
        response, doc = await d.post("/v1/executions", {"action": action, "parameters": params})
        self.assertEqual(response.code, 201, doc)
        return doc

    async def test_runDate(self):
        """
        POST /v1/executions with core.local "date" runs date and GET returns
        the StackStorm-shaped record.
        """
        d = await self.daemon()
        created = await self.runAction(d, {"cmd": "date"})
        for field in ("id", "action", "runner", "liveaction", "parameters", "status", "start_timestamp", "log", "context", "web_url"):
            self.assertIn(field, created)
        self.assertEqual(created["status"], "requested")
        self.assertEqual(created["action"]["ref"], "core.local")
        self.assertEqual(created["runner"]["name"], "local-shell-cmd")
        _, keys = await d.get("/v1/apikeys")
        self.assertEqual(created["context"]["user"], keys[0]["user"])
        self.assertEqual(created["parameters"], {"cmd": "date"})
        self.assertTrue(created["web_url"].endswith(f"/#/history/{created['id']}/general"))
        done = await d.waitFor(created["id"])
        self.assertEqual(done["status"], "succeeded")
        self.assertEqual(done["result"]["return_code"], 0)
        self.assertTrue(done["result"]["succeeded"])
        self.assertRegex(done["result"]["stdout"], r"\d\d:\d\d:\d\d")
        self.assertEqual([e["status"] for e in done["log"]], ["requested", "scheduled", "running", "succeeded"])
        self.assertIn("end_timestamp", done)
        self.assertGreaterEqual(done["elapsed_seconds"], 0)
        response, listed = await d.get("/v1/executions?action=core.local")
        self.assertEqual(response.headers.getRawHeaders("X-Total-Count"), ["1"])
        self.assertEqual([e["id"] for e in listed], [created["id"]])
        _, last = await d.get("/v1/executions/last")
        self.assertEqual(last["id"], created["id"])

    async def test_failedCommand(self):
        """
        A command that exits 3 ends failed with its return code, stdout and
        stderr.
        """
        d = await self.daemon()
        created = await self.runAction(d, {"cmd": "echo hi; echo err >&2; exit 3"})
        done = await d.waitFor(created["id"])
        self.assertEqual(done["status"], "failed")
        self.assertEqual(done["result"]["return_code"], 3)
        self.assertEqual(done["result"]["stdout"], "hi")
        self.assertEqual(done["result"]["stderr"], "err")
        self.assertFalse(done["result"]["succeeded"])
        self.assertTrue(done["result"]["failed"])
        response, output = await d.get(f"/v1/executions/{created['id']}/output")
        self.assertEqual(response.code, 200)
        self.assertEqual(sorted(output.split()), ["err", "hi"])

    async def test_timeoutKillsProcessGroup(self):
        """
        A command that outlives its timeout ends as timeout, killed, and
        leaves no process behind, grandchildren included (they would sleep
        past the test's own timeout if the daemon waited for them).
        """
        d = await self.daemon()
        marker = outlivingMarker(30)
        created = await self.runAction(d, {"cmd": f"sleep {marker} & sleep {marker}", "timeout": 1})
        done = await d.waitFor(created["id"])
        self.assertEqual(done["status"], "timeout")
        self.assertEqual(done["result"]["return_code"], -9)
        self.assertEqual(done["result"]["error"], "Action failed to complete in 1 seconds")
        self.assertEqual(processesWith(f"sleep {marker}"), [])

    async def test_cancelRunning(self):
        """
        DELETE on a running execution kills its child and the execution ends
        canceled.
        """
        d = await self.daemon()
        marker = outlivingMarker(40)
        fifo, started = fifoMessage(self)
        created = await self.runAction(d, {"cmd": f"echo started > {fifo}; sleep {marker}"})
        await started
        self.assertNotEqual(processesWith(f"sleep {marker}"), [])
        since = d.linesLogged
        response = await treq.delete(d.apiURL + f"/v1/executions/{created['id']}", headers=d.headers)
        body = await response.json()
        self.assertEqual(response.code, 200)
        self.assertEqual(body["status"], "canceled")
        self.assertEqual(body["result"], {"message": "Action canceled by user.", "user": created["context"]["user"]})
        # the executor's line once the child has ended and it has written
        # (or, here, not overwritten) the record
        await d.logged(rf"\bExecution {created['id']} of core\.local canceled\b", since)
        self.assertEqual(processesWith(f"sleep {marker}"), [])
        _, doc = await d.get(f"/v1/executions/{created['id']}")
        self.assertEqual(doc["status"], "canceled")
        response = await treq.delete(d.apiURL + f"/v1/executions/{created['id']}", headers=d.headers)
        self.assertEqual((await response.json())["status"], "canceled")

    async def test_survivesRestartAndAbandonsOnStop(self):
        """
        Executions survive a restart; SIGTERM terminates running children and
        their executions end abandoned.
        """
        d = await self.daemon()
        first = await self.runAction(d, {"cmd": "echo kept"})
        await d.waitFor(first["id"])
        marker = outlivingMarker(50)
        fifo, started = fifoMessage(self)
        running = await self.runAction(d, {"cmd": f"echo started > {fifo}; sleep {marker}"})
        await started
        await d.stop()
        self.assertEqual(processesWith(f"sleep {marker}"), [])
        await d.start()
        _, kept = await d.get(f"/v1/executions/{first['id']}")
        self.assertEqual(kept["status"], "succeeded")
        self.assertEqual(kept["result"]["stdout"], "kept")
        _, abandoned = await d.get(f"/v1/executions/{running['id']}")
        self.assertEqual(abandoned["status"], "abandoned")

    async def test_crashRecovery(self):
        """
        After SIGKILL, executions the dead daemon left running are abandoned
        at the next start, and queued ones run.
        """
        d = await self.daemon(config={"runner": {"max_concurrent": 1}})
        marker = outlivingMarker(60)
        fifo, started = fifoMessage(self)
        running = await self.runAction(d, {"cmd": f"echo started > {fifo}; sleep {marker}"})
        queued = await self.runAction(d, {"cmd": "echo later"})
        await started
        # Justified poll: the "running" record is written while the child
        # starts, so the child's message can come first, and the daemon
        # offers no event for that write; the write is already in flight, so
        # a few re-reads (no sleep: each is a round trip) see it.
        for _ in range(100):
            _, doc = await d.get(f"/v1/executions/{running['id']}")
            if doc["status"] == "running":
                break
        self.assertEqual(doc["status"], "running")
        await d.kill()
        for pid in processesWith(f"sleep {marker}"):
            os.kill(pid, 9)
        await d.start()
        _, abandoned = await d.get(f"/v1/executions/{running['id']}")
        self.assertEqual(abandoned["status"], "abandoned")
        later = await d.waitFor(queued["id"])
        self.assertEqual((later["status"], later["result"]["stdout"]), ("succeeded", "later"))

    async def test_deadNodesWorkIsSettled(self):
        """
        Executions claimed by another bwcd process whose heartbeat went stale
        are settled: running ones end abandoned, claimed ones run here.
        """
        from bwcd.store.url import openStore

        d = await self.daemon(config={"runner": {"node_timeout": 1.2}})
        store = openStore(d.configData["storage"]["url"], reactor)
        await store.start()
        self.addCleanup(store.stop)
        _, template = await d.get("/v1/actions/core.local")
        now = "2026-01-01T00:00:00.000000Z"
        base = {"action": template, "runner": {"name": "local-shell-cmd"}, "context": {"user": "x"}, "start_timestamp": now, "log": [], "node": "dead-node"}
        running = await store.insert("executions", dict(base, status="running", _parameters={"cmd": "true"}, parameters={"cmd": "true"}))
        claimed = await store.insert("executions", dict(base, status="scheduled", _parameters={"cmd": "echo rescued"}, parameters={"cmd": "echo rescued"}))
        await store.insert("kv", {"name": "__bwcd.node.dead-node", "value": {"seen": "2026-01-01T00:00:00.000000Z"}})
        abandoned = await d.waitFor(running["id"])
        self.assertEqual(abandoned["status"], "abandoned")
        self.assertEqual(abandoned["result"]["error"], "bwcd node dead-node stopped answering while the action ran")
        rescued = await d.waitFor(claimed["id"])
        self.assertEqual((rescued["status"], rescued["result"]["stdout"]), ("succeeded", "rescued"))
        beats = await store.find("kv", {"name": {"$ne": "__bwcd.node.dead-node"}})
        self.assertTrue(any(b["name"].startswith("__bwcd.node.") for b in beats))

    async def test_delay(self):
        """
        An execution requested with a delay waits as delayed, then runs no
        sooner than the delay after its request (by the daemon's own
        record); a negative delay is refused.
        """
        from bwcd.timeutil import parseIso

        d = await self.daemon()
        response, created = await d.post("/v1/executions", {"action": "core.local", "parameters": {"cmd": "echo later"}, "delay": 1500})
        self.assertEqual(response.code, 201, created)
        self.assertEqual((created["status"], created["delay"]), ("delayed", 1500))
        _, doc = await d.get(f"/v1/executions/{created['id']}")
        self.assertEqual(doc["status"], "delayed")
        done = await d.waitFor(created["id"])
        self.assertEqual(done["result"]["stdout"], "later")
        self.assertEqual([e["status"] for e in done["log"]], ["requested", "delayed", "scheduled", "running", "succeeded"])
        requested, scheduled = (parseIso(done["log"][i]["timestamp"]) for i in (0, 2))
        self.assertGreaterEqual((scheduled - requested).total_seconds(), 1.5)
        response, body = await d.post("/v1/executions", {"action": "core.local", "parameters": {"cmd": "x"}, "delay": -1})
        self.assertEqual((response.code, body["faultstring"]), (400, "-1 is less than the minimum of 0"))

    async def test_errorBodies(self):
        """
        Every 401/400/404/413 case answers with its faultstring and changes
        nothing.
        """
        d = await self.daemon(config={"api": {"max_body_bytes": 2048}})
        cases = [
            ("GET", "/v1/executions", {}, None, 401, "Unauthorized - One of Token or API key required."),
            ("GET", "/v1/executions", {"X-Auth-Token": "nope"}, None, 401, "Unauthorized"),
            ("GET", "/v1/executions?st2-api-key=bad", {}, None, 401, None),
            ("POST", "/v1/executions", d.headers, b'{"action": "nope.nope", "parameters": {}}', 400, 'Action "nope.nope" cannot be found.'),
            ("POST", "/v1/executions", d.headers, b'{"action": "core.local", "parameters": {}}', 400, "'cmd' is a required property"),
            ("POST", "/v1/executions", d.headers, b'{"action": "core.local", "parameters": {"cmd": "x", "foo": 1}}', 400, "Additional properties are not allowed ('foo' was unexpected)"),
            ("POST", "/v1/executions", d.headers, b'{"action": "core.local", "parameters": {"cmd": "x", "sudo": true}}', 400, "Override of immutable parameter(s) ['sudo'] is unsupported."),
            ("POST", "/v1/executions", d.headers, b'{"action": ', 400, None),
            ("GET", "/v1/executions/0123456789abcdef01234567", d.headers, None, 404, 'Unable to identify resource with id "0123456789abcdef01234567".'),
            ("GET", "/v1/nothing-here", d.headers, None, 404, "The resource could not be found."),
            ("PATCH", "/v1/executions", d.headers, None, 404, "The resource could not be found."),
            ("GET", "/v1/actions/core.nope", d.headers, None, 404, 'Resource with a reference or id "core.nope" not found'),
            ("GET", "/v1/runnertypes/nope", d.headers, None, 404, 'Resource with a name or id "nope" not found'),
            ("POST", "/v1/executions", d.headers, b'{"action": "core.local", "parameters": {"cmd": "' + b"x" * 4096 + b'"}}', 413, "Request body is larger than the limit of 2048 bytes."),
        ]
        for method, path, headers, body, code, message in cases:
            headers = dict(headers)
            if body is not None:
                headers["Content-Type"] = "application/json"
            response = await treq.request(method, d.apiURL + path, headers=headers, data=body)
            payload = await response.json()
            self.assertEqual(response.code, code, (method, path, payload))
            self.assertIn("faultstring", payload)
            if message is not None:
                self.assertEqual(payload["faultstring"], message, (method, path))
            self.assertEqual(response.headers.getRawHeaders("Content-Type"), ["application/json"])
        response, listed = await d.get("/v1/executions")
        self.assertEqual(listed, [])

    async def test_queueIsBounded(self):
        """
        Once runner.max_queued executions wait for a slot, new execution
        requests and webhooks get 503 with Retry-After and nothing is
        stored for them.
        """
        d = await self.daemon(config={"runner": {"max_concurrent": 1, "max_queued": 2}})
        marker = outlivingMarker(70)
        fifo, started = fifoMessage(self)
        first = await self.runAction(d, {"cmd": f"echo started > {fifo}; sleep {marker}"})
        await started  # claimed: the only slot is taken
        waiting = [await self.runAction(d, {"cmd": "true"}) for _ in range(2)]
        # no wait: between the executor's counts of the store the estimate
        # errs high, never low (tests.test_hardening.QueueAccountingTests)
        response, body = await d.post("/v1/executions", {"action": "core.local", "parameters": {"cmd": "true"}})
        self.assertEqual(response.code, 503)
        self.assertEqual(body["faultstring"], "2 executions are waiting to run (runner.max_queued is 2); try again shortly.")
        self.assertEqual(response.headers.getRawHeaders("Retry-After"), ["2"])
        response, body = await d.post("/v1/webhooks/anything", {"a": 1})
        self.assertEqual(response.code, 503)
        response, listed = await d.get("/v1/executions")
        self.assertEqual(len(listed), 3)
        response = await treq.delete(d.apiURL + f"/v1/executions/{first['id']}", headers=d.headers)
        await response.content()
        for doc in waiting:
            await d.waitFor(doc["id"])
        again = await self.runAction(d, {"cmd": "true"})
        self.assertEqual((await d.waitFor(again["id"]))["status"], "succeeded")

    async def test_formBodyIsNotACredential(self):
        """
        Only the query string carries query credentials: an st2-api-key field
        in a form body authenticates nothing.
        """
        d = await self.daemon()
        body = f"st2-api-key={d.apiKey}".encode()
        response = await treq.post(d.apiURL + "/v1/executions", data=body, headers={"Content-Type": "application/x-www-form-urlencoded"})
        self.assertEqual(response.code, 401)
        self.assertEqual((await response.json())["faultstring"], "Unauthorized - One of Token or API key required.")
        response = await treq.get(d.apiURL + f"/v1/executions?st2-api-key={d.apiKey}")
        self.assertEqual(response.code, 200)
        self.assertNotIn(d.apiKey, d.readLog())

    async def test_actionsAndRunners(self):
        """
        The core pack's actions and both runner types are served.
        """
        d = await self.daemon()
        _, actions = await d.get("/v1/actions?pack=core")
        self.assertEqual(sorted(a["ref"] for a in actions), ["core.echo", "core.http", "core.local", "core.local_sudo", "core.noop"])
        _, local = await d.get("/v1/actions/core.local")
        self.assertEqual(local["uid"], "action:core:local")
        _, byId = await d.get(f"/v1/actions/{local['id']}")
        self.assertEqual(byId["ref"], "core.local")
        _, runners = await d.get("/v1/runnertypes/?name=local-shell-cmd")
        self.assertEqual([r["uid"] for r in runners], ["runner_type:local-shell-cmd"])
        echo = await self.runAction(d, {"message": "hello there"}, action="core.echo")
        done = await d.waitFor(echo["id"])
        self.assertEqual(done["result"]["stdout"], "hello there")


class SQLiteDaemonTests(DaemonCoreMixin, TestCase):
    storage = "sqlite"


class MongoDaemonTests(DaemonCoreMixin, TestCase):
    storage = "mongodb"


PACKS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures", "packs")


class PackScriptTests(TestCase):
    """
    Pack script actions run with an argv list, no shell in between.
    """

    timeout = 60

    async def test_scriptArgvAndEnvironment(self):
        """
        Named arguments come first, then positional ones; shell syntax in a
        value is passed through literally; the ST2_* variables are set; an
        invalid action file is skipped and reported.
        """
        d = await startDaemon(self, packs=[PACKS])
        evil = "$(touch /tmp/bwcd-pwned); `id`"
        response, created = await d.post("/v1/executions", {"action": "examples.argv", "parameters": {"greeting": evil, "loud": True, "name": "a b"}})
        self.assertEqual(response.code, 201, created)
        done = await d.waitFor(created["id"])
        self.assertEqual(done["status"], "succeeded", done)
        out = done["result"]["stdout"]
        self.assertEqual(out["argv"], ["--loud", "--name=a b", evil, "2"])
        self.assertEqual(out["pack"], "examples")
        self.assertEqual(out["execution"], created["id"])
        self.assertEqual(out["api"], d.apiURL + "/v1")
        self.assertTrue(out["token"])
        self.assertFalse(os.path.exists("/tmp/bwcd-pwned"))
        response, _ = await d.get("/v1/actions/examples.broken")
        self.assertEqual(response.code, 404)
        self.assertIn("broken.yaml: runner_type: unknown runner 'no-such-runner'", d.readLog())

    async def test_reRunAndSighup(self):
        """
        re_run merges new parameters into the original ones; SIGHUP registers
        an action added to a pack folder while the daemon runs.
        """
        import shutil

        packs = os.path.abspath(self.mktemp())
        shutil.copytree(PACKS, packs)
        # a pack author's script without the executable bit still runs
        os.chmod(os.path.join(packs, "examples", "actions", "argv.py"), 0o644)
        d = await startDaemon(self, packs=[packs])
        response, first = await d.post("/v1/executions", {"action": "examples.argv", "parameters": {"greeting": "hi", "count": 3}})
        await d.waitFor(first["id"])
        response, again = await d.post(f"/v1/executions/{first['id']}/re_run", {"parameters": {"count": 5}})
        self.assertEqual(response.code, 201, again)
        self.assertEqual(again["parameters"], {"greeting": "hi", "count": 5})
        self.assertEqual(again["context"]["re-run"], {"ref": first["id"]})
        done = await d.waitFor(again["id"])
        self.assertEqual(done["result"]["stdout"]["argv"], ["hi", "5"])
        with open(os.path.join(packs, "examples", "actions", "later.yaml"), "w") as f:
            f.write("name: later\nrunner_type: local-shell-cmd\nparameters:\n  cmd:\n    default: echo later\n")
        response, _ = await d.get("/v1/actions/examples.later")
        self.assertEqual(response.code, 404)
        since = d.linesLogged
        d.process.signalProcess("HUP")
        await d.logged(r"\bReload complete\b", since)
        response, _ = await d.get("/v1/actions/examples.later")
        self.assertEqual(response.code, 200)
        self.assertTrue(d.running)
