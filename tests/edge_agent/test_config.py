"""Gateway config files: errors name the file and the field; the CLI exits 2 when invalid."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from edge_agent.config import AgentConfig, config_from_dict, load_config
from edge_agent.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples" / "edge"

GOOD = """
[agent]
agent_id = "gw-1"
warehouse_id = "wh-1"
state_db = "state/edge.sqlite"
[local_mqtt]
url = "mqtt://127.0.0.1:1883"
[uplink_mqtt]
url = "mqtt://127.0.0.1:1884"
username = "gw-1"
[[sensors]]
id = "t1"
zone = "cold_room_2"
format = "native"
[[rules]]
id = "temp_high"
zone = "cold_room_2"
breaker = "cold_chain"
metric = "temperature_c"
above = 8.0
[[breakers]]
name = "cold_chain"
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "site.toml"
    path.write_text(text)
    return path


@pytest.mark.parametrize("name", ["cold-chain.toml", "dry-warehouse.toml"])
def test_example_configs_are_valid(name: str) -> None:
    config = load_config(EXAMPLES / name)
    assert config.rules and config.breakers


def test_state_db_is_relative_to_the_config_file(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, GOOD))
    assert config.state_db_path == tmp_path / "state" / "edge.sqlite"
    assert config.agent.outage_tolerance_s == 900 and config.agent.tick_interval_s == 1.0
    assert config.uplink_mqtt.port == 1884


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (("above = 8.0", 'above = "hot"'), "rules[0].above"),
        (("above = 8.0", "above = 8.0\nbelow = 2.0"), "rules[0]"),
        (('breaker = "cold_chain"', 'breaker = "nope"'), "rules[0].breaker"),
        (('zone = "cold_room_2"\nbreaker', 'zone = "freezer"\nbreaker'), "rules[0].zone"),
        (('agent_id = "gw-1"', 'agent_id = "gw.1"'), "agent.agent_id"),
        (('agent_id = "gw-1"\n', ""), "agent.agent_id"),
        (('format = "native"', 'format = "modbus"'), "sensors[0].format"),
        (('format = "native"', 'format = "plain"\ntopic = "x/y"'), "sensors[0]"),
        (('url = "mqtt://127.0.0.1:1883"', 'url = "http://x"'), "local_mqtt.url"),
        (('state_db = "state/edge.sqlite"', 'stat_db = "typo.sqlite"'), "agent.stat_db"),
        (("above = 8.0", "above = 8.0\nclear_below = 9.0"), "rules[0]"),
    ],
)
def test_config_errors_name_the_field_and_the_file(
    tmp_path: Path, change: tuple[str, str], field: str
) -> None:
    old, new = change
    assert old in GOOD
    path = write(tmp_path, GOOD.replace(old, new, 1))
    if field is None:
        load_config(path)
        return
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert caught.value.field == field
    assert str(path) in str(caught.value) and field in str(caught.value)


def test_bad_toml_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(write(tmp_path, "[agent\n"))
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "missing.toml")


def test_model_validate_from_a_dict() -> None:
    data: dict[str, Any] = {
        "agent": {"agent_id": "gw-1", "warehouse_id": "wh-1"},
        "sensors": [{"id": "t1", "zone": "z1"}],
        "breakers": [{"name": "b"}],
    }
    assert AgentConfig.model_validate(data).sensors[0].format == "native"
    data["sensors"][0]["max_gap_s"] = -1
    with pytest.raises(ConfigError) as caught:
        config_from_dict(data)
    assert caught.value.field == "sensors[0].max_gap_s"


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "edge_agent", *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )


def test_cli_check_prints_a_summary(tmp_path: Path) -> None:
    result = run_cli("check", str(write(tmp_path, GOOD)))
    assert result.returncode == 0, result.stderr
    assert "rule temp_high: cold_room_2 temperature_c > 8.0 for 300s" in result.stdout


def test_cli_check_exits_2_naming_the_field(tmp_path: Path) -> None:
    result = run_cli("check", str(write(tmp_path, GOOD.replace("above = 8.0", "above = 'x'"))))
    assert result.returncode == 2
    assert "rules[0].above" in result.stderr
