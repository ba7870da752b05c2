"""The synchronous heart of the ops side: feed the pure machines, commit what follows.

One :class:`OpsCore` owns one database connection and is used from one thread (the
service runs it in a single-worker executor). Every input, or burst of inputs
(:meth:`OpsCore.handle_many`), is handled in ONE write transaction: the machines'
records, the warehouse flags, the reroute of the warehouse's unshipped orders, the
incident row, the on-duty team's notices and the record that the stores' notices are
owed commit together or not at all. The stores' notices (megabytes of text for a large
reroute) are composed right after that commit, outside any write transaction, and
queued with their coupons in a short one of their own (:mod:`coordinator.ops.notice_sweeps`;
each tick does it too, for what a crash or a deposed leader left owed).
What happens when a warehouse goes down or comes back is in
:mod:`coordinator.ops.transitions`. If the transaction fails, the machines
are rebuilt from the database so memory never runs ahead of what was committed.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime

from coordinator.catalog import (
    WarehouseFlags,
    set_warehouse_flags,
    warehouse_exists,
)
from coordinator.db import Database, write_transaction
from coordinator.errors import NotFound
from coordinator.gateways import gate
from coordinator.gateways import store as gateway_store
from coordinator.gcpause import gc_paused
from coordinator.ops import incident_log, tracker_store, transitions
from coordinator.ops.availability_state import (
    COURIER_STALE_PREFIX,
    MANUAL_HOLD,
    Action,
    DuplicateDropped,
    TrackerConfig,
    WarehouseAvailable,
    WarehouseUnavailable,
)
from coordinator.ops.batch import CoreMessage, OpsBatch
from coordinator.ops.config import OpsConfig
from coordinator.ops.couriers import CourierAction, CourierResumed, CourierStale
from coordinator.ops.notice_sweeps import NoticeSweeps, Tally
from coordinator.ops.transitions import RerouteTiming
from coordinator.read_yield import ReadYield
from coordinator.settings import Settings
from protocols import BreakerEvent, TrackingUpdate

log = logging.getLogger(__name__)

AvailabilityChange = WarehouseUnavailable | WarehouseAvailable
__all__ = ["CoreMessage", "HandleResult", "OpsCore", "RerouteTiming"]


@dataclass
class HandleResult:
    transitions: list[AvailabilityChange] = field(default_factory=list)
    rerouted: list[RerouteTiming] = field(default_factory=list)
    notices_queued: int = 0  # by a tick's sweeps (owed store notices, late placements)


class OpsCore:
    def __init__(self, db: Database, settings: Settings, config: OpsConfig, *,
                 sweep_failures: Tally | None = None) -> None:
        self.db = db
        self.settings = settings
        self.config = config
        self.tracker_config = TrackerConfig(agent_offline_grace=config.agent_offline_grace)
        self._reload()
        self.last_reroute: RerouteTiming | None = None
        # the notices owed outside the transitions' commits (stores', late placements)
        self.sweeps = NoticeSweeps(db, config, self._transaction, sweep_failures)
        # Several instances: raises (LeaseLost) unless this one still holds the ops lease;
        # called first inside every ops transaction, so a deposed leader writes nothing.
        self.guard: Callable[[Database, datetime], None] | None = None
        self._current: OpsBatch | None = None  # the ops transaction under way
        # the host app's reads, held back from a transition's start to its notices queued
        self.read_yield: ReadYield | None = None
        self._holding_reads = False
        self._read_scopes = 0

    def _reload(self) -> None:
        self.tracker = tracker_store.load_tracker(self.db, self.tracker_config)
        self.couriers = tracker_store.load_couriers(
            self.db, self.config.courier_silence.total_seconds())

    # -- inputs ----------------------------------------------------------------------
    def handle(self, message: CoreMessage, now: datetime) -> HandleResult:
        return self.handle_many([message], now)[0]

    def handle_many(self, messages: Sequence[CoreMessage], now: datetime, *,
                    budget_s: float | None = None,
                    then: Callable[[int], None] | None = None) -> tuple[HandleResult, int]:
        """Apply ``messages`` in order in ONE transaction; return the result and how many
        were applied (all, unless ``budget_s`` ran out first: at least one always is).

        A reconnect storm is thousands of these: the gateway registry and the flags of
        the warehouses they name are read once, the tracker's records are written once
        per table at the end (:mod:`coordinator.ops.tracker_writes`), a flag is written
        only when it changes, and a duplicate writes nothing but its count. Dedupe (the
        tracker's) and the lease guard run inside this transaction. ``then(applied)``
        runs last inside it (the inbox cursor). If anything raises, nothing of the batch
        commits and the machines are rebuilt from the database; the caller may then
        apply the messages one at a time to isolate the one that fails."""
        result = HandleResult()
        started = time.perf_counter()
        done = 0
        with self.holding_reads():
            with self._batch(now, messages):
                for message in messages:
                    if done and budget_s is not None and \
                            time.perf_counter() - started > budget_s:
                        break
                    self._apply(message, now, result, started)
                    done += 1
                if then is not None:
                    then(done)
            self._committed(result)
            self.sweeps.after_reroute(result.rerouted, now)
        return result, done

    def confirm_incarnation(self, agent_id: str, *, actor: str, reason: str,
                            now: datetime) -> HandleResult:
        """An operator confirms a replaced gateway; what its new incarnation held back
        (clears, online statuses) is applied now, in the order it arrived."""
        _, held = gateway_store.confirm_incarnation(self.db, agent_id, actor=actor,
                                                    reason=reason, now=now)
        return self.handle_many(held, now)[0]

    def tick(self, now: datetime) -> HandleResult:
        def step() -> list[Action | CourierAction]:
            actions: list[Action | CourierAction] = list(self.tracker.tick(now))
            actions += self._courier_actions(self.couriers.tick(now), now)
            return actions

        result = self._run(step, now)
        result.notices_queued += self.sweeps.on_tick(now)
        return result

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
        self.sweeps.reload()

    def resync(self, now: datetime) -> None:
        """Mirror the tracker into the store's flags for every warehouse it knows (at start:
        e.g. a warehouse imported after its breaker had tripped)."""
        with self._batch(now):
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
        result = HandleResult()
        started = time.perf_counter()
        with self.holding_reads():
            with self._batch(now):
                self._effects(step(), now, result, started, audit)
            self._committed(result)
            self.sweeps.after_reroute(result.rerouted, now)
        return result

    @contextmanager
    def _batch(self, now: datetime,
               messages: Sequence[CoreMessage] = ()) -> Iterator[OpsBatch]:
        """One ops transaction (the lease guard first) with what a batch reads once and
        writes at its end; nested calls share the outer one."""
        if self._current is not None:
            yield self._current
            return
        try:
            # a reroute churns through many short-lived objects: collect once, after commit
            with gc_paused(), self._transaction(now):
                batch = self._current = OpsBatch.read(self.db, messages)
                yield batch
                batch.deferred.flush(self.db)
        except BaseException:
            self._reload()  # memory must not run ahead of what was committed
            raise
        finally:
            self._current = None

    def _committed(self, result: HandleResult) -> None:
        committed = time.perf_counter()
        for timing in result.rerouted:
            timing.committed = committed
            self.last_reroute = timing

    def _apply(self, message: CoreMessage, now: datetime, result: HandleResult,
               started: float) -> None:
        """One message inside the batch's transaction."""
        if isinstance(message, TrackingUpdate):
            actions = self._courier_actions(self.couriers.feed(message, now), now)
            self._effects(actions, now, result, started)
            return
        batch = self._open_batch()
        # who may speak for the warehouse: refused and held messages never reach the tracker
        verdict = gate.screen(self.db, message, now, max_skew=self.config.max_event_skew,
                              notify=self.config.notify, registry=batch.registry)
        if not verdict.applies:
            return
        trusted = verdict.message
        found: list[Action | CourierAction] = list(self.tracker.feed(trusted, now))
        if isinstance(trusted, BreakerEvent) and not any(
                isinstance(a, DuplicateDropped) for a in found):
            # the incident's story (readings, limit, delivery delay) is told from these;
            # only what the gate let through, before the reroute reads the trip from it;
            # a duplicate writes nothing but its count
            batch.deferred.breaker_log.append(incident_log.breaker_log_row(trusted, now))
        self._effects(found, now, result, started)

    def _open_batch(self) -> OpsBatch:
        if self._current is None:
            raise RuntimeError("ops effects outside an ops transaction")
        return self._current

    def _effects(self, actions: list[Action | CourierAction], now: datetime,
                 result: HandleResult, started: float,
                 audit: tuple[str, str, str, str] | None = None) -> None:
        batch = self._open_batch()
        tracker_store.persist(self.db, actions, now, batch.deferred)
        incident_log.log_uplink(self.db, actions, now)  # incident timelines
        touched = {a.warehouse_id for a in actions
                   if isinstance(a, WarehouseUnavailable | WarehouseAvailable)}
        if audit is not None:
            touched.add(audit[1])
            transitions.audit(batch.deferred, audit[0], audit[1], audit[2], audit[3], None,
                              now)
        for wid in sorted(touched):
            self._sync_flags(wid, now)
        if any(isinstance(a, WarehouseUnavailable | WarehouseAvailable) for a in actions):
            self._hold_reads()
        for action in actions:
            if isinstance(action, WarehouseUnavailable):
                result.transitions.append(action)
                result.rerouted.append(transitions.went_down(
                    self.db, action, known=self._known(action.warehouse_id),
                    actor=audit[2] if audit else action.cause, started=started,
                    settings=self.settings, config=self.config, counts=batch.deferred,
                    infos=batch.infos))
            elif isinstance(action, WarehouseAvailable):
                result.transitions.append(action)
                transitions.came_up(self.db, action, actor=audit[2] if audit else "tracker",
                                    settings=self.settings, config=self.config,
                                    counts=batch.deferred, infos=batch.infos)

    @contextmanager
    def holding_reads(self) -> Iterator[None]:
        """Reads held back by a transition inside this scope are let go when the
        outermost scope ends: after its commit and its stores' notices (a caller that
        wraps several inputs in its own transaction enters it first)."""
        self._read_scopes += 1
        try:
            yield
        finally:
            self._read_scopes -= 1
            if not self._read_scopes and self._holding_reads and self.read_yield:
                self._holding_reads = False
                self.read_yield.release()

    def _hold_reads(self) -> None:
        """Reads wait until this scope's transition is committed and its notices queued
        (:mod:`coordinator.read_yield`): the moment the coordinator exists for goes first."""
        if self.read_yield is not None and not self._holding_reads:
            self._holding_reads = True
            self.read_yield.hold()

    def _require_warehouse(self, warehouse_id: str) -> None:
        if not self._known(warehouse_id):
            raise NotFound("warehouse", warehouse_id)

    def _known(self, warehouse_id: str) -> bool:
        if self._current is None:
            return warehouse_exists(self.db, warehouse_id)
        return self._current.flags_of(self.db, warehouse_id) is not None

    def _sync_flags(self, warehouse_id: str, now: datetime) -> None:
        """Mirror the tracker into the store's flags the allocation engine reads; written
        only when they change (one statement), from the flags read once per batch."""
        batch = self._open_batch()
        flags = batch.flags_of(self.db, warehouse_id)
        if flags is None:
            log.warning("availability of unknown warehouse %s: recorded only", warehouse_id)
            return
        causes = [f"breaker {r.breaker}: {r.reason}"
                  for r in self.tracker.open_breakers(warehouse_id)]
        causes += [h.reason for h in self.tracker.holds(warehouse_id) if h.name != MANUAL_HOLD]
        manual = [h for h in self.tracker.holds(warehouse_id) if h.name == MANUAL_HOLD]
        available, reason, paused = flags
        # what the availability flag, then the pause flag, each set when it changed: a
        # pause's reason shows as the reason while it is the only cause
        wanted_reason = None if not causes else "; ".join(causes)
        if available != (not causes) or reason != wanted_reason:
            available, reason = not causes, wanted_reason
        if paused != bool(manual):
            paused = bool(manual)
            if manual:
                reason = manual[0].reason
        new: WarehouseFlags = (available, reason, paused)
        if new != flags:
            set_warehouse_flags(self.db, warehouse_id, new, now)
            batch.flags[warehouse_id] = new
