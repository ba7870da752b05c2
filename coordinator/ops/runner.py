"""The ops service the app's lifespan runs: watcher, ticker and dispatcher tasks.

All database work of the ops side goes through one single-thread executor that owns
the :class:`OpsCore` and its database connection, so inputs (MQTT, HTTP, ticks) are
applied one call at a time in arrival order (a burst of MQTT messages in one call, see
:meth:`OpsService.accept_batch`) and a long reroute never blocks the event loop. The
dispatcher has its own connection and delivers beside it; the periodic loops are in
:mod:`coordinator.ops.periodic`, the cluster's inbox puts in
:mod:`coordinator.ops.inbox_writer`.

Usage (inside FastAPI's lifespan)::

    async with OpsService(settings, ops_config) as ops:
        app.state.ops = ops
        yield
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from types import TracebackType
from typing import TypeVar

from coordinator.db import Database, WalCheckpointer, close_quietly, connection_lost, open_database
from coordinator.live import Hub
from coordinator.observability import Metrics
from coordinator.ops import (
    commands,
    escalation_store,
    lease_store,
    telemetry,
)
from coordinator.ops.config import OpsConfig, ops_config_of
from coordinator.ops.handler import HandleResult, OpsCore
from coordinator.ops.inbox_writer import InboxWriter
from coordinator.ops.leadership import Leadership
from coordinator.ops.notice_sweeps import Tally
from coordinator.ops.notify.dispatcher import Dispatcher
from coordinator.ops.periodic import Periodic
from coordinator.ops.watcher import BatchMessage, OpsMessage, Watcher, WatcherStats
from coordinator.postgres import is_postgres_url
from coordinator.read_yield import ReadYield
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


class OpsService(Periodic):
    def __init__(self, settings: Settings, config: OpsConfig | None = None,
                 clock: Clock | None = None, *, topics: Topics | None = None,
                 live: Hub | None = None, metrics: Metrics | None = None,
                 roster: escalation_store.RosterLookup = escalation_store.no_roster,
                 checkpointer: WalCheckpointer | None = None,
                 read_yield: ReadYield | None = None) -> None:
        """``checkpointer``: the host app's (SQLite); without one the service runs its own.
        ``read_yield``: the host app's reads, held back while a transition is applied."""
        self.settings = settings
        self.config = config or ops_config_of(settings)
        self.clock: Clock = clock or SystemClock()
        self.topics = topics or Topics(settings.topic_root)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ops-core")
        self.inbox: InboxWriter | None = None  # with several instances
        self._core: OpsCore | None = None
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
        self.read_yield = read_yield
        # On SQLite the ops connections never fold the WAL back inside their commits (a
        # 10,000-order reroute's commit spent ~0.06 s of ~0.5 s on it): a checkpointer
        # thread does, beside them, the host app's or, for a service on its own, this one
        self.checkpointer: WalCheckpointer | None = None
        if checkpointer is None and not is_postgres_url(settings.db_path):
            self.checkpointer = WalCheckpointer(settings.db_path)
        # Several instances on one database: only the lease holder runs the ops loop.
        self.leadership: Leadership | None = None
        self._migrated = False  # by this service's first connection (see _open_db)
        self._sweep_failures = Tally()  # shared by every core this service builds
        if self.config.cluster.enabled:
            self.inbox = InboxWriter(settings.instance, self._open_db, self.call,
                                     own_thread=is_postgres_url(settings.db_path))
            self.leadership = Leadership(settings.instance, self.config.cluster, self.clock,
                                         self.call,
                                         handle_attempts=self.config.mqtt.handle_attempts)
            self.leadership.on_elected = self._elected
            self.leadership.on_deposed = self._deposed
            self.leadership.on_result = self._after
        self.dispatcher = self._new_dispatcher()

    def _delivers_unled(self) -> bool:
        """Whether this instance delivers notices whoever leads. On PostgreSQL each
        dispatcher claims due notices with ``FOR UPDATE SKIP LOCKED`` and a claim lease
        (:func:`coordinator.ops.notify.outbox.claim`): any number of instances deliver
        side by side and each notice goes out once, so delivery survives a leader busy
        with a storm or a failover. SQLite has no such claim (a dispatcher reads the due
        rows): two instances would send the same notices, so only the leader delivers."""
        return self.leadership is None or is_postgres_url(self.settings.db_path)

    def _new_dispatcher(self) -> Dispatcher:
        return Dispatcher(self._open_db, self.config.notify, self.clock,
                          allowed=None if self._delivers_unled() else self.leading)

    def _start_delivering(self) -> None:
        if self._delivering is None:
            self.dispatcher = self._new_dispatcher()
            self._delivering = asyncio.create_task(self.dispatcher.run(),
                                                   name="ops-dispatcher")

    def _open_db(self) -> Database:
        """A connection of the ops loop (the core's, the dispatcher's). With several
        instances on PostgreSQL, one stopped inside a transaction (holding the write
        lock) is ended by the server after the lease TTL (``lease_store.fence_session``),
        so the standby is never held behind it."""
        # Migrated by the first connection only. A reconnect (after the server ended a
        # session, or a new dispatcher's) must not take the migration lock: an instance
        # stopped while holding it would hold every later one behind it.
        db = open_database(self.settings.db_path, migrate=not self._migrated,
                           autocheckpoint=False)
        self._migrated = True
        if self.leadership is not None:
            lease_store.fence_session(db, self.config.cluster.lease_ttl_s,
                                      self.settings.instance)
        return db

    @property
    def watcher_stats(self) -> WatcherStats:
        return self.watcher.stats

    def leading(self) -> bool:
        """This instance runs the ops loop (always, with one instance)."""
        return self.leadership is None or self.leadership.leading()

    # -- running ---------------------------------------------------------------------
    async def start(self) -> None:
        if self.checkpointer is not None:
            self.checkpointer.start()
        if self.leadership is not None:
            # build the core (and migrate); the ops loop starts when this one is elected
            await self.call(lambda core: None)
            self._tasks.append(asyncio.create_task(self.leadership.run_lease(),
                                                   name="ops-lease"))
            self._tasks.append(asyncio.create_task(self.leadership.run_applier(),
                                                   name="ops-inbox-applier"))
            if self._delivers_unled():
                self._start_delivering()
        else:
            # build the core (and migrate) before any input, and trust the persisted state
            await self.call(lambda core: core.resync(self.clock.now()))
            await self.call(lambda core: core.tick(self.clock.now()))
            self._start_delivering()
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
        self._start_delivering()

    async def _deposed(self) -> None:
        # On SQLite notices are delivered by the leader only (each once); a deposed one
        # stops between batches, like at shutdown. On PostgreSQL it goes on delivering.
        if not self._delivers_unled():
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
        if self.inbox is not None:
            await self.inbox.aclose()
        if self.checkpointer is not None:  # after the last ops commit: a final checkpoint
            await asyncio.to_thread(self.checkpointer.stop)

    async def __aenter__(self) -> OpsService:
        await self.start()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.stop()

    @property
    def sweep_failures(self) -> int:
        """Notice sweeps that failed (:mod:`coordinator.ops.notice_sweeps`), across
        reconnects; read at scrape time from the event loop (a plain int)."""
        return self._sweep_failures.count

    def _close_core(self) -> None:
        if self._core is not None:
            close_quietly(self._core.db)
            self._core = None

    def _with_core(self, fn: Callable[[OpsCore], T]) -> T:
        if self._core is not None and connection_lost(self._core.db):
            # e.g. PostgreSQL ended the session of a leader stopped inside a transaction
            # (lease_store.fence_session): start over from what the database holds
            log.warning("the ops database connection was lost; reconnecting")
            self._close_core()
        if self._core is None:
            self._core = OpsCore(self._open_db(), self.settings, self.config,
                                 sweep_failures=self._sweep_failures)
            if self.leadership is not None:
                self._core.guard = self.leadership.guard
            self._core.read_yield = self.read_yield
        return fn(self._core)

    async def call(self, fn: Callable[[OpsCore], T]) -> T:
        """Run ``fn(core)`` on the ops thread (the only user of the core's connection)."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._with_core, fn)

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
        elif result.notices_queued:  # a tick queued notices: delivered now, not next poll
            self.dispatcher.wake()
            self._announce("notifications")
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
        if self.leadership is not None and self.inbox is not None:
            # every instance stores what it received; the leader applies it in order
            await self.inbox.put([message], now)
            self.leadership.wake()
            return
        result = await self.call(lambda core: core.handle(message, now))
        for timing in result.rerouted:
            timing.started = min(timing.started, received)
        self._after(result)

    async def accept_batch(self, messages: list[BatchMessage], received: float) -> int:
        """A burst the watcher took at once (:class:`coordinator.ops.watcher.BatchSink`):
        with several instances into the shared inbox in one statement; alone, applied
        in transactions of up to ``ops.cluster.apply_batch`` messages that hold the write
        lock for about ``apply_budget_s`` at most (intake waits on it). Returns how many
        were applied: after a failed transaction the watcher hands the rest over one by
        one, with its retries, so the one that fails is isolated."""
        now = self.clock.now()
        if self.leadership is not None and self.inbox is not None:
            await self.inbox.put(messages, now)
            self.leadership.wake()
            return len(messages)
        cluster = self.config.cluster
        done = 0
        while done < len(messages):
            chunk = messages[done:done + cluster.apply_batch]
            try:
                result, applied = await self.call(functools.partial(
                    OpsCore.handle_many, messages=chunk, now=now,
                    budget_s=cluster.apply_budget_s))
            except Exception:
                if done == 0:
                    raise
                log.warning("applying a burst failed after %d of %d messages", done,
                            len(messages), exc_info=True)
                return done
            done += applied
            for timing in result.rerouted:
                timing.started = min(timing.started, received)
            self._after(result)
        return done

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
