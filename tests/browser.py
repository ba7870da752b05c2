"""Headless Chromium for page tests: the binary (skip, or fail under CI, when missing) and
one run of it against a URL."""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from pathlib import Path

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
