"""A reconnect storm applied in batches (``OpsCore.handle_many``: one transaction, records
written set-based) ends exactly where the same messages applied one at a time end, and a
repeat of an applied event writes nothing but its count (on a SQLite file and on the
private PostgreSQL)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from benchmarks.reroute import seed_orders_at
from coordinator.db import Database, open_database
from coordinator.ops.handler import CoreMessage, OpsCore
from coordinator.settings import Settings
from simulators.pg_server import PostgresServer
from tests.coordinator.ops.factories import T0, agent_status, breaker_event, minutes
from tests.coordinator.ops.helpers import ops_config, register_gateways

WAREHOUSES = ["WH-02", "WH-03", "WH-05"]
AGENTS = {f"gw-{wh}": wh for wh in WAREHOUSES}
NOW = datetime(2026, 11, 24, 2, 30, tzinfo=UTC)
# what each comparison reads back: everything the apply path writes
TABLES = {
    "ops_breaker_states": "SELECT warehouse_id, breaker, agent_id, state, open, seq, "
                          "session_seq, last_seen, incarnation FROM ops_breaker_states",
    "ops_agent_sessions": "SELECT agent_id, session_seq, online, last_seen, incarnation "
                          "FROM ops_agent_sessions",
    "ops_processed_events": "SELECT agent_id, incarnation, seq, outcome FROM "
                            "ops_processed_events",
    "ops_agent_lifetimes": "SELECT agent_id, incarnation, retired FROM ops_agent_lifetimes",
    "ops_counters": "SELECT name, value FROM ops_counters",
    "ops_incidents": "SELECT incident_id, warehouse_id, moved, stuck, closed_at IS NULL "
                     "FROM ops_incidents",
    "ops_breaker_log": "SELECT agent_id, seq_less, state FROM (SELECT agent_id, "
                       "event_time AS seq_less, state FROM ops_breaker_log) AS b",
    "warehouses": "SELECT id, available, unavailable_reason, paused FROM warehouses",
    "orders": "SELECT warehouse_id, status, count(*) FROM orders "
              "GROUP BY warehouse_id, status",
    "ops_notifications": "SELECT kind, dedupe_key FROM ops_notifications",
    "ops_uplink_log": "SELECT agent_id, online, how FROM ops_uplink_log",
}


@pytest.fixture
def two_targets(request: pytest.FixtureRequest, db_target: str,
                tmp_path: Path) -> tuple[str, str]:
    """Two empty databases of the same backend."""
    if db_target.startswith("postgresql"):
        server: PostgresServer = request.getfixturevalue("postgres_server")
        return db_target, server.create_database()
    return db_target, str(tmp_path / "other.sqlite")


def seeded(target: str) -> Database:
    db = open_database(target)
    for wh in WAREHOUSES:
        seed_orders_at(db, wh, 4, T0 - minutes(30), stock_boost=100)
    db.conn.close()
    register_gateways(target, AGENTS, T0 - minutes(30))
    return open_database(target)


@pytest.fixture
def cores(two_targets: tuple[str, str], tmp_path: Path) -> Iterator[tuple[OpsCore, OpsCore]]:
    made = []
    for target in two_targets:
        db = seeded(target)
        made.append(OpsCore(db, Settings(db_path=target), ops_config(tmp_path)))
    yield made[0], made[1]
    for core in made:
        core.db.conn.close()


def snapshot(db: Database) -> dict[str, list[tuple[Any, ...]]]:
    return {name: sorted((tuple(r) for r in db.execute(sql).fetchall()), key=repr)
            for name, sql in TABLES.items()}


def storm() -> list[CoreMessage]:
    """Births, trips, their repeats (QoS 1, re-sent current state), a clear, a stale
    event, a replaced gateway's new lifetime in the middle, an unregistered agent."""
    inc = "a1b2c3d4"
    return [
        agent_status(online=True, session_seq=1, agent="gw-WH-02", warehouse="WH-02",
                     at=T0, incarnation=inc),
        breaker_event(seq=5, agent="gw-WH-02", warehouse="WH-02", episode="ep-2",
                      incarnation=inc),
        breaker_event(seq=5, agent="gw-WH-02", warehouse="WH-02", episode="ep-2",
                      incarnation=inc),
        agent_status(online=True, session_seq=1, agent="gw-WH-03", warehouse="WH-03", at=T0),
        breaker_event(seq=1, agent="gw-WH-03", warehouse="WH-03", episode="ep-3"),
        breaker_event(seq=4, agent="gw-WH-02", warehouse="WH-02", episode="ep-old",
                      incarnation=inc),  # older than the state: stale
        breaker_event(seq=2, agent="gw-WH-03", warehouse="WH-03", open=False),
        breaker_event(seq=1, agent="gw-WH-05", warehouse="WH-05", episode="ep-5"),
        breaker_event(seq=1, agent="gw-WH-05", warehouse="WH-05", episode="ep-5"),
        # the gateway of WH-02 replaced: a new lifetime, whose clear wins whatever its seq
        agent_status(online=True, session_seq=1, agent="gw-WH-02", warehouse="WH-02",
                     at=T0 + minutes(1), incarnation="e5f6a7b8"),
        breaker_event(seq=1, agent="gw-WH-02", warehouse="WH-02", open=False,
                      incarnation="e5f6a7b8"),
        breaker_event(seq=9, agent="gw-intruder", warehouse="WH-05", open=False),
    ]


def test_a_storm_applied_in_one_batch_ends_where_one_at_a_time_ends(
        cores: tuple[OpsCore, OpsCore]) -> None:
    batched, single = cores
    messages = storm()
    result, applied = batched.handle_many(messages, NOW)
    assert applied == len(messages)
    for message in messages:
        single.handle(message, NOW)
    after = snapshot(batched.db)
    assert after == snapshot(single.db)
    # and it did what the storm says: WH-03 back, WH-05 down, WH-02 down (its new
    # gateway's clear is held until an operator confirms the replacement)
    assert sorted((w, a) for w, a, _, _ in after["warehouses"] if w in WAREHOUSES) == [
        ("WH-02", 0), ("WH-03", 1), ("WH-05", 0)]
    assert [(type(t).__name__, t.warehouse_id) for t in result.transitions] == [
        ("WarehouseUnavailable", "WH-02"), ("WarehouseUnavailable", "WH-03"),
        ("WarehouseAvailable", "WH-03"), ("WarehouseUnavailable", "WH-05")]
    counters = dict(after["ops_counters"])
    assert counters["duplicates_dropped"] == 2
    assert counters["breaker_events_stale"] == 1
    assert counters["security_refused"] == 1
    # the memory of the batched core is what it committed
    assert batched.tracker.state == OpsCore(batched.db, batched.settings,
                                            batched.config).tracker.state


def test_a_batch_ended_by_its_budget_applies_a_prefix_and_the_rest_follows(
        cores: tuple[OpsCore, OpsCore]) -> None:
    batched, single = cores
    messages = storm()
    done = 0
    while done < len(messages):
        _, applied = batched.handle_many(messages[done:], NOW, budget_s=0.0)
        assert applied == 1  # the budget is spent at once: one message per transaction
        done += applied
    for message in messages:
        single.handle(message, NOW)
    assert snapshot(batched.db) == snapshot(single.db)


def test_a_repeat_of_an_applied_event_writes_nothing_but_its_count(
        cores: tuple[OpsCore, OpsCore]) -> None:
    core, _ = cores
    trip = breaker_event(seq=1, agent="gw-WH-03", warehouse="WH-03", episode="ep-3")
    core.handle(trip, NOW)
    before = snapshot(core.db)
    changes = core.db.conn.total_changes
    core.handle_many([trip, trip, trip], NOW)
    assert core.db.conn.total_changes - changes == 1  # one counter row, bumped by 3
    after = snapshot(core.db)
    assert dict(after.pop("ops_counters"))["duplicates_dropped"] == 3
    before.pop("ops_counters")
    assert after == before
