"""A deterministic generator of chain regions (stores, warehouses, SKUs, stock).

The shipped sample (``coordinator/sample_region/``) is ``generate_region()`` with its
defaults: a Hangzhou-like chain of 127 stores and 8 warehouses, 3 of them cold chain
(WH-02 among them), 240 SKUs of which a quarter need the cold chain. Benchmarks ask for
bigger ones (2,000 SKUs; 800 warehouses). Same arguments, same region, byte for byte.
"""

from __future__ import annotations

import csv
import random
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from coordinator.catalog import (
    InventoryIn,
    SkuIn,
    StoreIn,
    WarehouseIn,
    upsert_inventory,
    upsert_skus,
    upsert_stores,
    upsert_warehouses,
)
from coordinator.db import Database, write_transaction
from protocols.timestamps import stamp

SAMPLE_DIR = Path(__file__).with_name("sample_region")
# Hangzhou: West Lake at the centre, the chain spread over the urban districts.
CENTRE = (30.2741, 120.1551)
SPAN = (0.16, 0.20)  # half-height / half-width in degrees (~18 km x 19 km)
_DISTRICTS = ["西湖", "上城", "拱墅", "滨江", "萧山", "余杭", "临平", "钱塘", "富阳", "临安"]
_WAREHOUSE_NAMES = ["城西仓", "冷链一号仓", "城北仓", "滨江仓", "冷链二号仓", "萧山仓",
                    "冷链三号仓", "余杭仓"]
_GOODS = ["牛奶", "酸奶", "冰淇淋", "鲜肉", "速冻饺子", "矿泉水", "方便面", "薯片", "大米",
          "食用油", "纸巾", "洗衣液", "饼干", "咖啡", "茶叶", "果汁"]


StockRow = tuple[str, str, int, int]  # warehouse_id, sku_id, on_hand, safety_stock


@dataclass(frozen=True)
class RegionCatalog:
    warehouses: list[WarehouseIn]
    skus: list[SkuIn]
    stores: list[StoreIn]
    inventory: list[StockRow]  # plain tuples: the 800-warehouse region has ~1.4 M rows


def _cold_positions(count: int, cold: int) -> set[int]:
    """Which warehouse numbers (1-based) are cold chain: 2, 5, 7 for the sample's 8."""
    if count == 8 and cold == 3:
        return {2, 5, 7}
    step = count / max(cold, 1)
    return {int(i * step) + 1 for i in range(cold)}


def generate_region(
    *,
    stores: int = 127,
    warehouses: int = 8,
    cold_warehouses: int = 3,
    skus: int = 240,
    cold_share: float = 0.25,
    stock_share: float = 1.0,
    seed: int = 20261124,
    centre: tuple[float, float] = CENTRE,
    span: tuple[float, float] = SPAN,
    daily_capacity: int = 0,
) -> RegionCatalog:
    """A region; ``stock_share`` is the share of (warehouse, SKU) pairs stocked."""
    rng = random.Random(seed)
    lat0, lon0 = centre
    dlat, dlon = span

    def spot() -> tuple[float, float]:
        lat = round(lat0 + rng.uniform(-dlat, dlat), 6)
        return lat, round(lon0 + rng.uniform(-dlon, dlon), 6)

    cold_ids = _cold_positions(warehouses, cold_warehouses)
    wh_rows = []
    width = max(2, len(str(warehouses)))
    for n in range(1, warehouses + 1):
        lat, lon = spot()
        cold = n in cold_ids
        name = (_WAREHOUSE_NAMES[n - 1] if warehouses <= len(_WAREHOUSE_NAMES)
                else f"{'冷链' if cold else ''}仓{n}")
        district = _DISTRICTS[n % len(_DISTRICTS)]
        wh_rows.append(WarehouseIn(
            id=f"WH-{n:0{width}d}", name=f"杭州{name}", address=f"杭州市{district}区仓储路{n}号",
            lat=lat, lon=lon, cold_chain=cold, daily_capacity=daily_capacity,
        ))
    sku_rows = []
    swidth = max(4, len(str(skus)))
    for n in range(1, skus + 1):
        good = _GOODS[n % len(_GOODS)]
        cold = rng.random() < cold_share
        sku_rows.append(SkuIn(id=f"SKU-{n:0{swidth}d}", name=f"{good}{n}", cold_chain=cold))
    store_rows = []
    for n in range(1, stores + 1):
        lat, lon = spot()
        district = _DISTRICTS[n % len(_DISTRICTS)]
        store_rows.append(StoreIn(
            id=f"HZ-S{n:03d}", name=f"{district}{n}号店", franchisee=f"加盟商{n:03d}",
            address=f"杭州市{district}区门店街{n}号", lat=lat, lon=lon,
            contact=f"1380000{n:04d}",
        ))
    inv_rows: list[StockRow] = []
    randint = rng.randint
    for wh in wh_rows:
        for sku in sku_rows:
            if sku.cold_chain and not wh.cold_chain:
                continue  # cold goods are only kept where the cold chain is
            if stock_share < 1.0 and rng.random() >= stock_share:
                continue
            inv_rows.append((wh.id, sku.id, randint(80, 600), randint(2, 12)))
    return RegionCatalog(wh_rows, sku_rows, store_rows, inv_rows)


def load_region(db: Database, region: RegionCatalog, now: datetime) -> None:
    """Write a region into the database (upserts; stock in one bulk transaction)."""
    upsert_warehouses(db, region.warehouses, now)
    upsert_skus(db, region.skus, now)
    upsert_stores(db, region.stores, now)
    if len(region.inventory) <= 50_000:
        upsert_inventory(db, [InventoryIn(warehouse_id=w, sku_id=s, on_hand=o, safety_stock=f)
                              for w, s, o, f in region.inventory], now)
        return
    # generated data is valid by construction (and the table's CHECKs still apply)
    at = stamp(now)
    with write_transaction(db):
        db.conn.executemany(
            "INSERT INTO inventory (warehouse_id, sku_id, on_hand, reserved, safety_stock, "
            "updated_at) VALUES (?, ?, ?, 0, ?, ?) ON CONFLICT (warehouse_id, sku_id) DO UPDATE "
            "SET on_hand = excluded.on_hand, safety_stock = excluded.safety_stock",
            ((w, s, o, f, at) for w, s, o, f in region.inventory),
        )


def write_region(region: RegionCatalog, directory: Path) -> list[Path]:
    """Write the region as importable CSV files (``warehouses.csv`` ...)."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    tables: list[tuple[str, list[WarehouseIn] | list[SkuIn] | list[StoreIn]]]
    tables = [("warehouses", region.warehouses), ("skus", region.skus),
              ("stores", region.stores)]
    for name, rows in tables:
        path = directory / f"{name}.csv"
        fields = list(type(rows[0]).model_fields)
        with path.open("w", newline="", encoding="utf-8") as fh:
            writer = csv.DictWriter(fh, fieldnames=fields, lineterminator="\n")
            writer.writeheader()
            for row in rows:
                data = row.model_dump()
                writer.writerow({k: int(v) if isinstance(v, bool) else v for k, v in data.items()})
        written.append(path)
    path = directory / "inventory.csv"
    with path.open("w", newline="", encoding="utf-8") as fh:
        rows_out = csv.writer(fh, lineterminator="\n")
        rows_out.writerow(list(InventoryIn.model_fields))
        rows_out.writerows(region.inventory)
    written.append(path)
    return written


SAMPLE_FILES = ("warehouses", "skus", "stores", "inventory")
# one registered gateway per sample warehouse, named as the simulators name their agents
SAMPLE_GATEWAYS = SAMPLE_DIR / "gateways.csv"
