"""Self-healing events of the intel adapters (address correction, parcel hand-over).

Each exception an adapter meets is one row: ``healed`` when the system resolved it
alone, not when it went to a person. The coordinator's self-healing rate
(:func:`coordinator.ops.metrics.self_healing`) adds these to the reroute incidents and
breaks the rate down by kind.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from sqlite_utils import Database

from coordinator.store import iso, to_json

HealKind = Literal["address", "parcel"]


def record(db: Database, kind: HealKind, order_id: str, *, healed: bool, at: datetime,
           detail: dict[str, Any]) -> None:
    """Call inside the caller's transaction (with the timeline event it goes with)."""
    db.conn.execute(
        "INSERT INTO heal_events (kind, order_id, healed, at, detail) "
        "VALUES (:kind, :order_id, :healed, :at, :detail)",
        {"kind": kind, "order_id": order_id, "healed": int(healed), "at": iso(at),
         "detail": to_json(detail)})


def counts(db: Database) -> dict[str, dict[str, int]]:
    """``{kind: {"exceptions": n, "resolved_automatically": m}}``."""
    rows = db.execute(
        "SELECT kind, count(*), sum(healed) FROM heal_events GROUP BY kind").fetchall()
    return {kind: {"exceptions": int(n), "resolved_automatically": int(h or 0)}
            for kind, n, h in rows}
