"""Persisting the pure machines' records, and rebuilding the machines on start."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Sequence
from datetime import datetime

from coordinator.db import Database
from coordinator.ops import carrier_progress, incident_store, tracker_writes
from coordinator.ops.availability import AvailabilityTracker, restore
from coordinator.ops.availability_state import (
    COURIER_STALE_PREFIX,
    Action,
    AgentRecord,
    AgentRecorded,
    BreakerRecord,
    BreakerRecorded,
    DuplicateDropped,
    EventProcessed,
    Hold,
    HoldLifted,
    HoldSet,
    Lifetime,
    LifetimeStarted,
    TrackerConfig,
)
from coordinator.ops.couriers import (
    CourierAction,
    CourierSilenceDetector,
    Shipment,
    ShipmentRecorded,
)
from coordinator.ops.tracker_writes import Deferred
from protocols import BreakerState
from protocols.timestamps import parse_stamp, parse_stamp_or_none, stamp

log = logging.getLogger(__name__)

PROCESSED_KEYS_LOADED = 100_000
COUNTERS = (
    "breaker_events_applied",
    "breaker_events_stale",
    "breaker_events_historical",
    "duplicates_dropped",
    "agent_status_received",
    "agent_lifetimes_replaced",
    "processed_events_pruned",
    "tracking_updates_received",
    "orders_moved_by_tracking",
    "bad_payloads",
    "reroutes",
    "orders_rerouted",
    "orders_needs_attention",
)


def bump(db: Database, name: str, by: int = 1) -> None:
    tracker_writes.bump(db, name, by)


def counters(db: Database) -> dict[str, int]:
    found = dict(db.conn.execute("SELECT name, value FROM ops_counters").fetchall())
    return {name: int(found.get(name, 0)) for name in sorted(set(COUNTERS) | set(found))}


def persist(db: Database, actions: Sequence[Action | CourierAction], now: datetime,
            deferred: Deferred | None = None) -> None:
    """Write the record actions (inside the caller's transaction). With ``deferred`` the
    frequent records (breaker states, agent sessions, dedupe marks, counters) wait there
    for the batch's one set-based flush; without, they are written before returning."""
    pending = deferred if deferred is not None else Deferred()
    for action in actions:
        match action:
            case BreakerRecorded(record=r):
                pending.breaker(r)
            case AgentRecorded(record=a):
                pending.agent(a)
                pending.bump("agent_status_received")
            case LifetimeStarted(lifetime=t, previous=previous, replaced=replaced):
                pending.forget_agent(t.agent_id)
                _lifetime_started(db, t, previous, replaced, now, pending)
            case EventProcessed() as e:
                pending.processed_event(e, now)
                pending.bump(f"breaker_events_{e.outcome}")
            case DuplicateDropped():
                pending.bump("duplicates_dropped")
            case HoldSet(hold=h):
                db.conn.execute(
                    "INSERT INTO ops_holds (warehouse_id, hold, incident_hint, "
                    "reason, since) VALUES (?,?,?,?,?) ON CONFLICT (warehouse_id, hold) "
                    "DO UPDATE SET incident_hint = excluded.incident_hint, "
                    "reason = excluded.reason, since = excluded.since",
                    (h.warehouse_id, h.name, h.incident_hint, h.reason, stamp(h.since)),
                )
            case HoldLifted(warehouse_id=wh, name=name):
                db.conn.execute("DELETE FROM ops_holds WHERE warehouse_id = ? AND hold = ?",
                                (wh, name))
            case ShipmentRecorded(shipment=s):
                db.conn.execute(
                    "INSERT INTO ops_shipments (shipment_id, carrier, warehouse_id, "
                    "order_id, status, open, first_update_at, last_update_at) "
                    "VALUES (?,?,?,?,?,?,?,?) ON CONFLICT (shipment_id) DO UPDATE SET "
                    "carrier = excluded.carrier, warehouse_id = excluded.warehouse_id, "
                    "order_id = excluded.order_id, status = excluded.status, "
                    "open = excluded.open, first_update_at = excluded.first_update_at, "
                    "last_update_at = excluded.last_update_at",
                    (s.shipment_id, s.carrier, s.warehouse_id, s.order_id, s.status,
                     int(s.open), stamp(s.first_update_at), stamp(s.last_update_at)),
                )
                pending.bump("tracking_updates_received")
                if s.order_id is not None:
                    moved = carrier_progress.advance(
                        db, s.order_id, s.status, s.last_update_at, carrier=s.carrier,
                        shipment_id=s.shipment_id)
                    if moved:
                        pending.bump("orders_moved_by_tracking")
            case _:
                pass
    if deferred is None:
        pending.flush(db)


def _lifetime_started(db: Database, lifetime: Lifetime, previous: str | None,
                      replaced: bool, now: datetime, pending: Deferred) -> None:
    db.conn.execute(
        "INSERT INTO ops_agent_lifetimes (agent_id, warehouse_id, incarnation, "
        "retired, since) VALUES (?,?,?,?,?) ON CONFLICT (agent_id) DO UPDATE SET "
        "warehouse_id = excluded.warehouse_id, incarnation = excluded.incarnation, "
        "retired = excluded.retired, since = excluded.since",
        (lifetime.agent_id, lifetime.warehouse_id, lifetime.incarnation,
         json.dumps(list(lifetime.retired)), stamp(lifetime.since)),
    )
    # The new lifetime numbers its events from zero again (see the tracker).
    db.conn.execute("DELETE FROM ops_processed_events WHERE agent_id = ?",
                    (lifetime.agent_id,))
    if not replaced:
        return
    reason = (f"agent {lifetime.agent_id} started a new lifetime (incarnation "
              f"{lifetime.incarnation or 'none'}, was {previous or 'none'}): its seq and "
              "session ordering start over")
    pending.audits.append(incident_store.audit_row(
        warehouse_id=lifetime.warehouse_id, action="agent_incarnation",
        actor=lifetime.agent_id, reason=reason, incident_id=None, at=now))
    pending.bump("agent_lifetimes_replaced")
    log.warning("%s", reason)


def prune_processed(db: Database, tracker: AvailabilityTracker, keep: int) -> int:
    """Keep the newest ``keep`` processed events of each agent lifetime, in memory and in
    ``ops_processed_events`` (inside the caller's transaction); return the rows deleted.

    What dedupe needs (see :meth:`AvailabilityTracker.prune_processed`): an older
    event is stale by its breaker's seq anyway."""
    tracker.prune_processed(keep)
    deleted = db.conn.execute(
        # rows named by their key (agent, incarnation, seq): PostgreSQL has no rowid
        "DELETE FROM ops_processed_events WHERE (agent_id, incarnation, seq) IN ("
        "SELECT agent_id, incarnation, seq FROM (SELECT agent_id, incarnation, seq, "
        "row_number() OVER (PARTITION BY agent_id, incarnation ORDER BY seq DESC) AS newer "
        "FROM ops_processed_events) AS ranked WHERE newer > ?)",
        (keep,),
    ).rowcount
    if deleted:
        bump(db, "processed_events_pruned", deleted)
    return int(deleted)


def load_tracker(db: Database, config: TrackerConfig) -> AvailabilityTracker:
    breakers = [
        BreakerRecord(
            warehouse_id=r[0], breaker=r[1], agent_id=r[2], state=BreakerState(r[3]),
            open=bool(r[4]), episode_id=r[5], reason=r[6], seq=r[7], session_seq=r[8],
            since=parse_stamp(r[9]), event_time=parse_stamp(r[10]), last_seen=parse_stamp(r[11]),
            incarnation=r[12],
        )
        for r in db.conn.execute(
            "SELECT warehouse_id, breaker, agent_id, state, open, episode_id, reason, seq, "
            "session_seq, since, event_time, last_seen, incarnation FROM ops_breaker_states")
    ]
    agents = [
        AgentRecord(
            agent_id=r[0], warehouse_id=r[1], session_seq=r[2], online=bool(r[3]),
            offline_since=parse_stamp_or_none(r[4]), last_birth_at=parse_stamp_or_none(r[5]),
            last_death_at=parse_stamp_or_none(r[6]),
            last_seen=parse_stamp(r[7]), incarnation=r[8],
        )
        for r in db.conn.execute(
            "SELECT agent_id, warehouse_id, session_seq, online, offline_since, last_birth_at, "
            "last_death_at, last_seen, incarnation FROM ops_agent_sessions")
    ]
    lifetimes = [
        Lifetime(agent_id=r[0], warehouse_id=r[1], incarnation=r[2],
                 retired=tuple(json.loads(r[3])), since=parse_stamp(r[4]))
        for r in db.conn.execute(
            "SELECT agent_id, warehouse_id, incarnation, retired, since "
            "FROM ops_agent_lifetimes")
    ]
    holds = [
        Hold(warehouse_id=r[0], name=r[1], incident_hint=r[2], reason=r[3], since=parse_stamp(r[4]))
        for r in db.conn.execute(
            "SELECT warehouse_id, hold, incident_hint, reason, since FROM ops_holds")
    ]
    # Only recent keys: an older event of a breaker we know is stale by its seq anyway
    # (counted as stale rather than duplicate), so the set need not grow without bound.
    processed: Iterable[tuple[str, str | None, int]] = (
        (r[0], r[1] or None, r[2]) for r in db.conn.execute(
            # newest first by the time received (the one fixed-width stamp format), not
            # by rowid: PostgreSQL has none; ties (one instant) go by seq
            "SELECT agent_id, incarnation, seq FROM ops_processed_events "
            "ORDER BY received_at DESC, seq DESC LIMIT ?", [PROCESSED_KEYS_LOADED])
    )
    open_incidents = dict(db.conn.execute(
        "SELECT warehouse_id, incident_id FROM ops_incidents WHERE closed_at IS NULL").fetchall())
    used = [r[0] for r in db.conn.execute("SELECT incident_id FROM ops_incidents")]
    return restore(config, breakers=breakers, agents=agents, holds=holds, processed=processed,
                   open_incidents=open_incidents, used_incidents=used, lifetimes=lifetimes)


def open_shipments(db: Database) -> list[Shipment]:
    """Shipments not delivered yet (also read by the stuck-parcel check of intel)."""
    return [
        Shipment(shipment_id=r[0], carrier=r[1], warehouse_id=r[2], order_id=r[3], status=r[4],
                 open=bool(r[5]), first_update_at=parse_stamp(r[6]),
                 last_update_at=parse_stamp(r[7]))
        for r in db.conn.execute(
            "SELECT shipment_id, carrier, warehouse_id, order_id, status, open, "
            "first_update_at, last_update_at FROM ops_shipments WHERE open = 1")
    ]


def load_couriers(db: Database, silence_s: float) -> CourierSilenceDetector:
    from datetime import timedelta

    shipments = open_shipments(db)
    stale = [
        (r[0], r[1][len(COURIER_STALE_PREFIX):])
        for r in db.conn.execute("SELECT warehouse_id, hold FROM ops_holds WHERE hold LIKE ?",
                                 (COURIER_STALE_PREFIX + "%",))
    ]
    return CourierSilenceDetector.restore(timedelta(seconds=silence_s), shipments, stale)
