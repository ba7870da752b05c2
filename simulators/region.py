"""The region the simulators play in: warehouses, stores and SKUs.

The coordinator ships the real sample region (``coordinator/sample_region/``); the
simulators read it from a JSON file (``{"warehouses": [...], "stores": [...], "skus":
[...]}``) or a directory of ``warehouses.csv`` / ``stores.csv`` / ``skus.csv`` (or the same
names in ``.json``). Only the columns below are read; others are ignored, so the
coordinator's richer files load as they are. Until that region exists,
:func:`builtin_region` builds a deterministic Hangzhou-like one with the same shape.
"""

from __future__ import annotations

import csv
import json
import random
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

import coordinator
from protocols.geo import offset_km
from protocols.topics import validate_level


class RegionError(ValueError):
    """A region file that cannot be read; the message names the file and the field."""


class _Row(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True, allow_inf_nan=False)

    @field_validator("cold_chain", mode="before", check_fields=False)
    @classmethod
    def _flag(cls, value: Any) -> Any:
        # Operators export from Excel: "1", "yes", "TRUE", "是" all mean true.
        if isinstance(value, str):
            return value.strip().lower() in {"1", "true", "yes", "y", "是"}
        return value


class Warehouse(_Row):
    id: str
    name: str = ""
    lat: float = Field(ge=-90, le=90)
    lon: float = Field(ge=-180, le=180)
    cold_chain: bool = False

    @field_validator("id")
    @classmethod
    def _topic_safe(cls, value: str) -> str:
        return validate_level(value, "warehouse id")


class Store(_Row):
    id: str = Field(min_length=1, max_length=64)
    lat: float = Field(ge=-90, le=90)
    lon: float = Field(ge=-180, le=180)


class Sku(_Row):
    id: str = Field(min_length=1, max_length=64)
    cold_chain: bool = False


class Stock(_Row):
    warehouse_id: str
    sku_id: str
    on_hand: int = Field(ge=0)
    safety_stock: int = Field(default=0, ge=0)


class Region(BaseModel):
    model_config = ConfigDict(frozen=True)

    warehouses: list[Warehouse] = Field(min_length=1)
    stores: list[Store] = Field(min_length=1)
    skus: list[Sku] = Field(min_length=1)
    # optional (inventory.csv): lets targeted orders ask only for what a warehouse stocks
    inventory: list[Stock] = Field(default_factory=list)

    def stocked(self, warehouse_id: str, at_least: int = 1) -> set[str]:
        """SKU ids with at least ``at_least`` promisable units at the warehouse."""
        return {
            row.sku_id
            for row in self.inventory
            if row.warehouse_id == warehouse_id and row.on_hand - row.safety_stock >= at_least
        }

    def warehouse(self, warehouse_id: str) -> Warehouse | None:
        for warehouse in self.warehouses:
            if warehouse.id == warehouse_id:
                return warehouse
        return None


# The built-in region uses the coordinator sample region's warehouse ids and places
# (coordinator/sample_region/warehouses.csv: WH-02, WH-05, WH-07 are cold chain), so the
# shipped scenarios mean the same sites with either region.
BUILTIN_WAREHOUSES: tuple[tuple[str, str, float, float, bool], ...] = (
    ("WH-01", "杭州城西仓", 30.377746, 120.225227, False),
    ("WH-02", "杭州冷链一号仓", 30.115195, 120.223949, True),
    ("WH-03", "杭州城北仓", 30.335391, 120.01022, False),
    ("WH-04", "杭州滨江仓", 30.308045, 120.150941, False),
    ("WH-05", "杭州冷链二号仓", 30.166165, 120.130427, True),
    ("WH-06", "杭州萧山仓", 30.362601, 120.182519, False),
    ("WH-07", "杭州冷链三号仓", 30.138356, 120.244992, True),
    ("WH-08", "杭州余杭仓", 30.300827, 120.309736, False),
)
CITY_CENTRE = (30.2741, 120.1551)


def builtin_region(seed: int = 7, stores: int = 127, skus: int = 240) -> Region:
    """A deterministic Hangzhou-like region: 8 warehouses (3 cold chain), stores, SKUs."""
    rng = random.Random(seed)
    store_rows = []
    for n in range(stores):
        lat, lon = offset_km(*CITY_CENTRE, rng.gauss(0, 9), rng.gauss(0, 11))
        store_rows.append(Store(id=f"HZ-S{n + 1:03d}", lat=round(lat, 6), lon=round(lon, 6)))
    sku_rows = [Sku(id=f"SKU-{n + 1:04d}", cold_chain=rng.random() < 0.25) for n in range(skus)]
    warehouses = [
        Warehouse(id=i, name=name, lat=lat, lon=lon, cold_chain=cold)
        for i, name, lat, lon, cold in BUILTIN_WAREHOUSES
    ]
    return Region(warehouses=warehouses, stores=store_rows, skus=sku_rows)


def _rows(path: Path) -> list[dict[str, Any]]:
    if path.suffix == ".json":
        data = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(data, list):
            raise RegionError(f"{path}: expected a JSON list of rows")
        return [dict(row) for row in data]
    with path.open(newline="", encoding="utf-8-sig") as handle:
        return [dict(row) for row in csv.DictReader(handle)]


def load_region(path: str | Path) -> Region:
    """Read a region from one JSON file or a directory of per-table CSV/JSON files."""
    source = Path(path)
    tables: dict[str, list[dict[str, Any]]] = {}
    try:
        if source.is_dir():
            for table in ("warehouses", "stores", "skus", "inventory"):
                found = [source / f"{table}.{ext}" for ext in ("csv", "json")]
                existing = [p for p in found if p.exists()]
                if existing:
                    tables[table] = _rows(existing[0])
                elif table != "inventory":
                    raise RegionError(f"{source}: no {table}.csv or {table}.json")
        else:
            data = json.loads(source.read_text(encoding="utf-8"))
            tables = {t: data.get(t, []) for t in ("warehouses", "stores", "skus", "inventory")}
    except (OSError, json.JSONDecodeError) as exc:
        message = f"{source}: cannot read region: {exc}"
        raise RegionError(message) from exc
    try:
        return Region.model_validate(tables)
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        where = ".".join(str(p) for p in first["loc"])
        message = f"{source}: {where}: {first['msg']}"
        raise RegionError(message) from exc


def default_region() -> Region:
    """The coordinator's sample region (it ships in the same distribution)."""
    return load_region(Path(coordinator.__file__).parent / "sample_region")
