"""Headless Chromium for page tests: the binary (skip, or fail under CI, when missing), one
run of it against a URL, and a selenium WebDriver session through chromium-driver.
Screenshots go to ``test-artifacts/`` (gitignored; ``BREAKWATER_ARTIFACTS`` moves it)."""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

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
