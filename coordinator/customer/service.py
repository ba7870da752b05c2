"""The customer side at run time: a lifespan hook that wires it into the running app.

It validates ``[customer]`` (templates included) at start, so a bad template stops the
coordinator with an error naming it; lets the order intake write each new order's
contact and payment deadlines in the order's own transaction; registers the delivery
adapter of customer notices with the ops dispatcher; and runs :func:`customer_tick` every
``ops.tick_interval_s`` on a thread of its own (its own connection), waking the
dispatcher when something was queued.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from fastapi import FastAPI

from coordinator.customer import store
from coordinator.customer.config import CustomerConfig, check_templates, customer_config_of
from coordinator.customer.delivery import CustomerAdapter
from coordinator.customer.tick import NODE_CURSOR, TickResult, customer_tick
from coordinator.db import Database, open_database, write_transaction
from coordinator.errors import StoreError
from coordinator.group_commit import GroupCommitter
from coordinator.ops.config import OpsConfig
from coordinator.ops.runner import OpsService
from coordinator.reconnect import OutageLog, ReconnectingDatabase
from coordinator.settings import Settings
from coordinator.web import ops_config_in
from protocols.clock import Clock
from protocols.orders import OrderIn

log = logging.getLogger(__name__)
WAKE_DELAY_S = 0.02  # replies queued within this are delivered in one dispatcher round


class CustomerService:
    def __init__(self, settings: Settings, clock: Clock, ops_config: OpsConfig,
                 config: CustomerConfig | None = None) -> None:
        self.settings = settings
        self.clock = clock
        self.config = config if config is not None else customer_config_of(settings)
        self.templates = check_templates(self.config)
        self.tz = ZoneInfo(ops_config.notify.timezone)
        self.interval_s = ops_config.tick_interval_s
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="customer-tick")
        # the tick thread's, replaced when the server ended it (a restart, a failover)
        self._conn = ReconnectingDatabase(
            lambda: open_database(settings.db_path, migrate=False), "customer tick")
        self._outage = OutageLog("customer tick")
        self._task: asyncio.Task[None] | None = None
        self._adapter: CustomerAdapter | None = None
        self.ops: OpsService | None = None
        self.last: TickResult | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake_lock = threading.Lock()
        self._wake_pending = False

    # -- wiring ------------------------------------------------------------------------
    def on_stored(self, db: Database, created: Sequence[tuple[str, OrderIn]],
                  now: datetime) -> None:
        store.record_intake(db, created, now, self.config.payment)

    def start(self, app: FastAPI) -> None:
        self._loop = asyncio.get_running_loop()
        intake: GroupCommitter = app.state.intake
        intake.on_stored = self.on_stored
        intake.hold_unpaid = not self.config.payment.unpaid_reserves_stock
        ops = getattr(app.state, "ops", None)
        if isinstance(ops, OpsService):
            self.ops = ops
            path = self.settings.db_path
            self._adapter = CustomerAdapter(
                ops.dispatcher.client, self.config, lambda: open_database(path, migrate=False),
                timeout_s=ops.config.notify.dispatcher.timeout_s)
            ops.dispatcher.adapters["customer"] = self._adapter
        # before the app serves: the node sweep starts at the events that exist now
        db = open_database(self.settings.db_path, migrate=False)
        try:
            with write_transaction(db):
                store.start_cursor(db, NODE_CURSOR)
        finally:
            db.conn.close()
        self._task = asyncio.create_task(self._ticker(), name="customer-tick")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        await asyncio.get_running_loop().run_in_executor(self._executor, self._close)
        self._executor.shutdown(wait=True)

    def _close(self) -> None:
        self._conn.close()
        if self._adapter is not None:
            self._adapter.close()

    def wake_dispatcher(self) -> None:
        """Callable from any thread (routes run in the thread pool): the dispatcher's
        event belongs to the app's loop.

        Wakes are gathered for ``WAKE_DELAY_S``: at 200 inquiries a second a wake per
        reply made a dispatcher round (a read of the outbox, a write transaction on the
        event loop) per reply; gathered, one round takes several. The reply waits that
        much longer to leave (the first-response target is 90 s)."""
        if self.ops is None or self._loop is None:
            return
        with self._wake_lock:
            if self._wake_pending:
                return
            self._wake_pending = True
        self._loop.call_soon_threadsafe(self._loop.call_later, WAKE_DELAY_S, self._wake)

    def _wake(self) -> None:
        with self._wake_lock:
            self._wake_pending = False
        if self.ops is not None:
            self.ops.dispatcher.wake()

    # -- the tick ------------------------------------------------------------------------
    def _tick_sync(self, now: datetime) -> TickResult:
        return customer_tick(self._conn.get(), now, self.settings, self.config,
                             self.templates, self.tz)

    async def tick(self, now: datetime | None = None) -> TickResult:
        """One tick at ``now`` (default: the clock's), on the tick thread."""
        moment = now if now is not None else self.clock.now()
        loop = asyncio.get_running_loop()
        result = await loop.run_in_executor(self._executor, self._tick_sync, moment)
        self.last = result
        if result.queued:
            self.wake_dispatcher()
        return result

    async def _ticker(self) -> None:
        while True:
            try:
                # with several coordinator instances only the ops leader ticks (each step
                # is claimed in the database as well, so a late follower does nothing twice)
                if self.ops is None or self.ops.leading():
                    await self.tick()
            except StoreError as exc:  # the database away: logged once, retried spaced out
                self._outage.failed(exc)
            except Exception:  # a failed round is retried at the next tick
                log.exception("customer tick failed")
            else:
                self._outage.succeeded()
            await asyncio.sleep(self._outage.backoff_s(self.interval_s))


def customer_lifespan(config: CustomerConfig | None = None
                      ) -> Callable[[FastAPI], AbstractAsyncContextManager[Any]]:
    """A lifespan hook (after the ops one): runs :class:`CustomerService` at
    ``app.state.customer``."""

    @asynccontextmanager
    async def running(app: FastAPI) -> AsyncIterator[None]:
        service = CustomerService(app.state.settings, app.state.clock, ops_config_in(app),
                                  config)
        service.start(app)
        app.state.customer = service
        try:
            yield
        finally:
            app.state.customer = None
            await service.stop()

    return running
