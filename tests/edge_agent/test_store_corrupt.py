"""A state file a power cut left damaged (overwritten, cut short) never keeps the agent
from watching its cold rooms: it is set aside for a person to look at, and the agent
starts on a new store (a new incarnation) and trips as before."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from pathlib import Path

import pytest

from edge_agent.agent import EdgeAgent
from edge_agent.config import AgentConfig
from edge_agent.errors import StoreCorrupt
from edge_agent.store import Store, open_store
from protocols import SensorReading, Topics, encode
from protocols.clock import ManualClock
from tests.edge_agent.conftest import SENSOR, WH, make_config

T0 = datetime(2026, 1, 15, 2, 0, tzinfo=UTC)
TOPICS = Topics("bwtest-storecorrupt")
NATIVE = TOPICS.sensor(WH, SENSOR)


def _run_hot(agent: EdgeAgent, clock: ManualClock, minutes: int) -> None:
    for _ in range(minutes * 2):  # 9 °C every 30 s
        reading = SensorReading(sensor_id=SENSOR, ts=clock.now(), temperature_c=9.0)
        agent.handle_sensor_message(NATIVE, encode(reading))
        clock.advance(30)


def _first_life(config: AgentConfig, clock: ManualClock) -> str:
    """An agent that ran a while (its store holds rules, events, an incarnation)."""
    agent = EdgeAgent(config, clock=clock, topics=TOPICS)
    _run_hot(agent, clock, 6)
    store = agent._store
    assert store is not None
    incarnation = store.incarnation
    store.close()
    return incarnation


def _overwrite_header(path: Path) -> None:
    with path.open("r+b") as f:
        f.write(b"\x00garbage after a power cut\xff" * 4)


def _cut_short(path: Path) -> None:
    with path.open("r+b") as f:
        f.truncate(5000)


@pytest.mark.parametrize("damage", [_overwrite_header, _cut_short])
def test_a_damaged_state_file_is_set_aside_and_the_agent_trips_again(
        tmp_path: Path, damage: object, caplog: pytest.LogCaptureFixture) -> None:
    clock = ManualClock(T0)
    config = make_config(tmp_path, "mqtt://127.0.0.1:1", "mqtt://127.0.0.1:1", TOPICS)
    path = Path(config.state_db_path)
    first = _first_life(config, clock)
    for suffix in ("-wal", "-shm"):  # as a power cut would leave it: no clean close
        path.with_name(path.name + suffix).unlink(missing_ok=True)
    assert callable(damage)
    damage(path)
    with pytest.raises(StoreCorrupt):
        Store(path, outbox_max_bytes=1 << 20, readings_keep=10).close()

    caplog.set_level(logging.ERROR)
    agent = EdgeAgent(config, clock=clock, topics=TOPICS)
    _run_hot(agent, clock, 6)  # watches again: the cold room trips
    assert agent.breaker_states()["cold_chain"] == ("tripped", True)
    store = agent._store
    assert store is not None
    assert store.incarnation != first  # a new lifetime: the coordinator follows
    store.close()
    aside = [p.name for p in tmp_path.rglob(f"{path.name}.corrupt-*")]
    assert aside == [f"{path.name}.corrupt-20260115T020600Z"]  # kept for a person
    assert any("set aside as" in r.getMessage() for r in caplog.records)


def test_a_state_file_that_opens_is_never_set_aside(tmp_path: Path) -> None:
    clock = ManualClock(T0)
    config = make_config(tmp_path, "mqtt://127.0.0.1:1", "mqtt://127.0.0.1:1", TOPICS)
    first = _first_life(config, clock)
    store = open_store(config, clock.now())
    assert store.incarnation == first
    store.close()
    assert list(tmp_path.rglob("*.corrupt-*")) == []


def test_two_damaged_files_within_one_second_are_both_kept(tmp_path: Path) -> None:
    clock = ManualClock(T0)
    config = make_config(tmp_path, "mqtt://127.0.0.1:1", "mqtt://127.0.0.1:1", TOPICS)
    path = Path(config.state_db_path)
    for _ in range(2):
        _first_life(config, clock)
        _overwrite_header(path)
        open_store(config, T0).close()  # set aside (both at T0), a new store made
    names = sorted(p.name for p in tmp_path.rglob(f"{path.name}.corrupt-*")
                   if not p.name.endswith(("-wal", "-shm")))
    assert names == [f"{path.name}.corrupt-20260115T020000Z",
                     f"{path.name}.corrupt-20260115T020000Z-2"]
