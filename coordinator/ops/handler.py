"""The synchronous heart of the ops side: feed the pure machines, commit what follows.

One :class:`OpsCore` owns one database connection and is used from one thread (the
service runs it in a single-worker executor). Every input is handled in ONE write
transaction: the machines' records, the warehouse flags, the reroute of the
warehouse's unshipped orders, the incident row, the coupons and the queued
notifications commit together or not at all. If the transaction fails, the machines
are rebuilt from the database so memory never runs ahead of what was committed.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime

from coordinator import queries
from coordinator.catalog import set_warehouse_availability, set_warehouse_paused, warehouse_exists
from coordinator.db import Database, write_transaction
from coordinator.errors import NotFound
from coordinator.gateways import gate
from coordinator.gateways import store as gateway_store
from coordinator.gcpause import gc_paused
from coordinator.ops import incident_log, incident_store, tracker_store
from coordinator.ops.availability_state import (
    COURIER_STALE_PREFIX,
    MANUAL_HOLD,
    Action,
    TrackerConfig,
    WarehouseAvailable,
    WarehouseUnavailable,
)
from coordinator.ops.config import OpsConfig
from coordinator.ops.couriers import CourierAction, CourierResumed, CourierStale
from coordinator.ops.notify import outbox
from coordinator.ops.notify.franchisee import (
    PLACED_SWEEP_SPAN,
    has_placed_events,
    placed_notices_cursor,
    queue_franchisee_notices,
    queue_placed_notices,
)
from coordinator.ops.notify.messages import (
    IncidentSummary,
    MovedNotice,
    StuckNotice,
    WarehouseInfo,
    incident_notices,
    recovery_notices,
)
from coordinator.reroute import RerouteResult, reroute_warehouse
from coordinator.retry import retry_waiting
from coordinator.settings import Settings
from protocols import AgentStatus, BreakerEvent, TrackingUpdate

log = logging.getLogger(__name__)

AvailabilityChange = WarehouseUnavailable | WarehouseAvailable


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


@dataclass
class HandleResult:
    transitions: list[AvailabilityChange] = field(default_factory=list)
    rerouted: list[RerouteTiming] = field(default_factory=list)


class OpsCore:
    def __init__(self, db: Database, settings: Settings, config: OpsConfig) -> None:
        self.db = db
        self.settings = settings
        self.config = config
        self.tracker_config = TrackerConfig(agent_offline_grace=config.agent_offline_grace)
        self._reload()
        self.last_reroute: RerouteTiming | None = None
        self._placed_cursor = placed_notices_cursor(db)
        self.sweep_failures = 0
        # Several instances: raises (LeaseLost) unless this one still holds the ops lease;
        # called first inside every ops transaction, so a deposed leader writes nothing.
        self.guard: Callable[[Database, datetime], None] | None = None

    def _reload(self) -> None:
        self.tracker = tracker_store.load_tracker(self.db, self.tracker_config)
        self.couriers = tracker_store.load_couriers(
            self.db, self.config.courier_silence.total_seconds())

    # -- inputs ----------------------------------------------------------------------
    def handle(self, message: BreakerEvent | AgentStatus | TrackingUpdate,
               now: datetime) -> HandleResult:
        if isinstance(message, TrackingUpdate):
            return self._run(lambda: self._courier_actions(self.couriers.feed(message, now),
                                                           now), now)
        # who may speak for the warehouse: refused and held messages never reach the tracker
        verdict = gate.screen(self.db, message, now, max_skew=self.config.max_event_skew,
                              notify=self.config.notify)
        if not verdict.applies:
            return HandleResult()
        trusted = verdict.message
        if isinstance(trusted, BreakerEvent):
            # the incident's story (readings, limit, delivery delay) is told from these;
            # only what the gate let through, before the reroute reads the trip from it
            incident_log.log_breaker_event(self.db, trusted, now)
        return self._run(lambda: list(self.tracker.feed(trusted, now)), now)

    def confirm_incarnation(self, agent_id: str, *, actor: str, reason: str,
                            now: datetime) -> HandleResult:
        """An operator confirms a replaced gateway; what its new incarnation held back
        (clears, online statuses) is applied now, in the order it arrived."""
        _, held = gateway_store.confirm_incarnation(self.db, agent_id, actor=actor,
                                                    reason=reason, now=now)
        result = HandleResult()
        for message in held:
            step = self.handle(message, now)
            result.transitions += step.transitions
            result.rerouted += step.rerouted
        return result

    def tick(self, now: datetime) -> HandleResult:
        def step() -> list[Action | CourierAction]:
            actions: list[Action | CourierAction] = list(self.tracker.tick(now))
            actions += self._courier_actions(self.couriers.tick(now), now)
            return actions

        result = self._run(step, now)
        try:
            self._notify_late_placements(now)
        except Exception:  # a notice sweep must never cost the tick its transitions
            self.sweep_failures += 1
            log.exception("placed-notice sweep failed; the next tick tries again")
        return result

    def _notify_late_placements(self, now: datetime) -> None:
        """Tell franchisees about stuck orders a retry has placed since the last tick.

        Intake writes order events all the time, so the sweep looks before it writes: only
        a range holding a late placement takes the write lock. At most ``PLACED_SWEEP_SPAN``
        events per tick, so a long backlog (ops off for a while) never holds the lock long.
        """
        newest = queries.newest_order_event_id(self.db)
        after = self._placed_cursor
        if newest <= after:
            return
        upto = min(newest, after + PLACED_SWEEP_SPAN)
        if not has_placed_events(self.db, after=after, upto=upto):
            self._placed_cursor = upto  # in memory: a restart reads this range once more
            return
        with self._transaction(now):
            queued = queue_placed_notices(self.db, after=after, upto=upto, at=now,
                                          config=self.config.notify.franchisee)
            if queued:
                tracker_store.bump(self.db, "placed_notices", queued)
        self._placed_cursor = upto

    def pause(self, warehouse_id: str, *, actor: str, reason: str,
              now: datetime) -> HandleResult:
        self._require_warehouse(warehouse_id)
        hint = f"{warehouse_id}-manual-{now.strftime('%Y%m%dT%H%M%S')}"
        return self._run(
            lambda: list(self.tracker.hold(warehouse_id, MANUAL_HOLD, reason=reason, now=now,
                                           incident_hint=hint)),
            now, audit=("pause", warehouse_id, actor, reason))

    def resume(self, warehouse_id: str, *, actor: str, reason: str,
               now: datetime) -> HandleResult:
        self._require_warehouse(warehouse_id)
        return self._run(lambda: list(self.tracker.release(warehouse_id, MANUAL_HOLD, now)),
                         now, audit=("resume", warehouse_id, actor, reason))

    @contextmanager
    def _transaction(self, now: datetime) -> Iterator[None]:
        """An ops write transaction: the lease guard first (when several instances run)."""
        with write_transaction(self.db):
            if self.guard is not None:
                self.guard(self.db, now)
            yield

    def reload(self) -> None:
        """Rebuild the machines from the database (a new leader: the previous one wrote)."""
        self._reload()
        self._placed_cursor = placed_notices_cursor(self.db)

    def resync(self, now: datetime) -> None:
        """Mirror the tracker into the store's flags for every warehouse it knows (at start:
        e.g. a warehouse imported after its breaker had tripped)."""
        with self._transaction(now):
            for wid in sorted(self.tracker.warehouses()):
                self._sync_flags(wid, now)

    def count_bad_payload(self) -> None:
        with write_transaction(self.db):
            tracker_store.bump(self.db, "bad_payloads")

    # -- the one transaction ---------------------------------------------------------
    def _courier_actions(self, found: Sequence[CourierAction],
                         now: datetime) -> list[Action | CourierAction]:
        actions: list[Action | CourierAction] = []
        for action in found:
            actions.append(action)
            if isinstance(action, CourierStale):
                minutes = self.config.courier_silence_min
                actions += self.tracker.hold(
                    action.warehouse_id, COURIER_STALE_PREFIX + action.carrier,
                    reason=(f"courier {action.carrier}: no update on {action.open_shipments} "
                            f"open shipments for more than {minutes:g} min"),
                    now=now,
                    incident_hint=(f"{action.warehouse_id}-courier-{action.carrier}-"
                                   f"{now.strftime('%Y%m%dT%H%M%S')}"))
            elif isinstance(action, CourierResumed):
                actions += self.tracker.release(action.warehouse_id,
                                                COURIER_STALE_PREFIX + action.carrier, now)
        return actions

    def _run(self, step: Callable[[], list[Action | CourierAction]], now: datetime,
             audit: tuple[str, str, str, str] | None = None) -> HandleResult:
        started = time.perf_counter()
        result = HandleResult()
        try:
            # a reroute churns through many short-lived objects: collect once, after commit
            with gc_paused(), self._transaction(now):
                actions = step()
                tracker_store.persist(self.db, actions, now)
                incident_log.log_uplink(self.db, actions, now)  # incident timelines
                touched = {a.warehouse_id for a in actions
                           if isinstance(a, WarehouseUnavailable | WarehouseAvailable)}
                if audit is not None:
                    touched.add(audit[1])
                    self._audit(audit[0], audit[1], audit[2], audit[3], None, now)
                for wid in sorted(touched):
                    self._sync_flags(wid, now)
                for action in actions:
                    if isinstance(action, WarehouseUnavailable):
                        result.transitions.append(action)
                        result.rerouted.append(self._on_unavailable(action, started, audit))
                    elif isinstance(action, WarehouseAvailable):
                        result.transitions.append(action)
                        self._on_available(action, audit)
        except BaseException:
            self._reload()
            raise
        committed = time.perf_counter()
        for timing in result.rerouted:
            timing.committed = committed
            self.last_reroute = timing
        return result

    def _require_warehouse(self, warehouse_id: str) -> None:
        if not self._known(warehouse_id):
            raise NotFound("warehouse", warehouse_id)

    def _known(self, warehouse_id: str) -> bool:
        return warehouse_exists(self.db, warehouse_id)

    def _sync_flags(self, warehouse_id: str, now: datetime) -> None:
        """Mirror the tracker into the store's flags the allocation engine reads."""
        if not self._known(warehouse_id):
            log.warning("availability of unknown warehouse %s: recorded only", warehouse_id)
            return
        causes = [f"breaker {r.breaker}: {r.reason}"
                  for r in self.tracker.open_breakers(warehouse_id)]
        causes += [h.reason for h in self.tracker.holds(warehouse_id) if h.name != MANUAL_HOLD]
        manual = [h for h in self.tracker.holds(warehouse_id) if h.name == MANUAL_HOLD]
        set_warehouse_availability(self.db, warehouse_id, available=not causes,
                                   reason="; ".join(causes) or None, now=now)
        set_warehouse_paused(self.db, warehouse_id, paused=bool(manual),
                             reason=manual[0].reason if manual else None, now=now)

    def _audit(self, action: str, warehouse_id: str, actor: str, reason: str,
               incident_id: str | None, now: datetime) -> None:
        incident_store.audit(self.db, warehouse_id=warehouse_id, action=action, actor=actor,
                             reason=reason, incident_id=incident_id, at=now)

    def _on_unavailable(self, down: WarehouseUnavailable, started: float,
                        audit: tuple[str, str, str, str] | None) -> RerouteTiming:
        wid, inc = down.warehouse_id, down.incident_id
        actor = audit[2] if audit else down.cause
        self._audit("unavailable", wid, actor, down.reason, inc, down.at)
        incident_store.open_incident(self.db, incident_id=inc, warehouse_id=wid,
                                     cause=down.cause, reason=down.reason, at=down.at)
        if not self._known(wid):
            return RerouteTiming(inc, wid, 0, 0, 0, started, started)
        rerouted = reroute_warehouse(self.db, wid, incident_id=inc,
                                     reason=down.reason or down.cause, now=down.at,
                                     config=self.settings.allocation)
        summary = self._summary(down, rerouted)
        reason = down.reason or down.cause
        queued = queue_franchisee_notices(self.db, inc, reason=reason, at=summary.at,
                                          config=self.config.notify.franchisee,
                                          warehouse_name=summary.warehouse.name,
                                          timezone=self.config.notify.timezone)
        queued += outbox.queue(self.db, incident_notices(summary, self.config.notify), down.at)
        moved, stuck = len(summary.moved), len(summary.stuck)
        incident_store.count_incident(self.db, inc, moved=moved, stuck=stuck)
        tracker_store.bump(self.db, "reroutes")
        tracker_store.bump(self.db, "orders_rerouted", moved)
        tracker_store.bump(self.db, "orders_needs_attention", stuck)
        log.warning("warehouse %s unavailable (%s, incident %s): %d orders moved, %d stuck",
                    wid, down.cause, inc, moved, stuck)
        return RerouteTiming(inc, wid, moved, stuck, queued, started, started)

    def _on_available(self, up: WarehouseAvailable,
                      audit: tuple[str, str, str, str] | None) -> None:
        self._audit("available", up.warehouse_id, audit[2] if audit else "tracker",
                    "all causes cleared", up.incident_id, up.at)
        incident_store.close_incident(self.db, up.incident_id, up.at)
        info = self._warehouse_info(up.warehouse_id)
        if info is not None and up.incident_id:
            outbox.queue(self.db, recovery_notices(info, up.incident_id, up.at,
                                                   self.config.notify), up.at)
        placed = 0
        if info is not None and self.settings.intake.retry_on_change:
            placed = self._retry_waiting(up)
        log.warning("warehouse %s available again (incident %s closed); %d waiting orders "
                    "placed", up.warehouse_id, up.incident_id, placed)

    def _retry_waiting(self, up: WarehouseAvailable) -> int:
        """Orders that found no backup may fit now: first those this warehouse's incidents
        left stuck (a backlog of older waiting orders must not crowd them out of the
        limit), then any. In a savepoint of the caller's transaction: a failed retry is
        logged and counted and costs nothing else, the warehouse still reopens."""
        stuck = incident_store.stuck_by_incidents_of(self.db, up.warehouse_id)
        rules, limit = self.settings.allocation, self.settings.intake.retry_limit
        placed = 0
        passes = ([stuck[:limit]] if stuck else []) + [None]
        for order_ids in passes:
            try:
                placed += len(retry_waiting(self.db, now=up.at, config=rules,
                                            order_ids=order_ids, limit=limit,
                                            trigger="warehouse_available").placed)
            except Exception:
                if not self.db.conn.in_transaction:
                    # the error took the whole transaction with it, not only the retry's
                    # savepoint: nothing of the reopen is left to save
                    raise
                log.exception("retrying waiting orders after %s reopened failed",
                              up.warehouse_id)
                tracker_store.bump(self.db, "retry_failures")
        tracker_store.bump(self.db, "orders_retry_placed", placed)
        return placed

    def _warehouse_info(self, warehouse_id: str) -> WarehouseInfo | None:
        return incident_store.warehouse_info(self.db, warehouse_id)

    def _summary(self, down: WarehouseUnavailable, rerouted: RerouteResult) -> IncidentSummary:
        """What the reroute did, in the words of the notices."""
        infos = incident_store.warehouse_infos(self.db)
        old = infos[down.warehouse_id]
        moved = [MovedNotice(m.order_id, infos[m.new_warehouse_id]) for m in rerouted.moved]
        stuck = [StuckNotice(s.order_id, s.reason) for s in rerouted.stuck]
        # people read the trip's time (event time), not when head office rerouted
        trip = incident_log.trip_facts(self.db, down.warehouse_id, down.incident_id)
        return IncidentSummary(down.incident_id, old, down.cause, down.reason,
                               trip.at if trip else down.at, moved, stuck, trip)
