"""
The web UI: its files as bwcd serves them (types, security headers, only
its own files, the API still asking for credentials), and an operator's
journey through it in a real headless Chromium (Debian's C{chromium} and
C{chromium-driver}, driven by selenium): sign in, a webhook posted with curl
shows up in History without a reload, its page shows the output, re-run
starts a new execution; then Events, Rules and Webhooks.

A screenshot of each page is written to C{artifacts/web-ui/} at the top of
the checkout (ignored by git), with the browser's console log.

Selenium blocks, so the browser is driven in a thread
(L{deferToThread}) while the reactor runs the daemon; the thread calls the
daemon's API through L{blockingCallFromThread}.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from typing import Any, Callable, List

import treq
from twisted.internet import reactor
from twisted.internet.address import IPv4Address
from twisted.internet.defer import ensureDeferred
from twisted.internet.threads import blockingCallFromThread, deferToThread
from twisted.trial.unittest import SkipTest, SynchronousTestCase, TestCase
from twisted.web.test.requesthelper import DummyRequest

from bwcd.api.webui import CONTENT_SECURITY_POLICY, DIRECT_LAYOUT, PROXIED_LAYOUT, WebUi, loadFiles
from tests.daemon import REPO, startDaemon

CHROMIUM = os.environ.get("BWCD_TEST_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("BWCD_TEST_CHROMEDRIVER", "/usr/bin/chromedriver")
ARTIFACTS = os.path.join(REPO, "artifacts", "web-ui")

#: the guide's sample rule: a webhook on "sample" echoing key1
SAMPLE_RULE = {
    "name": "sample_rule",
    "pack": "examples",
    "description": "Sample rule echoing the webhook's key1.",
    "enabled": True,
    "trigger": {"type": "core.st2.webhook", "parameters": {"url": "sample"}},
    "criteria": {"trigger.body.key1": {"type": "equals", "pattern": "value1"}},
    # re-run repeats the parameters as the rule rendered them from the trigger
    "action": {"ref": "core.local", "parameters": {"cmd": "echo hello from {{ trigger.body.key1 | shell_quote }}"}},
}


class _Inner:
    """
    The API's resource as L{WebUi} sees it: records what reached it.
    """

    def __init__(self) -> None:
        self.seen: List[bytes] = []

    def render(self, request) -> bytes:
        self.seen.append(request.path)
        return b"api"


def _request(path: bytes, method: bytes = b"GET", peer: str = "192.0.2.7", headers: Any = None) -> DummyRequest:
    request = DummyRequest(path.lstrip(b"/").split(b"/"))
    request.path = path
    request.uri = path
    request.method = method
    request.client = IPv4Address("TCP", peer, 4321)
    for name, value in (headers or {}).items():
        request.requestHeaders.setRawHeaders(name, [value])
    return request


class WebUiResourceTests(SynchronousTestCase):
    """
    L{WebUi} in memory: what it answers itself and what it hands on.
    """

    def setUp(self) -> None:
        self.inner = _Inner()
        self.ui = WebUi(self.inner)

    def test_indexAtRoot(self) -> None:
        """
        C{GET /} is the page, as HTML, with the strict policy and nosniff.
        """
        request = _request(b"/")
        body = self.ui.render(request)
        self.assertIn(b'<script type="module" src="/webui/js/app.js">', body)
        self.assertEqual(request.responseHeaders.getRawHeaders(b"content-type"), [b"text/html; charset=utf-8"])
        self.assertEqual(request.responseHeaders.getRawHeaders(b"content-security-policy"), [CONTENT_SECURITY_POLICY])
        self.assertEqual(request.responseHeaders.getRawHeaders(b"x-content-type-options"), [b"nosniff"])
        self.assertEqual(self.inner.seen, [])

    def test_contentTypes(self) -> None:
        """
        Scripts, styles and images go out with their own types (a module
        script with the wrong type is refused by the browser).
        """
        for path, expected in [
            (b"/webui/js/app.js", b"text/javascript; charset=utf-8"),
            (b"/webui/style.css", b"text/css; charset=utf-8"),
            (b"/webui/favicon.svg", b"image/svg+xml"),
        ]:
            request = _request(path)
            self.assertTrue(self.ui.render(request), path)
            self.assertEqual(request.responseHeaders.getRawHeaders(b"content-type"), [expected], path)

    def test_noInlineScript(self) -> None:
        """
        No shipped page has an inline script or handler, which the policy
        would block (and which would log a console error).
        """
        for path, (contentType, data) in loadFiles().items():
            if contentType.startswith(b"text/html"):
                text = data.decode("utf-8")
                self.assertNotRegex(text, r"<script(?![^>]*\bsrc=)[^>]*>", path)
                self.assertNotRegex(text, r"\son[a-z]+=", path)
                self.assertNotIn("innerHTML", text)
        for path, (contentType, data) in loadFiles().items():
            if contentType.startswith(b"text/javascript"):
                self.assertNotIn(b"innerHTML", data, path)
                self.assertNotIn(b"eval(", data, path)

    def test_otherPathsReachTheApi(self) -> None:
        """
        Anything that is not one of the UI's files, and any method but GET
        and HEAD, goes to the API untouched: C{/v1/...}, unknown files, a
        path that tries to climb out of the folder, a POST to C{/}.
        """
        for path, method in [(b"/v1/executions", b"GET"), (b"/webui/nope.js", b"GET"), (b"/webui/../../setup.py", b"GET"), (b"/webui/%2e%2e/service.py", b"GET"), (b"/", b"POST")]:
            self.assertEqual(self.ui.render(_request(path, method)), b"api", path)
        self.assertEqual(len(self.inner.seen), 5)

    def test_head(self) -> None:
        """
        C{HEAD} gives the headers and length without the body.
        """
        request = _request(b"/webui/style.css", b"HEAD")
        self.assertEqual(self.ui.render(request), b"")
        self.assertEqual(
            request.responseHeaders.getRawHeaders(b"content-length"),
            [str(len(loadFiles()[b"/webui/style.css"][1])).encode()],
        )

    def test_layout(self) -> None:
        """
        The page is told where the API is: on this listener when asked
        directly, StackStorm's nginx layout when a trusted proxy forwards
        the request; a client's own X-Forwarded-For changes nothing.
        """
        class Site:
            trustedProxies = frozenset({"127.0.0.1"})

        def layout(peer: str, headers: Any) -> dict:
            request = _request(b"/webui/config.json", peer=peer, headers=headers)
            request.site = Site()
            return json.loads(self.ui.render(request))

        self.assertEqual(layout("127.0.0.1", {}), DIRECT_LAYOUT)
        self.assertEqual(layout("127.0.0.1", {b"X-Forwarded-For": b"198.51.100.2"}), PROXIED_LAYOUT)
        self.assertEqual(layout("198.51.100.2", {b"X-Forwarded-For": b"10.0.0.1"}), DIRECT_LAYOUT)


def _browserOrSkip() -> None:
    try:
        import selenium  # noqa: F401
    except ImportError:
        raise SkipTest("selenium is not installed (scripts/bootstrap --test installs it from requirements-test.lock)")
    for path, package in ((CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")):
        if not os.access(path, os.X_OK):
            raise SkipTest(f"{path} is missing: scripts/bootstrap --test installs Debian's {package} when run as root with apt-get")


def _newDriver(profile: str):
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    options.binary_location = CHROMIUM
    # as root, in a container, on a machine without a network beyond
    # loopback: no sandbox, no GPU, no background connections
    for argument in (
        "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic",
        "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--disable-default-apps", "--disable-extensions", f"--user-data-dir={profile}", "--window-size=1280,900",
    ):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    service = Service(executable_path=CHROMEDRIVER, log_output=os.path.join(profile, "chromedriver.log"))
    driver = webdriver.Chrome(service=service, options=options)
    driver.set_page_load_timeout(30)
    return driver


class Journey:
    """
    One browser session against one daemon, run in a thread: each step
    waits for what the page should show (WebDriverWait: the page has no
    other way to say it has changed).
    """

    def __init__(self, driver, daemon, call: Callable[..., Any]) -> None:
        from selenium.webdriver.support.ui import WebDriverWait

        self.driver = driver
        self.daemon = daemon
        self.call = call
        self.wait = WebDriverWait(driver, 30)
        self.console: List[dict] = []
        self.shots: List[str] = []

    def css(self, selector: str):
        from selenium.webdriver.common.by import By

        return self.driver.find_element(By.CSS_SELECTOR, selector)

    def until(self, condition: Callable[[Any], Any], what: str) -> Any:
        from selenium.common.exceptions import TimeoutException

        try:
            return self.wait.until(lambda driver: condition(driver))
        except TimeoutException:
            self.shot(f"failed-{what.replace(' ', '-')}")
            raise AssertionError(f"the page never showed {what}; screenshot in {ARTIFACTS}") from None

    def text(self, selector: str) -> str:
        from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException

        try:
            return self.css(selector).text
        except (NoSuchElementException, StaleElementReferenceException):
            return ""

    def shot(self, name: str) -> None:
        os.makedirs(ARTIFACTS, exist_ok=True)
        path = os.path.join(ARTIFACTS, f"{len(self.shots) + 1:02d}-{name}.png")
        self.driver.save_screenshot(path)
        self.shots.append(path)
        self.readConsole()

    def readConsole(self) -> None:
        self.console.extend(self.driver.get_log("browser"))

    def go(self, link: str) -> None:
        """
        Follow a navigation link by keyboard: focus it and press Enter.
        """
        from selenium.webdriver.common.keys import Keys

        self.css(f'#nav a[data-page="{link}"]').send_keys(Keys.ENTER)


async def _put(daemon, path: str, body: dict) -> None:
    response = await treq.put(daemon.apiURL + path, json.dumps(body).encode(), headers=dict(daemon.headers, **{"Content-Type": "application/json"}))
    answer = await response.content()
    if response.code not in (200, 201):
        raise AssertionError(f"PUT {path}: {response.code} {answer!r}")


def _curl(url: str, headers: dict, body: dict) -> str:
    argv = ["curl", "-sS", "-i", "-X", "POST", url, "--data-binary", json.dumps(body)]
    for name, value in headers.items():
        argv += ["-H", f"{name}: {value}"]
    return subprocess.run(argv, check=True, capture_output=True, text=True, timeout=30).stdout


class BrowserTests(TestCase):
    """
    The UI in Chromium against a real daemon.
    """

    timeout = 240

    def setUp(self) -> None:
        _browserOrSkip()
        if shutil.which("curl") is None:
            raise SkipTest("curl is missing")

    async def _daemon(self):
        return await startDaemon(self)

    async def _filesAsServed(self, d) -> None:
        """
        On the API listener, C{/} and the UI's files need no credentials
        and carry the policy, while C{/v1} still refuses a request without
        them (401) and a path out of the folder is the API's JSON 404.
        """
        for path, kind in (("/", b"text/html"), ("/webui/js/api.js", b"text/javascript"), ("/webui/config.json", b"application/json")):
            response = await treq.get(d.apiURL + path)
            self.assertEqual(response.code, 200, path)
            self.assertTrue(response.headers.getRawHeaders(b"content-type")[0].startswith(kind), path)
            self.assertEqual(response.headers.getRawHeaders(b"x-content-type-options"), [b"nosniff"])
            self.assertIn(b"script-src 'self'", response.headers.getRawHeaders(b"content-security-policy")[0])
            await response.content()
        response = await treq.get(d.apiURL + "/v1/executions")
        self.assertEqual(response.code, 401)
        await response.content()
        response = await treq.get(d.apiURL + "/webui/../../setup.py")
        self.assertEqual(response.code, 404)
        self.assertIn("faultstring", json.loads(await response.content()))

    def test_operatorJourney(self) -> None:
        """
        The files are served as they should be (L{_filesAsServed}).  Sign
        in with the form; a webhook posted with curl, which a rule
        turns into an execution, appears in History without a reload; its
        page shows its stdout; Re-run starts a new execution whose page
        shows the same output; Events shows the event with the rule that
        fired, Rules disables and enables the rule, Webhooks shows the
        hook's rule and last delivery, and a phone-sized window still shows
        History.  The browser logs no console error on the way.
        """

        async def run() -> None:
            d = await self._daemon()
            await self._filesAsServed(d)
            response, body = await d.post("/v1/rules", SAMPLE_RULE)
            self.assertEqual(response.code, 201, body)
            os.makedirs(ARTIFACTS, exist_ok=True)
            profile = os.path.abspath(self.mktemp())
            os.makedirs(profile)
            driver = await deferToThread(_newDriver, profile)
            self.addCleanup(deferToThread, driver.quit)
            started = time.monotonic()

            def call(coroutine: Callable[[], Any]) -> Any:
                return blockingCallFromThread(reactor, lambda: ensureDeferred(coroutine()))

            journey = Journey(driver, d, call)
            try:
                await deferToThread(self._journey, journey)
            finally:
                await deferToThread(journey.readConsole)
                with open(os.path.join(ARTIFACTS, "console.json"), "w") as f:
                    json.dump(journey.console, f, indent=2)
                with open(os.path.join(ARTIFACTS, "timing.txt"), "w") as f:
                    f.write(f"browser journey: {time.monotonic() - started:.1f} s\n")
            errors = [entry for entry in journey.console if entry.get("level") == "SEVERE"]
            self.assertEqual(errors, [], "console errors (see artifacts/web-ui/console.json)")
            self.assertEqual(len(journey.shots), 8)

        return ensureDeferred(run())

    def test_apiKeyAndPolling(self) -> None:
        """
        Signed in with an API key and kept to polling (as when the stream
        is absent), History still shows a new execution without a reload
        and its page its stdout.
        """

        async def run() -> None:
            d = await self._daemon()
            response, body = await d.post("/v1/rules", SAMPLE_RULE)
            self.assertEqual(response.code, 201, body)
            profile = os.path.abspath(self.mktemp())
            os.makedirs(profile)
            driver = await deferToThread(_newDriver, profile)
            self.addCleanup(deferToThread, driver.quit)
            journey = Journey(driver, d, lambda coroutine: blockingCallFromThread(reactor, lambda: ensureDeferred(coroutine())))
            await deferToThread(self._polling, journey)
            await deferToThread(journey.readConsole)
            self.assertEqual([e for e in journey.console if e.get("level") == "SEVERE"], [])

        return ensureDeferred(run())

    def _polling(self, j: Journey) -> None:
        from selenium.webdriver.common.by import By

        d = j.daemon
        j.driver.get(d.apiURL + "/")
        j.until(lambda _: j.css("#apikey-form").is_displayed(), "the API key form")
        j.driver.execute_script("sessionStorage.setItem('bwcd.live', 'polling')")
        j.css("#apikey").send_keys(d.apiKey)
        j.css("#apikey-form button[type=submit]").click()
        j.until(lambda _: "polling" in j.text("#live"), "History, polling")
        self.assertEqual(j.driver.execute_script("return JSON.parse(sessionStorage.getItem('bwcd.credentials')).kind"), "apikey")
        j.driver.execute_script("window.bwcdNotReloaded = true")
        _curl(d.apiURL + "/v1/webhooks/sample", dict(d.headers, **{"Content-Type": "application/json"}), {"key1": "value1"})
        row = '#history-rows tr[data-status="succeeded"] a.exec-link'
        j.until(lambda _: j.driver.find_elements(By.CSS_SELECTOR, row), "the execution, succeeded, by polling")
        self.assertTrue(j.driver.execute_script("return window.bwcdNotReloaded === true"))
        j.css(row).click()
        j.until(lambda _: "hello from value1" in j.text("#stdout"), "the execution's stdout")

    def _journey(self, j: Journey) -> None:
        from selenium.webdriver.common.by import By
        from selenium.webdriver.support.ui import Select

        d = j.daemon
        for old in os.listdir(ARTIFACTS):
            os.remove(os.path.join(ARTIFACTS, old))
        # -- sign in
        j.driver.get(d.apiURL + "/")
        j.until(lambda _: j.css("#login-form").is_displayed(), "the sign-in form")
        j.css("#username").send_keys(d.user)
        j.css("#password").send_keys(d.password)
        j.shot("login")
        j.css("#login-form button[type=submit]").click()
        j.until(lambda _: "executions" in j.text("#history-count"), "History after signing in")
        self.assertEqual(j.css("#who").text, d.user)
        token = j.driver.execute_script("return JSON.parse(sessionStorage.getItem('bwcd.credentials')).kind")
        self.assertEqual(token, "token")

        # -- a webhook, posted with curl, shows up live
        j.driver.execute_script("window.bwcdNotReloaded = true")
        answer = _curl(d.apiURL + "/v1/webhooks/sample", dict(d.headers, **{"Content-Type": "application/json"}), {"key1": "value1"})
        self.assertIn(" 202 ", answer.splitlines()[0])
        row = '#history-rows tr[data-status="succeeded"] a.exec-link'
        j.until(lambda _: j.driver.find_elements(By.CSS_SELECTOR, row), "the webhook's execution, succeeded, in History")
        self.assertTrue(j.driver.execute_script("return window.bwcdNotReloaded === true"), "History reloaded the page")
        shown = j.text("#history-rows tr")
        # a rule's executions run as the system user
        for expected in ("core.local", "webhook sample", "stanley"):
            self.assertIn(expected, shown)
        j.shot("history")

        # -- the execution's page (the web_url every execution carries)
        link = j.css(row)
        firstId = link.find_element(By.XPATH, "./ancestor::tr").get_attribute("data-id")
        doc = j.call(lambda: d.get(f"/v1/executions/{firstId}"))[1]
        hook = doc["trigger"]["ref"]
        self.assertTrue(doc["web_url"].endswith(f"/#/history/{firstId}/general"), doc["web_url"])
        link.click()
        j.until(lambda _: "hello from value1" in j.text("#stdout"), "the execution's stdout")
        self.assertEqual(j.driver.current_url, doc["web_url"])
        self.assertIn('"cmd"', j.text("#parameters"))
        self.assertIn("succeeded", j.text("#status-log"))
        self.assertFalse(j.css("#cancel").is_enabled(), "a finished execution can be canceled")
        j.shot("execution")

        # -- re-run
        j.css("#rerun").click()
        j.until(lambda _: firstId not in j.driver.current_url, "a new execution's page after Re-run")
        secondId = j.driver.current_url.split("/history/")[1].split("/")[0]
        j.until(lambda _: "succeeded" in j.text("#execution-details") and "hello from value1" in j.text("#stdout"), "the re-run's stdout")
        self.assertIn(firstId, j.text("#execution-details"))
        rerun = j.call(lambda: d.get(f"/v1/executions/{secondId}"))[1]
        self.assertEqual(rerun["context"]["re-run"]["ref"], firstId)
        j.shot("rerun")

        # -- Events: the instance with the rule that fired
        j.go("events")
        j.until(lambda _: len(j.driver.find_elements(By.CSS_SELECTOR, "#events-trigger option")) > 1, "the hooks to choose from")
        Select(j.css("#events-trigger")).select_by_visible_text(f"sample ({hook})")
        j.css("#events-trigger").submit()
        j.until(lambda _: "webhook sample" in j.text("details.instance summary"), "the sample hook's event")
        j.css("details.instance summary").click()
        j.until(lambda _: "examples.sample_rule" in j.text("details.instance .instance-body"), "the event's enforcement")
        self.assertIn(firstId, j.text("details.instance .instance-body"))
        j.css("details.instance button.explain").click()
        verdict = 'details.instance section.verdict[data-rule="examples.sample_rule"]'
        j.until(lambda _: "fires" in j.text(verdict), "the explanation's verdict")
        self.assertIn("trigger.body.key1", j.text(verdict))
        self.assertIn("holds", j.text(verdict))
        j.driver.execute_script("arguments[0].scrollIntoView()", j.css(verdict))
        j.shot("events")

        # -- Rules: the criteria readably; disable, then enable again
        j.go("rules")
        j.until(lambda _: "examples.sample_rule" in j.text("#rule-rows"), "the rule")
        self.assertIn('trigger.body.key1 equals "value1"', j.text("#rule-rows"))
        j.css("#rule-rows button.toggle").click()
        j.until(lambda _: j.text("#rule-rows button.toggle") == "Disabled", "the rule disabled")
        self.assertFalse(j.call(lambda: d.get("/v1/rules/examples.sample_rule"))[1]["enabled"])
        j.css("#rule-rows button.toggle").click()
        j.until(lambda _: j.text("#rule-rows button.toggle") == "Enabled", "the rule enabled again")
        self.assertTrue(j.call(lambda: d.get("/v1/rules/examples.sample_rule"))[1]["enabled"])
        j.shot("rules")

        # -- Webhooks: URL, rules, verification, last delivery
        j.call(lambda: _put(d, "/v1/keys/hook_secret", {"name": "hook_secret", "value": "s3cret"}))
        j.call(lambda: _put(d, "/v1/webhookpolicies/sample", {"verify": {"preset": "github", "secret_key": "hook_secret"}}))
        j.go("webhooks")
        j.until(lambda _: "examples.sample_rule" in j.text("#webhook-rows"), "the sample hook")
        rowText = j.text('#webhook-rows tr[data-hook="sample"]')
        self.assertIn("/v1/webhooks/sample", rowText)
        self.assertNotIn("never", rowText)
        self.assertIn("signature: github", rowText)
        j.shot("webhooks")

        # -- a phone
        j.driver.set_window_size(390, 844)
        j.go("history")
        j.until(lambda _: j.driver.find_elements(By.CSS_SELECTOR, row), "History on a phone")
        width = j.driver.execute_script("return document.documentElement.scrollWidth")
        self.assertLessEqual(width, 390, "History scrolls sideways on a phone")
        j.shot("history-phone")
