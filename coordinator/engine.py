"""The three-layer allocation engine: a pure function of a :class:`Snapshot`.

1. Geofence: walk warehouses nearest-first (exact great-circle order from a latitude-sorted
   index, so 800 warehouses cost a few dozen distance computations); keep the first
   ``nearest`` that are available, cold-chain capable when an item (or the channel) needs
   it, and hold sellable stock (on hand - reserved - safety stock) for every line.
2. Inventory weight: drop those above the reservation threshold or at daily capacity
   (unless overridden); rank the rest by distance and stock depth with configured weights.
3. Fulfilment priority: the channel's rule picks the tier; the tier orders work in a batch
   and sets the ETA promise (handling minutes + travel at courier speed).

No I/O. Given the same snapshot, order and config, the answer is the same (ties break by
score, then distance, then warehouse id). The snapshot may hold stock for only some
warehouses (``loaded``); the engine raises :class:`IncompleteSnapshot` when it needs more,
and the store loads more and asks again.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from coordinator.allocation_model import (
    CandidateTrace,
    Decision,
    IncompleteSnapshot,
    Line,
    OrderRequest,
    Part,
    Snapshot,
    StockState,
    WarehouseState,
    apply,
    release,
    totals_of,
    trace_row,
    why_not,
)
from coordinator.errors import AllocationError
from coordinator.geofence import Route, Routes
from coordinator.settings import AllocationConfig

# the engine's inputs and outputs live in coordinator.allocation_model; callers may keep
# importing them from here
__all__ = [
    "CandidateTrace", "Decision", "IncompleteSnapshot", "Line", "OrderRequest", "Part",
    "Routes", "Snapshot", "StockState", "WarehouseState", "allocate", "allocate_batch", "apply",
    "batch_order", "eta_for", "needs_cold_chain", "release", "tier_of", "totals_of",
    "why_not",
]

_BY_DISTANCE = operator.itemgetter(1, 0)  # CandidateTrace: distance, then warehouse id


@dataclass(slots=True)
class _Feasible:
    warehouse: WarehouseState
    distance_km: float
    rate: float = 0.0
    depth: float = 0.0
    rate_sku: str | None = None  # the order's SKU whose reserved share set ``rate``


@dataclass(slots=True)
class _Walk:
    dropped: list[CandidateTrace] = field(default_factory=list)
    feasible: list[_Feasible] = field(default_factory=list)
    partial: list[_Feasible] = field(default_factory=list)  # usable for a split
    examined: int = 0
    farthest: float = 0.0
    omitted: int = 0
    eligible: int = 0  # available (and cold-chain capable if needed) warehouses examined
    # SKU -> eligible warehouses examined that could not cover it, in line order
    short: dict[str, int] = field(default_factory=dict)
    short_at: dict[str, int] = field(default_factory=dict)  # SKU -> last counted (examined)


def _demand(lines: tuple[Line, ...]) -> tuple[Line, ...]:
    """What the order needs of each SKU: its lines, or, when a SKU is on several lines
    (the same drink twice, with other options), one line per SKU with the total, so no
    warehouse is taken for holding enough for each line but not for all of them."""
    if len(lines) < 2 or len({line.sku_id for line in lines}) == len(lines):
        return lines
    totals: dict[str, int] = {}
    for line in lines:
        totals[line.sku_id] = totals.get(line.sku_id, 0) + line.qty
    return tuple(Line(sku, qty) for sku, qty in totals.items())


def needs_cold_chain(order: OrderRequest, snapshot: Snapshot, config: AllocationConfig) -> bool:
    if config.forces_cold_chain(order.channel):
        return True
    cold = snapshot.cold_skus
    return any(line.sku_id in cold for line in order.lines)


def tier_of(order: OrderRequest, config: AllocationConfig) -> int:
    return order.tier if order.tier is not None else config.tier_for(order.channel)


def eta_for(
    received_at: datetime, tier: int, distance_km: float, config: AllocationConfig
) -> datetime:
    """Handling minutes of the tier plus travel at courier speed."""
    promise = config.tiers.get(tier)
    handling = promise.handling_minutes if promise is not None else 0.0
    travel = distance_km / config.courier_speed_kmh * 60.0
    return received_at + timedelta(minutes=round(handling + travel, 1))


def _walk(
    lines: tuple[Line, ...],
    snapshot: Snapshot,
    config: AllocationConfig,
    route: Route,
    want_split: bool,
) -> _Walk:
    """``lines``: the order's demand (:func:`_demand`)."""
    walk = _Walk()
    stock = snapshot.stock
    loaded = snapshot.loaded
    limit = config.trace_limit
    wanted = config.nearest
    split_pool = max(wanted, config.max_parts * 4)
    dropped_rows = walk.dropped

    for distance, wid, wh, dropped in (route.stops if route.source is None else route):
        walk.examined += 1
        walk.farthest = d = distance
        if dropped is not None:
            if len(dropped_rows) < limit:
                dropped_rows.append(dropped)
            else:
                walk.omitted += 1
            continue
        if loaded is not None:
            for line in lines:
                if (wid, line.sku_id) not in loaded:
                    raise IncompleteSnapshot(wid, walk.examined)
        per = stock.get(wid)
        short: Line | None = None
        short_have = 0
        covered = 0
        walk.eligible += 1
        for line in lines:
            st = None if per is None else per.get(line.sku_id)
            have = 0 if st is None else st.on_hand - st.reserved - st.safety_stock
            if have < line.qty:
                sku = line.sku_id
                if walk.short_at.get(sku) != walk.examined:  # once per warehouse per SKU
                    walk.short_at[sku] = walk.examined
                    walk.short[sku] = walk.short.get(sku, 0) + 1
                if short is None:
                    short, short_have = line, max(0, have)
            else:
                covered += 1
        if short is not None:
            why = f"short of {short.sku_id}: {short_have} sellable < {short.qty} ordered"
            if len(dropped_rows) < limit:
                dropped_rows.append(trace_row((wid, d, None, None, None, False, "stock", why)))
            else:
                walk.omitted += 1
            if want_split and covered and len(walk.partial) < split_pool:
                walk.partial.append(_Feasible(wh, distance))
            continue
        walk.feasible.append(_Feasible(wh, distance))
        if want_split and len(walk.partial) < split_pool:
            walk.partial.append(_Feasible(wh, distance))
        if len(walk.feasible) >= wanted and (not want_split or len(walk.partial) >= split_pool):
            break
    return walk


def _rate_and_depth(f: _Feasible, lines: Sequence[Line],
                    stock: dict[str, dict[str, StockState]]) -> None:
    per = stock.get(f.warehouse.id) or {}
    rate = 0.0
    depth = math.inf
    rate_sku = None
    for line in lines:
        st = per.get(line.sku_id)
        if st is None or st.on_hand <= 0:
            if rate < 1.0:
                rate, rate_sku = 1.0, line.sku_id
            depth = 0.0
            continue
        on_hand = st.on_hand
        line_rate = st.reserved / on_hand
        if line_rate > rate:
            rate, rate_sku = line_rate, line.sku_id
        line_depth = (on_hand - st.reserved - st.safety_stock) / line.qty
        if line_depth < depth:
            depth = line_depth
    f.rate = rate
    f.rate_sku = rate_sku
    f.depth = 0.0 if depth == math.inf else depth


def _reservation_why(f: _Feasible, snapshot: Snapshot, config: AllocationConfig) -> str | None:
    """Why layer 2 drops ``f`` for its reservation rate, or None. In the ``warehouse``
    scope this sets ``f.rate`` to the warehouse-wide rate (the trace shows what was tested)."""
    threshold = config.reservation_threshold
    if config.reservation_scope == "warehouse":
        totals = snapshot.totals
        held = None if totals is None else totals.get(f.warehouse.id)
        if held is None:
            raise AllocationError(f"snapshot lacks the stock totals of {f.warehouse.id!r} "
                                  "(reservation_scope = warehouse)")
        on_hand, reserved = held
        f.rate = reserved / on_hand if on_hand > 0 else 1.0
        if f.rate <= threshold:
            return None
        return (f"warehouse-wide reservation rate {f.rate:.0%} ({reserved} of {on_hand} "
                f"units reserved, all SKUs) above {threshold:.0%} (scope: warehouse)")
    if f.rate <= threshold:
        return None
    # the SKU that set it: the warehouse as a whole may look nearly empty
    st = snapshot.stock_of(f.warehouse.id, f.rate_sku or "")
    numbers = "none on hand" if st is None or st.on_hand <= 0 else (
        f"{st.reserved} of {st.on_hand} reserved")
    return (f"reservation rate of {f.rate_sku} {f.rate:.0%} ({numbers}) above "
            f"{threshold:.0%} (scope: per_sku)")


def _over_capacity(wh: WarehouseState) -> bool:
    return (not wh.capacity_override and wh.daily_capacity > 0
            and wh.handled_today >= wh.daily_capacity)


def allocate(
    order: OrderRequest,
    snapshot: Snapshot,
    config: AllocationConfig,
    *,
    exclude: frozenset[str] = frozenset(),
    routes: Routes | None = None,
) -> Decision:
    """Decide where ``order`` goes. Never mutates the snapshot (see :func:`apply`).
    ``routes``: a batch's memo of destinations (:func:`allocate_batch`); without one the
    geofence is walked afresh (nothing is kept: one order, or orders from everywhere)."""
    tier = tier_of(order, config)
    need_cold = needs_cold_chain(order, snapshot, config)
    version = config.version
    route = (Route(order, snapshot, need_cold, exclude, keep=False) if routes is None
             else routes.of(order, snapshot, need_cold, exclude))
    lines = _demand(order.lines)
    walk = _walk(lines, snapshot, config, route, False)
    traces: list[CandidateTrace] = []
    kept: list[_Feasible] = []
    threshold = config.reservation_threshold
    warehouse_scope = config.reservation_scope == "warehouse"
    stock = snapshot.stock
    for f in walk.feasible:
        _rate_and_depth(f, lines, stock)
        wh = f.warehouse
        if (f.rate > threshold or warehouse_scope) and (
                why := _reservation_why(f, snapshot, config)) is not None:
            traces.append(trace_row((wh.id, f.distance_km, round(f.rate, 4), round(f.depth, 3),
                                  None, False, "inventory", why)))
        elif _over_capacity(wh):
            why = f"daily handling capacity reached ({wh.handled_today}/{wh.daily_capacity})"
            traces.append(trace_row((wh.id, f.distance_km, round(f.rate, 4), round(f.depth, 3),
                                  None, False, "capacity", why)))
        else:
            kept.append(f)
    parts: tuple[Part, ...] = ()
    reason: str | None = None
    if kept:
        scored = _rank(kept, config)
        best = scored[0][1]
        best_id = best.warehouse.id
        traces.append(trace_row((best_id, best.distance_km, round(best.rate, 4),
                              round(best.depth, 3), scored[0][0], True, None, None)))
        for rank, (score, f) in enumerate(scored[1:], start=2):
            traces.append(trace_row((f.warehouse.id, f.distance_km, round(f.rate, 4),
                                  round(f.depth, 3), score, False, "ranking",
                                  f"ranked {rank}: lower score than {best_id}")))
        parts = (Part(best.warehouse.id, best.distance_km, order.lines),)
    elif config.split_shipments and len(order.lines) > 1:
        if not route.keep:  # walked once already, and nothing kept of it
            route = Route(order, snapshot, need_cold, exclude, keep=False)
        parts, split_traces, reason = _split(order, snapshot, config, route)
        traces.extend(split_traces)
    else:
        reason = _unallocated_reason(walk, need_cold, snapshot, config)
    if parts:
        reason = None
    traces.extend(walk.dropped)
    traces.sort(key=_BY_DISTANCE)
    eta = None
    if parts:
        start = order.handling_from or order.received_at
        eta = eta_for(start, tier, max(p.distance_km for p in parts), config)
    return Decision(
        order_id=order.order_id, tier=tier, need_cold_chain=need_cold,
        rule_set_version=version, parts=parts, eta=eta, reason=reason,
        candidates=tuple(traces), examined=walk.examined,
        farthest_examined_km=walk.farthest, omitted=walk.omitted,
    )


def _rank(kept: list[_Feasible], config: AllocationConfig) -> list[tuple[float, _Feasible]]:
    nearest = min(f.distance_km for f in kept)
    deepest = max(f.depth for f in kept)
    total = config.weight_distance + config.weight_depth
    wd = config.weight_distance / total
    wdepth = config.weight_depth / total
    ranked: list[tuple[float, float, str, _Feasible]] = []
    for f in kept:
        closeness = 1.0 if f.distance_km <= 0 else (nearest + 0.1) / (f.distance_km + 0.1)
        depth = 1.0 if deepest <= 0 else f.depth / deepest
        score = round(wd * closeness + wdepth * depth, 6)
        ranked.append((-score, f.distance_km, f.warehouse.id, f))
    # highest score, then nearest, then warehouse id (unique: the tuples never compare f)
    ranked.sort()
    return [(-r[0], r[3]) for r in ranked]


def _unallocated_reason(
    walk: _Walk, need_cold: bool, snapshot: Snapshot, config: AllocationConfig
) -> str:
    if not snapshot.warehouses:
        return "no warehouses configured"
    if walk.feasible:
        return ("every nearby warehouse that stocks the order is above the reservation "
                "threshold or at daily capacity")
    kind = "available cold-chain" if need_cold else "available"
    if not walk.eligible:
        return f"no {kind} warehouse to take it (paused, tripped, excluded or not cold-chain)"
    # the SKUs no eligible warehouse could cover are what an operator has to restock
    nowhere = [sku for sku, n in walk.short.items() if n == walk.eligible]
    if nowhere:
        return f"no {kind} warehouse has sellable stock of {', '.join(nowhere)}"
    return f"no {kind} warehouse has sellable stock of every item together"


def _split(
    order: OrderRequest,
    snapshot: Snapshot,
    config: AllocationConfig,
    route: Route,
) -> tuple[tuple[Part, ...], list[CandidateTrace], str | None]:
    """Greedy split: repeatedly take the warehouse covering the most remaining lines."""
    demand = _demand(order.lines)
    walk = _walk(demand, snapshot, config, route, True)
    pool: list[_Feasible] = []
    traces: list[CandidateTrace] = []
    per_sku = config.reservation_scope == "per_sku"
    for f in walk.partial:
        _rate_and_depth(f, demand, snapshot.stock)
        if _over_capacity(f.warehouse):
            continue
        if not per_sku and _reservation_why(f, snapshot, config) is not None:
            continue
        pool.append(f)
    remaining = list(order.lines)
    parts: list[Part] = []
    while remaining and len(parts) < config.max_parts and pool:
        best: tuple[int, float, str, _Feasible, list[Line]] | None = None
        for f in pool:
            per = snapshot.stock.get(f.warehouse.id) or {}
            covers = []
            taken: dict[str, int] = {}  # of each SKU by the lines covered here so far
            for line in remaining:
                st = per.get(line.sku_id)
                need = taken.get(line.sku_id, 0) + line.qty
                if st is not None and st.on_hand > 0 and st.sellable >= need and (
                    not per_sku or st.reserved / st.on_hand <= config.reservation_threshold
                ):
                    covers.append(line)
                    taken[line.sku_id] = need
            if not covers:
                continue
            key = (-len(covers), f.distance_km, f.warehouse.id)
            if best is None or key < best[:3]:
                best = (key[0], key[1], key[2], f, covers)
        if best is None:
            break
        f, covers = best[3], best[4]
        parts.append(Part(f.warehouse.id, round(f.distance_km, 3), tuple(covers)))
        traces.append(CandidateTrace(f.warehouse.id, round(f.distance_km, 3), round(f.rate, 4),
                                     round(f.depth, 3), chosen=True,
                                     why=f"split part {len(parts)}: {len(covers)} line(s)"))
        # by identity: two equal lines (same SKU and quantity) may land apart
        covered = {id(line) for line in covers}
        remaining = [line for line in remaining if id(line) not in covered]
        pool.remove(f)
    if remaining:
        reason = (f"no split into at most {config.max_parts} parts covers every item "
                  f"({', '.join(sorted({line.sku_id for line in remaining}))} left)")
        return (), [], reason
    return tuple(parts), traces, None


def batch_order(orders: Iterable[OrderRequest], config: AllocationConfig) -> list[OrderRequest]:
    """Highest tier (lowest number) first, then oldest; ties keep the given order (stable)."""
    return sorted(orders, key=lambda o: (tier_of(o, config), o.received_at))


def allocate_batch(
    orders: Iterable[OrderRequest],
    snapshot: Snapshot,
    config: AllocationConfig,
    *,
    exclude: frozenset[str] = frozenset(),
    routes: Routes | None = None,
) -> list[Decision]:
    """Allocate in tier/age order, reserving in the snapshot as it goes (mutates it).
    Each destination's geofence walk is kept for the batch (:class:`Routes`; pass one to
    keep it across the calls of one batch decided in parts)."""
    decisions = []
    routes = routes if routes is not None else Routes()
    for order in batch_order(orders, config):
        decision = allocate(order, snapshot, config, exclude=exclude, routes=routes)
        if decision.allocated:
            apply(decision, snapshot)
        decisions.append(decision)
    return decisions
