"""The order health report: pure figures from past orders (no database, no clock).

The radar has six axes, each a share between 0 and 1:

- timeout: orders delivered after their promise, or still undelivered once it passed
  (promise: the export's promised time, else order time + ``promise_h``);
- exception: orders whose export carries an exception text;
- channel mix: how evenly orders spread over channels (Shannon entropy / its maximum;
  1 = every channel the same share, 0 = one channel only); the shares are listed too;
- on time: delivered orders delivered by their promise;
- transparency: orders whose export has every node: payment, carrier and (when the
  promise has passed) the sign-off time;
- self-healing: exceptions the live system handled alone / all its exceptions (from the
  coordinator, not the export, which has no such record).

Besides: the share of destinations within ``near_store_km`` of a store (the one distance
function), each channel's entry delay (order time to the time the order entered the
system: the export's system time where it has one, else its payment time), a destination
heat map, and stores that reorder on a fixed cycle (distinct order days at intervals whose
spread is at most ``cycle_max_spread_days``).
"""

from __future__ import annotations

import itertools
import math
import statistics
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

from coordinator.intel.config import ReportConfig
from coordinator.intel.history import CHINA
from coordinator.intel.history_store import PastOrder
from protocols.geo import great_circle_km

AXES = ("timeout", "exception", "channel_mix", "on_time", "transparency", "self_healing")
AXIS_LABELS = {"timeout": "超时率 timeout", "exception": "异常率 exception",
               "channel_mix": "渠道分布 channel mix", "on_time": "准时率 on-time",
               "transparency": "透明度 transparency", "self_healing": "自愈率 self-healing"}


@dataclass(frozen=True, slots=True)
class StorePoint:
    id: str
    lat: float
    lon: float


@dataclass(slots=True)
class HeatMap:
    lat_min: float
    lat_max: float
    lon_min: float
    lon_max: float
    cells: int
    counts: list[list[int]]  # [row from north][column from west]


@dataclass(slots=True)
class Cycle:
    store: str
    orders: int
    period_days: float
    spread_days: float


@dataclass(slots=True)
class HealthReport:
    since: datetime
    until: datetime
    orders: int
    radar: dict[str, float | None]
    channel_shares: dict[str, float]
    entry_delay_min: dict[str, dict[str, float]]
    entry_delay_basis: str
    near_store: dict[str, Any]
    heat_map: HeatMap | None
    cycles: list[Cycle]
    self_healing: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["since"] = self.since.isoformat()
        out["until"] = self.until.isoformat()
        return out


class _NearStores:
    """Is any store within ``km``? Stores are bucketed in a grid of cells at least ``km``
    wide, so a destination measures (with the one distance function) only the stores of
    its own and the eight neighbouring cells: a month of orders against hundreds of
    stores in seconds, not minutes."""

    def __init__(self, stores: Sequence[StorePoint], km: float) -> None:
        self.km = km
        self.dlat = km / 111.0 + 1e-9
        top = max((abs(s.lat) for s in stores), default=0.0)
        # a degree of longitude shrinks with latitude: size cells for the widest one
        self.dlon = km / (111.0 * max(math.cos(math.radians(min(top + 1, 89.0))), 0.01))
        self.cells: dict[tuple[int, int], list[StorePoint]] = defaultdict(list)
        for s in stores:
            self.cells[self._key(s.lat, s.lon)].append(s)

    def _key(self, lat: float, lon: float) -> tuple[int, int]:
        return math.floor(lat / self.dlat), math.floor(lon / self.dlon)

    def any_within(self, lat: float, lon: float) -> bool:
        row, col = self._key(lat, lon)
        return any(great_circle_km(lat, lon, s.lat, s.lon) <= self.km
                   for dr in (-1, 0, 1) for dc in (-1, 0, 1)
                   for s in self.cells.get((row + dr, col + dc), ()))


def _share(part: int, whole: int) -> float | None:
    return part / whole if whole else None


def _promise(order: PastOrder, config: ReportConfig) -> datetime:
    return order.promised_at or order.ordered_at + timedelta(hours=config.promise_h)


def _evenness(counts: Counter[str]) -> float | None:
    total = sum(counts.values())
    if not total:
        return None
    if len(counts) == 1:
        return 0.0
    entropy = -sum((n / total) * math.log(n / total) for n in counts.values() if n)
    return entropy / math.log(len(counts))


def _quantile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def heat_map(points: Sequence[tuple[float, float]], cells: int) -> HeatMap | None:
    if not points:
        return None
    lats = [p[0] for p in points]
    lons = [p[1] for p in points]
    lat_min, lat_max, lon_min, lon_max = min(lats), max(lats), min(lons), max(lons)
    dlat = (lat_max - lat_min) or 1e-9
    dlon = (lon_max - lon_min) or 1e-9
    counts = [[0] * cells for _ in range(cells)]
    for lat, lon in points:
        row = min(cells - 1, int((lat_max - lat) / dlat * cells))
        col = min(cells - 1, int((lon - lon_min) / dlon * cells))
        counts[row][col] += 1
    return HeatMap(lat_min, lat_max, lon_min, lon_max, cells, counts)


def fixed_cycles(days_by_store: dict[str, set[date]], config: ReportConfig) -> list[Cycle]:
    out = []
    for store, days in sorted(days_by_store.items()):
        if len(days) < config.cycle_min_orders:
            continue
        ordered = sorted(days)
        gaps = [float((b - a).days) for a, b in itertools.pairwise(ordered)]
        period = statistics.fmean(gaps)
        spread = statistics.pstdev(gaps)
        # a store that orders (nearly) every day has demand, not a cycle
        if period >= 2.0 and spread <= config.cycle_max_spread_days:
            out.append(Cycle(store, len(days), round(period, 2), round(spread, 2)))
    return out


def compute(orders: Iterable[PastOrder], stores: Sequence[StorePoint], *,
            since: datetime, until: datetime, config: ReportConfig,
            self_healing: dict[str, Any] | None = None) -> HealthReport:
    """One pass over the orders; ``until`` is the report's "now" for promises not yet due."""
    total = late = exceptions = delivered = on_time = complete = 0
    channels: Counter[str] = Counter()
    delays: dict[str, list[float]] = defaultdict(list)
    basis: Counter[str] = Counter()
    points: list[tuple[float, float]] = []
    near = 0
    days_by_store: dict[str, set[date]] = defaultdict(set)
    near_stores = _NearStores(stores, config.near_store_km)
    for order in orders:
        total += 1
        channels[order.channel] += 1
        promise = _promise(order, config)
        if order.delivered_at is not None:
            delivered += 1
            if order.delivered_at <= promise:
                on_time += 1
            else:
                late += 1
        elif promise < until:
            late += 1
        if order.exception:
            exceptions += 1
        due = promise < until
        if order.paid_at and order.carrier and (order.delivered_at or not due):
            complete += 1
        entered = order.entered_at or order.paid_at
        if entered is not None:
            basis["system time" if order.entered_at else "payment time"] += 1
            delays[order.channel].append(
                max(0.0, (entered - order.ordered_at).total_seconds() / 60))
        if order.lat is not None and order.lon is not None:
            points.append((order.lat, order.lon))
            if near_stores.any_within(order.lat, order.lon):
                near += 1
        if order.store:
            days_by_store[order.store].add(order.ordered_at.astimezone(CHINA).date())
    healing = self_healing or {}
    radar: dict[str, float | None] = {
        "timeout": _share(late, total),
        "exception": _share(exceptions, total),
        "channel_mix": _evenness(channels),
        "on_time": _share(on_time, delivered),
        "transparency": _share(complete, total),
        "self_healing": healing.get("rate"),
    }
    entry = {
        channel: {"orders": float(len(values)), "mean": round(statistics.fmean(values), 2),
                  "p50": round(_quantile(values, 0.5), 2),
                  "p90": round(_quantile(values, 0.9), 2)}
        for channel, values in sorted(delays.items())
    }
    return HealthReport(
        since=since, until=until, orders=total, radar=radar,
        channel_shares={c: n / total for c, n in channels.most_common()},
        entry_delay_min=entry,
        entry_delay_basis=" / ".join(f"{k}: {n}" for k, n in basis.most_common()) or "none",
        near_store={"km": config.near_store_km, "with_coordinates": len(points),
                    "within": near, "share": _share(near, len(points)),
                    "stores": len(stores)},
        heat_map=heat_map(points, config.heat_cells),
        cycles=fixed_cycles(days_by_store, config),
        self_healing=healing,
    )
