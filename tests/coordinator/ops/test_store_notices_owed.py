"""The stores' notices of a reroute are owed in its commit and composed after it: a
reroute whose notices cannot be queued still moves its orders, and the notices follow
on the next tick (or the next leader's), each store once."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from benchmarks.reroute import seed_orders_at
from coordinator.db import Database, open_database
from coordinator.ops.handler import HandleResult, OpsCore
from coordinator.ops.metrics import summary
from coordinator.ops.notify import outbox
from coordinator.ops.notify.franchisee import defer_store_notices
from coordinator.settings import Settings
from tests.coordinator.ops.factories import T0, breaker_event
from tests.coordinator.ops.helpers import ops_config, refuse_deletes_of, refuse_inserts

WH = "WH-02"


def _count(db_target: str, sql: str) -> int:
    db = open_database(db_target, migrate=False)  # what was committed, on its own connection
    try:
        return int(db.execute(sql).fetchone()[0])
    finally:
        db.conn.close()


@pytest.fixture
def seeded(db_target: str, tmp_path: Path) -> Iterator[tuple[Database, OpsCore]]:
    """12 orders held at WH and an ops core on that database; closed after the test."""
    db = open_database(db_target)
    seed_orders_at(db, WH, 12, T0, stock_boost=50)
    try:
        yield db, OpsCore(db, Settings(db_path=db_target), ops_config(tmp_path))
    finally:
        db.conn.close()


def _trip(core: OpsCore) -> HandleResult:
    return core.handle(breaker_event(seq=1, warehouse=WH, agent=f"gw-{WH}"), T0)


def test_a_reroute_whose_store_notices_fail_still_commits_and_owes_them_to_the_next_tick(
        db_target: str, tmp_path: Path) -> None:
    db = open_database(db_target)
    held = seed_orders_at(db, WH, 40, T0, stock_boost=50)
    stores = _count(db_target, "SELECT count(DISTINCT store_id) FROM orders")
    drop = refuse_inserts(db, "ops_store_coupons")
    core = OpsCore(db, Settings(db_path=db_target), ops_config(tmp_path))

    result = core.handle(breaker_event(seq=1, warehouse=WH, agent=f"gw-{WH}"), T0)

    timing = result.rerouted[0]
    assert timing.moved == held == 40 and timing.notices_queued is None
    assert _count(db_target, "SELECT count(*) FROM reservations "
                             f"WHERE warehouse_id = '{WH}' AND status = 'held'") == 0
    assert _count(db_target, "SELECT count(*) FROM ops_pending_store_notices") == 1
    assert outbox.counts(db).get(("franchisee", "pending"), 0) == 0
    assert core.sweeps.failures == 1
    assert summary(db)["store_notices_owed"] == 1  # visible on /metrics

    db.execute(drop)
    ticked = core.tick(T0 + timedelta(seconds=1))
    assert ticked.notices_queued == stores  # the service wakes the dispatcher for them
    core.tick(T0 + timedelta(seconds=2))  # nothing owed any more: nothing twice

    assert _count(db_target, "SELECT count(*) FROM ops_pending_store_notices") == 0
    assert outbox.counts(db)[("franchisee", "pending")] == stores
    assert _count(db_target, "SELECT count(*) FROM ops_store_coupons") == stores
    db.conn.close()


def test_store_notices_are_queued_right_after_the_reroute_commits(
        db_target: str, seeded: tuple[Database, OpsCore]) -> None:
    db, core = seeded

    result = _trip(core)

    timing = result.rerouted[0]
    assert timing.notices_queued is not None and timing.notices_queued >= timing.committed
    assert _count(db_target, "SELECT count(*) FROM ops_pending_store_notices") == 0
    stores = _count(db_target, "SELECT count(DISTINCT store_id) FROM orders")
    assert outbox.counts(db)[("franchisee", "pending")] == stores
    assert timing.queued == stores  # what the pause API reports as notifications_queued


def test_one_incident_whose_notices_keep_failing_does_not_hold_up_another(
        db_target: str, seeded: tuple[Database, OpsCore]) -> None:
    db, core = seeded
    names = dict(db.execute("SELECT id, name FROM warehouses").fetchall())
    with db.atomic():  # owed by an incident whose orders are gone (composes to nothing)
        defer_store_notices(db, "ep-0-stale", reason="r", at=T0 - timedelta(hours=1),
                            warehouse_name=names[WH], now=T0 - timedelta(hours=1))
    # the stale incident's row is refused when it is settled: it keeps failing
    drop = refuse_deletes_of(db, "ep-0-stale")

    result = _trip(core)

    assert result.rerouted[0].notices_queued is not None  # queued, after the stale one
    assert core.sweeps.failures == 1
    assert _count(db_target, "SELECT count(*) FROM ops_pending_store_notices") == 1
    assert outbox.counts(db)[("franchisee", "pending")] == _count(
        db_target, "SELECT count(DISTINCT store_id) FROM orders")
    db.execute(drop)
    assert sum(core.sweeps.owed(T0).values()) == 0  # nothing of it to tell
    assert _count(db_target, "SELECT count(*) FROM ops_pending_store_notices") == 0
