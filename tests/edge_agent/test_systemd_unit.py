"""The gateway's systemd unit: restart policy, state directory, sandboxed user, and it
passes ``systemd-analyze verify`` (when systemd's tools are installed)."""

from __future__ import annotations

import configparser
import shutil
import subprocess
from pathlib import Path

import pytest

UNIT = Path(__file__).resolve().parents[2] / "deploy" / "breakwater-edge.service"


def unit() -> configparser.RawConfigParser:
    parser = configparser.RawConfigParser(strict=False, delimiters=("=",))
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string(UNIT.read_text())
    return parser


def test_the_unit_restarts_always_keeps_state_and_runs_sandboxed() -> None:
    service = unit()["Service"]
    assert service["Restart"] == "always" and unit()["Unit"]["StartLimitIntervalSec"] == "0"
    assert service["StateDirectory"] == "breakwater-edge"
    assert service["User"] == "breakwater-edge"
    assert service["NoNewPrivileges"] == "yes" and service["ProtectSystem"] == "strict"
    assert "-m edge_agent --config" in service["ExecStart"]


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze")
def test_systemd_analyze_verify_accepts_the_unit(tmp_path: Path) -> None:
    # verify checks that ExecStart's binary exists: point it at this Python for the check
    text = UNIT.read_text().replace("/opt/breakwater/venv/bin/python", shutil.which("python3")
                                    or "/usr/bin/python3")
    copy = tmp_path / "breakwater-edge.service"
    copy.write_text(text)
    result = subprocess.run(["systemd-analyze", "verify", str(copy)], capture_output=True,
                            text=True, timeout=60, check=False)
    problems = [line for line in result.stderr.splitlines()
                if "breakwater-edge.service" in line and "User=" not in line]
    assert problems == [], result.stderr
