"""Reads give way to the ops loop while it applies a warehouse's transition.

The ops thread and the threads answering reads share one interpreter lock, which the
interpreter shares evenly between the threads that want it. 32 dashboards asking again
the moment they are answered kept ~32 reads in progress at all times, and a trip applied
under them took 1.6-2x as long (``python -m benchmarks reroute_under_reads``) whatever
the reads cost: a cheaper read is only asked again sooner. Python has no thread
priorities, so the priority is kept here, cooperatively, with two rules:

- **A transition goes first.** From the moment the ops thread finds that a warehouse went
  down (or came back) until its orders are committed and the stores' notices queued, a
  read that arrives waits on a future (no thread, connection or lock held).
- **Few reads in progress.** At most ``max_active`` reads are computed at once (until
  their response starts); the others queue here, in arrival order. Reads are CPU-bound
  on this interpreter, so more at once adds no throughput, and it bounds what is already
  under way when a transition starts and must still be finished beside it (with 32 in
  progress: ~60 ms of a 120 ms trip).

Both together are bounded: a read waits at most ``max_wait_s`` from its arrival, then it
is answered whatever happens (over the slot limit if it must), so a wall screen is never
blind for longer than that. ``max_wait_s = 0`` turns both rules off.

What waits: ``GET`` and ``HEAD`` requests (dashboards, ``/metrics``, order lookups), and
each recompute of the dashboard's server-sent event stream for a transition only
(:meth:`ReadYield.give_way`); the stream's request holds its slot only until its
response starts. What never waits:
writes (order intake has its own lock with the ops loop), the health probe (a load
balancer must not take a busy coordinator for a dead one) and the reads answered on the
ops thread itself (``/warehouses/{id}/availability``: they wait behind a transition
anyway, without CPU, and a slot held meanwhile would only hold other reads back).

``hold``/``release`` are called on the ops thread, ``admit``/``leave`` on an event loop:
the state is guarded by a lock and waiters are woken with ``call_soon_threadsafe``.
"""

from __future__ import annotations

import asyncio
import re
import threading
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass

from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

# Reads admitted at once: the liveness probe (a busy coordinator is not a dead one), and
# the reads answered on the ops thread itself (they wait behind a transition anyway,
# without CPU, so a slot held meanwhile would only hold other reads back).
NEVER_WAIT = re.compile(r"/healthz|/warehouses/[^/]+/availability")
READ_METHODS = frozenset({"GET", "HEAD"})


@dataclass
class YieldStats:
    deferred: int = 0  # reads that waited for a transition to end
    waited_s: float = 0.0  # their waits for transitions, summed
    timed_out: int = 0  # reads that went ahead at max_wait_s (transition or queue)
    transitions: int = 0  # transitions reads gave way to
    queued: int = 0  # reads that waited for a slot (max_active in progress)
    queued_s: float = 0.0  # their waits for a slot, summed


Waiter = tuple[asyncio.AbstractEventLoop, "asyncio.Future[None]"]


class ReadYield:
    """The ops loop's claim on the interpreter, and the reads' slots.

    Every read waits in :meth:`admit` at most ``max_wait_s`` from its arrival, for a
    transition and a slot together; then it goes ahead whatever happens (over the slot
    limit if it must), counted in ``timed_out``. A read waiting for a transition holds
    no slot; one that got its slot while a transition began waits for it too, within
    the same deadline (so queued reads cannot start a transition's work behind its back,
    and never wait in waves of ``max_active`` each)."""

    def __init__(self, max_wait_s: float, max_active: int) -> None:
        """``max_wait_s``: the longest a read waits (0: reads never wait: no yield and
        no slot limit); ``max_active``: reads computed at once (0: no limit)."""
        self.max_wait_s = max_wait_s
        self.max_active = max_active if max_wait_s > 0 else 0
        self.stats = YieldStats()
        self._lock = threading.Lock()
        self._holders = 0
        self._held: list[Waiter] = []  # waiting for the transition to end
        self._active = 0  # admitted reads not yet left (over max_active after a timeout)
        self._queue: deque[Waiter] = deque()  # waiting for a slot, in arrival order

    # -- the ops thread --------------------------------------------------------------
    @property
    def held(self) -> bool:
        return self._holders > 0

    def hold(self) -> None:
        """A transition begins (nested holds count)."""
        if self.max_wait_s <= 0:
            return
        with self._lock:
            self._holders += 1
            if self._holders == 1:
                self.stats.transitions += 1

    def release(self) -> None:
        """The transition ended: every read waiting for it goes on."""
        if self.max_wait_s <= 0:
            return
        with self._lock:
            self._holders = max(0, self._holders - 1)
            if self._holders:
                return
            waiters, self._held = self._held, []
        for waiter in waiters:
            _wake(waiter)  # one whose loop has gone has no one left to wake

    # -- the event loop --------------------------------------------------------------
    async def admit(self) -> None:
        """Wait (at most ``max_wait_s`` in all) for no transition and for a slot; every
        admitted read must :meth:`leave` exactly once."""
        if self.max_wait_s <= 0:
            return
        deadline = time.monotonic() + self.max_wait_s
        waited, late = 0.0, False
        try:
            if self._holders:
                waited, late = await self._wait_for_transition(deadline)
            late = await self._take_slot(deadline) or late
            try:
                if self._holders and not late:  # it began while this read was queued
                    more, late = await self._wait_for_transition(deadline)
                    waited += more
            except BaseException:
                self.leave()
                raise
        finally:
            if waited or late:
                with self._lock:
                    self.stats.deferred += 1 if waited else 0
                    self.stats.waited_s += waited
                    self.stats.timed_out += 1 if late else 0

    async def give_way(self) -> None:
        """Wait for no transition, at most ``max_wait_s``, without a slot: for the
        recomputes of the dashboard's live stream, which every open page runs after
        each change and which share one computation (a slot each would split them into
        batches of ``max_active``, each computing again)."""
        if self.max_wait_s <= 0 or not self._holders:
            return
        waited, late = await self._wait_for_transition(time.monotonic() + self.max_wait_s)
        with self._lock:
            self.stats.deferred += 1 if waited else 0
            self.stats.waited_s += waited
            self.stats.timed_out += 1 if late else 0

    def leave(self) -> None:
        """A read's response started (or it failed): its slot goes to the next one."""
        if self.max_active <= 0:
            return
        with self._lock:
            self._active = max(0, self._active - 1)
            handed = self._hand_over()
        for waiter in handed:
            if not _wake(waiter):  # its loop is gone: the slot goes on to the next
                self.leave()

    def _hand_over(self) -> list[Waiter]:
        """Under the lock: the queued reads that the free slots go to."""
        handed = []
        while self._queue and self._active < self.max_active:
            handed.append(self._queue.popleft())
            self._active += 1
        return handed

    async def _take_slot(self, deadline: float) -> bool:
        """Whether the deadline came first (the read then goes ahead over the limit)."""
        if self.max_active <= 0:
            return False
        loop = asyncio.get_running_loop()
        with self._lock:
            if self._active < self.max_active and not self._queue:
                self._active += 1
                return False
            future: asyncio.Future[None] = loop.create_future()
            waiter = (loop, future)
            self._queue.append(waiter)
            self.stats.queued += 1
        started = time.monotonic()
        try:
            await asyncio.wait_for(asyncio.shield(future), max(0.0, deadline - started))
        except TimeoutError:
            with self._lock:
                if waiter not in self._queue:
                    return False  # a slot was handed to it meanwhile: counted in _active
                self._queue.remove(waiter)  # it goes ahead over the limit
                self._active += 1
            return True
        except asyncio.CancelledError:
            # the client went away while queued; a slot already handed to it goes on
            with self._lock:
                handed = waiter not in self._queue
                if not handed:
                    self._queue.remove(waiter)
            if handed:
                self.leave()
            raise
        finally:
            with self._lock:
                self.stats.queued_s += time.monotonic() - started
        return False

    async def _wait_for_transition(self, deadline: float) -> tuple[float, bool]:
        """(seconds waited, whether the deadline came first)."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        with self._lock:
            if not self._holders:
                return 0.0, False
            self._held.append((loop, future))
        started = time.monotonic()
        try:
            done, _ = await asyncio.wait([future], timeout=max(0.0, deadline - started))
        finally:
            if not future.done():
                with self._lock:  # dropped: a long transition must not gather dead futures
                    self._held = [w for w in self._held if w[1] is not future]
        return time.monotonic() - started, not done


def _wake(waiter: Waiter) -> bool:
    """Resolve a waiter's future on its own loop; False when that loop is gone."""
    loop, future = waiter
    try:
        loop.call_soon_threadsafe(_resolve, future)
    except RuntimeError:  # closed between any check and the call: nobody to wake
        return False
    return True


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


class ReadYieldMiddleware:
    """Plain ASGI: a read is admitted before anything else of it runs, and leaves its
    slot when its response starts."""

    def __init__(self, app: ASGIApp, gate: ReadYield) -> None:
        self.app = app
        self.gate = gate

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in READ_METHODS \
                or NEVER_WAIT.fullmatch(scope["path"]):
            await self.app(scope, receive, send)
            return
        await self.gate.admit()
        left = False

        async def leave_on_start(message: Message) -> None:
            nonlocal left
            if message["type"] == "http.response.start" and not left:
                left = True
                self.gate.leave()
            await send(message)

        try:
            await self.app(scope, receive, leave_on_start)
        finally:
            if not left:
                self.gate.leave()


class ReadYieldCollector(Collector):
    """The yield's own counts at scrape time (docs/metrics.md)."""

    def __init__(self, gate: ReadYield) -> None:
        self._gate = gate

    def describe(self) -> Iterator[Metric]:
        return iter(())

    def collect(self) -> Iterator[Metric]:
        stats = self._gate.stats
        for name, text, field in YIELD_METRICS:
            yield CounterMetricFamily(name, text, value=float(getattr(stats, field)))


# (metric, help, YieldStats field): each described in docs/metrics.md
YIELD_METRICS = (
    ("breakwater_reads_deferred",
     "Reads that waited while the ops loop applied a warehouse's transition.", "deferred"),
    ("breakwater_reads_deferred_seconds", "Seconds those reads waited, summed.", "waited_s"),
    ("breakwater_reads_deferral_timeouts",
     "Reads that went ahead at reads.max_yield_s (a transition or the queue outlasted it).",
     "timed_out"),
    ("breakwater_read_yields", "Warehouse transitions reads gave way to.", "transitions"),
    ("breakwater_reads_queued",
     "Reads that waited for a slot (reads.max_active already in progress).", "queued"),
    ("breakwater_reads_queued_seconds", "Seconds those reads waited for a slot, summed.",
     "queued_s"),
)
