"""Stuck parcels: one parcel without a tracking update for ``stuck_after_h`` after pickup,
while its carrier's feed is otherwise alive, is handed to the backup carrier.

Distinct from courier silence (:mod:`coordinator.ops.couriers`), which pauses a
warehouse when a carrier's whole feed goes quiet: here the feed is alive (the carrier
sent some update within ``feed_alive_within_h``), only this parcel stopped moving.

:func:`find_stuck` is pure. :func:`handle_stuck` reads the open shipments the ops watcher
keeps (``ops_shipments``), calls the carrier adapter outside any transaction, then records
the hand-over (or its failure, which becomes an alert for a person), the timeline event
and the self-healing event in one transaction. A parcel is handed over at most once.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

import httpx
from sqlite_utils import Database

from coordinator.intel import healing
from coordinator.intel.config import ParcelsConfig
from coordinator.store import add_alert, append_order_event, iso, write_transaction


@dataclass(frozen=True, slots=True)
class Parcel:
    shipment_id: str
    carrier: str
    warehouse_id: str
    order_id: str | None
    picked_up_at: datetime
    last_update_at: datetime


@dataclass(frozen=True, slots=True)
class Handover:
    new_tracking_no: str | None


class HandoverFailed(Exception):
    """The backup carrier did not take the parcel; the message names why (no secrets)."""


class CarrierAdapter(Protocol):
    def hand_over(self, parcel: Parcel, backup: str, reason: str) -> Handover: ...


class WebhookCarrier:
    """POSTs the hand-over as JSON to the backup carrier's endpoint; a 2xx takes it (the
    answer's ``tracking_no``, if any, is the new tracking number)."""

    def __init__(self, url: str, *, client: httpx.Client) -> None:
        self._url = url
        self._client = client

    def hand_over(self, parcel: Parcel, backup: str, reason: str) -> Handover:
        body = {"shipment_id": parcel.shipment_id, "order_id": parcel.order_id,
                "warehouse_id": parcel.warehouse_id, "from_carrier": parcel.carrier,
                "to_carrier": backup, "reason": reason,
                "last_update_at": iso(parcel.last_update_at)}
        try:
            response = self._client.post(self._url, json=body)
        except httpx.HTTPError as exc:
            raise HandoverFailed(f"backup carrier unreachable: {type(exc).__name__}") from None
        if response.status_code // 100 != 2:
            raise HandoverFailed(f"backup carrier answered HTTP {response.status_code}")
        try:
            answer = response.json()
        except ValueError:
            answer = {}
        tracking = answer.get("tracking_no") if isinstance(answer, dict) else None
        return Handover(str(tracking)[:64] if tracking else None)


def find_stuck(parcels: Iterable[Parcel], now: datetime, config: ParcelsConfig,
               already: set[str]) -> list[Parcel]:
    """Open parcels quiet for ``stuck_after_h`` whose carrier sent anything recently."""
    parcels = list(parcels)
    last_seen: dict[str, datetime] = {}
    for p in parcels:
        if p.carrier not in last_seen or p.last_update_at > last_seen[p.carrier]:
            last_seen[p.carrier] = p.last_update_at
    stuck_after = timedelta(hours=config.stuck_after_h)
    alive_within = timedelta(hours=config.feed_alive_within_h)
    return [p for p in parcels
            if p.shipment_id not in already and p.carrier != config.backup_carrier
            and now - p.last_update_at >= stuck_after
            and now - last_seen[p.carrier] <= alive_within]


def open_parcels(db: Database) -> list[Parcel]:
    rows = db.execute(
        "SELECT shipment_id, carrier, warehouse_id, order_id, first_update_at, "
        "last_update_at FROM ops_shipments WHERE open = 1").fetchall()
    return [Parcel(r[0], r[1], r[2], r[3], datetime.fromisoformat(r[4]),
                   datetime.fromisoformat(r[5])) for r in rows]


def handed(db: Database) -> set[str]:
    return {r[0] for r in db.execute("SELECT shipment_id FROM parcel_handovers")}


def handle_stuck(db: Database, adapter: CarrierAdapter, config: ParcelsConfig,
                 now: datetime) -> list[dict[str, Any]]:
    """Hand every stuck parcel to the backup carrier; returns what happened to each."""
    if not config.backup_carrier:
        return []
    out = []
    for parcel in find_stuck(open_parcels(db), now, config, handed(db)):
        quiet_h = (now - parcel.last_update_at).total_seconds() / 3600
        reason = f"no tracking update for {quiet_h:.1f} h while {parcel.carrier} is active"
        try:
            result: Handover | None = adapter.hand_over(parcel, config.backup_carrier, reason)
            error = None
        except HandoverFailed as exc:
            result, error = None, str(exc)
        out.append(_record(db, parcel, config.backup_carrier, result, error, reason, now))
    return out


def _record(db: Database, parcel: Parcel, backup: str, result: Handover | None,
            error: str | None, reason: str, now: datetime) -> dict[str, Any]:
    outcome = "handed_over" if result is not None else "failed"
    detail = {"shipment_id": parcel.shipment_id, "from_carrier": parcel.carrier,
              "to_carrier": backup, "reason": reason, "outcome": outcome,
              "new_tracking_no": result.new_tracking_no if result else None, "error": error}
    with write_transaction(db):
        db.conn.execute(
            "INSERT INTO parcel_handovers (shipment_id, order_id, warehouse_id, from_carrier, "
            "to_carrier, last_update_at, outcome, new_tracking_no, error, at) VALUES "
            "(:shipment_id, :order_id, :warehouse_id, :from_carrier, :to_carrier, "
            ":last_update_at, :outcome, :new_tracking_no, :error, :at)",
            {"shipment_id": parcel.shipment_id, "order_id": parcel.order_id,
             "warehouse_id": parcel.warehouse_id, "from_carrier": parcel.carrier,
             "to_carrier": backup, "last_update_at": iso(parcel.last_update_at),
             "outcome": outcome, "new_tracking_no": detail["new_tracking_no"],
             "error": error, "at": iso(now)})
        order_id = parcel.order_id or parcel.shipment_id
        if parcel.order_id is not None and db.execute(
                "SELECT 1 FROM orders WHERE id = :id", {"id": parcel.order_id}).fetchone():
            kind = "parcel_handed_over" if result is not None else "parcel_stuck"
            append_order_event(db, parcel.order_id, kind, now, detail)
        healing.record(db, "parcel", order_id, healed=result is not None, at=now,
                       detail=detail)
        if result is None:
            add_alert(db, "parcel_stuck",
                      f"parcel {parcel.shipment_id} ({parcel.carrier}) stuck and the hand-over "
                      f"to {backup} failed: {error}", now, order_id=parcel.order_id,
                      warehouse_id=parcel.warehouse_id)
    return detail


def summary(db: Database, limit: int = 100) -> Sequence[dict[str, Any]]:
    cursor = db.execute(
        "SELECT shipment_id, order_id, from_carrier, to_carrier, outcome, new_tracking_no, "
        "error, at FROM parcel_handovers ORDER BY at DESC LIMIT :n", {"n": limit})
    names = [c[0] for c in cursor.description]
    return [dict(zip(names, r, strict=True)) for r in cursor]
