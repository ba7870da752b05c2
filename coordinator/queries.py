"""Reads of the order side for the HTTP routes: an order with its lines and timeline,
its decisions, a warehouse, the orders a warehouse still has to ship, counts.

Writes are the ledger's (:mod:`coordinator.ledger`); these only read, on whichever
connection the caller has.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from coordinator.auth.roles import Scope
from coordinator.catalog import Kind, get_row
from coordinator.db import Database
from coordinator.errors import NotFound
from coordinator.ledger import TIMELINE_LABELS


def get_order(db: Database, order_id: str) -> dict[str, Any]:
    """The order row (items decoded) plus its ``lines`` and ``timeline`` (events in order)."""
    found = _dicts(db, "SELECT * FROM orders WHERE id = ?", [order_id])
    if not found:
        raise NotFound("order", order_id)
    order = found[0]
    order["items"] = json.loads(order["items"])
    order["skewed"] = bool(order["skewed"])
    order["lines"] = _dicts(
        db, "SELECT line_no, sku_id, qty, warehouse_id FROM order_lines WHERE order_id = ? "
        "ORDER BY line_no", [order_id])
    order["timeline"] = [
        {"kind": r["kind"], "label": TIMELINE_LABELS.get(r["kind"], r["kind"]),
         "at": r["at"], "detail": json.loads(r["detail"])}
        for r in _dicts(db, "SELECT kind, at, detail FROM order_events WHERE order_id = ? "
                        "ORDER BY id", [order_id])
    ]
    return order


def get_warehouse(db: Database, warehouse_id: str) -> dict[str, Any]:
    row = get_row(db, Kind.WAREHOUSES, warehouse_id)
    if row is None:
        raise NotFound("warehouse", warehouse_id)
    return row


def warehouse_names(db: Database) -> dict[str, str]:
    """Every warehouse's name by id (traces show names beside ids)."""
    return {str(i): str(n) for i, n in db.execute("SELECT id, name FROM warehouses")}


def sku_names_of_order(db: Database, order_id: str) -> dict[str, str]:
    """The names of an order's SKUs by id (its traces show names beside ids)."""
    return {str(i): str(n) for i, n in db.execute(
        "SELECT DISTINCT s.id, s.name FROM order_lines l JOIN skus s ON s.id = l.sku_id "
        "WHERE l.order_id = ?", [order_id])}


def decisions_of(db: Database, order_id: str) -> list[dict[str, Any]]:
    """Every allocation decision of an order, oldest first, trace decoded."""
    rows = _dicts(db, "SELECT * FROM allocation_decisions WHERE order_id = ? ORDER BY id",
                  [order_id])
    out = []
    for row in rows:
        item = row
        item["trace"] = json.loads(item["trace"])
        item["warehouse_ids"] = json.loads(item["warehouse_ids"])
        item["need_cold_chain"] = bool(item["need_cold_chain"])
        out.append(item)
    return out


@dataclass(frozen=True, slots=True)
class UnshippedOrder:
    order_id: str
    channel: str
    channel_order_id: str
    store_id: str | None
    customer_id: str | None
    tier: int
    received_at: str
    status: str
    warehouse_id: str | None


def unshipped_orders(db: Database, warehouse_id: str) -> list[UnshippedOrder]:
    """Orders with stock still held at ``warehouse_id`` (not yet shipped), tier then age."""
    rows = db.execute(
        "SELECT DISTINCT o.id, o.channel, o.channel_order_id, o.store_id, o.customer_id, "
        "o.tier, o.received_at, o.status, o.warehouse_id FROM reservations r "
        "JOIN orders o ON o.id = r.order_id "
        "WHERE r.warehouse_id = ? AND r.status = 'held' AND o.status = 'allocated' "
        "ORDER BY o.tier, o.received_at, o.id",
        [warehouse_id],
    ).fetchall()
    return [UnshippedOrder(*row) for row in rows]


def skew_count(db: Database) -> int:
    return int(db.execute("SELECT count(*) FROM orders WHERE skewed = 1").fetchone()[0])


def _dicts(db: Database, sql: str, params: Sequence[Any]) -> list[dict[str, Any]]:
    cur = db.conn.execute(sql, list(params))
    names = [c[0] for c in cur.description]
    return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]


def list_orders(db: Database, *, status: str | None, warehouse_id: str | None,
                limit: int, scope: Scope | None = None) -> list[dict[str, Any]]:
    """Orders, newest first, optionally of one status and/or warehouse; with a limited
    ``scope`` only the orders of its stores or warehouses."""
    where: list[str] = []
    params: list[Any] = []
    if status is not None:
        where.append("status = ?")
        params.append(status)
    if warehouse_id is not None:
        where.append("warehouse_id = ?")
        params.append(warehouse_id)
    if scope is not None and not scope.unlimited:
        stores = sorted(scope.stores or ())
        houses = sorted(scope.warehouses or ())
        where.append(f"(store_id IN ({','.join('?' * len(stores)) or 'NULL'}) OR "
                     f"warehouse_id IN ({','.join('?' * len(houses)) or 'NULL'}))")
        params.extend([*stores, *houses])
    sql = ("SELECT id, channel, channel_order_id, store_id, status, warehouse_id, tier, eta, "
           "received_at, skewed FROM orders")
    if where:
        sql += " WHERE " + " AND ".join(where)
    sql += " ORDER BY received_at DESC, id LIMIT ?"
    return _dicts(db, sql, [*params, limit])


def order_owner(db: Database, order_id: str) -> tuple[str | None, str | None] | None:
    """The order's store and warehouse (what scopes are about), None if unknown."""
    row = db.execute("SELECT store_id, warehouse_id FROM orders WHERE id = ?",
                     [order_id]).fetchone()
    return None if row is None else (row[0], row[1])


def order_exists(db: Database, order_id: str) -> bool:
    return db.execute("SELECT 1 FROM orders WHERE id = ?", [order_id]).fetchone() is not None


def order_position(db: Database, order_id: str) -> tuple[float, float]:
    """Where the order is delivered (lat, lon); :class:`NotFound` if unknown."""
    row = db.execute("SELECT lat, lon FROM orders WHERE id = ?", [order_id]).fetchone()
    if row is None:
        raise NotFound("order", order_id)
    return float(row[0]), float(row[1])


def recent_alerts(db: Database, *, limit: int, open_only: bool) -> list[dict[str, Any]]:
    """Newest alerts first; ``open``: the alert's order still waits (null: no order)."""
    sql = ("SELECT a.id, a.at, a.kind, a.order_id, a.warehouse_id, a.incident_id, "
           "a.message, CASE WHEN a.order_id IS NULL THEN NULL "
           "WHEN o.status IN ('unallocated', 'needs_attention') THEN 1 ELSE 0 END AS open "
           "FROM alerts a LEFT JOIN orders o ON o.id = a.order_id")
    if open_only:
        sql += " WHERE o.status IN ('unallocated', 'needs_attention')"
    rows = _dicts(db, sql + " ORDER BY a.id DESC LIMIT ?", [limit])
    for row in rows:
        row["open"] = None if row["open"] is None else bool(row["open"])
    return rows


def orders_by_status(db: Database) -> dict[str, int]:
    return dict(db.execute(
        "SELECT status, count(*) FROM orders GROUP BY status ORDER BY status").fetchall())


def ping(db: Database) -> None:
    """A trivial read: raises when the database cannot be read."""
    db.execute("SELECT 1").fetchone()


def newest_order_event_id(db: Database) -> int:
    """The id of the latest timeline event (0: none yet)."""
    return int(db.execute("SELECT coalesce(max(id), 0) FROM order_events").fetchone()[0])
