"""A state-store write that fails (here: the SQLite file locked by another connection)
never loses a trip: the event is kept and saved, in order, by the next commit."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime
from pathlib import Path

from edge_agent.agent import EdgeAgent
from protocols import BreakerEvent, SensorReading, Topics, encode
from protocols.clock import ManualClock
from tests.edge_agent.conftest import SENSOR, WH, make_config

T0 = datetime(2026, 1, 15, 2, 0, tzinfo=UTC)
TOPICS = Topics("bwtest-storefail")
NATIVE = TOPICS.sensor(WH, SENSOR)


def feed(agent: EdgeAgent, clock: ManualClock, value: float) -> None:
    reading = SensorReading(sensor_id=SENSOR, ts=clock.now(), temperature_c=value)
    agent.handle_sensor_message(NATIVE, encode(reading))


def breaker_events(agent: EdgeAgent) -> list[BreakerEvent]:
    store = agent._store
    assert store is not None
    rows = store.outbox_rows(after_seq=0, limit=10_000)
    return [BreakerEvent.model_validate_json(r.payload) for r in rows if r.kind == "breaker"]


def test_trip_during_a_locked_store_is_saved_by_the_next_commit(tmp_path: Path) -> None:
    clock = ManualClock(T0)
    config = make_config(tmp_path, "mqtt://127.0.0.1:1", "mqtt://127.0.0.1:1", TOPICS)
    agent = EdgeAgent(config, clock=clock, topics=TOPICS)
    for _ in range(10):  # 9 °C every 30 s: pending, 4.5 min in
        feed(agent, clock, 9.0)
        clock.advance(30)
    store = agent._store
    assert store is not None
    store.db.conn.execute("PRAGMA busy_timeout = 10")  # fail fast instead of after 5 s
    blocker = sqlite3.connect(config.state_db_path, isolation_level=None)
    blocker.execute("BEGIN EXCLUSIVE")
    try:
        feed(agent, clock, 9.0)  # 5 min: the trip, while the store cannot be written
        assert agent.breaker_states()["cold_chain"] == ("tripped", True)
        assert agent.stats.store_errors == 1
        depth = agent.stats.outbox_depth
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    assert not any(e.open for e in breaker_events(agent))
    clock.advance(1)
    agent._tick()
    events = breaker_events(agent)
    assert [e.open for e in events][-1] is True
    assert [e.seq for e in events] == sorted(e.seq for e in events)
    assert agent.stats.outbox_depth > depth
    assert agent.stats.store_errors == 1
