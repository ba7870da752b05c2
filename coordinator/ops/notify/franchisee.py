"""Franchisee notices and coupons for one incident, queued set-wise inside SQLite.

One ``INSERT ... SELECT`` for the coupons and one for the notices, built with SQLite's
``json_object`` from the store's incident record (what moved where, the engine's ETA):
10,000 notices are queued in the reroute's transaction without a Python loop per order.
Coupon codes come from :func:`coupon_code` (registered as a deterministic SQL function).
"""

from __future__ import annotations

import hashlib
from datetime import datetime

from sqlite_utils import Database

from coordinator.ops.config import FranchiseeConfig
from coordinator.ops.notify.outbox import iso

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
    db.conn.create_function("bw_coupon_code", 3, coupon_code, deterministic=True)
    params = {"prefix": config.coupon_prefix, "incident": incident_id, "now": iso(at),
              "reason": reason, "value": config.coupon_value_yuan}
    db.conn.execute(_COUPONS, params)
    return db.conn.execute(_NOTICES, params).rowcount
