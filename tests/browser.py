"""Headless Chromium for page tests: the binary (skip, or fail under CI, when missing), one
run of it against a URL, and :class:`Browser`, driven over the DevTools protocol (a
websocket) for pages behind a login: a person's session is a cookie the login page sets,
which no command-line flag of the browser can supply. :func:`webdriver` is the same
browser through Debian's chromium-driver and selenium, for pages that are clicked,
updated live and checked for console errors; screenshots go to ``test-artifacts/``
(gitignored; ``BREAKWATER_ARTIFACTS`` moves it).

    with Browser(workdir) as browser:
        browser.login(base_url, "alice", password)
        browser.goto(f"{base_url}/dashboard")
        html = browser.settled_dom()
"""

from __future__ import annotations

import itertools
import json
import os
import re
import shutil
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import Any

import pytest
from websockets.sync.client import ClientConnection, connect

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome")


def chromium() -> str:
    for name in CHROMIUM_NAMES:
        found = shutil.which(name)
        if found:
            return found
    message = "no chromium binary on PATH (looked for " + ", ".join(CHROMIUM_NAMES) + ")"
    # CI installs Chromium and sets this: there a missing browser is a failure, not a skip
    if os.environ.get("BREAKWATER_REQUIRE_BROWSER") == "1":
        pytest.fail(message)
    pytest.skip(message)


def run_chromium(workdir: Path, url: str, *extra: str) -> subprocess.CompletedProcess[str]:
    profile = workdir / f"chromium-{uuid.uuid4().hex[:8]}"
    command = [chromium(), "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic",
               "--no-first-run", "--disable-background-networking",
               "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage",
               f"--user-data-dir={profile}", "--virtual-time-budget=5000", *extra, url]
    done = subprocess.run(command, capture_output=True, text=True, timeout=90, check=False,
                          env={**os.environ, "HOME": str(workdir)})
    assert done.returncode == 0, done.stderr[-2000:]
    return done


class Browser:
    def __init__(self, workdir: Path, window: str = "1400,1000") -> None:
        self._workdir = workdir
        self._window = window
        self._ids = itertools.count(1)
        self._process: subprocess.Popen[str] | None = None
        self._socket: ClientConnection | None = None
        self._session = ""

    def __enter__(self) -> Browser:
        profile = self._workdir / f"chromium-{uuid.uuid4().hex[:8]}"
        self._process = subprocess.Popen(
            [chromium(), "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic",
             "--no-first-run", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage",
             f"--window-size={self._window}", f"--user-data-dir={profile}",
             "--remote-debugging-port=0", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
            env={**os.environ, "HOME": str(self._workdir)})
        assert self._process.stderr is not None
        deadline = time.monotonic() + 30
        endpoint = None
        while endpoint is None and time.monotonic() < deadline:
            line = self._process.stderr.readline()
            if not line and self._process.poll() is not None:
                break
            found = re.search(r"DevTools listening on (ws://\S+)", line)
            endpoint = found.group(1) if found else None
        if endpoint is None:
            self.__exit__(None, None, None)
            raise AssertionError("chromium did not open its DevTools endpoint")
        self._socket = connect(endpoint, max_size=64 * 1024 * 1024, open_timeout=30)
        target = self._call("Target.createTarget", url="about:blank")["targetId"]
        self._session = self._call("Target.attachToTarget", targetId=target,
                                   flatten=True)["sessionId"]
        self._call("Page.enable", session=True)
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        if self._socket is not None:
            self._socket.close()
        if self._process is not None:
            self._process.terminate()
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait(timeout=10)
            if self._process.stderr is not None:
                self._process.stderr.close()

    def _call(self, method: str, *, session: bool = False, **params: Any) -> Any:
        assert self._socket is not None
        ident = next(self._ids)
        message: dict[str, Any] = {"id": ident, "method": method, "params": params}
        if session:
            message["sessionId"] = self._session
        self._socket.send(json.dumps(message))
        while True:  # events arrive in between: skip them
            answer = json.loads(self._socket.recv(timeout=30))
            if answer.get("id") == ident:
                if "error" in answer:
                    raise AssertionError(f"{method}: {answer['error']}")
                return answer.get("result", {})

    def evaluate(self, expression: str) -> Any:
        result = self._call("Runtime.evaluate", session=True, expression=expression,
                            awaitPromise=True, returnByValue=True)
        if "exceptionDetails" in result:
            raise AssertionError(f"{expression[:80]}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def wait_for(self, expression: str, within: float = 15.0) -> Any:
        deadline = time.monotonic() + within
        while True:
            value = self.evaluate(expression)
            if value:
                return value
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {expression}")
            time.sleep(0.05)

    def goto(self, url: str) -> None:
        """Navigate and wait for the new document (wherever redirects lead)."""
        self.evaluate("window.__bwOldDocument = true")
        self._call("Page.navigate", session=True, url=url)
        self.wait_for("!window.__bwOldDocument && document.readyState === 'complete'")

    def login(self, base_url: str, username: str, password: str) -> None:
        """Through the login page, as a person does: type, press the button."""
        self.goto(f"{base_url}/login")
        self.evaluate(f"""(() => {{
            document.getElementById('username').value = {json.dumps(username)};
            document.getElementById('password').value = {json.dumps(password)};
            document.getElementById('submit').click(); return true; }})()""")
        self.wait_for("location.pathname !== '/login' && document.readyState === 'complete'")

    def settled_dom(self, quiet_s: float = 1.5) -> str:
        """The page's HTML once its scripts had time to fetch and render."""
        self.wait_for("document.readyState === 'complete'")
        time.sleep(quiet_s)
        html: str = self.evaluate("document.documentElement.outerHTML")
        return html

    def screenshot(self, target: Path) -> None:
        import base64
        data = self._call("Page.captureScreenshot", session=True, format="png")["data"]
        target.write_bytes(base64.b64decode(data))


DRIVER_NAMES = ("chromedriver", "chromium-driver")
ARTIFACTS = Path(os.environ.get("BREAKWATER_ARTIFACTS",
                                Path(__file__).resolve().parents[1] / "test-artifacts"))


def _missing(message: str) -> None:
    # CI installs Chromium and sets this: there a missing browser is a failure, not a skip
    if os.environ.get("BREAKWATER_REQUIRE_BROWSER") == "1":
        pytest.fail(message)
    pytest.skip(message)


@contextmanager
def webdriver(workdir: Path, width: int = 1400, height: int = 1000) -> Iterator[Any]:
    """A selenium WebDriver on headless Chromium through Debian's chromium-driver (closed
    afterwards): for pages that must be driven (clicks, live updates, console logs)."""
    try:
        from selenium import webdriver as selenium_webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        _missing("selenium is not installed (pip install -e '.[test]')")
    binary = chromium()
    driver_path = next((found for found in (shutil.which(n) for n in DRIVER_NAMES) if found),
                       None)
    if driver_path is None:
        _missing("no chromium-driver on PATH (apt-get install chromium-driver)")
    assert driver_path is not None
    options = selenium_webdriver.ChromeOptions()
    options.binary_location = binary
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--no-first-run", "--disable-background-networking", "--disable-sync",
                "--disable-component-update", f"--window-size={width},{height}",
                # a fresh profile each time: no language remembered from another test
                f"--user-data-dir={workdir / f'chromium-{uuid.uuid4().hex[:8]}'}"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = selenium_webdriver.Chrome(options=options, service=Service(driver_path))
    try:
        yield driver
    finally:
        driver.quit()


def wait_until(driver: Any, check: Callable[[Any], Any], within: float = 10.0,
               what: str = "the page") -> Any:
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.support.ui import WebDriverWait

    try:
        return WebDriverWait(driver, within, poll_frequency=0.05).until(check)
    except TimeoutException:
        raise AssertionError(f"timed out after {within} s waiting for {what}") from None


def console_errors(driver: Any) -> list[str]:
    return [e["message"] for e in driver.get_log("browser") if e["level"] == "SEVERE"]


def screenshot(driver: Any, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    target = ARTIFACTS / name
    driver.save_screenshot(str(target))
    assert target.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    return target


def login(driver: Any, base_url: str, username: str, password: str) -> None:
    """Through the login page, as a person does: type, press the button."""
    from selenium.webdriver.common.by import By

    driver.get(f"{base_url}/login")
    driver.find_element(By.ID, "username").send_keys(username)
    driver.find_element(By.ID, "password").send_keys(password)
    driver.find_element(By.ID, "submit").click()
    wait_until(driver, lambda d: d.execute_script(
        "return location.pathname !== '/login' && document.readyState === 'complete'"),
        what="the login")
    driver.get_log("browser")  # the login page's console is not the page under test
