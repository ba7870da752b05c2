"""A database made before the gateway registry, with agents already seen, keeps accepting
their events once the migration has run (it registers every agent it finds)."""

from __future__ import annotations

import asyncio
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiomqtt
import pytest

from coordinator import schema as core_schema
from coordinator.catalog import import_file
from coordinator.db import open_database
from coordinator.ops import schema as ops_schema
from coordinator.ops.runner import OpsService
from coordinator.region import SAMPLE_DIR, SAMPLE_FILES
from protocols import Topics, encode
from protocols.clock import ManualClock
from protocols.timestamps import stamp
from simulators.brokers import Broker
from tests.coordinator.ops.factories import breaker_event
from tests.coordinator.ops.helpers import counter, ops_config, read, settings_for, wait_for

pytestmark = pytest.mark.broker
INC = "c" * 32


def old_database(path: Path, seen_at: datetime) -> None:
    """What the coordinator wrote before this change: only the core and ops tables, an
    agent session (with an incarnation) and a v1 agent known from its breaker state."""
    from sqlite_utils import Database

    db = Database(sqlite3.connect(path))
    core_schema.migrations.apply(db)
    ops_schema.migrations.apply(db)
    assert "gateways" not in db.table_names()
    at = stamp(seen_at)
    db.execute("INSERT INTO ops_agent_sessions (agent_id, warehouse_id, session_seq, online, "
               "last_birth_at, last_seen, incarnation) VALUES ('gw-old-2', 'WH-02', 3, 1, ?, "
               "?, ?)", [at, at, INC])
    db.execute("INSERT INTO ops_breaker_states (warehouse_id, breaker, agent_id, state, open, "
               "reason, seq, session_seq, since, event_time, last_seen) VALUES ('WH-03', "
               "'cold_chain', 'gw-old-3', 'ok', 0, 'recovered', 40, 2, ?, ?, ?)",
               [at, at, at])
    db.conn.commit()
    db.conn.close()


async def test_agents_seen_before_the_upgrade_keep_being_heard(
        broker: Broker, topics: Topics, tmp_path: Path) -> None:
    path = tmp_path / "coordinator.sqlite"
    now = datetime.now(UTC)
    old_database(path, now - timedelta(days=1))
    db = open_database(path)  # the upgrade: every migration set, the registry's included
    for name in SAMPLE_FILES:
        import_file(db, SAMPLE_DIR / f"{name}.csv", now)
    db.conn.close()
    assert sorted(read(path, "SELECT agent_id, warehouse_id, incarnation FROM gateways")) == [
        ("gw-old-2", "WH-02", INC), ("gw-old-3", "WH-03", None)]
    clock = ManualClock(now)
    async with OpsService(settings_for(path, broker.url, topics), ops_config(tmp_path),
                          clock) as ops:
        await asyncio.wait_for(ops.watcher.connected.wait(), 10)
        async with aiomqtt.Client(broker.host, broker.port) as agent:
            await agent.publish(topics.breaker("WH-02", "cold_chain"), encode(breaker_event(
                seq=50, warehouse="WH-02", agent="gw-old-2", session_seq=3, at=now,
                incarnation=INC)), qos=1)
            await agent.publish(topics.breaker("WH-03", "cold_chain"), encode(breaker_event(
                seq=41, warehouse="WH-03", agent="gw-old-3", session_seq=2, at=now)), qos=1)
            await wait_for(lambda: read(path, "SELECT count(*) FROM warehouses WHERE id IN "
                                              "('WH-02', 'WH-03') AND available = 0") == [(2,)],
                           what="both trips applied")
            await agent.publish(topics.breaker("WH-03", "cold_chain"), encode(breaker_event(
                seq=42, open=False, warehouse="WH-03", agent="gw-old-3", session_seq=2,
                at=now + timedelta(seconds=5))), qos=1)
            await wait_for(lambda: read(path, "SELECT available FROM warehouses "
                                              "WHERE id = 'WH-03'") == [(1,)],
                           what="the v1 agent's clear applied")
    assert counter(path, "security_refused") == counter(path, "security_held") == 0
