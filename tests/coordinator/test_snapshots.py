"""The snapshot caches never serve stale catalogue data, on both backends."""

from __future__ import annotations

from coordinator import snapshots
from coordinator.catalog import SkuIn, WarehouseIn, upsert_skus, upsert_warehouses
from coordinator.db import Database, write_transaction
from coordinator.engine import Line, OrderRequest
from coordinator.settings import AllocationConfig

from .conftest import NOW


def test_a_catalogue_change_inside_the_write_transaction_is_seen_by_the_next_read(
        store_db: Database, rules: AllocationConfig) -> None:
    with write_transaction(store_db):
        assert "SKU-NEW" not in snapshots.known_skus(store_db)  # cached, versions checked
        upsert_skus(store_db, [SkuIn(id="SKU-NEW", name="新品")], NOW)
        assert "SKU-NEW" in snapshots.known_skus(store_db)
        upsert_warehouses(store_db, [WarehouseIn(id="WH-NEW", name="新仓", lat=30.2,
                                                 lon=120.1)], NOW)
        order = OrderRequest("o-1", "wechat_mini", (Line("SKU-NEW", 1),), 30.2, 120.1, NOW)
        loader = snapshots.snapshot_for(store_db, [order], now=NOW, config=rules)
        assert "WH-NEW" in loader.snapshot.warehouses


def test_the_catalogue_is_read_again_in_the_next_write_transaction(
        store_db: Database) -> None:
    with write_transaction(store_db):
        assert "SKU-LATER" not in snapshots.known_skus(store_db)
    upsert_skus(store_db, [SkuIn(id="SKU-LATER")], NOW)  # a transaction of its own
    with write_transaction(store_db):
        assert "SKU-LATER" in snapshots.known_skus(store_db)
