"""What changed, told to every open page: the publish/subscribe seam behind live updates.

A change is only a *topic* (``warehouses``, ``orders``, ``incidents``, ``telemetry``,
``notifications``), never the data: each subscriber reads the database itself when told,
so the same contract works across processes. Publishers call :meth:`Hub.publish` from
any thread (the ops thread, the intake thread, a request); subscribers (the dashboard's
server-sent event streams) iterate a :class:`Subscription` on the event loop.

Implementations:

- :class:`LocalHub` (here): in-process, for one coordinator on SQLite;
- :class:`coordinator.live_pg.PgHub`: on PostgreSQL (several coordinator instances), a
  hub whose ``publish`` also runs ``NOTIFY breakwater_live, '<topic>'`` and whose listener
  (one connection per instance doing ``LISTEN breakwater_live``) fans out to its own
  subscribers exactly as :class:`LocalHub` does: pages on every instance hear what the
  ops leader changed. Nothing else changes: publishers and the SSE endpoint see only
  :class:`Hub`. :func:`hub_for` picks one from the database URL.

Changes coalesce: a subscriber that has not read yet keeps one pending mark per topic,
so a burst (a reroute touching 287 orders) costs one re-read, and a slow page never
makes a publisher wait or grows memory.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Protocol

TOPICS = frozenset({"warehouses", "orders", "incidents", "telemetry", "notifications"})


class Subscription:
    """The topics changed since the subscriber last asked (a set: coalesced)."""

    def __init__(self) -> None:
        self._pending: set[str] = set()
        self._ready = asyncio.Event()
        self.closed = False

    def _mark(self, topic: str) -> None:
        self._pending.add(topic)
        self._ready.set()

    def _close(self) -> None:
        self.closed = True
        self._ready.set()

    async def changes(self, within_s: float | None = None) -> set[str]:
        """Wait for at least one change (or ``within_s`` seconds: an empty set), then take
        every topic pending. An empty set with :attr:`closed` means the hub shut down."""
        try:
            async with asyncio.timeout(within_s):
                await self._ready.wait()
        except TimeoutError:
            return set()
        self._ready.clear()
        taken, self._pending = self._pending, set()
        return taken


class Hub(Protocol):
    # notifications from outside this process refused for naming no topic (on /metrics)
    refused: int

    def publish(self, topic: str) -> None:
        """Tell every subscriber ``topic`` changed; thread-safe, never blocks."""
        ...

    def subscribe(self) -> AbstractAsyncContextManager[Subscription]:
        """``async with hub.subscribe() as sub:`` receive changes until the block ends."""
        ...

    def close(self) -> None:
        """End every subscription (shutdown)."""
        ...


def hub_for(db_target: str, loop: asyncio.AbstractEventLoop) -> Hub:
    """The hub for an app on ``db_target``: through PostgreSQL when it is one (other
    instances may share it), in-process on SQLite (one coordinator per file)."""
    from coordinator.postgres import is_postgres_url

    if is_postgres_url(db_target):
        from coordinator.live_pg import PgHub  # imports this module: not at the top

        return PgHub(db_target, loop)
    return LocalHub(loop)


class LocalHub:
    """In-process fan-out; built in the app's lifespan, on its event loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._subscribers: set[Subscription] = set()
        self._lock = threading.Lock()
        self.published = 0
        self.refused = 0  # nothing reaches this hub from outside the process: stays 0

    def publish(self, topic: str) -> None:
        if topic not in TOPICS:
            raise ValueError(f"topic: {topic!r} is not one of {sorted(TOPICS)}")
        self.published += 1
        if self._loop.is_closed():
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is self._loop:
            self._fan_out(topic)
        else:
            self._loop.call_soon_threadsafe(self._fan_out, topic)

    def _fan_out(self, topic: str) -> None:
        with self._lock:
            subscribers = list(self._subscribers)
        for sub in subscribers:
            sub._mark(topic)

    def subscribe(self) -> AbstractAsyncContextManager[Subscription]:
        return self._subscription()

    @asynccontextmanager
    async def _subscription(self) -> AsyncIterator[Subscription]:
        sub = Subscription()
        with self._lock:
            self._subscribers.add(sub)
        try:
            yield sub
        finally:
            with self._lock:
                self._subscribers.discard(sub)

    @property
    def subscribers(self) -> int:
        with self._lock:
            return len(self._subscribers)

    def close(self) -> None:
        def end() -> None:
            with self._lock:
                subscribers = list(self._subscribers)
            for sub in subscribers:
                sub._close()

        if not self._loop.is_closed():
            self._loop.call_soon_threadsafe(end)
