"""Franchisee notices and coupons, queued set-wise inside SQLite.

- :func:`queue_franchisee_notices`: one incident's moved orders (``reroute_notice``). One
  ``INSERT ... SELECT`` for the coupons and one for the notices, built with SQLite's
  ``json_object`` from the store's incident record (what moved where, the engine's ETA):
  10,000 notices are queued in the reroute's transaction without a Python loop per order.
- :func:`queue_placed_notices`: orders an incident left stuck (``needs_attention``) that a
  later retry placed (``placed_notice``: the warehouse, the new ETA and the coupon for the
  wait), found by a sweep over the order timeline past a cursor, so every way a retry runs
  (a breaker clearing, a restock over HTTP, an operator) is covered.

Coupon codes come from :func:`coupon_code` (registered as a deterministic SQL function).
"""

from __future__ import annotations

import hashlib
from datetime import datetime, timedelta

from coordinator.db import Database, sqlite_connection
from coordinator.ops.config import FranchiseeConfig
from protocols.timestamps import stamp

_COUPONS = """
INSERT OR IGNORE INTO ops_coupons (order_id, incident_id, code, created_at)
SELECT io.order_id, io.incident_id, bw_coupon_code(:prefix, io.order_id, io.incident_id), :now
FROM incident_orders io
WHERE io.incident_id = :incident AND io.outcome = 'moved'
"""

_NOTICES = """
INSERT OR IGNORE INTO ops_notifications
    (kind, dedupe_key, incident_id, payload, status, attempts, next_attempt_at, created_at)
SELECT 'franchisee', 'franchisee:' || io.incident_id || ':' || io.order_id, io.incident_id,
    json_object(
        'type', 'reroute_notice',
        'order_id', io.order_id,
        'store_id', o.store_id,
        'incident_id', io.incident_id,
        'reason', :reason,
        'old_warehouse', json_object('id', ow.id, 'name', ow.name, 'address', ow.address),
        'new_warehouse', json_object('id', nw.id, 'name', nw.name, 'address', nw.address),
        'distance_km', round(io.distance_km, 2),
        'new_eta', io.eta,
        'coupon', json_object('code', c.code, 'value_yuan', :value),
        'issued_at', :now),
    'pending', 0, :now, :now
FROM incident_orders io
JOIN orders o ON o.id = io.order_id
JOIN warehouses ow ON ow.id = io.old_warehouse_id
JOIN warehouses nw ON nw.id = io.new_warehouse_id
JOIN ops_coupons c ON c.order_id = io.order_id AND c.incident_id = io.incident_id
WHERE io.incident_id = :incident AND io.outcome = 'moved'
"""


def coupon_code(prefix: str, order_id: str, incident_id: str) -> str:
    """Deterministic, unique per (order, incident): a replay yields the same code."""
    digest = hashlib.blake2b(f"{order_id}\x1f{incident_id}".encode(), digest_size=8)
    return f"{prefix}-{digest.hexdigest().upper()}"


def queue_franchisee_notices(db: Database, incident_id: str, *, reason: str, at: datetime,
                             config: FranchiseeConfig) -> int:
    """Record the coupons and queue one notice per moved order (caller's transaction).

    Returns how many notices were new (0 when the incident was queued before)."""
    sqlite_connection(db, "franchisee notices").create_function(
        "bw_coupon_code", 3, coupon_code, deterministic=True)
    params = {"prefix": config.coupon_prefix, "incident": incident_id, "now": stamp(at),
              "reason": reason, "value": config.coupon_value_yuan}
    db.conn.execute(_COUPONS, params)
    return db.conn.execute(_NOTICES, params).rowcount


# an allocation by a retry of an order some incident had left stuck, with that incident
# (the latest one that left it stuck before the retry)
_PLACED = """
SELECT e.id AS event_id, e.order_id, e.at,
    json_extract(e.detail, '$.warehouse_id') AS warehouse_id,
    json_extract(e.detail, '$.distance_km') AS distance_km,
    json_extract(e.detail, '$.eta') AS eta,
    (SELECT io.incident_id FROM incident_orders io JOIN incidents i ON i.id = io.incident_id
     WHERE io.order_id = e.order_id AND io.outcome = 'stuck' AND i.started_at <= e.at
     ORDER BY i.started_at DESC LIMIT 1) AS incident_id
FROM order_events e
WHERE e.id > :after AND e.id <= :upto AND e.kind = 'allocated'
    AND json_extract(e.detail, '$.previous_status') = 'needs_attention'
    AND e.at >= :since
"""

# events a sweep reads per tick at most, and how old a late placement may be to be told
PLACED_SWEEP_SPAN = 50_000
PLACED_NOTICE_MAX_AGE = timedelta(days=1)

_PLACED_COUPONS = f"""
INSERT OR IGNORE INTO ops_coupons (order_id, incident_id, code, created_at)
SELECT p.order_id, p.incident_id, bw_coupon_code(:prefix, p.order_id, p.incident_id), :now
FROM ({_PLACED}) p WHERE p.incident_id IS NOT NULL
"""

_PLACED_NOTICES = f"""
INSERT OR IGNORE INTO ops_notifications
    (kind, dedupe_key, incident_id, payload, status, attempts, next_attempt_at, created_at)
SELECT 'franchisee', 'franchisee:' || p.incident_id || ':' || p.order_id || ':placed',
    p.incident_id,
    json_object(
        'type', 'placed_notice',
        'order_id', p.order_id,
        'store_id', o.store_id,
        'incident_id', p.incident_id,
        'new_warehouse', json_object('id', w.id, 'name', w.name, 'address', w.address),
        'distance_km', round(p.distance_km, 2),
        'new_eta', p.eta,
        'placed_at', p.at,
        'coupon', json_object('code', c.code, 'value_yuan', :value),
        'issued_at', :now),
    'pending', 0, :now, :now
FROM ({_PLACED}) p
JOIN orders o ON o.id = p.order_id
JOIN warehouses w ON w.id = p.warehouse_id
JOIN ops_coupons c ON c.order_id = p.order_id AND c.incident_id = p.incident_id
WHERE p.incident_id IS NOT NULL
"""


def placed_notices_cursor(db: Database) -> int:
    row = db.execute("SELECT value FROM ops_cursors WHERE name = 'placed_notices'").fetchone()
    return 0 if row is None else int(row[0])


def has_placed_events(db: Database, *, after: int, upto: int) -> bool:
    """Whether order events ``after < id <= upto`` hold a late placement (read only)."""
    row = db.execute(
        "SELECT 1 FROM order_events WHERE id > ? AND id <= ? AND kind = 'allocated' "
        "AND json_extract(detail, '$.previous_status') = 'needs_attention' LIMIT 1",
        [after, upto]).fetchone()
    return row is not None


def queue_placed_notices(db: Database, *, after: int, upto: int, at: datetime,
                         config: FranchiseeConfig) -> int:
    """Queue a notice and a coupon for every stuck order a retry placed, in the order
    events ``after < id <= upto`` (placements older than a day are not told any more);
    moves the stored cursor to ``upto`` (caller's transaction).

    Returns how many notices were new (a repeated sweep queues nothing twice)."""
    sqlite_connection(db, "franchisee notices").create_function(
        "bw_coupon_code", 3, coupon_code, deterministic=True)
    if upto <= after:
        return 0
    params = {"prefix": config.coupon_prefix, "now": stamp(at), "value": config.coupon_value_yuan,
              "after": after, "upto": upto,
              # compared as text with order_events.at: the store's format, not the outbox's
              "since": stamp(at - PLACED_NOTICE_MAX_AGE)}
    db.conn.execute(_PLACED_COUPONS, params)
    queued = db.conn.execute(_PLACED_NOTICES, params).rowcount
    db.conn.execute(
        "INSERT INTO ops_cursors (name, value) VALUES ('placed_notices', ?) "
        "ON CONFLICT (name) DO UPDATE SET value = excluded.value", [upto])
    return queued
