"""What the allocation engine reads and answers, and the snapshot's own bookkeeping.

The engine (:mod:`coordinator.engine`) is a pure function of a :class:`Snapshot`
(warehouses, their stock, the cold SKUs, a spatial index) and an :class:`OrderRequest`;
it answers a :class:`Decision` (parts, ETA, the :class:`CandidateTrace` rows). A batch
reserves what it decided in the snapshot as it goes (:func:`apply`, :func:`release`), as
the ledger does in SQL. Nothing here does I/O.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import NamedTuple

from coordinator.errors import AllocationError
from protocols.geo import SpatialIndex


# -- snapshot ----------------------------------------------------------------------
@dataclass(slots=True)
class WarehouseState:
    id: str
    lat: float
    lon: float
    cold_chain: bool = False
    available: bool = True
    unavailable_reason: str | None = None
    paused: bool = False
    daily_capacity: int = 0  # 0 = unlimited
    capacity_override: bool = False
    handled_today: int = 0
    name: str = ""


@dataclass(slots=True)
class StockState:
    on_hand: int
    reserved: int = 0
    safety_stock: int = 0

    @property
    def sellable(self) -> int:
        return self.on_hand - self.reserved - self.safety_stock


@dataclass(slots=True)
class Snapshot:
    """What the engine may look at. ``stock[warehouse][sku]``; a missing entry is zero stock.

    ``loaded`` is the set of (warehouse, sku) pairs whose stock is included, or ``None``
    when the snapshot holds all stock.
    """

    warehouses: dict[str, WarehouseState]
    stock: dict[str, dict[str, StockState]]
    cold_skus: frozenset[str]
    loaded: set[tuple[str, str]] | None = None
    index: SpatialIndex | None = None
    # warehouse -> [on hand, reserved] summed over every SKU it holds: only the
    # ``warehouse`` reservation scope reads it (None: not loaded)
    totals: dict[str, list[int]] | None = None

    def __post_init__(self) -> None:
        if self.index is None:
            self.index = SpatialIndex((w.id, w.lat, w.lon) for w in self.warehouses.values())

    def stock_of(self, warehouse_id: str, sku_id: str) -> StockState | None:
        per = self.stock.get(warehouse_id)
        return None if per is None else per.get(sku_id)


# -- orders and decisions -------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Line:
    sku_id: str
    qty: int


@dataclass(frozen=True, slots=True)
class OrderRequest:
    order_id: str
    channel: str
    lines: tuple[Line, ...]
    lat: float
    lon: float
    received_at: datetime
    tier: int | None = None  # None: the channel rule decides
    # when a warehouse can start handling it: a reroute or a retry places the order now,
    # so its ETA counts from then; None: from received_at
    handling_from: datetime | None = None


class CandidateTrace(NamedTuple):
    """One warehouse the engine looked at (a tuple: cheap to build, stored as a JSON row)."""

    warehouse_id: str
    distance_km: float
    reservation_rate: float | None = None
    stock_depth: float | None = None
    score: float | None = None
    chosen: bool = False
    # geofence (unavailable, paused, not cold chain) | stock (a line cannot be covered) |
    # inventory (reservation rate) | capacity | ranking | excluded
    dropped_by: str | None = None
    why: str | None = None


def trace_row(fields: tuple[str, float, float | None, float | None, float | None, bool,
                         str | None, str | None]) -> CandidateTrace:
    """Build a trace row without NamedTuple's keyword machinery (hot path)."""
    return _tuple_new(CandidateTrace, fields)


_tuple_new = tuple.__new__


@dataclass(frozen=True, slots=True)
class Part:
    warehouse_id: str
    distance_km: float
    lines: tuple[Line, ...]


@dataclass(frozen=True, slots=True)
class Decision:
    order_id: str
    tier: int
    need_cold_chain: bool
    rule_set_version: str
    parts: tuple[Part, ...] = ()
    eta: datetime | None = None
    reason: str | None = None
    candidates: tuple[CandidateTrace, ...] = ()
    examined: int = 0
    farthest_examined_km: float = 0.0
    omitted: int = 0  # dropped candidates left out of the trace (trace_limit)

    @property
    def allocated(self) -> bool:
        return bool(self.parts)

    @property
    def warehouse_id(self) -> str | None:
        return self.parts[0].warehouse_id if self.parts else None

    @property
    def distance_km(self) -> float | None:
        return max(p.distance_km for p in self.parts) if self.parts else None


class IncompleteSnapshot(AllocationError):
    """The engine reached a warehouse whose stock the snapshot does not hold."""

    def __init__(self, warehouse_id: str, examined: int) -> None:
        self.warehouse_id = warehouse_id
        self.examined = examined
        super().__init__(f"snapshot lacks stock of warehouse {warehouse_id!r}")


def totals_of(stock: dict[str, dict[str, StockState]]) -> dict[str, list[int]]:
    """Warehouse-wide [on hand, reserved] of a complete stock map (tests, benchmarks)."""
    return {wid: [sum(s.on_hand for s in per.values()), sum(s.reserved for s in per.values())]
            for wid, per in stock.items()}


def apply(decision: Decision, snapshot: Snapshot) -> None:
    """Reserve the decision's stock in the (in-memory) snapshot, as the store does in SQL."""
    totals = snapshot.totals
    for part in decision.parts:
        per = snapshot.stock.setdefault(part.warehouse_id, {})
        held = None if totals is None else totals.get(part.warehouse_id)
        for line in part.lines:
            st = per.get(line.sku_id)
            if st is None or st.sellable < line.qty:
                message = f"cannot reserve {line.qty} x {line.sku_id} at {part.warehouse_id}"
                raise AllocationError(message)
            st.reserved += line.qty
            if held is not None:
                held[1] += line.qty
        snapshot.warehouses[part.warehouse_id].handled_today += 1


def release(warehouse_id: str, lines: Iterable[Line], snapshot: Snapshot) -> None:
    """Give back a reservation in the snapshot (the reverse of :func:`apply`)."""
    per = snapshot.stock.get(warehouse_id)
    if per is None:
        return
    held = None if snapshot.totals is None else snapshot.totals.get(warehouse_id)
    for line in lines:
        st = per.get(line.sku_id)
        if st is not None:
            given = min(st.reserved, line.qty)
            st.reserved -= given
            if held is not None:
                held[1] -= given


def why_not(decision: Decision, warehouse_id: str, distance_km: float | None) -> str:
    """Answer "why not warehouse X" from a stored decision."""
    for c in decision.candidates:
        if c.warehouse_id == warehouse_id:
            if c.chosen:
                return f"{warehouse_id} was chosen"
            return f"{warehouse_id} ({c.distance_km} km) was dropped by {c.dropped_by}: {c.why}"
    if distance_km is None:
        return f"{warehouse_id} is not a known warehouse"
    if decision.omitted and distance_km <= decision.farthest_examined_km:
        return (f"{warehouse_id} ({distance_km:.3f} km) failed the geofence; its detail was "
                f"left out of the trace ({decision.omitted} candidates omitted)")
    feasible = [c for c in decision.candidates
                if c.dropped_by not in ("geofence", "stock", "excluded")]
    return (f"{warehouse_id} ({distance_km:.3f} km) was farther than the {len(feasible)} "
            f"nearest feasible warehouse(s); the search stopped at "
            f"{decision.farthest_examined_km} km")
