"""``python -m edge_agent replay`` on a recorded night produced by the simulators."""

from __future__ import annotations

import json
from datetime import UTC, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge_agent.__main__ import main as edge_main
from edge_agent.config import load_config
from edge_agent.replay import ReplayError, read_steps, replay
from protocols import Topics
from simulators.edge_configs import write_configs
from simulators.event_stream import events
from simulators.logger_export import write_logger_csv
from simulators.reference import sustained_trips
from simulators.region import default_region
from simulators.scenario_files import load_scenario, shipped_path
from simulators.sites import sites

SHANGHAI = ZoneInfo("Asia/Shanghai")


def night(tmp_path: Path) -> tuple[Path, Path]:
    """WH-02's config and its freezing-rain night as a data logger's CSV."""
    scenario = load_scenario(shipped_path("freezing_rain_night"))
    wh02 = [s for s in sites(scenario, default_region()) if s.warehouse_id == "WH-02"]
    (config,) = write_configs(wh02, tmp_path / "configs", Topics("breakwater"))
    csv_path = tmp_path / "night.csv"
    with csv_path.open("w", encoding="utf-8", newline="") as out:
        assert write_logger_csv(events(scenario, default_region()), "WH-02", out) > 500
    return config, csv_path


def test_replay_of_the_freezing_rain_night_reports_the_trip_at_the_scenario_time(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    scenario = load_scenario(shipped_path("freezing_rain_night"))
    (expected,) = [t for t in scenario.expect.trips if t.warehouse == "WH-02"]
    trips_at = scenario.at(expected.at)  # 02:17:00 in the scenario's own words
    # the independent oracle agrees with the scenario's statement
    oracle = [t for t in sustained_trips(events(scenario, default_region()))
              if t.warehouse == "WH-02"]
    assert oracle[0].trips_at == trips_at
    config, csv_path = night(tmp_path)
    assert edge_main(["replay", str(config), str(csv_path), "--tz", "Asia/Shanghai"]) == 0
    lines = capsys.readouterr().out.splitlines()
    tripped = [line for line in lines if "-> tripped" in line]
    assert len(tripped) == 1
    assert tripped[0].startswith(trips_at.astimezone(SHANGHAI).isoformat())
    assert "02:17:00" in tripped[0] and "threshold_exceeded" in tripped[0]
    assert "cold_room_2" in tripped[0] and "cr2-t1" in tripped[0]
    pending = [line for line in lines if "ok -> pending" in line and "cold_room_2" in line]
    assert pending[0].startswith((trips_at - timedelta(minutes=5)).astimezone(SHANGHAI)
                                 .isoformat())


def test_a_tuned_rule_moves_the_trip(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config, csv_path = night(tmp_path)
    text = config.read_text().replace("for_s = 300", "for_s = 600")
    config.write_text(text)
    assert edge_main(["replay", str(config), str(csv_path), "--tz", "Asia/Shanghai"]) == 0
    tripped = [x for x in capsys.readouterr().out.splitlines() if "-> tripped" in x]
    assert tripped[0].startswith("2026-01-15T02:22:00+08:00")


def test_replay_of_mqtt_messages_uses_the_parsers(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config, _ = night(tmp_path)
    topic = "breakwater/v1/wh/WH-02/sensor/cr2-t1"
    log = tmp_path / "messages.jsonl"
    lines = []
    for i in range(12):
        at = f"2026-01-15T02:{12 + i // 2:02d}:{30 * (i % 2):02d}+08:00"
        payload = {"v": 1, "sensor_id": "cr2-t1", "ts": at, "temperature_c": 9.0}
        lines.append(json.dumps({"received_at": at, "topic": topic, "payload": payload}))
    lines.append(json.dumps({"received_at": "2026-01-15T02:18:00+08:00", "topic": topic,
                             "payload": '{"v":1,"sensor_id":"cr2-t1","temperature_c":9}'}))
    log.write_text("\n".join(lines) + "\n")
    assert edge_main(["replay", str(config), str(log), "--tz", "Asia/Shanghai"]) == 0
    out = capsys.readouterr().out
    assert "2026-01-15T02:17:00+08:00" in out and "-> tripped" in out
    assert "1 dead letters" in out and "ts" in out  # the one without ts


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("when,sensor_id,temperature_c\n", "no time column"),
        ("time,sensor_id,temperature_c\nyesterday,cr2-t1,5\n", "line 2.time"),
        ("time,sensor_id,temperature_c\n2026-01-15T02:00:00,cr2-t1,warm\n",
         "line 2.temperature_c"),
        ('{"topic": "x"}\n', "line 1: needs received_at"),
    ],
)
def test_a_bad_recording_is_refused_naming_the_line_and_field(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, message: str
) -> None:
    config, _ = night(tmp_path)
    bad = tmp_path / "bad.csv"
    bad.write_text(text)
    assert edge_main(["replay", str(config), str(bad)]) == 2
    assert message in capsys.readouterr().err


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=st.text(max_size=300) | st.lists(
    st.sampled_from(["time,sensor_id,temperature_c", "2026-01-15T02:00:00,cr2-t1,5",
                     '{"received_at": "2026-01-15T02:00:00Z", "topic": "t", "payload": 1}',
                     "x,,", "", "{", "2026-13-01,a,b", "nan,cr2-t1,NaN"]),
    max_size=6).map("\n".join))
def test_property_any_recording_is_replayed_or_refused_naming_the_line(
    tmp_path: Path, text: str
) -> None:
    path = tmp_path / "junk.txt"
    path.write_text(text, encoding="utf-8")
    try:
        steps = list(read_steps(path, UTC))
    except ReplayError as exc:
        assert str(exc).startswith("line ")
        return
    config, _ = night(tmp_path)
    replay(load_config(config), iter(steps))  # never raises on what it accepted


def test_logged_sentinels_junk_and_strangers_are_dead_letters_naming_them(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config, _ = night(tmp_path)
    log = tmp_path / "logger.csv"
    log.write_text("time,sensor_id,temperature_c\n"
                   "2026-01-15T02:00:00+08:00,cr2-t1,85.0\n"
                   "2026-01-15T02:00:30+08:00,cr2-t1,nan\n"
                   "2026-01-15T02:01:00+08:00,ghost,5\n"
                   "2026-01-15T02:01:30+08:00,cr2-t1,5\n")
    assert edge_main(["replay", str(config), str(log)]) == 0
    out = capsys.readouterr().out
    assert "3 dead letters" in out and "power-on" in out and "must be finite" in out
    assert "no sensor 'ghost'" in out
