"""Where an instance of a cluster puts what its watcher receives: the shared inbox
(:mod:`coordinator.ops.inbox_store`), from which the leader applies.

On PostgreSQL the puts run on a thread and connection of their own, so a storm's inserts
(under their own lock) run beside the leader's applier instead of taking turns with it
on the ops thread (which left a batch of one row per wake-up). Not on SQLite: one write
lock for both, and a put thread re-taking it starved the lease renewal; there the puts
go through the ops thread."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import Any

from coordinator.db import Database, close_quietly, connection_lost
from coordinator.ops import inbox_store
from coordinator.ops.handler import OpsCore

Call = Callable[[Callable[[OpsCore], Any]], Awaitable[Any]]


class InboxWriter:
    def __init__(self, instance: str, open_db: Callable[[], Database], call: Call, *,
                 own_thread: bool) -> None:
        self.instance = instance
        self._open_db = open_db
        self._call = call
        self._executor = (ThreadPoolExecutor(max_workers=1, thread_name_prefix="ops-inbox")
                          if own_thread else None)
        self._db: Database | None = None

    async def put(self, messages: Sequence[inbox_store.InboxMessage], now: datetime) -> int:
        """Store ``messages`` in order (copies already there are dropped); how many new."""
        if self._executor is None:
            instance = self.instance
            stored: int = await self._call(
                lambda core: inbox_store.put_many(core.db, messages, instance, now))
            return stored
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._put, messages, now)

    def _put(self, messages: Sequence[inbox_store.InboxMessage], now: datetime) -> int:
        # on the inbox thread, the only user of its connection
        if self._db is not None and connection_lost(self._db):
            self._close()
        if self._db is None:
            self._db = self._open_db()
        return inbox_store.put_many(self._db, messages, self.instance, now)

    def _close(self) -> None:
        if self._db is not None:
            close_quietly(self._db)
            self._db = None

    async def aclose(self) -> None:
        if self._executor is not None:
            await asyncio.get_running_loop().run_in_executor(self._executor, self._close)
            self._executor.shutdown(wait=True)
