"""Reads give way to the ops loop while it applies a warehouse's transition.

The ops thread and the threads answering reads share one interpreter lock, which the
interpreter shares evenly between the threads that want it. 32 dashboards asking again
the moment they are answered kept ~32 reads in progress at all times, and a trip applied
under them took 1.6-2x as long (``python -m benchmarks reroute_under_reads``) whatever
the reads cost: a cheaper read is only asked again sooner. Python has no thread
priorities, so the priority is kept here, cooperatively, with two rules:

- **A transition goes first.** From the moment the ops thread finds that a warehouse went
  down (or came back) until its orders are committed and the stores' notices queued, a
  read that arrives waits on a future (no thread, connection or lock held), at most
  ``max_wait_s``: then it is answered whatever happens, so a wall screen is never blind
  for longer than that.
- **Few reads in progress.** At most ``max_active`` reads are computed at once (until
  their response starts); the others queue here, in arrival order. Reads are CPU-bound
  on this interpreter, so more at once adds no throughput, and it bounds what is already
  under way when a transition starts and must still be finished beside it (with 32 in
  progress: ~60 ms of a 120 ms trip).

What waits: ``GET`` and ``HEAD`` requests (dashboards, ``/metrics``, order lookups). A
server-sent event stream holds its slot only until its response starts. What never
waits: writes (order intake has its own lock with the ops loop) and the health probe (a
load balancer must not take a busy coordinator for a dead one).

``hold``/``release`` are called on the ops thread, ``admit``/``leave`` on an event loop:
the state is guarded by a lock and waiters are woken with ``call_soon_threadsafe``.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass

from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

# answered at once even during a transition: a liveness probe must see a live process
NEVER_WAIT = frozenset({"/healthz"})
READ_METHODS = frozenset({"GET", "HEAD"})


@dataclass
class YieldStats:
    deferred: int = 0  # reads that waited for a transition to end
    waited_s: float = 0.0  # their waits, summed
    timed_out: int = 0  # of them, answered at max_wait_s while the transition went on
    transitions: int = 0  # transitions reads gave way to
    queued: int = 0  # reads that waited for a slot (max_active in progress)


Waiter = tuple[asyncio.AbstractEventLoop, "asyncio.Future[None]"]


class ReadYield:
    """The ops loop's claim on the interpreter, and the reads' slots."""

    def __init__(self, max_wait_s: float, max_active: int) -> None:
        """``max_wait_s``: the longest a read waits for a transition (0: never);
        ``max_active``: reads computed at once (0: no limit)."""
        self.max_wait_s = max_wait_s
        self.max_active = max_active
        self.stats = YieldStats()
        self._lock = threading.Lock()
        self._holders = 0
        self._held: list[Waiter] = []  # waiting for the transition to end
        self._active = 0
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
            _wake(waiter)

    # -- the event loop --------------------------------------------------------------
    async def admit(self) -> None:
        """Wait for a slot, then for no transition (at most ``max_wait_s``); every
        admitted read must :meth:`leave` exactly once. In that order: a read queued for
        a slot before a transition began must not start during it."""
        await self._take_slot()
        if self._holders:
            try:
                await self._wait_for_transition()
            except asyncio.CancelledError:
                self.leave()
                raise

    async def _take_slot(self) -> None:
        if self.max_active <= 0:
            return
        with self._lock:
            if self._active < self.max_active:
                self._active += 1
                return
            loop = asyncio.get_running_loop()
            future: asyncio.Future[None] = loop.create_future()
            self._queue.append((loop, future))
            self.stats.queued += 1
        waiter = (loop, future)
        try:
            await future  # the slot is handed over by leave(): _active already counts it
        except asyncio.CancelledError:
            # the client went away while queued; a slot already handed to it goes on
            with self._lock:
                handed = waiter not in self._queue
                if not handed:
                    self._queue.remove(waiter)
            if handed:
                self.leave()
            raise

    def leave(self) -> None:
        """A read's response started (or it failed): its slot goes to the next one."""
        if self.max_active <= 0:
            return
        with self._lock:
            while self._queue:
                # the slot passes to the first waiter (_active stays): one cancelled
                # meanwhile passes it on itself (admit); a closed loop has no one left
                waiter = self._queue.popleft()
                if not waiter[0].is_closed():
                    break
            else:
                self._active = max(0, self._active - 1)
                return
        _wake(waiter)

    async def _wait_for_transition(self) -> None:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        with self._lock:
            if not self._holders:
                return
            self._held.append((loop, future))
        started = time.perf_counter()
        done, _ = await asyncio.wait([future], timeout=self.max_wait_s)
        waited = time.perf_counter() - started
        with self._lock:
            self.stats.deferred += 1
            self.stats.waited_s += waited
            if not done:
                self.stats.timed_out += 1
                # still listed: dropped so a long transition does not gather dead futures
                self._held = [w for w in self._held if w[1] is not future]


def _wake(waiter: Waiter) -> None:
    loop, future = waiter
    if not loop.is_closed():  # an app shut down meanwhile has no one to wake
        loop.call_soon_threadsafe(_resolve, future)


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
                or scope["path"] in NEVER_WAIT:
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
        yield CounterMetricFamily(
            "breakwater_reads_deferred",
            "Reads that waited while the ops loop applied a warehouse's transition.",
            value=stats.deferred)
        yield CounterMetricFamily(
            "breakwater_reads_deferred_seconds",
            "Seconds those reads waited, summed.", value=stats.waited_s)
        yield CounterMetricFamily(
            "breakwater_reads_deferral_timeouts",
            "Reads answered at reads.max_yield_s while a transition was still applied.",
            value=stats.timed_out)
        yield CounterMetricFamily(
            "breakwater_read_yields",
            "Warehouse transitions reads gave way to.", value=stats.transitions)
        yield CounterMetricFamily(
            "breakwater_reads_queued",
            "Reads that waited for a slot (reads.max_active already in progress).",
            value=stats.queued)
