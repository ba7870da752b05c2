"""The ops service the app's lifespan runs: watcher, ticker and dispatcher tasks.

All database work of the ops side goes through one single-thread executor that owns
the :class:`OpsCore` and its database connection, so inputs (MQTT, HTTP, ticks) are
applied one at a time in arrival order and a long reroute never blocks the event loop.
The dispatcher has its own connection and delivers beside it.

Usage (inside FastAPI's lifespan)::

    async with OpsService(settings, ops_config) as ops:
        app.state.ops = ops
        yield
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from types import TracebackType
from typing import TypeVar

from pydantic import ValidationError

from coordinator.db import Database, open_database, write_transaction
from coordinator.errors import ConfigError
from coordinator.live import Hub
from coordinator.observability import Metrics
from coordinator.ops import (
    commands,
    escalation_store,
    inbox_store,
    lease_store,
    telemetry,
    tracker_store,
)
from coordinator.ops.config import OpsConfig
from coordinator.ops.escalation import Escalate
from coordinator.ops.handler import HandleResult, OpsCore
from coordinator.ops.leadership import Leadership
from coordinator.ops.notify.dispatcher import Dispatcher
from coordinator.ops.watcher import OpsMessage, Watcher, WatcherStats
from coordinator.postgres import is_postgres_url
from coordinator.secret_source import OPS_SECRETS, with_secrets
from coordinator.settings import Settings
from protocols import (
    AgentStatus,
    AuditRecord,
    BreakerEvent,
    TelemetrySummary,
    Topics,
    TrackingUpdate,
)
from protocols.clock import Clock, SystemClock

log = logging.getLogger(__name__)
T = TypeVar("T")
STOP_TIMEOUT_S = 5.0


def _connection_lost(db: Database) -> bool:
    """The PostgreSQL connection was closed under us (a SQLite one never is)."""
    raw = getattr(db.conn, "raw", None)
    return bool(getattr(raw, "closed", False))


def ops_config_of(settings: Settings, env: Mapping[str, str] | None = None) -> OpsConfig:
    """The ``[ops]`` table of the settings file, validated (defaults when absent), with
    the secrets the environment provides (``BREAKWATER_WECOM_URL``,
    ``BREAKWATER_SMS_API_KEY``, ``BREAKWATER_MQTT_PASSWORD``, each also as ``..._FILE``).

    Raises :class:`ConfigError` naming the field, e.g. ``ops.notify.wecom.url``."""
    raw = with_secrets(settings.section("ops"), os.environ if env is None else env,
                       OPS_SECRETS)
    try:
        return OpsConfig.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in ("ops", *first["loc"]))
        message = f"invalid setting {where}: {first['msg']}"
        raise ConfigError(message) from exc


class OpsService:
    def __init__(self, settings: Settings, config: OpsConfig | None = None,
                 clock: Clock | None = None, *, topics: Topics | None = None,
                 live: Hub | None = None, metrics: Metrics | None = None,
                 roster: escalation_store.RosterLookup = escalation_store.no_roster) -> None:
        self.settings = settings
        self.config = config or ops_config_of(settings)
        self.clock: Clock = clock or SystemClock()
        self.topics = topics or Topics(settings.topic_root)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ops-core")
        # Several instances on PostgreSQL: what the watcher receives goes to the shared
        # inbox on a thread and connection of its own, so a storm's inserts (under their
        # own lock) run beside the leader's applier instead of taking turns with it on
        # the ops thread (which left a batch of one row per wake-up). Not on SQLite: one
        # write lock for both, and a put thread re-taking it starved the lease renewal.
        self._inbox_executor: ThreadPoolExecutor | None = None
        self._inbox_db: Database | None = None
        self._core: OpsCore | None = None
        self.dispatcher = self._new_dispatcher()
        self.watcher = Watcher(settings.mqtt_url, self.topics, self.config.mqtt, self,
                               instance=settings.instance, clock=self.clock)
        self._tasks: list[asyncio.Task[None]] = []
        self._delivering: asyncio.Task[None] | None = None
        self.on_result: Callable[[HandleResult], None] | None = None
        # where changes are announced (the dashboard's live stream) and counted; the app
        # passes its own, a bare service (benchmarks, tests) has neither
        self.live = live
        self.metrics = metrics
        # who is on call, for escalations (the staff roster's on_duty)
        self.roster = roster
        # Several instances on one database: only the lease holder runs the ops loop.
        self.leadership: Leadership | None = None
        if self.config.cluster.enabled and is_postgres_url(settings.db_path):
            self._inbox_executor = ThreadPoolExecutor(max_workers=1,
                                                      thread_name_prefix="ops-inbox")
        if self.config.cluster.enabled:
            self.leadership = Leadership(settings.instance, self.config.cluster, self.clock,
                                         self.call,
                                         handle_attempts=self.config.mqtt.handle_attempts)
            self.leadership.on_elected = self._elected
            self.leadership.on_deposed = self._deposed
            self.leadership.on_result = self._after

    def _new_dispatcher(self) -> Dispatcher:
        return Dispatcher(self._open_db, self.config.notify, self.clock,
                          allowed=self.leading)

    def _open_db(self) -> Database:
        """A connection of the ops loop (the core's, the dispatcher's). With several
        instances on PostgreSQL, one stopped inside a transaction (holding the write
        lock) is ended by the server after the lease TTL (``lease_store.fence_session``),
        so the standby is never held behind it."""
        db = open_database(self.settings.db_path)
        if self.leadership is not None:
            lease_store.fence_session(db, self.config.cluster.lease_ttl_s)
        return db

    @property
    def watcher_stats(self) -> WatcherStats:
        return self.watcher.stats

    def leading(self) -> bool:
        """This instance runs the ops loop (always, with one instance)."""
        return self.leadership is None or self.leadership.leading()

    # -- running ---------------------------------------------------------------------
    async def start(self) -> None:
        if self.leadership is not None:
            # build the core (and migrate); the ops loop starts when this one is elected
            await self.call(lambda core: None)
            self._tasks.append(asyncio.create_task(self.leadership.run_lease(),
                                                   name="ops-lease"))
            self._tasks.append(asyncio.create_task(self.leadership.run_applier(),
                                                   name="ops-inbox-applier"))
        else:
            # build the core (and migrate) before any input, and trust the persisted state
            await self.call(lambda core: core.resync(self.clock.now()))
            await self.call(lambda core: core.tick(self.clock.now()))
            self._delivering = asyncio.create_task(self.dispatcher.run(),
                                                   name="ops-dispatcher")
        self._tasks.append(asyncio.create_task(self._ticker(), name="ops-ticker"))
        self._tasks.append(asyncio.create_task(self._pruner(), name="ops-dedupe-pruner"))
        if self.config.telemetry.store:
            self._tasks.append(asyncio.create_task(self._telemetry_maintainer(),
                                                   name="ops-telemetry-maintenance"))
        if self.config.subscribe_mqtt:
            self._tasks.append(asyncio.create_task(self.watcher.run(), name="ops-watcher"))

    async def _elected(self) -> None:
        now = self.clock.now()
        await self.call(lambda core: core.resync(now))
        if self._delivering is None:
            self.dispatcher = self._new_dispatcher()
            self._delivering = asyncio.create_task(self.dispatcher.run(),
                                                   name="ops-dispatcher")

    async def _deposed(self) -> None:
        # Notices are delivered by the leader only (each once); a deposed one stops
        # between batches, like at shutdown.
        await self._stop_delivering()

    async def _stop_delivering(self) -> None:
        # The dispatcher ends between batches, so a delivered notice is always marked sent.
        delivering, self._delivering = self._delivering, None
        if delivering is None:
            return
        self.dispatcher.request_stop()
        _, stuck = await asyncio.wait([delivering], timeout=STOP_TIMEOUT_S)
        for task in stuck:
            task.cancel()
        await self.dispatcher.aclose()

    async def stop(self) -> None:
        await self._stop_delivering()
        for task in self._tasks:
            task.cancel()
        if self._tasks:
            _, stuck = await asyncio.wait(self._tasks, timeout=STOP_TIMEOUT_S)
            for task in stuck:
                # Shutdown must not hang on a broker that never acknowledges a disconnect.
                log.warning("ops task %s did not stop within %.0f s", task.get_name(),
                            STOP_TIMEOUT_S)
        self._tasks.clear()
        if self.leadership is not None and self.leadership.leading():
            # hand over now instead of letting the standby wait out the TTL (a rolling
            # restart); the ops tasks have ended, so nothing of ours writes after this
            try:
                await self.call(self.leadership.release)
            except Exception:
                log.exception("could not release the ops lease; the standby waits it out")
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._executor, self._close_core)
        self._executor.shutdown(wait=True)
        if self._inbox_executor is not None:
            await loop.run_in_executor(self._inbox_executor, self._close_inbox)
            self._inbox_executor.shutdown(wait=True)

    async def __aenter__(self) -> OpsService:
        await self.start()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.stop()

    def _put(self, message: inbox_store.InboxMessage, now: datetime) -> bool:
        """Into the shared inbox (on the inbox thread, its only user of the connection)."""
        if self._inbox_db is not None and _connection_lost(self._inbox_db):
            self._close_inbox()
        if self._inbox_db is None:
            self._inbox_db = self._open_db()
        return inbox_store.put(self._inbox_db, message, self.settings.instance, now)

    def _close_inbox(self) -> None:
        if self._inbox_db is not None:
            with contextlib.suppress(Exception):
                self._inbox_db.conn.close()
            self._inbox_db = None

    def _close_core(self) -> None:
        if self._core is not None:
            with contextlib.suppress(Exception):  # a lost connection may refuse to close
                self._core.db.conn.close()
            self._core = None

    def _with_core(self, fn: Callable[[OpsCore], T]) -> T:
        if self._core is not None and _connection_lost(self._core.db):
            # e.g. PostgreSQL ended the session of a leader stopped inside a transaction
            # (lease_store.fence_session): start over from what the database holds
            log.warning("the ops database connection was lost; reconnecting")
            self._close_core()
        if self._core is None:
            self._core = OpsCore(self._open_db(), self.settings, self.config)
            if self.leadership is not None:
                self._core.guard = self.leadership.guard
        return fn(self._core)

    async def call(self, fn: Callable[[OpsCore], T]) -> T:
        """Run ``fn(core)`` on the ops thread (the only user of the core's connection)."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._with_core, fn)

    async def _ticker(self) -> None:
        while True:
            await asyncio.sleep(self.config.tick_interval_s)
            if not self.leading():
                continue
            try:
                result = await self.call(lambda core: core.tick(self.clock.now()))
                self._after(result)
                await self.escalate()
            except Exception:
                log.exception("ops tick failed")

    async def escalate(self) -> list[Escalate]:
        """Queue the escalations due now (see coordinator.ops.escalation)."""
        cfg = self.config.escalation
        if not cfg.enabled:
            return []
        now = self.clock.now()
        queued = await self.call(lambda core: escalation_store.run(
            core.db, cfg.policy, self.config.notify, now, self.roster))
        if queued:
            self.dispatcher.wake()
            self._announce("incidents", "notifications")
        return queued

    async def _pruner(self) -> None:
        # Its own loop: a prune scans the dedupe table, far too often at the tick rate.
        while True:
            await asyncio.sleep(self.config.dedupe_prune_interval_s)
            if not self.leading():
                continue
            try:
                await self.prune_dedupe()
            except Exception:
                log.exception("ops dedupe prune failed")

    async def prune_dedupe(self) -> int:
        """Drop the dedupe keys no agent lifetime needs any more; return how many rows."""
        keep = self.config.dedupe_keep_per_agent

        def prune(core: OpsCore) -> int:
            with write_transaction(core.db):
                pruned = tracker_store.prune_processed(core.db, core.tracker, keep)
            if self.leadership is not None:
                keep_inbox = timedelta(seconds=self.config.cluster.inbox_keep_s)
                pruned += inbox_store.prune(core.db, self.clock.now(), keep_inbox)
            return pruned

        return await self.call(prune)

    async def _telemetry_maintainer(self) -> None:
        while True:
            await asyncio.sleep(self.config.telemetry.maintenance_interval_s)
            if not self.leading():
                continue  # one instance merges and prunes for all
            try:
                await self.maintain_telemetry()
            except Exception:
                log.exception("telemetry maintenance failed")

    async def maintain_telemetry(self) -> telemetry.Maintenance:
        """Downsample old telemetry and drop what is past retention (see ops.telemetry)."""
        cfg = self.config.telemetry
        now = self.clock.now()
        done = await self.call(lambda core: telemetry.maintain(
            core.db, now, raw_keep=cfg.raw_keep, bucket_s=cfg.bucket_s,
            retention=cfg.retention))
        if self.metrics is not None:
            self.metrics.telemetry_maintenance.labels("merged").inc(done.merged)
            self.metrics.telemetry_maintenance.labels("pruned").inc(done.pruned)
        return done

    async def store_telemetry(self, summary: TelemetrySummary) -> bool:
        """Store one summary; False when it was a redelivery (already stored)."""
        if not self.config.telemetry.store:
            outcome, stored = "ignored", False
        else:
            outcome = await self.call(lambda core: telemetry.accept(core.db, summary))
            stored = outcome == "stored"
        if self.metrics is not None:
            self.metrics.telemetry_summaries.labels(outcome).inc()
        if stored:
            self._announce("telemetry")
        return stored

    def _announce(self, *topics: str) -> None:
        if self.live is not None:
            for topic in topics:
                self.live.publish(topic)

    def _after(self, result: HandleResult) -> None:
        if result.rerouted or result.transitions:
            self.dispatcher.wake()
            self._announce("warehouses", "incidents", "orders", "notifications")
        if self.metrics is not None:
            for timing in result.rerouted:
                self.metrics.reroute_duration.observe(max(0.0, timing.committed - timing.started))
                self.metrics.rerouted_orders.labels("moved").inc(timing.moved)
                self.metrics.rerouted_orders.labels("needs_attention").inc(timing.stuck)
        if self.on_result is not None:
            self.on_result(result)

    # -- MessageSink -----------------------------------------------------------------
    async def accept(self, message: OpsMessage, received: float) -> None:
        # A failure propagates: the watcher retries the message with backoff, then counts
        # and drops it (it was already acknowledged); the subscription never ends.
        if isinstance(message, TelemetrySummary):
            await self.store_telemetry(message)
            return
        if isinstance(message, AuditRecord):
            # what an agent did with one of our breaker commands, onto its incident
            if await self.call(lambda core: commands.record_audit(core.db, message)):
                self._announce("incidents")
            return
        now = self.clock.now()
        if self.leadership is not None:
            # every instance stores what it received; the leader applies it in order
            if self._inbox_executor is not None:
                await asyncio.get_running_loop().run_in_executor(
                    self._inbox_executor, self._put, message, now)
            else:
                instance = self.settings.instance
                await self.call(lambda core: inbox_store.put(core.db, message, instance, now))
            self.leadership.wake()
            return
        result = await self.call(lambda core: core.handle(message, now))
        for timing in result.rerouted:
            timing.started = min(timing.started, received)
        self._after(result)

    async def reject(self, topic: str, error: str) -> None:
        await self.call(lambda core: core.count_bad_payload())

    # -- for the API -----------------------------------------------------------------
    async def handle(self, message: BreakerEvent | AgentStatus | TrackingUpdate
                     ) -> HandleResult:
        """Apply ``message`` now; with several instances it goes to the shared inbox and
        the leader applies it (the result then lists no transitions)."""
        now = self.clock.now()
        if self.leadership is not None:
            await self.accept(message, time.perf_counter())
            return HandleResult()
        started = time.perf_counter()
        result = await self.call(lambda core: core.handle(message, now))
        for timing in result.rerouted:
            timing.started = min(timing.started, started)
        self._after(result)
        return result

    async def confirm_incarnation(self, agent_id: str, *, actor: str,
                                  reason: str) -> HandleResult:
        now = self.clock.now()
        result = await self.call(lambda core: core.confirm_incarnation(
            agent_id, actor=actor, reason=reason, now=now))
        self._after(result)
        return result

    async def pause(self, warehouse_id: str, *, actor: str, reason: str) -> HandleResult:
        now = self.clock.now()
        result = await self.call(
            lambda core: core.pause(warehouse_id, actor=actor, reason=reason, now=now))
        self._after(result)
        return result

    async def resume(self, warehouse_id: str, *, actor: str, reason: str) -> HandleResult:
        now = self.clock.now()
        result = await self.call(
            lambda core: core.resume(warehouse_id, actor=actor, reason=reason, now=now))
        self._after(result)
        return result
