"""Stuck parcels: one parcel without a tracking update for ``stuck_after_h`` after pickup,
while its carrier's feed is otherwise alive, is handed to the backup carrier.

Distinct from courier silence (:mod:`coordinator.ops.couriers`), which pauses a
warehouse when a carrier's whole feed goes quiet: here the feed is alive (the carrier
sent some update within ``feed_alive_within_h``), only this parcel stopped moving.

:func:`find_stuck` is pure. :func:`handle_stuck` reads the open shipments the ops watcher
keeps, calls the carrier adapter outside any transaction, then records the hand-over (or
its failure, which becomes an alert for a person), the timeline event and the
self-healing event in one transaction. A parcel is handed over at most once.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

import httpx

from coordinator.db import Database, write_transaction
from coordinator.intel import heal_store
from coordinator.intel.config import ParcelsConfig
from coordinator.ledger import Ledger
from coordinator.ops.couriers import Shipment
from coordinator.ops.tracker_store import open_shipments
from coordinator.queries import order_exists
from protocols.timestamps import stamp


@dataclass(frozen=True, slots=True)
class Handover:
    new_tracking_no: str | None


class HandoverFailed(Exception):
    """The backup carrier did not take the parcel; the message names why (no secrets)."""


class CarrierAdapter(Protocol):
    def hand_over(self, parcel: Shipment, backup: str, reason: str) -> Handover: ...


class WebhookCarrier:
    """POSTs the hand-over as JSON to the backup carrier's endpoint; a 2xx takes it (the
    answer's ``tracking_no``, if any, is the new tracking number)."""

    def __init__(self, url: str, *, client: httpx.Client) -> None:
        self._url = url
        self._client = client

    def hand_over(self, parcel: Shipment, backup: str, reason: str) -> Handover:
        body = {"shipment_id": parcel.shipment_id, "order_id": parcel.order_id,
                "warehouse_id": parcel.warehouse_id, "from_carrier": parcel.carrier,
                "to_carrier": backup, "reason": reason,
                "last_update_at": stamp(parcel.last_update_at)}
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


def find_stuck(parcels: Iterable[Shipment], now: datetime, config: ParcelsConfig,
               already: set[str]) -> list[Shipment]:
    """Open parcels quiet for ``stuck_after_h`` whose carrier sent anything recently."""
    parcels = [p for p in parcels if p.open]
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


def handle_stuck(db: Database, adapter: CarrierAdapter, config: ParcelsConfig,
                 now: datetime) -> list[dict[str, Any]]:
    """Hand every stuck parcel to the backup carrier; returns what happened to each."""
    if not config.backup_carrier:
        return []
    out = []
    for parcel in find_stuck(open_shipments(db), now, config, heal_store.handed_over(db)):
        quiet_h = (now - parcel.last_update_at).total_seconds() / 3600
        reason = f"no tracking update for {quiet_h:.1f} h while {parcel.carrier} is active"
        try:
            result: Handover | None = adapter.hand_over(parcel, config.backup_carrier, reason)
            error = None
        except HandoverFailed as exc:
            result, error = None, str(exc)
        out.append(_record(db, parcel, config.backup_carrier, result, error, reason, now))
    return out


def _record(db: Database, parcel: Shipment, backup: str, result: Handover | None,
            error: str | None, reason: str, now: datetime) -> dict[str, Any]:
    outcome = "handed_over" if result is not None else "failed"
    detail: dict[str, Any] = {
        "shipment_id": parcel.shipment_id, "from_carrier": parcel.carrier,
        "to_carrier": backup, "reason": reason, "outcome": outcome,
        "new_tracking_no": result.new_tracking_no if result else None, "error": error}
    with write_transaction(db):
        heal_store.add_handover(db, {
            "shipment_id": parcel.shipment_id, "order_id": parcel.order_id,
            "warehouse_id": parcel.warehouse_id, "from_carrier": parcel.carrier,
            "to_carrier": backup, "last_update_at": stamp(parcel.last_update_at),
            "outcome": outcome, "new_tracking_no": detail["new_tracking_no"],
            "error": error, "at": stamp(now)})
        ledger = Ledger(now)
        known = parcel.order_id is not None and order_exists(db, parcel.order_id)
        if known and parcel.order_id is not None:
            ledger.event(parcel.order_id,
                         "parcel_handed_over" if result is not None else "parcel_stuck", detail)
        if result is None:
            ledger.alert("parcel_stuck",
                         f"parcel {parcel.shipment_id} ({parcel.carrier}) stuck and the "
                         f"hand-over to {backup} failed: {error}",
                         order_id=parcel.order_id if known else None,
                         warehouse_id=parcel.warehouse_id)
        ledger.flush(db)
        heal_store.record_heal(db, "parcel", parcel.order_id or parcel.shipment_id,
                               healed=result is not None, at=now, detail=detail)
    return detail
