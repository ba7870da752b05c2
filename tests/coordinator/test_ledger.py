"""The store on real SQLite files: intake, idempotency, status events, no oversell."""

from __future__ import annotations

import json
import threading
from datetime import timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from coordinator import catalog, db, intake, ledger, queries
from coordinator.catalog import (
    InventoryIn,
    SkuIn,
    WarehouseIn,
    upsert_inventory,
    upsert_skus,
    upsert_warehouses,
)
from coordinator.db import Database, open_database
from coordinator.engine import CandidateTrace, Decision
from coordinator.errors import Conflict, NotFound, StoreError
from coordinator.settings import AllocationConfig
from protocols.orders import Channel, OrderIn, OrderLine

from .conftest import NOW


@pytest.fixture
def sample_db(store_db: Database) -> Database:
    """These tests run on both backends."""
    return store_db

def _order(coid: str, sku: str = "SKU-0001", qty: int = 1, channel: Channel = Channel.WECHAT_MINI,
           store_id: str | None = "HZ-S001", submitted_s_ago: float | None = None) -> OrderIn:
    submitted = None if submitted_s_ago is None else NOW - timedelta(seconds=submitted_s_ago)
    return OrderIn(channel=channel, channel_order_id=coid, store_id=store_id,
                   lines=[OrderLine(sku_id=sku, qty=qty)], lat=30.27, lon=120.15,
                   client_submitted_at=submitted)


def _reserved_matches_held(db: Database) -> bool:
    bad = db.execute(
        "SELECT i.warehouse_id, i.sku_id FROM inventory i LEFT JOIN reservations r "
        "ON r.warehouse_id = i.warehouse_id AND r.sku_id = i.sku_id AND r.status = 'held' "
        "GROUP BY i.warehouse_id, i.sku_id HAVING i.reserved != coalesce(sum(r.qty), 0)"
    ).fetchall()
    return not bad


def test_order_is_allocated_reserved_and_timelined(sample_db: Database,
                                                   rules: AllocationConfig) -> None:
    (outcome,) = intake.submit_orders(sample_db, [_order("A1", qty=3)], now=NOW, config=rules)
    assert outcome.created and outcome.status == "allocated" and outcome.warehouse_id
    order = queries.get_order(sample_db, outcome.order_id)
    assert [e["kind"] for e in order["timeline"]] == ["received", "allocated"]
    assert order["timeline"][1]["label"] == "已分仓"
    reserved = sample_db.execute(
        "SELECT reserved FROM inventory WHERE warehouse_id = ? AND sku_id = 'SKU-0001'",
        [outcome.warehouse_id]).fetchone()[0]
    assert reserved == 3
    (decision,) = queries.decisions_of(sample_db, outcome.order_id)
    assert decision["rule_set_version"] == rules.version
    assert any(c["chosen"] for c in ledger.trace_candidates(decision["trace"]))
    assert _reserved_matches_held(sample_db)


def test_same_channel_order_twice_is_stored_once(sample_db: Database,
                                                 rules: AllocationConfig) -> None:
    first, again = intake.submit_orders(sample_db, [_order("D1"), _order("D1")], now=NOW,
                                       config=rules)
    later = intake.submit_orders(sample_db, [_order("D1")], now=NOW, config=rules)[0]
    assert first.created and not again.created and not later.created
    assert first.order_id == again.order_id == later.order_id
    assert sample_db.execute("SELECT count(*) FROM orders").fetchone()[0] == 1
    other_channel = intake.submit_orders(sample_db, [_order("D1", channel=Channel.DOUYIN)],
                                        now=NOW, config=rules)[0]
    assert other_channel.created


def test_unknown_sku_rejects_whole_batch_and_writes_nothing(sample_db: Database,
                                                            rules: AllocationConfig) -> None:
    with pytest.raises(NotFound) as caught:
        intake.submit_orders(sample_db, [_order("U1"), _order("U2", sku="NOPE")], now=NOW,
                            config=rules)
    assert caught.value.kind == "sku" and caught.value.ident == "NOPE"
    assert sample_db.execute("SELECT count(*) FROM orders").fetchone()[0] == 0
    with pytest.raises(NotFound, match="store"):
        intake.submit_orders(sample_db, [_order("U3", store_id="HZ-NOPE")], now=NOW, config=rules)


def test_client_clock_skew_beyond_threshold_is_flagged(sample_db: Database,
                                                       rules: AllocationConfig) -> None:
    ok, skewed = intake.submit_orders(
        sample_db, [_order("K1", submitted_s_ago=1.0), _order("K2", submitted_s_ago=4.5)],
        now=NOW, config=rules, skew_threshold_s=3.0)
    assert not ok.skewed and skewed.skewed
    assert queries.skew_count(sample_db) == 1
    assert queries.get_order(sample_db, skewed.order_id)["skew_ms"] == 4500


def test_status_events_follow_the_order_lifecycle(sample_db: Database,
                                                  rules: AllocationConfig) -> None:
    (o,) = intake.submit_orders(sample_db, [_order("E1", qty=2)], now=NOW, config=rules)
    with pytest.raises(Conflict):
        ledger.record_status_event(sample_db, o.order_id, "delivered", NOW)
    before = sample_db.execute(
        "SELECT on_hand, reserved FROM inventory WHERE warehouse_id = ? AND sku_id = 'SKU-0001'",
        [o.warehouse_id]).fetchone()
    ledger.record_status_event(sample_db, o.order_id, "shipped", NOW)
    after = sample_db.execute(
        "SELECT on_hand, reserved FROM inventory WHERE warehouse_id = ? AND sku_id = 'SKU-0001'",
        [o.warehouse_id]).fetchone()
    assert (after[0], after[1]) == (before[0] - 2, before[1] - 2)
    ledger.record_status_event(sample_db, o.order_id, "in_transit", NOW)
    ledger.record_status_event(sample_db, o.order_id, "delivered", NOW)
    with pytest.raises(Conflict):
        ledger.record_status_event(sample_db, o.order_id, "shipped", NOW)
    kinds = [e["kind"] for e in queries.get_order(sample_db, o.order_id)["timeline"]]
    assert kinds == ["received", "allocated", "shipped", "in_transit", "delivered"]
    assert queries.unshipped_orders(sample_db, o.warehouse_id or "") == []
    assert _reserved_matches_held(sample_db)


def test_cancel_releases_the_reservation(sample_db: Database, rules: AllocationConfig) -> None:
    (o,) = intake.submit_orders(sample_db, [_order("C1", qty=4)], now=NOW, config=rules)
    ledger.record_status_event(sample_db, o.order_id, "cancelled", NOW)
    assert _reserved_matches_held(sample_db)
    assert sample_db.execute("SELECT sum(reserved) FROM inventory").fetchone()[0] == 0


def test_timeline_is_append_only(sample_db: Database, rules: AllocationConfig) -> None:
    (o,) = intake.submit_orders(sample_db, [_order("T1")], now=NOW, config=rules)
    with pytest.raises(Exception, match="append-only"):
        sample_db.execute("DELETE FROM order_events WHERE order_id = ?", [o.order_id])
    ledger.append_order_event(sample_db, o.order_id, "notified", NOW, {"to": "franchisee"})
    assert queries.get_order(sample_db, o.order_id)["timeline"][-1]["kind"] == "notified"


def test_availability_change_is_reported_once(sample_db: Database) -> None:
    assert catalog.set_warehouse_availability(sample_db, "WH-02", available=False,
                                            reason="breaker", now=NOW)
    assert not catalog.set_warehouse_availability(sample_db, "WH-02", available=False,
                                                reason="breaker", now=NOW)
    assert queries.get_warehouse(sample_db, "WH-02")["unavailable_reason"] == "breaker"
    with pytest.raises(NotFound):
        catalog.set_warehouse_availability(sample_db, "WH-404", available=True, reason=None,
                                         now=NOW)


def test_unavailable_warehouse_gets_no_new_orders(sample_db: Database,
                                                  rules: AllocationConfig) -> None:
    (first,) = intake.submit_orders(sample_db, [_order("N1")], now=NOW, config=rules)
    assert first.warehouse_id is not None
    catalog.set_warehouse_availability(sample_db, first.warehouse_id, available=False,
                                     reason="breaker", now=NOW)
    (second,) = intake.submit_orders(sample_db, [_order("N2")], now=NOW, config=rules)
    assert second.warehouse_id not in (None, first.warehouse_id)


def _scarce_db(path: str, units: int) -> None:
    db = open_database(path)
    upsert_warehouses(db, [WarehouseIn(id="W1", name="only", lat=30.27, lon=120.15)], NOW)
    upsert_skus(db, [SkuIn(id="RARE")], NOW)
    upsert_inventory(db, [InventoryIn(warehouse_id="W1", sku_id="RARE", on_hand=units)], NOW)
    db.conn.close()


def test_parallel_orders_for_scarce_stock_never_oversell(db_target: str) -> None:
    """8 threads, each with its own connection, race for 20 units in 1-3 unit orders."""
    path = db_target
    _scarce_db(path, units=20)
    rules = AllocationConfig(reservation_threshold=1.0)
    errors: list[BaseException] = []
    start = threading.Barrier(8)

    def client(n: int) -> None:
        db = open_database(path, migrate=False)
        try:
            start.wait()
            for i in range(12):
                order = OrderIn(channel=Channel.MANUAL, channel_order_id=f"{n}-{i}",
                                customer_id=f"c{n}", lines=[OrderLine(sku_id="RARE",
                                                                      qty=1 + (i % 3))],
                                lat=30.27, lon=120.15)
                intake.submit_orders(db, [order], now=NOW, config=rules)
        except BaseException as exc:  # surfaced below
            errors.append(exc)
        finally:
            db.conn.close()

    threads = [threading.Thread(target=client, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    db = open_database(path)
    try:
        held = db.execute("SELECT coalesce(sum(qty), 0) FROM reservations "
                          "WHERE status = 'held'").fetchone()[0]
        on_hand, reserved = db.execute(
            "SELECT on_hand, reserved FROM inventory WHERE sku_id = 'RARE'").fetchone()
        statuses = dict(db.execute(
            "SELECT status, count(*) FROM orders GROUP BY status").fetchall())
    finally:
        db.conn.close()
    assert reserved == held <= on_hand == 20
    assert statuses.get("unallocated", 0) > 0  # demand (192 units) exceeded stock
    assert held >= 18  # stock was used up, save at most a remainder smaller than an order
    assert sum(statuses.values()) == 96


_reasons = st.none() | st.text(max_size=12)
_distances = st.floats(min_value=0, max_value=20_000, allow_nan=False)
_maybe = st.none() | st.floats(allow_nan=False, allow_infinity=False)


@given(
    candidates=st.lists(st.builds(
        CandidateTrace, st.text(max_size=8), _distances, _maybe, _maybe, _maybe, st.booleans(),
        _reasons, _reasons), max_size=6),
    examined=st.integers(0, 1000), farthest=_distances, omitted=st.integers(0, 1000))
def test_stored_trace_is_the_json_of_the_whole_trace(
        candidates: list[CandidateTrace], examined: int, farthest: float,
        omitted: int) -> None:
    decision = Decision(order_id="o", tier=2, need_cold_chain=False, rule_set_version="v",
                        parts=(), eta=None, reason="r", candidates=tuple(candidates),
                        examined=examined, farthest_examined_km=farthest, omitted=omitted)
    text = ledger.trace_json(decision)
    assert text == ledger.to_json({
        "columns": ledger.TRACE_COLUMNS, "rows": candidates, "examined": examined,
        "farthest_examined_km": farthest, "omitted": omitted})
    assert ledger.trace_candidates(json.loads(text)) == [c._asdict() for c in candidates]


def test_stored_trace_spells_repeated_and_odd_values_as_the_json_encoder_does() -> None:
    # the trace text comes from an encoder built once with to_json's options: values
    # equal across types (5 and 5.0, True and 1.0, 0.0 and -0.0), NaN, infinities and
    # escapes spelled as to_json does, also when the same rows come again
    nan, inf = float("nan"), float("inf")
    rows = [CandidateTrace("WH-1", 5.0, 1.0, 0.0, 1.0, True, None, None),
            CandidateTrace("WH-1", 5, True, -0.0, 1, False, "x", "why"),  # type: ignore[arg-type]
            CandidateTrace("W\"\\é\u2028\x01", -0.0, nan, -inf, inf, False, "é", "é \"q\""),
            CandidateTrace("WH-1", 1e16, 1e-05, 0.0, -0.0, True, "x", "why")]
    for _ in range(2):  # a cold memo, then a warm one
        for candidates in ([row] for row in rows + rows[::-1]):
            decision = Decision(order_id="o", tier=2, need_cold_chain=False,
                                rule_set_version="v", candidates=tuple(candidates),
                                farthest_examined_km=-0.0)
            assert ledger.trace_json(decision) == ledger.to_json({
                "columns": ledger.TRACE_COLUMNS, "rows": candidates, "examined": 0,
                "farthest_examined_km": -0.0, "omitted": 0})


def _one_unit_everywhere(db: Database, sku: str) -> None:
    warehouses = [r[0] for r in db.execute("SELECT id FROM warehouses")]
    upsert_inventory(db, [InventoryIn(warehouse_id=w, sku_id=sku, on_hand=1, safety_stock=0)
                          for w in warehouses], NOW)


@pytest.mark.parametrize("who_cancels", ["same connection", "another connection"])
def test_next_batch_sees_stock_released_between_batches(
        sample_db: Database, db_target: str, rules: AllocationConfig, who_cancels: str) -> None:
    _one_unit_everywhere(sample_db, "SKU-0001")
    (first,) = intake.submit_orders(sample_db, [_order("R1")], now=NOW, config=rules)
    assert first.warehouse_id is not None
    other = open_database(db_target, migrate=False) if who_cancels != "same connection" \
        else sample_db
    try:
        ledger.record_status_event(other, first.order_id, "cancelled", NOW)
    finally:
        if other is not sample_db:
            other.conn.close()
    # the unit at the nearest warehouse is sellable again: the same spot gets it again
    (second,) = intake.submit_orders(sample_db, [_order("R2")], now=NOW, config=rules)
    assert second.warehouse_id == first.warehouse_id
    assert _reserved_matches_held(sample_db)


def test_next_batch_sees_stock_taken_by_another_connection(
        sample_db: Database, db_target: str, rules: AllocationConfig) -> None:
    _one_unit_everywhere(sample_db, "SKU-0001")
    (first,) = intake.submit_orders(sample_db, [_order("S0")], now=NOW, config=rules)
    other = open_database(db_target, migrate=False)
    try:
        (taken,) = intake.submit_orders(other, [_order("S1")], now=NOW, config=rules)
    finally:
        other.conn.close()
    (mine,) = intake.submit_orders(sample_db, [_order("S2")], now=NOW, config=rules)
    assert mine.status == "allocated"
    assert mine.warehouse_id not in {first.warehouse_id, taken.warehouse_id}
    assert _reserved_matches_held(sample_db)


def test_batch_rolled_back_by_its_caller_leaves_no_stock_promised(
        sample_db: Database, rules: AllocationConfig) -> None:
    _one_unit_everywhere(sample_db, "SKU-0001")
    (first,) = intake.submit_orders(sample_db, [_order("U1")], now=NOW, config=rules)
    with pytest.raises(RuntimeError), db.write_transaction(sample_db):
        intake.submit_orders(sample_db, [_order("U2")], now=NOW, config=rules)
        raise RuntimeError("the caller fails after the nested batch")
    count = sample_db.execute("SELECT count(*) FROM warehouses").fetchone()[0]
    # every warehouse but the first order's still has its one unit: all of them get one
    placed = intake.submit_orders(sample_db, [_order(f"U{3 + i}") for i in range(count - 1)],
                                 now=NOW, config=rules)
    assert all(o.status == "allocated" for o in placed)
    assert len({o.warehouse_id for o in placed} | {first.warehouse_id}) == count
    assert _reserved_matches_held(sample_db)


def test_a_sku_on_two_lines_needs_stock_for_both_at_one_warehouse(
    sample_db: Database, rules: AllocationConfig
) -> None:
    upsert_inventory(sample_db, [InventoryIn(warehouse_id=f"WH-0{i}", sku_id="SKU-0001",
                                             on_hand=1 if i < 8 else 2) for i in range(1, 9)],
                     NOW)
    two = [OrderLine(sku_id="SKU-0001", qty=1), OrderLine(sku_id="SKU-0001", qty=1)]
    [placed, waiting] = intake.submit_orders(sample_db, [
        OrderIn(channel=Channel.WECHAT_MINI, channel_order_id="DUP-1", store_id="HZ-S001",
                lines=two, lat=30.27, lon=120.15),
        OrderIn(channel=Channel.WECHAT_MINI, channel_order_id="DUP-2", store_id="HZ-S001",
                lines=two, lat=30.27, lon=120.15),
    ], now=NOW, config=rules)
    # only WH-08 holds two; once it has promised them, nobody can take the second order
    assert (placed.status, placed.warehouse_id) == ("allocated", "WH-08")
    assert waiting.status == "unallocated"
    assert waiting.reason == "no available warehouse has sellable stock of SKU-0001"
    reserved = sample_db.execute("SELECT reserved FROM inventory WHERE warehouse_id = 'WH-08' "
                                 "AND sku_id = 'SKU-0001'").fetchone()[0]
    assert reserved == 2


@pytest.mark.parametrize("units", [1, 2])
def test_a_flush_taking_more_than_is_sellable_writes_nothing(
        sample_db: Database, units: int) -> None:
    """One unit at WH-01: a ledger taking two is refused whole (on PostgreSQL its writes
    went in one pipeline, the count checked after it), one taking one is written whole
    and counted among the connection's changes."""
    _one_unit_everywhere(sample_db, "SKU-0001")
    book = ledger.Ledger(NOW)
    book.take_stock("WH-01", "SKU-0001", units)
    book.alert("test", "written with the stock or not at all", warehouse_id="WH-01")
    changes = sample_db.conn.total_changes
    if units == 2:
        with pytest.raises(StoreError, match="refusing to oversell"), \
                db.write_transaction(sample_db):
            book.flush(sample_db)
    else:
        with db.write_transaction(sample_db):
            book.flush(sample_db)
        assert sample_db.conn.total_changes == changes + 2
    reserved = sample_db.execute("SELECT reserved FROM inventory WHERE warehouse_id = "
                                 "'WH-01' AND sku_id = 'SKU-0001'").fetchone()[0]
    alerts = sample_db.execute("SELECT count(*) FROM alerts WHERE kind = 'test'").fetchone()[0]
    assert (reserved, alerts) == ((1, 1) if units == 1 else (0, 0))


def test_the_idempotency_lookup_plan_keeps_to_the_key_whatever_the_table_size(
        postgres_url: str) -> None:
    """On PostgreSQL the lookup is a prepared statement, and its generic plan is made once,
    with orders empty: it must still look each key up (a hash join over the whole table
    was measured at 2.3 ms a batch with 30,000 orders, growing with the table). SQLite's
    statement lists the keys (no generic plan), so this is PostgreSQL's alone."""
    target = open_database(postgres_url)
    try:
        target.execute("SET plan_cache_mode = force_generic_plan")
        numbered = intake.STORED_ORDERS_PG.replace("?", "$1", 1).replace("?", "$2", 1)
        target.execute(f"PREPARE stored_lookup (text[], text[]) AS {numbered}")
        plan = "\n".join(r[0] for r in target.execute(
            "EXPLAIN EXECUTE stored_lookup('{manual}', '{x-1}')").fetchall())
    finally:
        target.conn.close()
    assert "Index Scan using orders_channel_channel_order_id_key" in plan, plan
    assert "Seq Scan on orders" not in plan and "Hash" not in plan, plan
