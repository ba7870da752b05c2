"""Group commit for order intake: one writer thread, many waiting requests.

Request threads hand their orders to :class:`GroupCommitter` and wait. The writer takes
everything queued (up to ``max_batch`` orders) and stores it with one
``store.submit_orders`` call, i.e. one transaction and one commit. When requests arrive
slowly every group holds one request and nothing waits; when they pile up the cost of a
commit is shared, so the queue drains instead of growing. A group that fails as a whole
(say a SKU deleted in between) is retried request by request, so one bad request never
fails another.
"""

from __future__ import annotations

import asyncio
import queue
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field

from sqlite_utils import Database

from coordinator import store
from coordinator.errors import StoreError
from coordinator.settings import Settings
from protocols.clock import Clock
from protocols.orders import OrderIn


@dataclass(slots=True)
class _Pending:
    orders: Sequence[OrderIn]
    future: Future[list[store.OrderOutcome]] = field(default_factory=Future)


class GroupCommitter:
    def __init__(self, connect: Callable[[], Database], settings: Settings, clock: Clock,
                 max_batch: int = 256) -> None:
        self._connect = connect
        self._settings = settings
        self._clock = clock
        self._max_batch = max_batch
        self._queue: queue.SimpleQueue[_Pending | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="order-intake", daemon=True)
        self.groups = 0
        self.orders = 0
        # set by a lifespan hook before orders arrive (the customer side's contacts)
        self.on_stored: store.StoredHook | None = None

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._queue.put(None)
        self._thread.join(timeout)

    def submit(self, orders: Sequence[OrderIn]) -> list[store.OrderOutcome]:
        """Store and allocate ``orders`` (blocking until committed); see store.submit_orders."""
        if not self._thread.is_alive():
            message = "order intake is not running"
            raise StoreError(message)
        pending = _Pending(orders)
        self._queue.put(pending)
        return pending.future.result()

    async def submit_async(self, orders: Sequence[OrderIn]) -> list[store.OrderOutcome]:
        """:meth:`submit` for the event loop: awaits the commit instead of blocking."""
        if not self._thread.is_alive():
            message = "order intake is not running"
            raise StoreError(message)
        pending = _Pending(orders)
        self._queue.put(pending)
        return await asyncio.wrap_future(pending.future)

    def _run(self) -> None:
        db = self._connect()
        stopping = False
        while not stopping:
            first = self._queue.get()
            if first is None:
                break
            group = [first]
            count = len(first.orders)
            while count < self._max_batch:
                try:
                    nxt = self._queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    stopping = True
                    break
                group.append(nxt)
                count += len(nxt.orders)
            self._commit(db, group)
        # answer anything still queued so no request waits forever
        while True:
            try:
                left = self._queue.get_nowait()
            except queue.Empty:
                break
            if left is not None:
                left.future.set_exception(StoreError("order intake stopped"))

    def _store(self, db: Database, orders: Sequence[OrderIn]) -> list[store.OrderOutcome]:
        return store.submit_orders(
            db, orders, now=self._clock.now(), config=self._settings.allocation,
            skew_threshold_s=self._settings.intake.skew_threshold_s,
            on_stored=self.on_stored,
        )

    def _commit(self, db: Database, group: list[_Pending]) -> None:
        self.groups += 1
        self.orders += sum(len(p.orders) for p in group)
        if len(group) > 1:  # answer requests naming unknown SKUs/stores before grouping
            valid = []
            for pending in group:
                try:
                    store.check_references(db, pending.orders)
                except Exception as exc:
                    pending.future.set_exception(exc)
                else:
                    valid.append(pending)
            group = valid
            if not group:
                return
        if len(group) == 1:
            self._settle(db, group[0])
            return
        try:
            outcomes = self._store(db, [o for p in group for o in p.orders])
        except Exception:  # isolate the culprit: every request on its own
            for pending in group:
                self._settle(db, pending)
            return
        start = 0
        for pending in group:
            end = start + len(pending.orders)
            pending.future.set_result(outcomes[start:end])
            start = end

    def _settle(self, db: Database, pending: _Pending) -> None:
        try:
            pending.future.set_result(self._store(db, pending.orders))
        except Exception as exc:  # handed to the waiting request, which maps it to a status
            pending.future.set_exception(exc)
