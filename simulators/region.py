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
import math
import random
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from protocols.topics import validate_level

EARTH_RADIUS_KM = 6371.0088


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


class Region(BaseModel):
    model_config = ConfigDict(frozen=True)

    warehouses: list[Warehouse] = Field(min_length=1)
    stores: list[Store] = Field(min_length=1)
    skus: list[Sku] = Field(min_length=1)

    def warehouse(self, warehouse_id: str) -> Warehouse | None:
        for warehouse in self.warehouses:
            if warehouse.id == warehouse_id:
                return warehouse
        return None


def haversine_km(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Great-circle distance in kilometres."""
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * EARTH_RADIUS_KM * math.asin(math.sqrt(a))


def offset_km(lat: float, lon: float, north_km: float, east_km: float) -> tuple[float, float]:
    """A point ``north_km``/``east_km`` away (flat-earth; fine within a city)."""
    dlat = north_km / 111.32
    dlon = east_km / (111.32 * math.cos(math.radians(lat)))
    return lat + dlat, lon + dlon


# Warehouse ids of the built-in region; the shipped scenarios refer to these.
BUILTIN_WAREHOUSES: tuple[tuple[str, str, float, float, bool], ...] = (
    ("wh-hz-01", "Xiaoshan cold-chain hub", 30.1830, 120.2650, True),
    ("wh-hz-02", "Yuhang cold-chain warehouse", 30.4200, 120.3010, True),
    ("wh-hz-03", "Binjiang dry goods", 30.2080, 120.2110, False),
    ("wh-hz-04", "Gongshu dry goods", 30.3180, 120.1420, False),
    ("wh-hz-05", "Xihu cold-chain warehouse", 30.2590, 120.0800, True),
    ("wh-hz-06", "Shangcheng dry goods", 30.2420, 120.1700, False),
    ("wh-hz-07", "Linping dry goods", 30.4210, 120.2990, False),
    ("wh-hz-08", "Fuyang dry goods", 30.0490, 119.9600, False),
)
CITY_CENTRE = (30.2741, 120.1551)


def builtin_region(seed: int = 7, stores: int = 127, skus: int = 400) -> Region:
    """A deterministic Hangzhou-like region: 8 warehouses (3 cold chain), stores, SKUs."""
    rng = random.Random(seed)
    store_rows = []
    for n in range(stores):
        lat, lon = offset_km(*CITY_CENTRE, rng.gauss(0, 9), rng.gauss(0, 11))
        store_rows.append(Store(id=f"st-{n + 1:03d}", lat=round(lat, 6), lon=round(lon, 6)))
    sku_rows = [Sku(id=f"sku-{n + 1:04d}", cold_chain=rng.random() < 0.3) for n in range(skus)]
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
            for table in ("warehouses", "stores", "skus"):
                found = [source / f"{table}.{ext}" for ext in ("csv", "json")]
                existing = [p for p in found if p.exists()]
                if not existing:
                    raise RegionError(f"{source}: no {table}.csv or {table}.json")
                tables[table] = _rows(existing[0])
        else:
            data = json.loads(source.read_text(encoding="utf-8"))
            tables = {t: data.get(t, []) for t in ("warehouses", "stores", "skus")}
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
    """The coordinator's sample region when it is installed, else :func:`builtin_region`."""
    try:
        import coordinator
    except ImportError:
        return builtin_region()
    folder = Path(coordinator.__file__).parent / "sample_region"
    if folder.is_dir():
        return load_region(folder)
    return builtin_region()
