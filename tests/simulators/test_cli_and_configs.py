"""The command line (scenario check, edge-configs, orders --out) and generated configs."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import pytest

from protocols import Topics
from simulators.__main__ import main
from simulators.edge_configs import EdgeConfigError, load_edge_config, to_toml
from simulators.region import builtin_region
from simulators.scenario_files import load_scenario, shipped_path
from simulators.sites import sites


def test_scenario_check_prints_a_summary(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["scenario", "check", str(shipped_path("freezing_rain_night"))]) == 0
    out = capsys.readouterr().out
    assert "freezing_rain_night" in out and "WH-02/cold_chain" in out and "287" in out


def test_scenario_check_exits_2_naming_line_and_field(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.yaml"
    text = shipped_path("power_cut").read_text().replace("cold_chain: true", "cold_chain: maybe")
    bad.write_text(text)
    assert main(["scenario", "check", str(bad)]) == 2
    err = capsys.readouterr().err
    line = next(n for n, row in enumerate(text.splitlines(), 1) if "maybe" in row)
    assert f"bad.yaml:{line}: warehouses.0.cold_chain" in err


def test_edge_configs_for_the_region(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["edge-configs", "--scenario", "freezing_rain_night", "--out", str(tmp_path)]
    assert main([*args, "--mqtt-url", "mqtt://127.0.0.1:1999"]) == 0
    files = sorted(tmp_path.glob("*.toml"))
    assert len(files) == len(builtin_region().warehouses)
    cold = tomllib.loads((tmp_path / "WH-02.toml").read_text())
    assert cold["agent"] == {
        "agent_id": "agent-WH-02",
        "warehouse_id": "WH-02",
        "state_db": "state-WH-02.sqlite",
    }
    assert [b["name"] for b in cold["breakers"]] == ["cold_chain"]
    rule = next(r for r in cold["rules"] if r["zone"] == "cold_room_2")
    assert (rule["above"], rule["for_s"], rule["min_readings"]) == (8.0, 300, 3)
    assert rule["silence_trips_after_s"] == 600
    formats = {s["format"] for s in cold["sensors"]}
    assert formats == {"native", "zigbee2mqtt", "tasmota"}
    assert next(s for s in cold["sensors"] if s["format"] == "native")["topic"] == Topics().sensor(
        "WH-02", "cr2-t1"
    )
    assert cold["uplink_mqtt"] == {
        "url": "mqtt://127.0.0.1:1999",
        "username": "agent-WH-02",
        "topic_root": "breakwater",
    }
    dry = tomllib.loads((tmp_path / "WH-03.toml").read_text())
    assert [r["metric"] for r in dry["rules"]] == ["humidity_pct"]
    plain = next(s for s in dry["sensors"] if s["format"] == "plain")
    assert plain["metric"] == "humidity_pct"
    assert next(s for s in dry["sensors"] if s["format"] == "tasmota")["tasmota_sensor"] == "SHT3X"


def test_configs_carry_extra_sections_and_read_back(tmp_path: Path) -> None:
    from simulators.edge_configs import write_configs

    scenario = load_scenario("freezing_rain_night")
    site = sites(scenario, builtin_region())[0]
    extra = {"mqtt": {"local_url": "mqtt://127.0.0.1:1883", "uplink_url": 'mqtt://h"x'}}
    [path] = write_configs([site], tmp_path, Topics("demo"), extra=extra)
    data = tomllib.loads(path.read_text())
    assert data["mqtt"]["uplink_url"] == 'mqtt://h"x'
    read = load_edge_config(path)
    assert read.agent.warehouse_id == site.warehouse_id
    assert {s.id for s in read.sensors} == {s.id for s in site.sensors}


def test_a_broken_edge_config_names_the_file_and_field(tmp_path: Path) -> None:
    path = tmp_path / "x.toml"
    path.write_text('[agent]\nagent_id = "a"\n')
    with pytest.raises(EdgeConfigError, match=r"x\.toml: agent\.warehouse_id"):
        load_edge_config(path)
    path.write_text("[agent\n")
    with pytest.raises(EdgeConfigError, match=r"x\.toml"):
        load_edge_config(path)


def test_toml_writer_escapes_strings() -> None:
    text = to_toml({"a": {"s": 'q"\\\n冷', "n": 1.5, "b": True, "l": [1, 2]}})
    assert tomllib.loads(text) == {"a": {"s": 'q"\\\n冷', "n": 1.5, "b": True, "l": [1, 2]}}


def test_orders_to_jsonl(tmp_path: Path) -> None:
    out = tmp_path / "o.jsonl"
    assert main(["orders", "--count", "40", "--seed", "9", "--out", str(out)]) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 40
    assert {row["channel"] for row in rows} <= {"wechat_mini", "meituan", "douyin"}


@pytest.mark.parametrize("name", ["freezing_rain_night", "noisy_normal_day", "power_cut"])
def test_generated_configs_round_trip_into_the_edge_agent_model(name: str, tmp_path: Path) -> None:
    """What the simulator writes is what a gateway loads: every site's TOML, read back by
    tomllib, validates as the edge agent's own (extra="forbid") config model."""
    config_module = pytest.importorskip("edge_agent.config")
    from simulators.edge_configs import site_config, write_configs

    topics = Topics("rt")
    site_list = sites(load_scenario(name), builtin_region())
    uplinks = {site_list[0].warehouse_id: {"url": "mqtt://127.0.0.1:2999", "reconnect_max_s": 0.5}}
    paths = write_configs(
        site_list, tmp_path, topics, mqtt_url="mqtt://127.0.0.1:1999",
        extra={"agent": {"heartbeat_s": 0}}, uplinks=uplinks,
    )  # fmt: skip
    assert len(paths) == len(site_list)
    for site, path in zip(site_list, paths, strict=True):
        data = tomllib.loads(path.read_text(encoding="utf-8"))
        expected = site_config(
            site, topics, mqtt_url="mqtt://127.0.0.1:1999", extra={"agent": {"heartbeat_s": 0}},
            uplink=uplinks.get(site.warehouse_id),
        )  # fmt: skip
        assert data == expected
        model = config_module.AgentConfig.model_validate(data)
        assert model.agent.warehouse_id == site.warehouse_id
        assert model.agent.heartbeat_s == 0
        assert {s.id for s in model.sensors} == {s.id for s in site.sensors}
        loaded = config_module.load_config(path)
        assert loaded.uplink_mqtt.url == data["uplink_mqtt"]["url"]
    first = config_module.load_config(paths[0])
    assert first.uplink_mqtt.url == "mqtt://127.0.0.1:2999"
    assert first.uplink_mqtt.reconnect_max_s == 0.5
    assert first.local_mqtt.url == "mqtt://127.0.0.1:1999"
