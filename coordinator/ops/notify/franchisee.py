"""Franchisee notices and coupons, queued in the caller's transaction (either backend).

- :func:`compose_store_notices` and :func:`queue_store_notices`: one incident's moved
  orders (``reroute_notice``): ONE message per store (a Chinese text plus the structured
  orders), one coupon per store. The reroute's transaction records that they are owed
  (:func:`defer_store_notices`); they are composed from the committed incident outside
  any write transaction and queued in a short one of their own; the outbox's dedupe key
  makes it once per store and incident however often either step is repeated.
- :func:`queue_placed_notices`: orders an incident left stuck (``needs_attention``) that a
  later retry placed (``placed_notice``: the warehouse, the new ETA and the coupon for the
  wait), found by a sweep over the order timeline past a cursor, so every way a retry runs
  (a breaker clearing, a restock over HTTP, an operator) is covered.

Coupon codes come from :func:`coupon_code` (deterministic: a replay yields the same code).
"""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlite_utils import Migrations

from coordinator.db import Database, json_text
from coordinator.ops.config import FranchiseeConfig
from coordinator.ops.notify import outbox
from coordinator.ops.notify.outbox import OutgoingNotice
from coordinator.ops.notify.wording import (
    NoticeOrder,
    local_time,
    short_ref,
    store_notice_text,
)
from protocols.timestamps import parse_stamp, stamp

migrations = Migrations("coordinator_franchisee")


@migrations()
def m001_store_coupons(db: Database) -> None:
    """One compensation coupon per store and incident (the per-store notice names it)."""
    db.execute(
        """
        CREATE TABLE ops_store_coupons (
            incident_id TEXT NOT NULL,
            store_id TEXT NOT NULL,
            code TEXT NOT NULL UNIQUE,
            value_yuan REAL NOT NULL,
            orders INTEGER NOT NULL,
            valid_until TEXT NOT NULL,
            created_at TEXT NOT NULL,
            PRIMARY KEY (incident_id, store_id)
        )
        """
    )


def coupon_code(prefix: str, order_id: str, incident_id: str) -> str:
    """Deterministic, unique per (order or store, incident): a replay yields the same code."""
    digest = hashlib.blake2b(f"{order_id}\x1f{incident_id}".encode(), digest_size=8)
    return f"{prefix}-{digest.hexdigest().upper()}"


_MOVED = """
SELECT io.order_id, coalesce(o.store_id, '') AS store_id,
    coalesce(s.name, o.store_id, '') AS store_name, o.channel, o.channel_order_id,
    nw.id AS new_id, nw.name AS new_name, nw.address AS new_address, io.eta, io.distance_km
FROM incident_orders io
JOIN orders o ON o.id = io.order_id
JOIN warehouses nw ON nw.id = io.new_warehouse_id
LEFT JOIN stores s ON s.id = o.store_id
WHERE io.incident_id = :incident AND io.outcome = 'moved'
ORDER BY o.store_id, o.channel, o.channel_order_id
"""
_LINES = """
SELECT l.order_id, coalesce(nullif(k.name, ''), l.sku_id), l.qty
FROM order_lines l LEFT JOIN skus k ON k.id = l.sku_id
WHERE l.order_id IN (SELECT order_id FROM incident_orders
                     WHERE incident_id = :incident AND outcome = 'moved')
ORDER BY l.order_id, l.line_no
"""
COUPON_PURPOSE = ("compensation for the delay of this incident's rerouted orders, usable on "
                  "the store's next order")


@migrations()
def m002_pending_store_notices(db: Database) -> None:
    """An incident whose store notices are still to be composed: written in the reroute's
    transaction, deleted in the one that queues them (so a crash in between loses none)."""
    db.execute(
        """
        CREATE TABLE ops_pending_store_notices (
            incident_id TEXT PRIMARY KEY,
            reason TEXT NOT NULL,
            tripped_at TEXT NOT NULL,
            warehouse_name TEXT NOT NULL,
            created_at TEXT NOT NULL
        )
        """
    )


@dataclass(frozen=True, slots=True)
class PendingStoreNotices:
    """An incident's store notices to compose: what the reroute knew of the trip."""

    incident_id: str
    reason: str
    tripped_at: datetime
    warehouse_name: str


@dataclass(frozen=True, slots=True)
class StoreNotices:
    """One incident's composed store notices and coupons, ready to queue."""

    incident_id: str
    notices: list[OutgoingNotice]
    coupons: list[tuple[str, str, str, float, int, str, str]]
    at: datetime


def defer_store_notices(db: Database, incident_id: str, *, reason: str, at: datetime,
                        warehouse_name: str, now: datetime) -> None:
    """Record, in the reroute's transaction, that the incident's store notices are to be
    composed (:func:`compose_store_notices`, then :func:`queue_store_notices`).

    Why not compose them in that transaction: one message per store listing every moved
    order is megabytes of text for a large reroute (0.15 s for 10,000 orders), and the
    reroute's commit, with the write lock every intake waits for, need not wait for it.
    This row commits with the moves, so the notices are owed from that moment: a crash
    before they are queued leaves it for the next ops round (on any instance)."""
    db.conn.execute(
        "INSERT INTO ops_pending_store_notices (incident_id, reason, tripped_at, "
        "warehouse_name, created_at) VALUES (?, ?, ?, ?, ?) "
        "ON CONFLICT (incident_id) DO NOTHING",
        (incident_id, reason, stamp(at), warehouse_name, stamp(now)))


def pending_store_notices(db: Database) -> list[PendingStoreNotices]:
    """The incidents whose store notices are owed, oldest first."""
    return [PendingStoreNotices(r[0], r[1], parse_stamp(r[2]), r[3]) for r in db.execute(
        "SELECT incident_id, reason, tripped_at, warehouse_name "
        "FROM ops_pending_store_notices ORDER BY created_at, incident_id").fetchall()]


def compose_store_notices(db: Database, pending: PendingStoreNotices, *,
                          config: FranchiseeConfig, timezone: str) -> StoreNotices:
    """ONE notice per store for an incident's moved orders, with one compensation coupon
    per store (reads only: run it outside the write transaction).

    Each notice carries ``text`` (a Chinese message for the franchisee: the orders with
    their channel order numbers and items, the new warehouse and address, the local ETA,
    the coupon, what it is for and until when) and the same facts as structured JSON for
    integrations. ``pending.tripped_at`` is the trip time (event time)."""
    incident_id, reason, at = pending.incident_id, pending.reason, pending.tripped_at
    rows = db.conn.execute(_MOVED, {"incident": incident_id}).fetchall()
    if not rows:
        return StoreNotices(incident_id, [], [], at)
    items: dict[str, list[tuple[str, int]]] = {}
    for order_id, name, qty in db.conn.execute(_LINES, {"incident": incident_id}):
        items.setdefault(order_id, []).append((str(name), int(qty)))
    by_store: dict[str, list[Any]] = {}
    for r in rows:
        by_store.setdefault(r[1], []).append(r)
    valid_until = at + timedelta(days=config.coupon_valid_days)
    notices: list[OutgoingNotice] = []
    coupons: list[tuple[str, str, str, float, int, str, str]] = []
    for store_id, orders in by_store.items():
        code = coupon_code(config.coupon_prefix, f"store:{store_id}", incident_id)
        coupons.append((incident_id, store_id, code, config.coupon_value_yuan, len(orders),
                        stamp(valid_until), stamp(at)))
        listed = [NoticeOrder(r[0], r[3], r[4], tuple(items.get(r[0], ())), r[6], r[7],
                              datetime.fromisoformat(r[8]) if r[8] else None) for r in orders]
        text = store_notice_text(
            store_name=orders[0][2], warehouse_name=pending.warehouse_name, reason=reason,
            tripped_at=at, orders=listed, coupon_code=code,
            coupon_value_yuan=config.coupon_value_yuan, valid_until=valid_until,
            incident_ref=short_ref(incident_id), timezone=timezone)
        payload = {
            "type": "reroute_notice", "store_id": store_id, "store_name": orders[0][2],
            "incident_id": incident_id, "incident_ref": short_ref(incident_id),
            "reason": reason, "tripped_at": stamp(at),
            "tripped_at_local": local_time(at, timezone), "text": text,
            "orders": [{"order_id": r[0], "channel": r[3], "channel_order_id": r[4],
                        "items": [{"name": n, "qty": q} for n, q in items.get(r[0], ())],
                        "new_warehouse": {"id": r[5], "name": r[6], "address": r[7]},
                        "distance_km": round(r[9], 2) if r[9] is not None else None,
                        "new_eta": r[8]} for r in orders],
            "coupon": {"code": code, "value_yuan": config.coupon_value_yuan,
                       "purpose": COUPON_PURPOSE, "valid_until": stamp(valid_until)},
            "issued_at": stamp(at),
        }
        notices.append(OutgoingNotice("franchisee", f"franchisee:{incident_id}:{store_id}",
                                      payload, incident_id))
    return StoreNotices(incident_id, notices, coupons, at)


def queue_store_notices(db: Database, composed: StoreNotices) -> int:
    """Queue composed notices with their coupons and settle what was owed (caller's
    transaction). Returns how many notices were new: 0 when the incident was queued
    before (the dedupe key is ``franchisee:<incident>:<store>``, a coupon's key its
    incident and store), so queueing twice is harmless."""
    # one statement for every store (PostgreSQL: one round trip, not one per store)
    db.conn.executemany(
        "INSERT INTO ops_store_coupons (incident_id, store_id, code, value_yuan, orders, "
        "valid_until, created_at) VALUES (?, ?, ?, ?, ?, ?, ?) "
        "ON CONFLICT (incident_id, store_id) DO NOTHING", composed.coupons)
    db.conn.execute("DELETE FROM ops_pending_store_notices WHERE incident_id = ?",
                    (composed.incident_id,))
    return outbox.queue(db, composed.notices, composed.at)


# events a sweep reads per tick at most, and how old a late placement may be to be told
PLACED_SWEEP_SPAN = 50_000
PLACED_NOTICE_MAX_AGE = timedelta(days=1)


def _placed_sql(db: Database) -> str:
    """Allocations by a retry of an order some incident had left stuck, with that incident
    (the latest one that left it stuck before the retry), the order's store, the new
    warehouse and the coupon already issued for it (NULL when none)."""
    field = functools.partial(json_text, db, "e.detail")
    return f"""
SELECT p.event_id, p.order_id, p.at, p.incident_id, p.distance_km, p.eta, o.store_id,
    w.id, w.name, w.address, c.code
FROM (SELECT e.id AS event_id, e.order_id, e.at,
        {field("warehouse_id")} AS warehouse_id, {field("distance_km")} AS distance_km,
        {field("eta")} AS eta,
        (SELECT io.incident_id FROM incident_orders io
         JOIN incidents i ON i.id = io.incident_id
         WHERE io.order_id = e.order_id AND io.outcome = 'stuck' AND i.started_at <= e.at
         ORDER BY i.started_at DESC LIMIT 1) AS incident_id
    FROM order_events e
    WHERE e.id > :after AND e.id <= :upto AND e.kind = 'allocated'
        AND {field("previous_status")} = 'needs_attention' AND e.at >= :since) AS p
JOIN orders o ON o.id = p.order_id
JOIN warehouses w ON w.id = p.warehouse_id
LEFT JOIN ops_coupons c ON c.order_id = p.order_id AND c.incident_id = p.incident_id
WHERE p.incident_id IS NOT NULL
ORDER BY p.event_id
"""


def placed_notices_cursor(db: Database) -> int:
    row = db.execute("SELECT value FROM ops_cursors WHERE name = 'placed_notices'").fetchone()
    return 0 if row is None else int(row[0])


def has_placed_events(db: Database, *, after: int, upto: int) -> bool:
    """Whether order events ``after < id <= upto`` hold a late placement (read only)."""
    row = db.execute(
        "SELECT 1 FROM order_events WHERE id > ? AND id <= ? AND kind = 'allocated' "
        f"AND {json_text(db, 'detail', 'previous_status')} = 'needs_attention' LIMIT 1",
        [after, upto]).fetchone()
    return row is not None


def queue_placed_notices(db: Database, *, after: int, upto: int, at: datetime,
                         config: FranchiseeConfig) -> int:
    """Queue a notice and a coupon for every stuck order a retry placed, in the order
    events ``after < id <= upto`` (placements older than a day are not told any more);
    moves the stored cursor to ``upto`` (caller's transaction).

    Coupon codes are computed here (:func:`coupon_code`), not in SQL, so both backends
    run the same statements; an order's coupon issued before (a repeated sweep) keeps
    its code. Returns how many notices were new (a repeated sweep queues nothing twice)."""
    if upto <= after:
        return 0
    now = stamp(at)
    rows = db.conn.execute(_placed_sql(db), {
        "after": after, "upto": upto,
        # compared as text with order_events.at: the store's format, not the outbox's
        "since": stamp(at - PLACED_NOTICE_MAX_AGE)}).fetchall()
    codes = {(r[1], r[3]): r[10] or coupon_code(config.coupon_prefix, r[1], r[3]) for r in rows}
    db.conn.executemany(
        "INSERT INTO ops_coupons (order_id, incident_id, code, created_at) VALUES (?, ?, ?, ?) "
        "ON CONFLICT DO NOTHING",
        [(order_id, incident_id, code, now) for (order_id, incident_id), code in codes.items()])
    notices = [OutgoingNotice("franchisee", f"franchisee:{r[3]}:{r[1]}:placed", {
        "type": "placed_notice", "order_id": r[1], "store_id": r[6], "incident_id": r[3],
        "new_warehouse": {"id": r[7], "name": r[8], "address": r[9]},
        "distance_km": round(float(r[4]), 2) if r[4] is not None else None,
        "new_eta": r[5], "placed_at": r[2],
        "coupon": {"code": codes[(r[1], r[3])], "value_yuan": config.coupon_value_yuan},
        "issued_at": now}, r[3]) for r in rows]
    queued = outbox.queue(db, notices, at)
    db.conn.execute(
        "INSERT INTO ops_cursors (name, value) VALUES ('placed_notices', ?) "
        "ON CONFLICT (name) DO UPDATE SET value = excluded.value", [upto])
    return queued
