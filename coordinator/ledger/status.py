"""Single status changes of one order (shipped, cancelled, courier updates, payment)
and timeline notes, each in its own write transaction; the timeline's labels and the
status transitions they may make."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from coordinator.db import Database, write_transaction
from coordinator.errors import Conflict, NotFound
from coordinator.ledger import statements as sql
from protocols.timestamps import stamp

TIMELINE_LABELS = {
    "received": "已接单",
    "allocated": "已分仓",
    "rerouted": "已改派",
    "shipped": "已出库",
    "in_transit": "在途",
    "delivered": "已送达",
    "unallocated": "待分仓",
    "needs_attention": "需人工处理",
    "cancelled": "已取消",
    "awaiting_payment": "待支付",
    "paid": "已支付",
}
# order status -> events that may follow it (warehouse and courier updates)
TRANSITIONS: dict[str, tuple[str, ...]] = {
    "allocated": ("shipped", "cancelled"),
    "shipped": ("in_transit", "delivered"),
    "in_transit": ("in_transit", "delivered"),
    "unallocated": ("cancelled",),
    "needs_attention": ("cancelled",),
    "awaiting_payment": ("cancelled",),
    "delivered": (),
    "cancelled": (),
}
WAITING_STATUSES = ("unallocated", "needs_attention")
# unpaid and holding no stock (customer.payment.unpaid_reserves_stock = false): no retry
# places it until its payment makes it unallocated
AWAITING_PAYMENT = "awaiting_payment"


def append_order_event(
    db: Database, order_id: str, kind: str, at: datetime, detail: dict[str, Any] | None = None
) -> int:
    """Append one event to an order's timeline (no status change); returns the event id."""
    with write_transaction(db):
        if db.execute("SELECT 1 FROM orders WHERE id = ?", [order_id]).fetchone() is None:
            raise NotFound("order", order_id)
        row = db.conn.execute(
            sql.INSERT_EVENT + " RETURNING id",
            [order_id, kind, stamp(at), json.dumps(detail or {}, ensure_ascii=False, default=str)],
        ).fetchone()
    return int(row[0])


def record_payment(db: Database, order_id: str, at: datetime,
                   detail: dict[str, Any] | None = None) -> str:
    """The order was paid: a ``paid`` timeline entry; an order that waited for it without
    stock (``awaiting_payment``) becomes ``unallocated`` for the retry to place. Returns
    the order's status before."""
    at_text = stamp(at)
    with write_transaction(db):
        row = db.execute("SELECT status FROM orders WHERE id = ?", [order_id]).fetchone()
        if row is None:
            raise NotFound("order", order_id)
        if row[0] == AWAITING_PAYMENT:
            db.execute("UPDATE orders SET status = 'unallocated', status_reason = ?, "
                       "updated_at = ? WHERE id = ?",
                       ["paid: waiting for a warehouse", at_text, order_id])
        db.conn.execute(sql.INSERT_EVENT, [order_id, "paid", at_text,
                                        json.dumps(detail or {}, ensure_ascii=False, default=str)])
    return str(row[0])


def record_status_event(
    db: Database, order_id: str, kind: str, at: datetime, detail: dict[str, Any] | None = None
) -> str:
    """A warehouse or courier update moving the order's status; returns the new status.

    Impossible transitions raise :class:`Conflict`. ``shipped`` consumes the held stock
    (on hand and reserved both drop); ``cancelled`` releases it.
    """
    if kind not in TIMELINE_LABELS or kind in ("received", "allocated", "rerouted",
                                                "unallocated", "needs_attention",
                                                AWAITING_PAYMENT, "paid"):
        message = f"unknown event kind {kind!r}: expected shipped, in_transit, delivered, cancelled"
        raise Conflict(message)
    at_text = stamp(at)
    with write_transaction(db):
        row = db.execute("SELECT status FROM orders WHERE id = ?", [order_id]).fetchone()
        if row is None:
            raise NotFound("order", order_id)
        status = row[0]
        if kind not in TRANSITIONS.get(status, ()):
            message = f"order {order_id} is {status}: cannot become {kind}"
            raise Conflict(message)
        held = db.execute(
            "SELECT id, warehouse_id, sku_id, qty FROM reservations "
            "WHERE order_id = ? AND status = 'held' ORDER BY warehouse_id, sku_id", [order_id],
        ).fetchall()
        if kind == "shipped":
            db.conn.executemany(
                "UPDATE inventory SET on_hand = on_hand - ?, reserved = reserved - ?, "
                "updated_at = ? WHERE warehouse_id = ? AND sku_id = ?",
                [(q, q, at_text, w, s) for _, w, s, q in held],
            )
            db.conn.executemany(
                "UPDATE reservations SET status = 'shipped', updated_at = ? WHERE id = ?",
                [(at_text, r[0]) for r in held],
            )
        elif kind == "cancelled":
            db.conn.executemany(
                "UPDATE inventory SET reserved = reserved - ?, updated_at = ? "
                "WHERE warehouse_id = ? AND sku_id = ?",
                [(q, at_text, w, s) for _, w, s, q in held],
            )
            db.conn.executemany(
                "UPDATE reservations SET status = 'released', updated_at = ? WHERE id = ?",
                [(at_text, r[0]) for r in held],
            )
        db.execute("UPDATE orders SET status = ?, updated_at = ? WHERE id = ?",
                   [kind, at_text, order_id])
        db.conn.execute(sql.INSERT_EVENT, [order_id, kind, at_text,
                                        json.dumps(detail or {}, ensure_ascii=False, default=str)])
    return kind
