"""The ops side's records of warehouses going down and up: incidents (opened, counted,
closed), the audit trail of pauses, resumes and availability changes, and the reads the
handler needs around them. SQL only here; :mod:`coordinator.ops.handler` decides.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from coordinator.db import Database
from coordinator.ops.notify.messages import WarehouseInfo
from protocols.timestamps import stamp

_AUDIT_COLUMNS = ("action", "actor", "reason", "incident_id", "at")


_AUDIT = ("INSERT INTO ops_warehouse_audit (warehouse_id, action, actor, reason, "
          "incident_id, at) VALUES (?,?,?,?,?,?)")


def audit_row(*, warehouse_id: str, action: str, actor: str, reason: str,
              incident_id: str | None, at: datetime) -> tuple[Any, ...]:
    """One audit row, for :func:`audit_many` (the ops batch writes them at its end)."""
    return (warehouse_id, action, actor, reason, incident_id, stamp(at))


def audit(db: Database, *, warehouse_id: str, action: str, actor: str, reason: str,
          incident_id: str | None, at: datetime) -> None:
    db.conn.execute(_AUDIT, audit_row(warehouse_id=warehouse_id, action=action, actor=actor,
                                      reason=reason, incident_id=incident_id, at=at))


def audit_many(db: Database, rows: Sequence[tuple[Any, ...]]) -> None:
    """Rows of :func:`audit_row`, in order (one statement on PostgreSQL)."""
    if rows:
        db.conn.executemany(_AUDIT, list(rows))


def audit_trail(db: Database, warehouse_id: str) -> list[dict[str, Any]]:
    """Every pause, resume and availability change of a warehouse, oldest first."""
    rows = db.execute(
        f"SELECT {', '.join(_AUDIT_COLUMNS)} FROM ops_warehouse_audit "
        "WHERE warehouse_id = ? ORDER BY id", [warehouse_id]).fetchall()
    return [dict(zip(_AUDIT_COLUMNS, r, strict=True)) for r in rows]


_OPEN = ("INSERT INTO ops_incidents (incident_id, warehouse_id, cause, reason, opened_at, "
         "closed_at, moved, stuck) VALUES (?,?,?,?,?,?,?,?) ON CONFLICT DO NOTHING")


def incident_row(*, incident_id: str, warehouse_id: str, cause: str, reason: str | None,
                 at: datetime) -> list[Any]:
    """An opened incident for :func:`open_incidents` (``closed_at``, ``moved`` and
    ``stuck`` at 5, 6, 7: the batch fills them in while the row waits)."""
    return [incident_id, warehouse_id, cause, reason, stamp(at), None, 0, 0]


def closed_at(at: datetime) -> str:
    return stamp(at)


def open_incidents(db: Database, rows: Sequence[Sequence[Any]]) -> None:
    """Rows of :func:`incident_row` (one statement on PostgreSQL). Recorded once: a
    repeat of the same incident keeps the first opening."""
    if rows:
        db.conn.executemany(_OPEN, [tuple(r) for r in rows])


def close_incident(db: Database, incident_id: str | None, at: datetime) -> None:
    db.conn.execute("UPDATE ops_incidents SET closed_at = ? WHERE incident_id = ?",
                    (stamp(at), incident_id))


def stuck_by_incidents_of(db: Database, warehouse_id: str) -> list[str]:
    """Orders this warehouse's incidents left stuck and still waiting, tier then age."""
    return [r[0] for r in db.execute(
        # IN, not DISTINCT over the join: PostgreSQL sorts a DISTINCT only by its columns
        "SELECT o.id FROM orders o WHERE o.status = 'needs_attention' AND o.id IN ("
        "SELECT io.order_id FROM incident_orders io JOIN incidents i ON i.id = io.incident_id "
        "WHERE i.warehouse_id = ? AND io.outcome = 'stuck') "
        "ORDER BY o.tier, o.received_at, o.id",
        [warehouse_id]).fetchall()]


def warehouse_info(db: Database, warehouse_id: str) -> WarehouseInfo | None:
    row = db.execute("SELECT id, name, address, lat, lon FROM warehouses WHERE id = ?",
                     [warehouse_id]).fetchone()
    return None if row is None else WarehouseInfo(*row)


def warehouse_infos(db: Database, warehouse_ids: Sequence[str] | None = None
                    ) -> dict[str, WarehouseInfo]:
    """Every warehouse, or only those of ``warehouse_ids`` (a reroute names a few of
    thousands: reading all of them per trip made a storm quadratic)."""
    if warehouse_ids is None:
        return {r[0]: WarehouseInfo(*r) for r in db.execute(
            "SELECT id, name, address, lat, lon FROM warehouses").fetchall()}
    found: dict[str, WarehouseInfo] = {}
    ids = sorted(set(warehouse_ids))
    for start in range(0, len(ids), 500):
        chunk = ids[start:start + 500]
        found.update({r[0]: WarehouseInfo(*r) for r in db.execute(
            "SELECT id, name, address, lat, lon FROM warehouses "
            f"WHERE id IN ({', '.join('?' * len(chunk))})", chunk).fetchall()})
    return found
