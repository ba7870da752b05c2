"""Move a failed warehouse's unshipped orders to backups, in one transaction, once.

:func:`reroute_warehouse` reads one snapshot (every warehouse, stock of the SKUs involved),
re-allocates with the same engine (the failed warehouse excluded) highest tier and oldest
first, updating the snapshot in memory as it goes, then writes everything with one
``executemany`` per statement. It runs inside ``db.atomic()`` (a savepoint when the caller
already holds a transaction, so notifications can be queued in the same commit).

Idempotent per ``incident_id``: a second call returns the stored result and writes nothing.
"""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlite_utils import Database

from coordinator import engine
from coordinator.engine import Line, OrderRequest
from coordinator.errors import NotFound
from coordinator.gcpause import gc_paused
from coordinator.settings import AllocationConfig, Settings
from coordinator.store import (
    _INSERT_ALERT,
    _INSERT_DECISION,
    _INSERT_EVENT,
    _day,
    _Writes,
    iso,
    load_snapshot,
    parse_time,
    to_json,
    trace_json,
    write_transaction,
)


@dataclass(frozen=True, slots=True)
class MovedOrder:
    order_id: str
    channel: str
    store_id: str | None
    customer_id: str | None
    old_warehouse_id: str
    new_warehouse_id: str
    distance_km: float
    eta: str
    tier: int


@dataclass(frozen=True, slots=True)
class StuckOrder:
    order_id: str
    channel: str
    store_id: str | None
    customer_id: str | None
    old_warehouse_id: str
    tier: int
    reason: str


@dataclass(frozen=True, slots=True)
class RerouteResult:
    incident_id: str
    warehouse_id: str
    reason: str
    started_at: str
    moved: list[MovedOrder] = field(default_factory=list)
    stuck: list[StuckOrder] = field(default_factory=list)
    already_done: bool = False  # True: this incident was processed before; nothing changed
    seconds: float = 0.0

    @property
    def total(self) -> int:
        return len(self.moved) + len(self.stuck)


@dataclass(slots=True)
class _Affected:
    order_id: str
    channel: str
    store_id: str | None
    customer_id: str | None
    lat: float
    lon: float
    received_at: datetime
    tier: int
    order_warehouse: str | None
    lines: list[tuple[int, Line]]  # (line_no, line) held at the failed warehouse
    reservation_ids: dict[int, int]  # line_no -> reservation row id


def reroute_warehouse(
    db: Database,
    warehouse_id: str,
    *,
    incident_id: str,
    reason: str,
    now: datetime,
    config: AllocationConfig | Settings,
) -> RerouteResult:
    """Re-allocate every unshipped order held at ``warehouse_id``; see the module doc."""
    rules = config.allocation if isinstance(config, Settings) else config
    started = time.perf_counter()
    with gc_paused(), write_transaction(db):
        previous = load_incident(db, incident_id)
        if previous is not None:
            return previous
        if db.execute("SELECT 1 FROM warehouses WHERE id = ?", [warehouse_id]).fetchone() is None:
            raise NotFound("warehouse", warehouse_id)
        affected = _affected_orders(db, warehouse_id)
        decisions = []
        if affected:
            # Nothing held there (a whole fleet tripping after a broker restart is mostly
            # such warehouses): no snapshot of every warehouse to load for nothing.
            skus = {line.sku_id for a in affected.values() for _, line in a.lines}
            snapshot = load_snapshot(db, now=now, sku_ids=skus)
            # the failed warehouse's held stock is given back (excluded from the search)
            requests = [
                OrderRequest(a.order_id, a.channel, tuple(line for _, line in a.lines),
                             a.lat, a.lon, a.received_at, tier=a.tier, handling_from=now)
                for a in affected.values()
            ]
            decisions = engine.allocate_batch(requests, snapshot, rules,
                                              exclude=frozenset([warehouse_id]))
        result = _write(db, warehouse_id, incident_id, reason, now, rules, affected, decisions)
    seconds = time.perf_counter() - started
    return RerouteResult(result.incident_id, result.warehouse_id, result.reason,
                         result.started_at, result.moved, result.stuck, False, seconds)


def _affected_orders(db: Database, warehouse_id: str) -> dict[str, _Affected]:
    rows = db.execute(
        "SELECT o.id, o.channel, o.store_id, o.customer_id, o.lat, o.lon, o.received_at, "
        "o.tier, o.warehouse_id, r.line_no, r.sku_id, r.qty, r.id FROM reservations r "
        "JOIN orders o ON o.id = r.order_id "
        "WHERE r.warehouse_id = ? AND r.status = 'held' AND o.status = 'allocated' "
        "ORDER BY o.tier, o.received_at, o.id, r.line_no",
        [warehouse_id],
    ).fetchall()
    affected: dict[str, _Affected] = {}
    for (oid, channel, store, customer, lat, lon, received, tier, owh, line_no, sku, qty,
         rid) in rows:
        item = affected.get(oid)
        if item is None:
            when = parse_time(received)
            assert when is not None
            item = affected[oid] = _Affected(oid, channel, store, customer, lat, lon, when, tier,
                                             owh, [], {})
        item.lines.append((line_no, Line(sku, qty)))
        item.reservation_ids[line_no] = rid
    return affected


_MOVED_EVENTS = (
    # the order's timeline entry, built inside SQLite from the incident record just written
    # (json_object keeps this key order): no per-order JSON encoding in Python
    "INSERT INTO order_events (order_id, kind, at, detail) "
    "SELECT order_id, 'rerouted', ?, json_object('incident_id', incident_id, "
    "'from', old_warehouse_id, 'to', new_warehouse_id, 'distance_km', distance_km, "
    "'eta', eta, 'tier', tier, 'reason', ?) "
    "FROM incident_orders WHERE incident_id = ? AND outcome = 'moved'"
)
_MOVED_ORDERS = (
    "UPDATE orders SET warehouse_id = io.new_warehouse_id, distance_km = io.distance_km, "
    "eta = io.eta, updated_at = ? FROM incident_orders AS io "
    "WHERE io.incident_id = ? AND io.outcome = 'moved' AND orders.id = io.order_id "
    "AND orders.warehouse_id = ?"
)


def _write(
    db: Database,
    warehouse_id: str,
    incident_id: str,
    reason: str,
    now: datetime,
    rules: AllocationConfig,
    affected: dict[str, _Affected],
    decisions: list[engine.Decision],
) -> RerouteResult:
    stamp = iso(now)
    conn = db.conn
    writes = _Writes()
    reserve = writes.reserve
    load = writes.load
    release: dict[str, int] = defaultdict(int)  # sku -> qty given back at the failed warehouse
    moved: list[MovedOrder] = []
    stuck: list[StuckOrder] = []
    stuck_updates: list[tuple[Any, ...]] = []
    line_moves: list[tuple[Any, ...]] = []
    res_moves: list[tuple[Any, ...]] = []
    res_releases: list[tuple[Any, ...]] = []
    incident_rows: list[tuple[Any, ...]] = []
    decision_rows = writes.decisions
    parts_json: dict[tuple[str, ...], str] = {}  # warehouse_ids column, one text per choice
    for decision in decisions:
        a = affected[decision.order_id]
        oid = a.order_id
        for _, line in a.lines:
            release[line.sku_id] += line.qty
        parts = decision.parts
        if parts:
            new_wh = parts[0].warehouse_id
            if len(parts) == 1:
                for no, line in a.lines:
                    line_moves.append((new_wh, oid, no))
                    res_moves.append((new_wh, stamp, a.reservation_ids[no]))
                    reserve[(new_wh, line.sku_id)] += line.qty
                load[new_wh] += 1
            else:
                # lines of a split land where the engine put them
                placed: dict[int, str] = {}
                for part in parts:
                    for line in part.lines:
                        for no, own in a.lines:
                            if own is line and no not in placed:
                                placed[no] = part.warehouse_id
                        reserve[(part.warehouse_id, line.sku_id)] += line.qty
                    load[part.warehouse_id] += 1
                for no, wid in placed.items():
                    line_moves.append((wid, oid, no))
                    res_moves.append((wid, stamp, a.reservation_ids[no]))
            distance = decision.distance_km or 0.0
            eta = iso(decision.eta) if decision.eta is not None else stamp
            incident_rows.append((incident_id, oid, "moved", warehouse_id, new_wh,
                                  distance, eta, decision.tier, None))
            moved.append(MovedOrder(oid, a.channel, a.store_id, a.customer_id,
                                    warehouse_id, new_wh, distance, eta, decision.tier))
            outcome = "allocated"
            key = tuple(p.warehouse_id for p in parts)
        else:
            why = decision.reason or "no backup warehouse can serve it"
            for no, _ in a.lines:
                res_releases.append((stamp, a.reservation_ids[no]))
            stuck_updates.append((why, stamp, oid))
            detail = {"incident_id": incident_id, "from": warehouse_id, "reason": why}
            writes.events.append((oid, "needs_attention", stamp, to_json(detail)))
            writes.alerts.append((stamp, "needs_attention", oid, warehouse_id, incident_id,
                                  f"order {oid} could not be rerouted from "
                                  f"{warehouse_id}: {why}"))
            incident_rows.append((incident_id, oid, "stuck", warehouse_id, None, None,
                                  None, decision.tier, why))
            stuck.append(StuckOrder(oid, a.channel, a.store_id, a.customer_id,
                                    warehouse_id, decision.tier, why))
            outcome = "unallocated"
            key = ()
        wids = parts_json.get(key)
        if wids is None:
            wids = parts_json[key] = to_json(key)
        decision_rows.append((
            oid, stamp, "reroute", incident_id, decision.rule_set_version, outcome, wids,
            decision.reason, decision.tier, int(decision.need_cold_chain), trace_json(decision),
        ))
    conn.execute(
        "INSERT INTO incidents (id, warehouse_id, reason, started_at, rule_set_version, moved, "
        "stuck) VALUES (?, ?, ?, ?, ?, ?, ?)",
        [incident_id, warehouse_id, reason, stamp, rules.version, len(moved), len(stuck)],
    )
    conn.executemany(
        "UPDATE inventory SET reserved = reserved - ?, updated_at = ? "
        "WHERE warehouse_id = ? AND sku_id = ?",
        [(qty, stamp, warehouse_id, sku) for sku, qty in release.items()],
    )
    writes.reserve_stock(db, stamp)
    writes.add_load(db, _day(now))
    conn.executemany(
        "UPDATE reservations SET warehouse_id = ?, updated_at = ? WHERE id = ?",
        res_moves,
    )
    conn.executemany(
        "UPDATE reservations SET status = 'released', updated_at = ? WHERE id = ?",
        res_releases,
    )
    conn.executemany(
        "UPDATE order_lines SET warehouse_id = ? WHERE order_id = ? AND line_no = ?", line_moves
    )
    conn.executemany(
        "UPDATE orders SET status = 'needs_attention', status_reason = ?, warehouse_id = NULL, "
        "distance_km = NULL, eta = NULL, updated_at = ? WHERE id = ?", stuck_updates,
    )
    conn.executemany(
        "INSERT INTO incident_orders (incident_id, order_id, outcome, old_warehouse_id, "
        "new_warehouse_id, distance_km, eta, tier, reason) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        incident_rows,
    )
    if moved:
        conn.execute(_MOVED_ORDERS, (stamp, incident_id, warehouse_id))
        conn.execute(_MOVED_EVENTS, (stamp, reason, incident_id))
    conn.executemany(_INSERT_EVENT, writes.events)
    conn.executemany(_INSERT_DECISION, decision_rows)
    if writes.alerts:
        conn.executemany(_INSERT_ALERT, writes.alerts)
    return RerouteResult(incident_id, warehouse_id, reason, stamp, moved, stuck)


def load_incident(db: Database, incident_id: str) -> RerouteResult | None:
    """The stored result of an incident (``already_done=True``), or None if unknown."""
    head = db.execute(
        "SELECT warehouse_id, reason, started_at FROM incidents WHERE id = ?", [incident_id]
    ).fetchone()
    if head is None:
        return None
    moved: list[MovedOrder] = []
    stuck: list[StuckOrder] = []
    for row in db.execute(
        "SELECT i.order_id, o.channel, o.store_id, o.customer_id, i.outcome, i.old_warehouse_id, "
        "i.new_warehouse_id, i.distance_km, i.eta, i.tier, i.reason FROM incident_orders i "
        "JOIN orders o ON o.id = i.order_id WHERE i.incident_id = ? "
        "ORDER BY i.tier, o.received_at, i.order_id",
        [incident_id],
    ).fetchall():
        oid, channel, store, customer, outcome, old, new, dist, eta, tier, why = row
        if outcome == "moved":
            moved.append(MovedOrder(oid, channel, store, customer, old, new, dist, eta, tier))
        else:
            stuck.append(StuckOrder(oid, channel, store, customer, old, tier, why))
    return RerouteResult(incident_id, head[0], head[1], head[2], moved, stuck, already_done=True)
