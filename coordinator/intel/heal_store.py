"""The store of the self-healing adapters: ``heal_events``, ``address_checks`` and
``parcel_handovers``.

Each exception an adapter meets is one ``heal_events`` row: ``healed`` when the system
resolved it alone, not when it went to a person. The coordinator's self-healing rate
(:func:`coordinator.ops.metrics.self_healing`) adds these to the reroute incidents and
breaks the rate down by kind. Writers here run inside the caller's transaction, beside
the ledger flush of the timeline event and alert they go with.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, Literal

from coordinator.db import Database
from coordinator.ledger import to_json
from protocols.timestamps import stamp

HealKind = Literal["address", "parcel"]


def record_heal(db: Database, kind: HealKind, order_id: str, *, healed: bool, at: datetime,
                detail: dict[str, Any]) -> None:
    db.conn.execute(
        "INSERT INTO heal_events (kind, order_id, healed, at, detail) "
        "VALUES (:kind, :order_id, :healed, :at, :detail)",
        {"kind": kind, "order_id": order_id, "healed": int(healed), "at": stamp(at),
         "detail": to_json(detail)})


def heal_counts(db: Database) -> dict[str, dict[str, int]]:
    """``{kind: {"exceptions": n, "resolved_automatically": m}}``."""
    rows = db.execute(
        "SELECT kind, count(*), sum(healed) FROM heal_events GROUP BY kind").fetchall()
    return {kind: {"exceptions": int(n), "resolved_automatically": int(h or 0)}
            for kind, n, h in rows}


# -- addresses ----------------------------------------------------------------------------
ADDRESS_COLUMNS = ("original", "corrected", "lat", "lon", "level", "source", "outcome", "at")


def add_address_check(db: Database, order_id: str, check: dict[str, Any],
                      at: datetime) -> int:
    cursor = db.conn.execute(
        "INSERT INTO address_checks (order_id, original, corrected, lat, lon, level, "
        "source, outcome, at) VALUES (:order_id, :original, :corrected, :lat, :lon, "
        ":level, :source, :outcome, :at) RETURNING id",
        {"order_id": order_id, **{k: check.get(k) for k in ADDRESS_COLUMNS[:-1]},
         "at": stamp(at)})
    return int(cursor.fetchone()[0])


def addresses_to_check(db: Database, limit: int) -> list[tuple[str, str]]:
    """(order_id, delivery address) of orders whose address (the customer side's
    ``customer_contacts``) has not been checked yet, oldest first."""
    return [(r[0], r[1]) for r in db.execute(
        "SELECT c.order_id, c.address FROM customer_contacts c WHERE c.address IS NOT NULL "
        "AND c.address != '' AND NOT EXISTS (SELECT 1 FROM address_checks a "
        "WHERE a.order_id = c.order_id) ORDER BY c.created_at, c.order_id LIMIT :n",
        {"n": limit}).fetchall()]


def erase_addresses(db: Database, order_ids: Sequence[str]) -> None:
    """Blank the address texts of these orders' checks (the customer side's retention
    ended); the outcome, level and source stay for the self-healing figures."""
    db.conn.executemany(
        "UPDATE address_checks SET original = '', corrected = NULL, lat = NULL, lon = NULL "
        "WHERE order_id = ?", [(o,) for o in order_ids])


def latest_address_check(db: Database, order_id: str) -> dict[str, Any] | None:
    row = db.execute(
        f"SELECT {', '.join(ADDRESS_COLUMNS)} FROM address_checks WHERE order_id = :id "
        "ORDER BY id DESC LIMIT 1", {"id": order_id}).fetchone()
    return None if row is None else dict(zip(ADDRESS_COLUMNS, row, strict=True))


# -- parcels ------------------------------------------------------------------------------
HANDOVER_COLUMNS = ("shipment_id", "order_id", "warehouse_id", "from_carrier", "to_carrier",
                    "last_update_at", "outcome", "new_tracking_no", "error", "at")


def add_handover(db: Database, row: dict[str, Any]) -> None:
    """``row``: :data:`HANDOVER_COLUMNS`, times already stamped."""
    db.conn.execute(
        f"INSERT INTO parcel_handovers ({', '.join(HANDOVER_COLUMNS)}) VALUES "
        f"({', '.join(':' + c for c in HANDOVER_COLUMNS)})", row)


def handed_over(db: Database) -> set[str]:
    """Parcels already handed over (or tried): never twice."""
    return {r[0] for r in db.execute("SELECT shipment_id FROM parcel_handovers")}


def recent_handovers(db: Database, limit: int) -> Sequence[dict[str, Any]]:
    cursor = db.execute(
        f"SELECT {', '.join(HANDOVER_COLUMNS)} FROM parcel_handovers ORDER BY at DESC "
        "LIMIT :n", {"n": limit})
    return [dict(zip(HANDOVER_COLUMNS, r, strict=True)) for r in cursor]
