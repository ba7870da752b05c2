"""What a warehouse going down or coming back does, inside the ops transaction that
decided it: the audit row and incident, the reroute of its unshipped orders, the
notices (franchisees, the on-duty team), the retry of waiting orders on recovery.
Called by :class:`coordinator.ops.handler.OpsCore`; the decisions are the tracker's."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from coordinator.db import Database
from coordinator.ops import incident_log, incident_store
from coordinator.ops.availability_state import WarehouseAvailable, WarehouseUnavailable
from coordinator.ops.config import OpsConfig
from coordinator.ops.notify import outbox
from coordinator.ops.notify.franchisee import defer_store_notices
from coordinator.ops.notify.messages import (
    IncidentSummary,
    MovedNotice,
    StuckNotice,
    WarehouseInfo,
    incident_notices,
    recovery_notices,
)
from coordinator.ops.tracker_writes import Deferred
from coordinator.reroute import RerouteResult, reroute_warehouse
from coordinator.retry import retry_waiting
from coordinator.settings import Settings

log = logging.getLogger(__name__)


@dataclass
class RerouteTiming:
    """When the last reroute's input arrived and when its transaction committed."""

    incident_id: str
    warehouse_id: str
    moved: int
    stuck: int
    queued: int
    started: float  # time.perf_counter()
    committed: float
    # when the stores' notices of its moved orders were queued (after the commit)
    notices_queued: float | None = None


def audit(counts: Deferred, action: str, warehouse_id: str, actor: str, reason: str,
          incident_id: str | None, now: datetime) -> None:
    """Onto the warehouse's audit trail, written with the batch's other records."""
    counts.audits.append(incident_store.audit_row(
        warehouse_id=warehouse_id, action=action, actor=actor, reason=reason,
        incident_id=incident_id, at=now))


def infos_of(db: Database, infos: dict[str, WarehouseInfo],
             warehouse_ids: Iterable[str]) -> dict[str, WarehouseInfo]:
    """Name, address and place of the warehouses, from ``infos`` (the batch read those
    of its warehouses) or read now and kept there."""
    missing = sorted(set(warehouse_ids) - set(infos))
    if missing:
        infos.update(incident_store.warehouse_infos(db, missing))
    return infos


def went_down(db: Database, down: WarehouseUnavailable, *, known: bool, actor: str,
              started: float, settings: Settings, config: OpsConfig,
              counts: Deferred, infos: dict[str, WarehouseInfo]) -> RerouteTiming:
    """Open the incident and reroute the warehouse's unshipped orders."""
    wid, inc = down.warehouse_id, down.incident_id
    audit(counts, "unavailable", wid, actor, down.reason, inc, down.at)
    counts.open_incident(incident_store.incident_row(
        incident_id=inc, warehouse_id=wid, cause=down.cause, reason=down.reason, at=down.at))
    if not known:
        return RerouteTiming(inc, wid, 0, 0, 0, started, started)
    rerouted = reroute_warehouse(db, wid, incident_id=inc,
                                 reason=down.reason or down.cause, now=down.at,
                                 config=settings.allocation)
    counts.flush_breaker_log(db)  # the trip's facts are read from there
    summary = _summary(db, down, rerouted, infos)
    reason = down.reason or down.cause
    # franchisees hear of their moved orders: composed after the commit (a replayed
    # incident owed them from its first run, in the same commit as its moves)
    if rerouted.moved and not rerouted.already_done:
        defer_store_notices(db, inc, reason=reason, at=summary.at,
                            warehouse_name=summary.warehouse.name, now=down.at)
    queued = outbox.queue(db, incident_notices(summary, config.notify), down.at)
    moved, stuck = len(summary.moved), len(summary.stuck)
    counts.count_incident(inc, moved=moved, stuck=stuck)
    counts.bump("reroutes")
    counts.bump("orders_rerouted", moved)
    counts.bump("orders_needs_attention", stuck)
    log.warning("warehouse %s unavailable (%s, incident %s): %d orders moved, %d stuck",
                wid, down.cause, inc, moved, stuck)
    return RerouteTiming(inc, wid, moved, stuck, queued, started, started)


def came_up(db: Database, up: WarehouseAvailable, *, actor: str, settings: Settings,
            config: OpsConfig, counts: Deferred, infos: dict[str, WarehouseInfo]) -> None:
    """Close the incident, tell who was told, place what waited for room."""
    audit(counts, "available", up.warehouse_id, actor, "all causes cleared",
          up.incident_id, up.at)
    counts.close_incident(db, up.incident_id, up.at)
    info = infos_of(db, infos, [up.warehouse_id]).get(up.warehouse_id)
    if info is not None and up.incident_id:
        outbox.queue(db, recovery_notices(info, up.incident_id, up.at, config.notify), up.at)
    placed = 0
    if info is not None and settings.intake.retry_on_change:
        placed = _retry_waiting(db, up, settings, counts)
    log.warning("warehouse %s available again (incident %s closed); %d waiting orders "
                "placed", up.warehouse_id, up.incident_id, placed)


def _retry_waiting(db: Database, up: WarehouseAvailable, settings: Settings,
                   counts: Deferred) -> int:
    """Orders that found no backup may fit now: first those this warehouse's incidents
    left stuck (a backlog of older waiting orders must not crowd them out of the
    limit), then any. In a savepoint of the caller's transaction: a failed retry is
    logged and counted and costs nothing else, the warehouse still reopens."""
    stuck = incident_store.stuck_by_incidents_of(db, up.warehouse_id)
    rules, limit = settings.allocation, settings.intake.retry_limit
    placed = 0
    passes = ([stuck[:limit]] if stuck else []) + [None]
    for order_ids in passes:
        try:
            placed += len(retry_waiting(db, now=up.at, config=rules,
                                        order_ids=order_ids, limit=limit,
                                        trigger="warehouse_available").placed)
        except Exception:
            if not db.conn.in_transaction:
                # the error took the whole transaction with it, not only the retry's
                # savepoint: nothing of the reopen is left to save
                raise
            log.exception("retrying waiting orders after %s reopened failed",
                          up.warehouse_id)
            counts.bump("retry_failures")
    counts.bump("orders_retry_placed", placed)
    return placed


def _summary(db: Database, down: WarehouseUnavailable, rerouted: RerouteResult,
             known: dict[str, WarehouseInfo]) -> IncidentSummary:
    """What the reroute did, in the words of the notices."""
    named = {down.warehouse_id, *(m.new_warehouse_id for m in rerouted.moved)}
    infos = infos_of(db, known, named)
    old = infos[down.warehouse_id]
    moved = [MovedNotice(m.order_id, infos[m.new_warehouse_id]) for m in rerouted.moved]
    stuck = [StuckNotice(s.order_id, s.reason) for s in rerouted.stuck]
    # people read the trip's time (event time), not when head office rerouted
    trip = incident_log.trip_facts(db, down.warehouse_id, down.incident_id)
    return IncidentSummary(down.incident_id, old, down.cause, down.reason,
                           trip.at if trip else down.at, moved, stuck, trip)
