"""Headless Chromium driven by Debian's chromium-driver through selenium, for page tests.

Missing browser: the test skips, or fails where CI sets ``BREAKWATER_REQUIRE_BROWSER=1``.
Screenshots go to ``test-artifacts/`` (gitignored; ``BREAKWATER_ARTIFACTS`` moves it).
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome")
DRIVER_NAMES = ("chromedriver", "chromium-driver")
ARTIFACTS = Path(os.environ.get("BREAKWATER_ARTIFACTS",
                                Path(__file__).resolve().parents[2] / "test-artifacts"))


def _missing(message: str) -> None:
    # CI installs Chromium and sets this: there a missing browser is a failure, not a skip
    if os.environ.get("BREAKWATER_REQUIRE_BROWSER") == "1":
        pytest.fail(message)
    pytest.skip(message)


def _find(names: tuple[str, ...]) -> str | None:
    for name in names:
        found = shutil.which(name) or (f"/usr/bin/{name}" if Path(f"/usr/bin/{name}").exists()
                                       else None)
        if found:
            return found
    return None


@contextmanager
def chromium(workdir: Path, width: int = 1400, height: int = 1000) -> Iterator[Any]:
    """A selenium WebDriver on headless Chromium (closed afterwards)."""
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        _missing("selenium is not installed (pip install -e '.[test]')")
    binary, driver_path = _find(CHROMIUM_NAMES), _find(DRIVER_NAMES)
    if binary is None or driver_path is None:
        _missing("no chromium and chromium-driver on PATH "
                 "(apt-get install chromium chromium-driver)")
    assert binary is not None and driver_path is not None
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--no-first-run", "--disable-background-networking", "--disable-sync",
                "--disable-component-update", f"--window-size={width},{height}",
                # a fresh profile each time: no language remembered from another test
                f"--user-data-dir={workdir / f'chromium-{uuid.uuid4().hex[:8]}'}"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(driver_path))
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
