"""Order history: the row model of a past-orders export, its header mapping, and the
import into ``history_orders`` (its SQL in :mod:`coordinator.intel.history_store`).

Imported orders never touch the live tables: no stock is reserved, nothing is allocated.
One export row is one order line; rows of one order share the order number. A re-import
of the same export replaces its rows ((order_no, sku) is the key).

Times in an export are wall-clock times without a zone (``2026-11-03 12:05:31``); they
are read as China Standard Time (UTC+8, no daylight saving), the zone every channel's
backend exports in. A time with an explicit offset keeps it.
"""

from __future__ import annotations

import json
import math
import tomllib
import uuid
from collections.abc import Mapping
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import IO, Annotated, Any

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

from coordinator.db import Database
from coordinator.errors import ImportFileError
from coordinator.imports import ImportFormat, ImportReport, import_rows
from coordinator.intel import history_store

CHINA = timezone(timedelta(hours=8), "CST")

# the usual headers of Chinese order exports (mini-program backends, 美团, 抖店, ERPs)
CHINESE_HEADERS: dict[str, str] = {
    "订单号": "order_no", "订单编号": "order_no",
    "下单时间": "ordered_at", "支付时间": "paid_at", "付款时间": "paid_at",
    "接单时间": "entered_at", "系统时间": "entered_at", "入系统时间": "entered_at",
    "承诺送达时间": "promised_at", "预计送达时间": "promised_at",
    "签收时间": "delivered_at", "送达时间": "delivered_at",
    "渠道": "channel", "来源渠道": "channel",
    "收货地址": "address", "经纬度": "coordinates",
    "SKU": "sku", "商品编码": "sku", "数量": "qty",
    "门店/加盟商": "store", "门店": "store", "加盟商": "store",
    "快递公司": "carrier", "承运商": "carrier",
    "异常": "exception", "异常原因": "exception",
}

CHANNELS = {"美团": "meituan", "美团外卖": "meituan", "小程序": "wechat_mini",
            "微信小程序": "wechat_mini", "抖音": "douyin", "抖店": "douyin"}


def _time(value: Any) -> Any:
    if isinstance(value, str):
        text = value.strip().replace("/", "-")
        try:
            moment = datetime.fromisoformat(text)
        except ValueError:
            return value  # pydantic names the column with its own message
        return moment if moment.tzinfo else moment.replace(tzinfo=CHINA)
    if isinstance(value, datetime) and value.tzinfo is None:
        return value.replace(tzinfo=CHINA)
    return value


def _channel(value: Any) -> Any:
    if isinstance(value, str):
        text = value.strip()
        return CHANNELS.get(text, text.lower())
    return value


Stamp = Annotated[datetime, BeforeValidator(_time)]
Text = Annotated[str, Field(max_length=500)]


class HistoryRow(BaseModel):
    """One line of a past-orders export (field names; :data:`CHINESE_HEADERS` maps)."""

    model_config = ConfigDict(extra="ignore", str_strip_whitespace=True,
                              allow_inf_nan=False)

    order_no: str = Field(min_length=1, max_length=64)
    ordered_at: Stamp
    paid_at: Stamp | None = None
    entered_at: Stamp | None = None
    promised_at: Stamp | None = None
    delivered_at: Stamp | None = None
    channel: Annotated[str, BeforeValidator(_channel), Field(min_length=1, max_length=32)]
    address: Text = ""
    coordinates: str | None = Field(default=None, max_length=64,
                                    description="'lng,lat' (AMap order) or 'lat,lng'")
    lat: float | None = Field(default=None, ge=-90, le=90)
    lon: float | None = Field(default=None, ge=-180, le=180)
    sku: str = Field(min_length=1, max_length=64)
    qty: int = Field(ge=1, le=1_000_000)
    store: Text = ""
    carrier: Text = ""
    exception: Text = ""

    @field_validator("coordinates")
    @classmethod
    def _coordinates(cls, value: str | None) -> str | None:
        if value is None:
            return None
        parts = value.replace("，", ",").split(",")
        try:
            a, b = (float(p) for p in parts)
        except ValueError as exc:
            raise ValueError("expected 'lng,lat', e.g. 120.16,30.27") from exc
        # China spans longitudes 73-135 and latitudes 18-54: the larger one is longitude,
        # so both orders that exports use are read right
        lon, lat = (a, b) if abs(a) > abs(b) else (b, a)
        if not (-90 <= lat <= 90 and -180 <= lon <= 180) or not (
                math.isfinite(lat) and math.isfinite(lon)):
            raise ValueError("out of range")
        return f"{lat},{lon}"

    @model_validator(mode="after")
    def _split_coordinates(self) -> HistoryRow:
        if self.coordinates is not None:
            lat, lon = self.coordinates.split(",")
            self.lat, self.lon = float(lat), float(lon)
        return self


def load_mapping(path: Path) -> dict[str, str]:
    """A mapping file (JSON or TOML: ``{"export header": "field"}``) on top of the usual
    Chinese headers; a target that is not a field is refused naming the header."""
    try:
        text = path.read_text(encoding="utf-8")
        raw: Any = tomllib.loads(text) if path.suffix.lower() == ".toml" else json.loads(text)
    except (OSError, ValueError) as exc:
        raise ImportFileError("mapping", f"cannot read {path.name}: {exc}") from exc
    return check_mapping(raw)


def check_mapping(raw: Any) -> dict[str, str]:
    if not isinstance(raw, Mapping):
        raise ImportFileError("mapping", 'expected {"export header": "field", ...}')
    fields = set(HistoryRow.model_fields)
    out = dict(CHINESE_HEADERS)
    for header, target in raw.items():
        if not isinstance(target, str) or target not in fields:
            raise ImportFileError(f"mapping.{header}", f"{target!r} is not one of "
                                  f"{', '.join(sorted(fields))}")
        out[str(header)] = target
    return out


def import_history(db: Database, source: Path | bytes | IO[bytes], *, fmt: ImportFormat,
                   mapping: Mapping[str, str] | None = None,
                   chunk_size: int = 2000) -> tuple[str, ImportReport]:
    """Stream an export into ``history_orders``; returns the import id and the report."""
    import_id = uuid.uuid4().hex[:12]
    report = import_rows(db, source, HistoryRow, history_store.writer(import_id), fmt=fmt,
                         mapping=mapping if mapping is not None else CHINESE_HEADERS,
                         chunk_size=chunk_size)
    return import_id, report


