"""Waiting orders (unallocated, needs_attention) get another try when supply returns."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from coordinator import catalog, intake, queries
from coordinator.catalog import InventoryIn, import_file, upsert_inventory
from coordinator.db import Database, dialect, open_database
from coordinator.errors import StoreError
from coordinator.region import SAMPLE_DIR, SAMPLE_FILES
from coordinator.reroute import reroute_warehouse
from coordinator.retry import retry_waiting
from coordinator.settings import AllocationConfig
from protocols.geo import great_circle_km
from protocols.orders import Channel, OrderIn, OrderLine

from .conftest import NOW
from .test_reroute import _consistent, _orders_near

LATER = NOW + timedelta(hours=3)



@pytest.fixture
def sample_db(store_db: Database) -> Database:
    """These tests run on both backends."""
    return store_db

def _empty_everywhere(db: Database, sku: str) -> None:
    warehouses = [r[0] for r in db.execute(
        "SELECT warehouse_id FROM inventory WHERE sku_id = ?", [sku])]
    upsert_inventory(db, [InventoryIn(warehouse_id=w, sku_id=sku, on_hand=0)
                          for w in warehouses], NOW)


def _ambient_sku(db: Database) -> str:
    return str(db.execute("SELECT id FROM skus WHERE cold_chain = 0 ORDER BY id").fetchone()[0])


def _waiting_then_restocked(db: Database, rules: AllocationConfig,
                            cid: str) -> tuple[str, str]:
    """(sku, order id): an order left unallocated for lack of its SKU anywhere, then the
    SKU restocked at WH-03, so a retry can place it."""
    sku = _ambient_sku(db)
    _empty_everywhere(db, sku)
    [outcome] = intake.submit_orders(db, [_order(sku, cid)], now=NOW, config=rules)
    upsert_inventory(db, [InventoryIn(warehouse_id="WH-03", sku_id=sku, on_hand=5)], NOW)
    return sku, outcome.order_id


def _order(sku: str, cid: str, qty: int = 1) -> OrderIn:
    return OrderIn(channel=Channel.WECHAT_MINI, channel_order_id=cid, store_id="HZ-S001",
                   lines=[OrderLine(sku_id=sku, qty=qty)], lat=30.27, lon=120.15)


def test_unallocated_order_is_placed_once_stock_arrives(sample_db: Database,
                                                        rules: AllocationConfig) -> None:
    sku = _ambient_sku(sample_db)
    _empty_everywhere(sample_db, sku)
    [outcome] = intake.submit_orders(sample_db, [_order(sku, "R-1")], now=NOW, config=rules)
    assert outcome.status == "unallocated"
    assert retry_waiting(sample_db, now=NOW, config=rules).placed == []
    upsert_inventory(sample_db, [InventoryIn(warehouse_id="WH-03", sku_id=sku, on_hand=5)], NOW)

    result = retry_waiting(sample_db, now=LATER, config=rules)

    [placed] = result.placed
    assert placed.order_id == outcome.order_id and placed.warehouse_id == "WH-03"
    assert placed.previous_status == "unallocated"
    order = queries.get_order(sample_db, outcome.order_id)
    assert order["status"] == "allocated" and order["warehouse_id"] == "WH-03"
    assert order["status_reason"] is None
    assert [line["warehouse_id"] for line in order["lines"]] == ["WH-03"]
    last = order["timeline"][-1]
    assert last["kind"] == "allocated" and last["detail"]["retry"] is True
    # handling starts when the retry places it: the promise counts from then
    assert datetime.fromisoformat(order["eta"]) > LATER
    decisions = queries.decisions_of(sample_db, outcome.order_id)
    assert [d["kind"] for d in decisions] == ["allocate", "retry"]
    reserved = sample_db.execute("SELECT reserved FROM inventory WHERE warehouse_id = 'WH-03' "
                                 "AND sku_id = ?", [sku]).fetchone()[0]
    assert reserved == 1
    _consistent(sample_db)


def test_retry_with_nothing_new_writes_nothing(sample_db: Database,
                                               rules: AllocationConfig) -> None:
    sku = _ambient_sku(sample_db)
    _empty_everywhere(sample_db, sku)
    intake.submit_orders(sample_db, [_order(sku, "R-2")], now=NOW, config=rules)
    changes = sample_db.conn.total_changes

    result = retry_waiting(sample_db, now=LATER, config=rules)

    assert result.placed == [] and len(result.waiting) == 1
    assert "stock" in result.waiting[0].reason
    assert sample_db.conn.total_changes == changes


def test_stuck_reroute_orders_are_placed_when_backup_stock_returns(
    sample_db: Database, rules: AllocationConfig
) -> None:
    orders = _orders_near(sample_db, "WH-02", 5)
    intake.submit_orders(sample_db, orders, now=NOW, config=rules)
    skus = {o.lines[0].sku_id for o in orders}
    upsert_inventory(sample_db, [InventoryIn(warehouse_id=w, sku_id=s, on_hand=0)
                                 for w in ("WH-05", "WH-07") for s in skus], NOW)
    catalog.set_warehouse_availability(sample_db, "WH-02", available=False, reason="breaker",
                                     now=NOW)
    stuck = reroute_warehouse(sample_db, "WH-02", incident_id="inc-r", reason="breaker",
                              now=NOW, config=rules).stuck
    assert len(stuck) == 5
    upsert_inventory(sample_db, [InventoryIn(warehouse_id="WH-07", sku_id=s, on_hand=50)
                                 for s in skus], NOW)

    result = retry_waiting(sample_db, now=LATER, config=rules)

    assert {p.order_id for p in result.placed} == {s.order_id for s in stuck}
    assert {p.warehouse_id for p in result.placed} == {"WH-07"}  # WH-02 is still down
    assert {p.previous_status for p in result.placed} == {"needs_attention"}
    assert queries.unshipped_orders(sample_db, "WH-07") != []
    _consistent(sample_db)


def test_retry_of_named_orders_leaves_the_others_waiting(sample_db: Database,
                                                         rules: AllocationConfig) -> None:
    sku = _ambient_sku(sample_db)
    _empty_everywhere(sample_db, sku)
    first, second = intake.submit_orders(sample_db, [_order(sku, "R-3"), _order(sku, "R-4")],
                                        now=NOW, config=rules)
    upsert_inventory(sample_db, [InventoryIn(warehouse_id="WH-01", sku_id=sku, on_hand=9)], NOW)

    result = retry_waiting(sample_db, now=LATER, config=rules, order_ids=[second.order_id])

    assert [p.order_id for p in result.placed] == [second.order_id]
    assert queries.get_order(sample_db, first.order_id)["status"] == "unallocated"


def test_scarce_stock_goes_to_the_highest_tier_then_oldest(sample_db: Database,
                                                           rules: AllocationConfig) -> None:
    sku = _ambient_sku(sample_db)
    _empty_everywhere(sample_db, sku)
    old = intake.submit_orders(sample_db, [_order(sku, "R-old")], now=NOW, config=rules)[0]
    new = intake.submit_orders(sample_db, [_order(sku, "R-new")], now=NOW + timedelta(minutes=5),
                              config=rules)[0]
    upsert_inventory(sample_db, [InventoryIn(warehouse_id="WH-01", sku_id=sku, on_hand=1)], NOW)

    result = retry_waiting(sample_db, now=LATER, config=rules)

    assert [p.order_id for p in result.placed] == [old.order_id]
    assert [w.order_id for w in result.waiting] == [new.order_id]
    _consistent(sample_db)


@settings(max_examples=30, deadline=None)
@given(stock=st.lists(st.integers(min_value=0, max_value=4), min_size=8, max_size=8),
       wanted=st.lists(st.integers(min_value=1, max_value=3), min_size=1, max_size=8))
def test_retry_never_promises_more_than_is_there(
    tmp_path_factory: pytest.TempPathFactory, stock: list[int], wanted: list[int]
) -> None:
    path = tmp_path_factory.mktemp("retry") / "db.sqlite"
    db = open_database(path)
    try:
        for name in SAMPLE_FILES:
            import_file(db, SAMPLE_DIR / f"{name}.csv", NOW)
        rules = AllocationConfig()
        sku = _ambient_sku(db)
        _empty_everywhere(db, sku)
        outcomes = intake.submit_orders(
            db, [_order(sku, f"P-{i}", q) for i, q in enumerate(wanted)], now=NOW, config=rules)
        qty_of = {o.order_id: q for o, q in zip(outcomes, wanted, strict=True)}
        upsert_inventory(db, [InventoryIn(warehouse_id=f"WH-0{i + 1}", sku_id=sku, on_hand=n)
                              for i, n in enumerate(stock)], NOW)
        result = retry_waiting(db, now=LATER, config=rules)
        reserved = db.execute("SELECT coalesce(sum(reserved), 0) FROM inventory "
                              "WHERE sku_id = ?", [sku]).fetchone()[0]
        assert reserved == sum(qty_of[p.order_id] for p in result.placed)
        # whatever still waits could not have fit anywhere
        left = {w: n for w, n in db.execute(
            "SELECT warehouse_id, on_hand - reserved - safety_stock FROM inventory "
            "WHERE sku_id = ?", [sku]).fetchall()}
        for waiting in result.waiting:
            assert all(n < qty_of[waiting.order_id] for n in left.values())
        over = db.execute("SELECT count(*) FROM inventory WHERE reserved + safety_stock > "
                          "on_hand AND sku_id = ?", [sku]).fetchone()[0]
        assert over == 0
        assert len(result.placed) + len(result.waiting) == len(wanted)
        _consistent(db)
    finally:
        db.conn.close()


def test_restock_reaches_newer_orders_behind_older_ones_stuck_on_another_sku(
    sample_db: Database, rules: AllocationConfig
) -> None:
    ambient = [r[0] for r in sample_db.execute(
        "SELECT id FROM skus WHERE cold_chain = 0 ORDER BY id LIMIT 2")]
    stuck_sku, restocked_sku = ambient
    _empty_everywhere(sample_db, stuck_sku)
    _empty_everywhere(sample_db, restocked_sku)
    intake.submit_orders(sample_db, [_order(stuck_sku, "R-old")], now=NOW, config=rules)
    newer = intake.submit_orders(sample_db, [_order(restocked_sku, "R-newer")],
                                now=NOW + timedelta(minutes=1), config=rules)[0]
    upsert_inventory(sample_db, [InventoryIn(warehouse_id="WH-01", sku_id=restocked_sku,
                                             on_hand=3)], NOW)

    blind = retry_waiting(sample_db, now=LATER, config=rules, limit=1)
    aimed = retry_waiting(sample_db, now=LATER, config=rules, limit=1,
                          sku_ids={restocked_sku})

    assert blind.placed == []  # the one slot went to the oldest, stuck on the other SKU
    assert [p.order_id for p in aimed.placed] == [newer.order_id]


def test_retry_of_a_split_keeps_the_part_still_held_and_places_only_the_rest(
    sample_db: Database,
) -> None:
    rules = AllocationConfig(split_shipments=True)
    cold = [r[0] for r in sample_db.execute(
        "SELECT id FROM skus WHERE cold_chain = 1 ORDER BY id LIMIT 2")]
    only_at_02, only_at_05 = cold
    for sku in cold:
        _empty_everywhere(sample_db, sku)
    upsert_inventory(sample_db, [
        InventoryIn(warehouse_id="WH-02", sku_id=only_at_02, on_hand=5),
        InventoryIn(warehouse_id="WH-05", sku_id=only_at_05, on_hand=5),
    ], NOW)
    wh02 = queries.get_warehouse(sample_db, "WH-02")
    [outcome] = intake.submit_orders(sample_db, [OrderIn(
        channel=Channel.MEITUAN, channel_order_id="R-split", store_id="HZ-S001",
        lines=[OrderLine(sku_id=only_at_02, qty=1), OrderLine(sku_id=only_at_05, qty=3)],
        lat=wh02["lat"], lon=wh02["lon"])], now=NOW, config=rules)
    assert outcome.status == "allocated"
    catalog.set_warehouse_availability(sample_db, "WH-02", available=False, reason="breaker",
                                     now=NOW)
    stuck = reroute_warehouse(sample_db, "WH-02", incident_id="inc-split", reason="breaker",
                              now=NOW, config=rules).stuck
    assert [s.order_id for s in stuck] == [outcome.order_id]
    upsert_inventory(sample_db, [InventoryIn(warehouse_id="WH-07", sku_id=only_at_02,
                                             on_hand=5)], NOW)

    [placed] = retry_waiting(sample_db, now=LATER, config=rules).placed

    assert placed.warehouse_id == "WH-07"
    held = sample_db.execute(
        "SELECT line_no, warehouse_id, qty FROM reservations WHERE order_id = ? "
        "AND status = 'held' ORDER BY line_no", [outcome.order_id]).fetchall()
    assert [tuple(r) for r in held] == [(0, "WH-07", 1), (1, "WH-05", 3)]
    reserved = dict(sample_db.execute(
        "SELECT warehouse_id, reserved FROM inventory WHERE sku_id = ?", [only_at_05]
    ).fetchall())
    assert reserved["WH-05"] == 3  # not reserved a second time
    order = queries.get_order(sample_db, outcome.order_id)
    assert [line["warehouse_id"] for line in order["lines"]] == ["WH-07", "WH-05"]
    # the order as a whole: both parts, and it arrives with the farther one
    far = max(great_circle_km(wh02["lat"], wh02["lon"], w["lat"], w["lon"])
              for w in (queries.get_warehouse(sample_db, "WH-05"),
                        queries.get_warehouse(sample_db, "WH-07")))
    assert order["distance_km"] == round(far, 3) == placed.distance_km
    assert order["timeline"][-1]["detail"]["parts"] == ["WH-07", "WH-05"]
    assert order["eta"] == placed.eta
    _consistent(sample_db)


def test_a_status_change_under_the_retry_rolls_the_whole_retry_back(
    sample_db: Database, rules: AllocationConfig
) -> None:
    sku, order_id = _waiting_then_restocked(sample_db, rules, "R-guard")
    # the database skips the order's status update, as if it had changed meanwhile
    if dialect(sample_db) == "sqlite":
        sample_db.execute("CREATE TRIGGER skip_status BEFORE UPDATE OF status ON orders "
                          "BEGIN SELECT RAISE(IGNORE); END")
    else:
        sample_db.execute("CREATE FUNCTION skip_row() RETURNS trigger LANGUAGE plpgsql AS "
                          "$$ BEGIN RETURN NULL; END $$")
        sample_db.execute("CREATE TRIGGER skip_status BEFORE UPDATE OF status ON orders "
                          "FOR EACH ROW EXECUTE FUNCTION skip_row()")
    held = sample_db.execute("SELECT count(*) FROM reservations").fetchone()[0]

    with pytest.raises(StoreError, match="changed status during its retry"):
        retry_waiting(sample_db, now=LATER, config=rules)

    assert queries.get_order(sample_db, order_id)["status"] == "unallocated"
    assert sample_db.execute("SELECT count(*) FROM reservations").fetchone()[0] == held
    assert sample_db.execute("SELECT reserved FROM inventory WHERE warehouse_id = 'WH-03' "
                             "AND sku_id = ?", [sku]).fetchone()[0] == 0
    _consistent(sample_db)


def test_retry_of_more_named_orders_than_sqlite_takes_parameters(
    sample_db: Database, rules: AllocationConfig
) -> None:
    _, order_id = _waiting_then_restocked(sample_db, rules, "R-many")
    names = [f"o_missing{i}" for i in range(40_000)] + [order_id]

    result = retry_waiting(sample_db, now=LATER, config=rules, order_ids=names, limit=50_000)

    assert [p.order_id for p in result.placed] == [order_id]


def test_retry_after_a_write_of_more_skus_than_either_backend_takes_parameters(
    sample_db: Database, rules: AllocationConfig
) -> None:
    # found by a tester: a 372,000-SKU import committed, then its retry of waiting orders
    # bound one parameter per SKU and failed (PostgreSQL takes 65,535, SQLite 32,766)
    sku, order_id = _waiting_then_restocked(sample_db, rules, "R-skus")
    written = {f"SKU-IMPORTED-{i:06d}" for i in range(70_000)} | {sku}

    result = retry_waiting(sample_db, now=LATER, config=rules, sku_ids=written)

    assert [p.order_id for p in result.placed] == [order_id]
