"""The reservation-rate scope (``allocation.reservation_scope``) through the store, on
each backend: intake reads warehouse-wide totals only in the ``warehouse`` scope, and a
retry (complete snapshot) reads them too."""

from __future__ import annotations

from datetime import timedelta

from coordinator import intake, queries
from coordinator.catalog import InventoryIn, upsert_inventory
from coordinator.db import Database, open_database
from coordinator.ledger import trace_candidates
from coordinator.retry import retry_waiting
from coordinator.settings import AllocationConfig
from protocols.orders import Channel, OrderIn, OrderLine

from .conftest import NOW

# beside WH-04 (杭州滨江仓): it is the nearest warehouse by far
HERE = (30.3080, 120.1509)
PER_SKU = AllocationConfig()
WAREHOUSE = AllocationConfig(reservation_scope="warehouse")


def _order(cid: str, sku: str, qty: int = 1) -> OrderIn:
    return OrderIn(channel=Channel.WECHAT_MINI, channel_order_id=cid, store_id="HZ-S001",
                   lines=[OrderLine(sku_id=sku, qty=qty)], lat=HERE[0], lon=HERE[1])


def _ambient(db: Database, n: int) -> list[str]:
    rows = db.execute("SELECT id FROM skus WHERE cold_chain = 0 ORDER BY id").fetchall()
    return [str(r[0]) for r in rows[:n]]


def _busy_wh04(db: Database) -> tuple[str, str]:
    """WH-04 keeps two SKUs: ``bulk`` (1,000, of which 950 get reserved by one order) and
    ``other`` (50, none reserved): 90 % of the warehouse is reserved, 0 % of ``other``."""
    bulk, other = _ambient(db, 2)
    _busy_wh04_empty(db)
    [big] = intake.submit_orders(db, [_order("BULK-1", bulk, 950)], now=NOW, config=PER_SKU)
    assert big.warehouse_id == "WH-04"
    return bulk, other


def test_warehouse_scope_sends_an_order_past_a_warehouse_reserved_as_a_whole(
        store_db: Database) -> None:
    _, other = _busy_wh04(store_db)
    [per_sku] = intake.submit_orders(store_db, [_order("P-1", other)], now=NOW, config=PER_SKU)
    assert per_sku.warehouse_id == "WH-04"  # 0 % of `other` is reserved there

    [whole] = intake.submit_orders(store_db, [_order("W-1", other)], now=NOW, config=WAREHOUSE)
    assert whole.warehouse_id not in (None, "WH-04")
    [decision] = queries.decisions_of(store_db, whole.order_id)
    assert decision["rule_set_version"] == WAREHOUSE.version
    dropped = [c for c in _candidates(decision) if c["warehouse_id"] == "WH-04"]
    # 951 of 1,050 units (the first order's 950 and P-1's one)
    assert dropped[0]["dropped_by"] == "inventory"
    assert dropped[0]["why"] == ("warehouse-wide reservation rate 91% (951 of 1050 units "
                                 "reserved, all SKUs) above 85% (scope: warehouse)")


def test_warehouse_scope_holds_on_a_retry_of_a_waiting_order(store_db: Database) -> None:
    _busy_wh04(store_db)
    fresh = _empty_everywhere(store_db, _ambient(store_db, 3)[2])
    [waiting] = intake.submit_orders(store_db, [_order("R-1", fresh)], now=NOW, config=WAREHOUSE)
    assert waiting.status == "unallocated"
    upsert_inventory(store_db, [InventoryIn(warehouse_id="WH-04", sku_id=fresh, on_hand=10),
                                InventoryIn(warehouse_id="WH-03", sku_id=fresh, on_hand=10)],
                     NOW)

    later = NOW + timedelta(minutes=5)
    result = retry_waiting(store_db, now=later, config=WAREHOUSE)
    assert [p.warehouse_id for p in result.placed] == ["WH-03"]
    last = queries.decisions_of(store_db, waiting.order_id)[-1]
    [wh04] = [c for c in _candidates(last) if c["warehouse_id"] == "WH-04"]
    assert wh04["dropped_by"] == "inventory" and "(scope: warehouse)" in wh04["why"]
    assert wh04["reservation_rate"] == round(950 / 1060, 4)


def _empty_everywhere(db: Database, sku: str) -> str:
    warehouses = [r[0] for r in db.execute(
        "SELECT warehouse_id FROM inventory WHERE sku_id = ?", [sku])]
    upsert_inventory(db, [InventoryIn(warehouse_id=w, sku_id=sku, on_hand=0)
                          for w in warehouses], NOW)
    return sku


def _candidates(decision: dict[str, object]) -> list[dict[str, object]]:
    trace = decision["trace"]
    assert isinstance(trace, dict)
    return trace_candidates(trace)


def test_warehouse_totals_kept_between_batches_see_another_writers_reservations(
        store_db: Database, db_target: str) -> None:
    """The totals a connection keeps from its last batch are dropped once anybody else
    wrote: here another coordinator connection reserves 95 % of WH-04 in between."""
    _busy_wh04_empty(store_db)
    bulk, other = _ambient(store_db, 2)
    [first] = intake.submit_orders(store_db, [_order("K-1", other)], now=NOW, config=WAREHOUSE)
    assert first.warehouse_id == "WH-04"  # 1 of 1,050 reserved
    elsewhere = open_database(db_target)
    try:
        [big] = intake.submit_orders(elsewhere, [_order("K-BULK", bulk, 1000)], now=NOW,
                                     config=PER_SKU)
        assert big.warehouse_id == "WH-04"
    finally:
        elsewhere.conn.close()
    [second] = intake.submit_orders(store_db, [_order("K-2", other)], now=NOW,
                                    config=WAREHOUSE)
    assert second.warehouse_id not in (None, "WH-04")  # 1,001 of 1,050: 95 %


def _busy_wh04_empty(db: Database) -> None:
    """WH-04 holds only ``bulk`` (1,000) and ``other`` (50), nothing reserved."""
    bulk, other = _ambient(db, 2)
    held = [str(r[0]) for r in db.execute(
        "SELECT sku_id FROM inventory WHERE warehouse_id = 'WH-04'").fetchall()]
    upsert_inventory(db, [InventoryIn(warehouse_id="WH-04", sku_id=s, on_hand=0) for s in held
                          if s not in (bulk, other)]
                     + [InventoryIn(warehouse_id="WH-04", sku_id=bulk, on_hand=1000),
                        InventoryIn(warehouse_id="WH-04", sku_id=other, on_hand=50)], NOW)
    upsert_inventory(db, [InventoryIn(warehouse_id="WH-03", sku_id=other, on_hand=500)], NOW)
