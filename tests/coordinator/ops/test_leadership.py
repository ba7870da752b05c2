"""One instance in cluster mode, in process: it takes the lease, applies the shared inbox
in order, and a row it cannot apply is retried, then skipped and counted, never blocking
the breaker events behind it (on a SQLite file and on the private PostgreSQL)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from benchmarks.reroute import seed_orders_at
from coordinator.db import open_database, write_transaction
from coordinator.ops import inbox_store
from coordinator.ops.config import ClusterConfig
from coordinator.ops.runner import OpsService
from coordinator.settings import Settings
from protocols import Topics
from tests.coordinator.ops.factories import breaker_event
from tests.coordinator.ops.helpers import ops_config, read, wait_for

WH = "WH-02"
AGENT = "gw-WH-02"


async def test_a_row_that_cannot_be_applied_is_skipped_after_its_attempts_and_counted(
    tmp_path: Path, db_target: str,
) -> None:
    path = db_target
    db = open_database(path)
    seed_orders_at(db, WH, 3, datetime.now(UTC), stock_boost=100)
    config = ops_config(tmp_path).model_copy(update={
        "subscribe_mqtt": False,
        "cluster": ClusterConfig(enabled=True, lease_ttl_s=2.0, renew_interval_s=0.1,
                                 apply_interval_s=0.02)})
    settings = Settings(db_path=path, instance_id="solo", topic_root=Topics("t").root)
    async with OpsService(settings, config) as ops:
        assert ops.leadership is not None
        await wait_for(ops.leading, 10, "the lease")
        with write_transaction(db):  # a row no instance could have written: junk payload
            db.execute("INSERT INTO ops_inbox (dedupe_key, kind, payload, received_by, "
                       "received_at) VALUES ('junk', 'breaker', '{not json', 'x', "
                       "'2026-01-01T00:00:00.000Z')")
        trip = breaker_event(seq=1, agent=AGENT, warehouse=WH)
        assert inbox_store.put(db, trip, "other", datetime.now(UTC))
        ops.leadership.wake()
        await wait_for(lambda: read(path, "SELECT seq FROM ops_processed_events "
                                          "WHERE agent_id = ?", [AGENT]) == [(1,)],
                       15, "the trip behind the junk row")
        # counted once its batch is done: after the commit, its stores' notices queued
        await wait_for(lambda: ops.leadership.applied == 1, 15, "the trip counted")
        assert ops.leadership.dropped == 1
        assert inbox_store.backlog(db) == 0
    db.conn.close()
    assert read(path, "SELECT count(*) FROM ops_incidents WHERE warehouse_id = ?",
                [WH]) == [(1,)]


async def test_a_backlog_is_applied_in_order_and_a_bad_row_in_its_middle_holds_back_nothing(
    tmp_path: Path, db_target: str,
) -> None:
    path = db_target
    db = open_database(path)
    seed_orders_at(db, WH, 3, datetime.now(UTC), stock_boost=100)
    now = datetime.now(UTC)
    # the backlog a new leader finds: a trip, a row it cannot decode, two more trips
    assert inbox_store.put(db, breaker_event(seq=1, agent=AGENT, warehouse=WH), "b", now)
    with write_transaction(db):
        db.execute("INSERT INTO ops_inbox (dedupe_key, kind, payload, received_by, "
                   "received_at) VALUES ('junk', 'breaker', '{not json', 'x', "
                   "'2026-01-01T00:00:00.000Z')")
    for wh in ("WH-03", "WH-04"):
        assert inbox_store.put(db, breaker_event(seq=1, agent=f"gw-{wh}", warehouse=wh),
                               "b", now)
    config = ops_config(tmp_path).model_copy(update={
        "subscribe_mqtt": False,
        "cluster": ClusterConfig(enabled=True, lease_ttl_s=2.0, renew_interval_s=0.1,
                                 apply_interval_s=0.02)})
    settings = Settings(db_path=path, instance_id="solo", topic_root=Topics("t").root)
    async with OpsService(settings, config) as ops:
        assert ops.leadership is not None
        await wait_for(lambda: inbox_store.backlog(db) == 0, 15, "the backlog applied")
        await wait_for(lambda: ops.leadership.applied == 3, 15, "the backlog counted")
        assert (ops.leadership.applied, ops.leadership.dropped) == (3, 1)
    db.conn.close()
    incidents = read(path, "SELECT warehouse_id FROM ops_incidents ORDER BY warehouse_id")
    assert incidents == [(WH,), ("WH-03",), ("WH-04",)]
