"""The placed-notice sweep: franchisees hear about stuck orders a retry placed later."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

from coordinator.catalog import set_warehouse_availability
from coordinator.db import Database, open_database
from coordinator.ops.handler import OpsCore
from coordinator.ops.notify.franchisee import coupon_code
from coordinator.retry import retry_waiting
from coordinator.settings import AllocationConfig, Settings
from tests.coordinator.ops.helpers import ops_config, refuse_inserts, strand_at

NOW = datetime(2026, 11, 24, 2, 0, tzinfo=UTC)


def _stuck_then_placed(db: Database, placed_at: datetime) -> list[str]:
    """Six orders stuck at WH-01's incident, then placed by a retry at ``placed_at``."""
    stuck = strand_at(db, "WH-01", 6, NOW, "inc-p")
    set_warehouse_availability(db, "WH-01", available=True, reason=None, now=placed_at)
    placed = retry_waiting(db, now=placed_at, config=AllocationConfig(),
                           trigger="warehouse_available")
    assert sorted(p.order_id for p in placed.placed) == sorted(stuck)
    return stuck


def _placed_notices(db: Database) -> list[dict[str, object]]:
    return [json.loads(r[0]) for r in db.execute(
        "SELECT payload FROM ops_notifications WHERE kind = 'franchisee' ORDER BY id")
        if json.loads(r[0])["type"] == "placed_notice"]


def test_each_late_placement_is_told_once_with_warehouse_eta_and_coupon(
        db_target: str, tmp_path: Path) -> None:
    db = open_database(db_target)
    core = OpsCore(db, Settings(db_path=db_target), ops_config(tmp_path))
    ids = _stuck_then_placed(db, NOW + timedelta(hours=1))

    core.tick(NOW + timedelta(hours=1, seconds=1))
    core.tick(NOW + timedelta(hours=1, seconds=2))

    notices = _placed_notices(db)
    assert sorted(str(n["order_id"]) for n in notices) == sorted(ids)
    assert {str(n["incident_id"]) for n in notices} == {"inc-p"}
    assert all(n["new_eta"] and n["coupon"] and n["new_warehouse"] for n in notices)
    coupons = dict(db.execute("SELECT order_id, code FROM ops_coupons").fetchall())
    assert {str(n["order_id"]): n["coupon"]["code"] for n in notices} == {  # type: ignore[index]
        oid: coupon_code("BW", oid, "inc-p") for oid in ids} == coupons
    db.conn.close()


def test_a_placement_older_than_a_day_is_not_told_any_more(
        db_target: str, tmp_path: Path) -> None:
    db = open_database(db_target)
    core = OpsCore(db, Settings(db_path=db_target), ops_config(tmp_path))
    _stuck_then_placed(db, NOW + timedelta(hours=1))

    core.tick(NOW + timedelta(days=3))  # the ops side was off for days

    assert _placed_notices(db) == []
    db.conn.close()


def test_a_failing_sweep_never_costs_the_tick(db_target: str, tmp_path: Path) -> None:
    db = open_database(db_target)
    core = OpsCore(db, Settings(db_path=db_target), ops_config(tmp_path))
    _stuck_then_placed(db, NOW + timedelta(hours=1))
    drop = refuse_inserts(db, "ops_notifications")

    core.tick(NOW + timedelta(hours=1, seconds=1))  # does not raise

    assert core.sweeps.failures == 1
    db.execute(drop)
    core.tick(NOW + timedelta(hours=1, seconds=2))  # the next tick tries the same range again
    assert len(_placed_notices(db)) == 6
    db.conn.close()
