"""The demo command end to end against the test broker (MQTT_URL set, so no embedded one).

Before the merge it replays sensors only; once edge_agent and the coordinator are
installed the same command runs them too, and this test then also sees the trip."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from simulators.__main__ import main
from simulators.brokers import Broker

pytestmark = [pytest.mark.broker, pytest.mark.slow]


def test_demo_replays_the_night_and_reports_the_0217_trip(
    broker: Broker,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("MQTT_URL", broker.url)
    assert main(["demo", "--workdir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert f"using MQTT broker {broker.url}" in out
    assert "[02:12:00] cold room 2 of WH-02 crosses 8.0 °C" in out
    assert "WH-02/cold_chain zone cold_room_2: above since 02:12:00, trips at 02:17:00" in out
    assert "native" in out and "zigbee2mqtt" in out and "tasmota" in out and "plain" in out
    waiting = (tmp_path / "orders-waiting.jsonl").read_text().splitlines()
    assert len(waiting) == 287
    assert all(
        json.loads(line)["channel"] in {"wechat_mini", "meituan", "douyin"} for line in waiting
    )
    assert len(list((tmp_path / "edge").glob("*.toml"))) == 8
    if "edge agents: one per warehouse" in out:  # edge_agent installed: the real trip
        assert "WH-02/cold_chain tripped at 02:17:00 event time" in out
        assert "(1 trips)" in out
    if "coordinator: http://127.0.0.1:" in out:  # coordinator installed: the reroute
        assert "287 waiting: 287 at WH-02" in out
        moved = next(line for line in out.splitlines() if "waiting orders now:" in line)
        assert "WH-02" not in moved
        counts = [int(part.split()[0]) for part in moved.split(":", 1)[1].split(",")]
        assert sum(counts) == 287
