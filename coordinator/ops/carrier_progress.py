"""Carrier tracking moves orders: a scan that names an order advances its timeline to
已出库 / 在途 / 已送达 with the carrier's own time, so nobody has to post those events.

:func:`steps` is pure: the order's status and the carrier's status give the timeline
entries still missing, in order (a first scan already ``in_transit`` means the parcel
left the warehouse: ``shipped`` is recorded at the same time first). A repeat scan, an
older status arriving late or an exception scan adds nothing. :func:`advance` applies
them through the store's status transitions (stock consumed at ``shipped``) inside the
caller's transaction.
"""

from __future__ import annotations

from datetime import datetime

from coordinator.db import Database
from coordinator.ledger import record_status_event

# carrier status -> the order timeline entries it implies, in order
_IMPLIES: dict[str, tuple[str, ...]] = {
    "picked_up": ("shipped",),
    "in_transit": ("shipped", "in_transit"),
    "out_for_delivery": ("shipped", "in_transit"),
    "delivered": ("shipped", "delivered"),
    "exception": (),
}
# how far along each order status is
_RANK = {"allocated": 0, "shipped": 1, "in_transit": 2, "delivered": 3}


def steps(order_status: str, carrier_status: str) -> list[str]:
    """The timeline entries to add (none for an order that is not on its way)."""
    rank = _RANK.get(order_status)
    if rank is None:  # unallocated, needs attention, cancelled: nothing to move
        return []
    return [kind for kind in _IMPLIES.get(carrier_status, ()) if _RANK[kind] > rank]


def advance(db: Database, order_id: str, carrier_status: str, at: datetime, *,
            carrier: str, shipment_id: str) -> list[str]:
    """Record what the scan implies for the order; returns the entries added."""
    row = db.conn.execute("SELECT status FROM orders WHERE id = :o", {"o": order_id}).fetchone()
    if row is None:
        return []
    added = steps(row[0], carrier_status)
    detail = {"source": "carrier", "carrier": carrier, "shipment_id": shipment_id,
              "carrier_status": carrier_status}
    for kind in added:
        record_status_event(db, order_id, kind, at, detail)
    return added
