"""Give waiting orders another try once stock or warehouses come back.

An order nobody could take is kept, never dropped: ``unallocated`` at intake, or
``needs_attention`` when a reroute found no backup. :func:`retry_waiting` runs the same
engine over their lines that hold no stock (a split's lines still held at a working
warehouse stay there) again (highest tier, then oldest first), in one transaction: the ones
that now fit are allocated exactly as at intake (reservations, load, an ``allocated``
timeline entry marked ``retry`` and a decision record of kind ``retry``); the rest stay
as they are, with nothing written, so retrying often costs no rows.

The app calls it after stock or warehouses change (catalog writes and imports; a breaker
clearing or a warehouse resumed), and ``POST /orders/retry`` lets an operator run it.
Handling starts when the retry places the order, so its ETA counts from then, not from
when the order first arrived.
"""

from __future__ import annotations

import time
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from coordinator import engine, snapshots
from coordinator.db import Database, write_transaction
from coordinator.engine import Line, OrderRequest, eta_for
from coordinator.errors import StoreError
from coordinator.ledger import WAITING_STATUSES, Ledger, line_warehouses, to_json
from coordinator.settings import AllocationConfig
from protocols.geo import great_circle_km
from protocols.timestamps import parse_stamp, stamp

# more SKUs written than this: every waiting order is a candidate (no SKU filter)
SKU_FILTER_MAX = 1000


@dataclass(frozen=True, slots=True)
class Placed:
    order_id: str
    previous_status: str
    warehouse_id: str
    distance_km: float
    eta: str
    tier: int


@dataclass(frozen=True, slots=True)
class StillWaiting:
    order_id: str
    status: str
    reason: str


@dataclass(frozen=True, slots=True)
class RetryResult:
    placed: list[Placed] = field(default_factory=list)
    waiting: list[StillWaiting] = field(default_factory=list)
    seconds: float = 0.0

    def summary(self) -> dict[str, Any]:
        return {"placed": len(self.placed), "still_waiting": len(self.waiting),
                "seconds": round(self.seconds, 4)}


@dataclass(slots=True)
class _Waiting:
    order_id: str
    channel: str
    status: str
    lat: float
    lon: float
    received_at: datetime
    tier: int
    lines: list[tuple[int, Line]]  # the lines holding no stock: what a retry places
    held_at: set[str]  # warehouses still holding its other lines (part of a split)


def _waiting_orders(db: Database, order_ids: Sequence[str] | None,
                    sku_ids: Collection[str] | None, limit: int) -> list[_Waiting]:
    marks = ",".join("?" * len(WAITING_STATUSES))
    base = (f"SELECT id, channel, status, lat, lon, received_at, tier FROM orders "
            f"WHERE status IN ({marks})")
    params: list[Any] = list(WAITING_STATUSES)
    if sku_ids is not None and len(sku_ids) > SKU_FILTER_MAX:
        # a bulk catalogue write (a 372,000-SKU import): one parameter per SKU passes
        # PostgreSQL's 65,535 and SQLite's 32,766 limits, and so many SKUs concern nearly
        # every waiting order anyway; the limit still bounds the pass
        sku_ids = None
    if sku_ids is not None:
        if not sku_ids:
            return []
        wanted = sorted(sku_ids)
        base += (" AND id IN (SELECT order_id FROM order_lines WHERE sku_id IN "
                 f"({','.join('?' * len(wanted))}))")
        params.extend(wanted)
    rows: list[tuple[Any, ...]] = []
    if order_ids is None:
        rows = db.execute(base + " ORDER BY tier, received_at, id LIMIT ?",
                          [*params, limit]).fetchall()
    else:
        # in chunks: SQLite takes at most 32,766 parameters in one statement
        ids = sorted(set(order_ids))
        for first in range(0, len(ids), 500):
            chunk = ids[first:first + 500]
            rows += db.execute(base + f" AND id IN ({','.join('?' * len(chunk))})",
                               [*params, *chunk]).fetchall()
        rows = sorted(rows, key=lambda r: (r[6], r[5], r[0]))[:limit]
    waiting: dict[str, _Waiting] = {}
    for oid, channel, status, lat, lon, received, tier in rows:
        waiting[oid] = _Waiting(oid, channel, status, lat, lon, parse_stamp(received), tier,
                                [], set())
    ids = list(waiting)
    for start in range(0, len(ids), 500):
        chunk = ids[start:start + 500]
        marks = ",".join("?" * len(chunk))
        # A reroute that found no backup released only the lines it held at the failed
        # warehouse; lines of a split still held elsewhere stay where they are.
        for oid, line_no, sku, qty in db.execute(
            "SELECT l.order_id, l.line_no, l.sku_id, l.qty FROM order_lines l "
            f"WHERE l.order_id IN ({marks}) AND NOT EXISTS ("
            "SELECT 1 FROM reservations r WHERE r.order_id = l.order_id "
            "AND r.line_no = l.line_no AND r.status = 'held') "
            "ORDER BY l.order_id, l.line_no",
            chunk,
        ).fetchall():
            waiting[oid].lines.append((line_no, Line(sku, qty)))
        for oid, wid in db.execute(
            "SELECT DISTINCT order_id, warehouse_id FROM reservations "
            f"WHERE order_id IN ({marks}) AND status = 'held'", chunk,
        ).fetchall():
            waiting[oid].held_at.add(wid)
    return [w for w in waiting.values() if w.lines]


def retry_waiting(
    db: Database,
    *,
    now: datetime,
    config: AllocationConfig,
    order_ids: Sequence[str] | None = None,
    sku_ids: Collection[str] | None = None,
    limit: int = 1000,
    trigger: str = "operator",
) -> RetryResult:
    """Allocate what now fits among waiting orders; see the module.

    ``order_ids`` and ``sku_ids`` narrow the candidates (orders with a line of one of
    ``sku_ids``): after new stock of a few SKUs, the oldest ``limit`` waiting orders may all
    be stuck on something else, and must not keep the ones that now fit from being tried.
    ``trigger`` says in the timeline what set the retry off (``operator`` for a person;
    anything else counts as the system healing itself, see coordinator.ops.metrics).
    """
    started = time.perf_counter()
    ledger = Ledger(now)
    at = ledger.at
    placed: list[Placed] = []
    still: list[StillWaiting] = []
    with write_transaction(db):
        waiting = _waiting_orders(db, order_ids, sku_ids, limit)
        if not waiting:
            return RetryResult(seconds=time.perf_counter() - started)
        by_id = {w.order_id: w for w in waiting}
        requests = [
            OrderRequest(w.order_id, w.channel, tuple(line for _, line in w.lines), w.lat,
                         w.lon, w.received_at, tier=w.tier, handling_from=now)
            for w in waiting
        ]
        snapshot = snapshots.snapshot_for(db, requests, now=now, config=config,
                                          complete=True).snapshot
        for decision in engine.allocate_batch(requests, snapshot, config):
            w = by_id[decision.order_id]
            if not decision.allocated:
                still.append(StillWaiting(w.order_id, w.status,
                                          decision.reason or "no warehouse can serve it"))
                continue
            wid = decision.warehouse_id
            assert wid is not None
            distance = decision.distance_km or 0.0
            eta = stamp(decision.eta) if decision.eta is not None else at
            parts = [p.warehouse_id for p in decision.parts]
            if w.held_at:
                # the order as a whole: its new part(s) and the parts still held elsewhere;
                # it arrives with its farthest part
                parts += sorted(w.held_at - set(parts))
                distance = max([distance] + [
                    round(great_circle_km(w.lat, w.lon, snapshot.warehouses[h].lat,
                                          snapshot.warehouses[h].lon), 3)
                    for h in w.held_at if h in snapshot.warehouses])
                eta = stamp(eta_for(now, decision.tier, distance, config))
            lines = tuple(line for _, line in w.lines)
            placement = line_warehouses(decision, lines)
            for index, (no, line) in enumerate(w.lines):
                at_wh = placement[index]
                if at_wh is None:
                    message = f"retry of {w.order_id}: line {no} is in no part of the decision"
                    raise StoreError(message)
                ledger.place_line(w.order_id, no, at_wh)
                ledger.hold(w.order_id, no, line.sku_id, at_wh, line.qty)
            for part in decision.parts:
                ledger.count_load(part.warehouse_id)
            ledger.place_waiting(w.order_id, wid, distance, eta, decision.tier)
            ledger.event(w.order_id, "allocated", {
                "warehouse_id": wid, "distance_km": distance, "eta": eta,
                "tier": decision.tier, "parts": parts, "retry": True,
                "previous_status": w.status, "trigger": trigger,
            })
            ledger.decision(w.order_id, "retry", decision, "allocated",
                            warehouse_ids=to_json(parts))
            placed.append(Placed(w.order_id, w.status, wid, distance, eta, decision.tier))
        if placed:  # read and written under one write lock: a status change is a bug
            ledger.flush(db)
    return RetryResult(placed, still, time.perf_counter() - started)
