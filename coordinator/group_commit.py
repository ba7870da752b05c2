"""Group commit of order intake: request threads hand their orders to
:class:`GroupCommitter` and wait. The writer takes everything queued (up to
``max_batch`` orders) and stores it with one :func:`~coordinator.intake.submit_orders`
call, i.e. one transaction and one commit. When requests arrive slowly every group holds
one request and nothing waits; when they pile up the cost of a commit is shared, so the
queue drains instead of growing. Requests queued while the writer waits for the write
lock join its batch. A group that fails as a whole (say a SKU deleted in between) is
retried request by request, so one bad request never fails another.

The writer's connection is replaced when the server ended it (a PostgreSQL restart or
failover): found lost before a group, it is opened anew and the group goes through; lost
under a group, every request of the group gets the error (:class:`ConnectionLost`, a
503), so no accepted order is dropped unanswered, and the next group uses a new one.
"""

from __future__ import annotations

import asyncio
import queue
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field

from coordinator.db import Database
from coordinator.errors import ConnectionLost, StoreError
from coordinator.intake import OrderOutcome, StoredHook, check_references, submit_orders
from coordinator.reconnect import ReconnectingDatabase
from coordinator.settings import Settings
from protocols.clock import Clock
from protocols.orders import OrderIn


@dataclass(slots=True)
class _Pending:
    orders: Sequence[OrderIn]
    future: Future[list[OrderOutcome]] = field(default_factory=Future)


class GroupCommitter:
    def __init__(self, connect: Callable[[], Database], settings: Settings, clock: Clock,
                 max_batch: int = 256) -> None:
        self._conn = ReconnectingDatabase(connect, "order intake")
        self._settings = settings
        self._clock = clock
        self._max_batch = max_batch
        self._queue: queue.SimpleQueue[_Pending | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="order-intake", daemon=True)
        self.groups = 0
        self.orders = 0
        self._stopping = False
        # set by a lifespan hook before orders arrive (the customer side's contacts)
        self.on_stored: StoredHook | None = None
        self.hold_unpaid = False

    def start(self) -> None:
        self._thread.start()

    @property
    def queued(self) -> int:
        """Requests waiting for the writer (not yet taken into a batch)."""
        return self._queue.qsize()

    def stop(self, timeout: float = 10.0) -> None:
        self._queue.put(None)
        self._thread.join(timeout)

    def submit(self, orders: Sequence[OrderIn]) -> list[OrderOutcome]:
        """Store and allocate ``orders`` (blocking until committed); see submit_orders."""
        if not self._thread.is_alive():
            message = "order intake is not running"
            raise StoreError(message)
        pending = _Pending(orders)
        self._queue.put(pending)
        return pending.future.result()

    async def submit_async(self, orders: Sequence[OrderIn]) -> list[OrderOutcome]:
        """:meth:`submit` for the event loop: awaits the commit instead of blocking."""
        if not self._thread.is_alive():
            message = "order intake is not running"
            raise StoreError(message)
        pending = _Pending(orders)
        self._queue.put(pending)
        return await asyncio.wrap_future(pending.future)

    def _run(self) -> None:
        try:
            self._serve()
        finally:
            self._conn.close()

    def _serve(self) -> None:
        while not self._stopping:
            first = self._queue.get()
            if first is None:
                break
            group = [first, *self._take(self._max_batch - len(first.orders))]
            try:
                self._commit(self._conn.get(), group)
            except StoreError as exc:  # no connection: the database is away (a 503)
                _answer_all(group, exc)
        # answer anything still queued so no request waits forever
        while True:
            try:
                left = self._queue.get_nowait()
            except queue.Empty:
                break
            if left is not None:
                left.future.set_exception(StoreError("order intake stopped"))

    def _take(self, room: int) -> list[_Pending]:
        """What is queued now, up to ``room`` orders (the stop marker ends the writer)."""
        taken: list[_Pending] = []
        while room > 0 and not self._stopping:
            try:
                nxt = self._queue.get_nowait()
            except queue.Empty:
                break
            if nxt is None:
                self._stopping = True
                break
            taken.append(nxt)
            room -= len(nxt.orders)
        return taken

    def _store(self, db: Database, orders: Sequence[OrderIn],
               group: list[_Pending] | None = None) -> list[OrderOutcome]:
        """``group``: requests queued while the write lock was awaited join it (and this
        batch): another instance holding the lock for a few milliseconds then costs one
        transaction, not one per request that arrived meanwhile."""
        joining = None
        if group is not None:
            def joining() -> list[OrderIn]:
                late = self._take(self._max_batch - sum(len(p.orders) for p in group))
                group.extend(late)
                joined = [o for p in late for o in p.orders]
                self.orders += len(joined)
                return joined
        return submit_orders(
            db, orders, now=self._clock.now(), config=self._settings.allocation,
            skew_threshold_s=self._settings.intake.skew_threshold_s,
            on_stored=self.on_stored, hold_unpaid=self.hold_unpaid, joining=joining,
        )

    def _commit(self, db: Database, group: list[_Pending]) -> None:
        self.groups += 1
        self.orders += sum(len(p.orders) for p in group)
        if len(group) > 1:  # answer requests naming unknown SKUs/stores before grouping
            valid = []
            for pending in group:
                try:
                    check_references(db, pending.orders)
                except ConnectionLost:
                    raise  # not this request's fault: the whole group is answered
                except Exception as exc:
                    pending.future.set_exception(exc)
                else:
                    valid.append(pending)
            group = valid
            if not group:
                return
        try:
            outcomes = self._store(db, [o for p in group for o in p.orders], group)
        except ConnectionLost as exc:
            # one request at a time would fail alike on the dead connection. ``group``
            # holds the requests that joined while it waited for the lock, too. Lost
            # before its COMMIT was answered, the group may have been stored: a repeat
            # of a request finds its orders (keyed by the channel's order id)
            _answer_all(group, exc)
            return
        except Exception as exc:
            if len(group) == 1:  # handed to the waiting request, which maps it to a status
                group[0].future.set_exception(exc)
                return
            for pending in group:  # isolate the culprit: every request on its own
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


def _answer_all(group: list[_Pending], exc: Exception) -> None:
    """Every request of ``group`` not answered yet gets ``exc``: none waits forever."""
    for pending in group:
        if not pending.future.done():
            pending.future.set_exception(exc)
