"""Metrics computed from a real store."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

from prometheus_client import CollectorRegistry, generate_latest

from benchmarks.reroute import seed_orders_at
from coordinator.catalog import set_warehouse_availability
from coordinator.db import Database
from coordinator.ledger import record_status_event
from coordinator.ops import metrics
from coordinator.queries import unshipped_orders
from coordinator.retry import retry_waiting
from coordinator.settings import AllocationConfig
from tests.coordinator.ops.helpers import strand_at


def test_transparency_counts_only_shipped_orders_with_every_node_timestamped(
        ops_db: Database) -> None:
    db = ops_db
    now = datetime(2026, 11, 24, 2, 0, tzinfo=UTC)
    seed_orders_at(db, "WH-01", 6, now, stock_boost=50)
    ids = [o.order_id for o in unshipped_orders(db, "WH-01")]
    for oid in ids[:4]:
        record_status_event(db, oid, "shipped", now + timedelta(minutes=5))
    for oid in ids[:3]:
        record_status_event(db, oid, "in_transit", now + timedelta(minutes=20))
    record_status_event(db, ids[0], "delivered", now + timedelta(minutes=50))
    data = metrics.summary(db)
    assert data["status_transparency"] == {"shipped_orders": 4, "complete_timelines": 3,
                                           "rate": 0.75}
    fr = data["order_to_first_status"]
    assert fr["orders"] == fr["answered"] == 6
    assert fr["max_s"] is not None and fr["max_s"] < 1.0
    # no customer asked anything: the customer's first response has nothing to time
    assert data["first_response"] == {"inquiries": 0, "answered": 0, "mean_s": None,
                                      "p50_s": None, "p95_s": None, "max_s": None}
    assert data["self_healing"]["rate"] is None  # no exception yet
    figures = metrics.SummaryCollector()
    figures.data = data
    registry = CollectorRegistry()
    registry.register(figures)
    text = generate_latest(registry).decode()
    assert "breakwater_status_transparency_ratio 0.75" in text
    assert 'breakwater_first_response_seconds{quantile="0.5"}' in text
    assert 'breakwater_order_to_first_status_seconds{quantile="0.95"}' in text
    for line in text.splitlines():
        assert line.startswith("#") or len(line.split(" ")) == 2, line


def test_stuck_orders_placed_later_by_the_system_count_as_healed_by_an_operator_not(
        ops_db: Database) -> None:
    db = ops_db
    now = datetime(2026, 11, 24, 2, 0, tzinfo=UTC)
    rules = AllocationConfig()
    ids = strand_at(db, "WH-01", 6, now, "inc-m")
    assert metrics.self_healing(db)["rate"] == 0.0
    set_warehouse_availability(db, "WH-01", available=True, reason=None, now=now)

    retry_waiting(db, now=now, config=rules, order_ids=ids[:2], trigger="operator")
    retry_waiting(db, now=now, config=rules, order_ids=ids[2:5], trigger="warehouse_available")

    healing = metrics.self_healing(db)
    assert (healing["exceptions"], healing["moved"], healing["placed_later"]) == (6, 0, 3)
    assert (healing["resolved_automatically"], healing["needs_attention"]) == (3, 3)
    assert healing["rate"] == 0.5
    allocated = [json.loads(r[0]) for r in db.execute(
        "SELECT detail FROM order_events WHERE kind = 'allocated' ORDER BY id")]
    triggers = [d["trigger"] for d in allocated if d.get("retry")]
    assert triggers == ["operator"] * 2 + ["warehouse_available"] * 3
