"""Rerouting a failed warehouse's unshipped orders, on real SQLite files."""

from __future__ import annotations

import json
import random
from datetime import datetime, timedelta

import pytest

from coordinator import catalog, intake, ledger, queries
from coordinator.catalog import InventoryIn, upsert_inventory
from coordinator.db import Database, write_transaction
from coordinator.errors import NotFound, StoreError
from coordinator.reroute import load_incident, reroute_warehouse
from coordinator.settings import AllocationConfig
from protocols.orders import Channel, OrderIn, OrderLine

from .conftest import NOW


@pytest.fixture
def sample_db(store_db: Database) -> Database:
    """These tests run on both backends."""
    return store_db

def _orders_near(db: Database, warehouse_id: str, count: int, seed: int = 7) -> list[OrderIn]:
    wh = queries.get_warehouse(db, warehouse_id)
    rng = random.Random(seed)
    cold = [r[0] for r in db.execute("SELECT id FROM skus WHERE cold_chain = 1 ORDER BY id")]
    channels = [Channel.MEITUAN, Channel.WECHAT_MINI, Channel.DOUYIN]
    return [
        OrderIn(channel=channels[i % 3], channel_order_id=f"N{seed}-{i}",
                store_id=f"HZ-S{1 + i % 127:03d}",
                lines=[OrderLine(sku_id=rng.choice(cold), qty=1)],
                lat=wh["lat"] + rng.uniform(-0.005, 0.005),
                lon=wh["lon"] + rng.uniform(-0.005, 0.005))
        for i in range(count)
    ]


def _consistent(db: Database) -> None:
    bad = db.execute(
        "SELECT i.warehouse_id, i.sku_id FROM inventory i LEFT JOIN reservations r "
        "ON r.warehouse_id = i.warehouse_id AND r.sku_id = i.sku_id AND r.status = 'held' "
        "GROUP BY i.warehouse_id, i.sku_id HAVING i.reserved != coalesce(sum(r.qty), 0)"
    ).fetchall()
    assert bad == []


def test_tripped_cold_warehouse_orders_move_to_cold_backups(sample_db: Database,
                                                            rules: AllocationConfig) -> None:
    intake.submit_orders(sample_db, _orders_near(sample_db, "WH-02", 40), now=NOW, config=rules)
    waiting = queries.unshipped_orders(sample_db, "WH-02")
    assert len(waiting) >= 30
    with sample_db.atomic():  # the caller's transaction: the availability flip commits with it
        catalog.set_warehouse_availability(sample_db, "WH-02", available=False,
                                         reason="breaker tripped", now=NOW)
        result = reroute_warehouse(sample_db, "WH-02", incident_id="inc-1",
                                   reason="breaker tripped", now=NOW, config=rules)
    assert result.total == len(waiting) and not result.already_done
    cold = {r[0] for r in sample_db.execute("SELECT id FROM warehouses WHERE cold_chain = 1")}
    for moved in result.moved:
        assert moved.new_warehouse_id in cold - {"WH-02"}
        assert moved.old_warehouse_id == "WH-02"
        order = queries.get_order(sample_db, moved.order_id)
        assert order["warehouse_id"] == moved.new_warehouse_id
        assert order["timeline"][-1]["kind"] == "rerouted"
        assert order["timeline"][-1]["detail"] == {
            "incident_id": "inc-1", "from": "WH-02", "to": moved.new_warehouse_id,
            "distance_km": moved.distance_km, "eta": moved.eta, "tier": moved.tier,
            "reason": "breaker tripped"}
        assert order["eta"] == moved.eta and order["distance_km"] == moved.distance_km
    tiers = [m.tier for m in result.moved]
    assert tiers == sorted(tiers)  # highest tier (1) first
    assert queries.unshipped_orders(sample_db, "WH-02") == []
    incident = sample_db.execute("SELECT moved, stuck FROM incidents WHERE id = 'inc-1'"
                                 ).fetchone()
    assert tuple(incident) == (len(result.moved), len(result.stuck))
    _consistent(sample_db)


def test_same_incident_twice_changes_nothing(sample_db: Database,
                                             rules: AllocationConfig) -> None:
    intake.submit_orders(sample_db, _orders_near(sample_db, "WH-02", 10), now=NOW, config=rules)
    first = reroute_warehouse(sample_db, "WH-02", incident_id="inc-2", reason="r", now=NOW,
                              config=rules)
    events = sample_db.execute("SELECT count(*) FROM order_events").fetchone()[0]
    again = reroute_warehouse(sample_db, "WH-02", incident_id="inc-2", reason="r", now=NOW,
                              config=rules)
    assert again.already_done
    assert {m.order_id for m in again.moved} == {m.order_id for m in first.moved}
    assert sample_db.execute("SELECT count(*) FROM order_events").fetchone()[0] == events
    assert load_incident(sample_db, "inc-404") is None


def test_orders_nobody_can_take_need_attention_and_release_stock(
    sample_db: Database, rules: AllocationConfig
) -> None:
    orders = _orders_near(sample_db, "WH-02", 5)
    intake.submit_orders(sample_db, orders, now=NOW, config=rules)
    # empty every other cold warehouse of those SKUs
    skus = {o.lines[0].sku_id for o in orders}
    upsert_inventory(sample_db, [InventoryIn(warehouse_id=w, sku_id=s, on_hand=0)
                                 for w in ("WH-05", "WH-07") for s in skus], NOW)
    result = reroute_warehouse(sample_db, "WH-02", incident_id="inc-3", reason="breaker",
                               now=NOW, config=rules)
    assert result.moved == [] and len(result.stuck) == 5
    for stuck in result.stuck:
        order = queries.get_order(sample_db, stuck.order_id)
        assert order["status"] == "needs_attention" and order["status_reason"]
        assert order["timeline"][-1]["kind"] == "needs_attention"
    alerts = sample_db.execute("SELECT count(*) FROM alerts WHERE kind = 'needs_attention'"
                               ).fetchone()[0]
    assert alerts == 5
    _consistent(sample_db)


def test_outer_transaction_failure_rolls_the_reroute_back(sample_db: Database,
                                                          rules: AllocationConfig) -> None:
    intake.submit_orders(sample_db, _orders_near(sample_db, "WH-02", 6), now=NOW, config=rules)
    before = len(queries.unshipped_orders(sample_db, "WH-02"))
    with pytest.raises(RuntimeError), sample_db.atomic():
        reroute_warehouse(sample_db, "WH-02", incident_id="inc-4", reason="r", now=NOW,
                          config=rules)
        raise RuntimeError("notification queueing failed")
    assert len(queries.unshipped_orders(sample_db, "WH-02")) == before
    assert load_incident(sample_db, "inc-4") is None
    _consistent(sample_db)


def test_unknown_warehouse_is_named(sample_db: Database, rules: AllocationConfig) -> None:
    with pytest.raises(NotFound, match="WH-404"):
        reroute_warehouse(sample_db, "WH-404", incident_id="inc-5", reason="r", now=NOW,
                          config=rules)


def test_rerouted_orders_stay_when_the_warehouse_comes_back(sample_db: Database,
                                                            rules: AllocationConfig) -> None:
    intake.submit_orders(sample_db, _orders_near(sample_db, "WH-02", 8), now=NOW, config=rules)
    catalog.set_warehouse_availability(sample_db, "WH-02", available=False, reason="b", now=NOW)
    result = reroute_warehouse(sample_db, "WH-02", incident_id="inc-6", reason="b", now=NOW,
                               config=rules)
    catalog.set_warehouse_availability(sample_db, "WH-02", available=True, reason=None, now=NOW)
    for moved in result.moved:
        order = queries.get_order(sample_db, moved.order_id)
        assert order["warehouse_id"] == moved.new_warehouse_id
    new = intake.submit_orders(sample_db, _orders_near(sample_db, "WH-02", 1, seed=99), now=NOW,
                              config=rules)
    assert new[0].warehouse_id == "WH-02"


def test_split_reroute_moves_each_line_where_the_engine_put_it(
    sample_db: Database, rules: AllocationConfig
) -> None:
    cold = [r[0] for r in sample_db.execute(
        "SELECT id FROM skus WHERE cold_chain = 1 ORDER BY id LIMIT 2")]
    first, second = cold
    stock = [InventoryIn(warehouse_id=w, sku_id=s, on_hand=0)
             for w in ("WH-05", "WH-07") for s in cold]
    stock += [InventoryIn(warehouse_id="WH-02", sku_id=s, on_hand=50) for s in cold]
    upsert_inventory(sample_db, stock, NOW)
    wh = queries.get_warehouse(sample_db, "WH-02")
    order = OrderIn(channel=Channel.WECHAT_MINI, channel_order_id="split-1", store_id="HZ-S001",
                    lines=[OrderLine(sku_id=first, qty=2), OrderLine(sku_id=second, qty=3)],
                    lat=wh["lat"], lon=wh["lon"])
    [placed] = intake.submit_orders(sample_db, [order], now=NOW, config=rules)
    assert placed.warehouse_id == "WH-02"
    # each backup now holds one of the two SKUs only: no single warehouse can take it
    upsert_inventory(sample_db, [InventoryIn(warehouse_id="WH-05", sku_id=first, on_hand=40),
                                 InventoryIn(warehouse_id="WH-07", sku_id=second, on_hand=40)],
                     NOW)
    split = rules.model_copy(update={"split_shipments": True, "max_parts": 2})
    result = reroute_warehouse(sample_db, "WH-02", incident_id="inc-split", reason="breaker",
                               now=NOW, config=split)
    assert [m.order_id for m in result.moved] == [placed.order_id] and result.stuck == []
    stored = queries.get_order(sample_db, placed.order_id)
    assert {line["sku_id"]: line["warehouse_id"] for line in stored["lines"]} == {
        first: "WH-05", second: "WH-07"}
    held = sample_db.execute(
        "SELECT sku_id, warehouse_id, qty FROM reservations WHERE order_id = ? "
        "AND status = 'held' ORDER BY line_no", [placed.order_id]).fetchall()
    assert [tuple(r) for r in held] == [(first, "WH-05", 2), (second, "WH-07", 3)]
    assert stored["warehouse_id"] == result.moved[0].new_warehouse_id
    decision = sample_db.execute(
        "SELECT warehouse_ids FROM allocation_decisions WHERE incident_id = 'inc-split'"
    ).fetchone()[0]
    assert sorted(json.loads(decision)) == ["WH-05", "WH-07"]
    _consistent(sample_db)


def test_rerouted_order_eta_counts_from_the_reroute_not_from_arrival(
    sample_db: Database, rules: AllocationConfig
) -> None:
    intake.submit_orders(sample_db, _orders_near(sample_db, "WH-02", 6), now=NOW, config=rules)
    later = NOW + timedelta(hours=6)  # longer than any tier's handling promise
    result = reroute_warehouse(sample_db, "WH-02", incident_id="inc-eta", reason="breaker",
                               now=later, config=rules)
    assert result.moved
    for moved in result.moved:
        handling = rules.tiers[moved.tier].handling_minutes
        assert datetime.fromisoformat(moved.eta) >= later + timedelta(minutes=handling)


def test_a_set_based_move_that_touches_other_rows_than_counted_writes_nothing(
        sample_db: Database, rules: AllocationConfig) -> None:
    intake.submit_orders(sample_db, _orders_near(sample_db, "WH-02", 5), now=NOW, config=rules)
    held = sample_db.execute(
        "SELECT r.order_id, count(*) FROM reservations r JOIN orders o ON o.id = r.order_id "
        "WHERE r.warehouse_id = 'WH-02' AND r.status = 'held' GROUP BY r.order_id "
        "ORDER BY r.order_id").fetchall()
    assert held
    lines = sum(n for _, n in held)

    def move(counted: int) -> None:
        book = ledger.Ledger(NOW)
        for order_id, _ in held:
            book.incident_order(("inc-count", order_id, "moved", "WH-02", "WH-01", 1.0,
                                 "2026-11-24T03:00:00Z", 1, None))
        book.open_incident("inc-count", "WH-02", "test", rules.version, len(held), 0)
        book.move_incident_orders("inc-count", "WH-02", "test", counted)
        with write_transaction(sample_db):
            book.flush(sample_db)

    with pytest.raises(StoreError, match="expected: rolled back"):
        move(lines + 1)
    assert sample_db.execute("SELECT count(*) FROM incident_orders").fetchone()[0] == 0
    assert sample_db.execute(
        "SELECT count(*) FROM reservations WHERE warehouse_id = 'WH-02' AND status = 'held'"
    ).fetchone()[0] == lines
    move(lines)
    assert sample_db.execute(
        "SELECT count(*) FROM order_lines WHERE warehouse_id = 'WH-01' AND order_id IN "
        "(SELECT order_id FROM incident_orders)").fetchone()[0] == lines


class _Undo(Exception):
    """Rolls a reroute back after its result is read."""


def test_a_reroute_written_in_shares_decides_as_one_batch(sample_db: Database,
                                                          rules: AllocationConfig) -> None:
    # Nine orders of one cold SKU, all from one spot next to WH-02; the two cold backups
    # hold a few units: the first orders (in tier and age order) take them, the later
    # ones, in later shares, must see that stock gone and get stuck, exactly as when the
    # whole reroute is decided as one batch.
    sku = sample_db.execute("SELECT id FROM skus WHERE cold_chain = 1 ORDER BY id").fetchone()[0]
    upsert_inventory(sample_db, [InventoryIn(warehouse_id="WH-02", sku_id=sku, on_hand=50)]
                     + [InventoryIn(warehouse_id=w, sku_id=sku, on_hand=0)
                        for w in ("WH-05", "WH-07")], NOW)
    wh = queries.get_warehouse(sample_db, "WH-02")
    orders = [OrderIn(channel=Channel.WECHAT_MINI, channel_order_id=f"share-{i}",
                      store_id="HZ-S001", lines=[OrderLine(sku_id=sku, qty=1)],
                      lat=wh["lat"], lon=wh["lon"]) for i in range(9)]
    for i, order in enumerate(orders):  # one by one: each a little older than the next
        intake.submit_orders(sample_db, [order], now=NOW + timedelta(seconds=i), config=rules)
    assert len(queries.unshipped_orders(sample_db, "WH-02")) == 9
    upsert_inventory(sample_db, [InventoryIn(warehouse_id=w, sku_id=sku, on_hand=3)
                                 for w in ("WH-05", "WH-07")], NOW)

    def outcome(share_size: int) -> tuple[list[tuple[str, str, str]], list[tuple[str, str]]]:
        done = reroute_warehouse(sample_db, "WH-02", incident_id=f"inc-share-{share_size}",
                                 reason="breaker", now=NOW, config=rules,
                                 share_size=share_size)
        return ([(m.order_id, m.new_warehouse_id, m.eta) for m in done.moved],
                [(s.order_id, s.reason) for s in done.stuck])

    with pytest.raises(_Undo), sample_db.atomic():
        whole = outcome(10_000)
        raise _Undo
    assert len(queries.unshipped_orders(sample_db, "WH-02")) == 9  # rolled back
    in_shares = outcome(2)  # five shares
    assert in_shares == whole
    moved, stuck = in_shares
    assert moved and stuck  # the stock ran out part way
    assert [m[0] for m in moved] == [
        r[0] for r in sample_db.execute(
            "SELECT id FROM orders WHERE channel_order_id IN "
            f"({', '.join('?' * len(moved))}) ORDER BY received_at",
            [f"share-{i}" for i in range(len(moved))]).fetchall()]  # oldest moved first
    assert sample_db.execute(
        "SELECT count(*) FROM order_events WHERE kind = 'rerouted'").fetchone()[0] == len(moved)
    _consistent(sample_db)


def test_moves_written_on_the_writer_thread_fail_in_the_caller_and_roll_back(
        sample_db: Database, rules: AllocationConfig) -> None:
    intake.submit_orders(sample_db, _orders_near(sample_db, "WH-02", 4), now=NOW, config=rules)
    held = sample_db.execute(
        "SELECT order_id, count(*) FROM reservations WHERE warehouse_id = 'WH-02' "
        "AND status = 'held' GROUP BY order_id ORDER BY order_id").fetchall()
    lines = sum(n for _, n in held)
    book = ledger.Ledger(NOW)
    for order_id, _ in held:
        book.incident_order(("inc-thread", order_id, "moved", "WH-02", "WH-01", 1.0,
                             "2026-11-24T03:00:00Z", 1, None))
    book.move_incident_orders("inc-thread", "WH-02", "test", lines + 1,
                              [order_id for order_id, _ in held])
    with pytest.raises(StoreError, match="expected: rolled back"), write_transaction(sample_db):
        book.start_moves(sample_db).finish()
    assert sample_db.execute("SELECT count(*) FROM incident_orders").fetchone()[0] == 0
    assert sample_db.execute(
        "SELECT count(*) FROM reservations WHERE warehouse_id = 'WH-02' AND status = 'held'"
    ).fetchone()[0] == lines
