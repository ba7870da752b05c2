"""The database connections of the app's request threads: one per thread, so a connection
is never shared by two threads at once (``app.state.connections``).

A connection the server ended (a PostgreSQL restart or failover) is replaced on its
thread's next :meth:`Connections.get`: the app answers again as soon as the database
does. A request whose connection died under it fails with
:class:`~coordinator.errors.ConnectionLost` (a :class:`StoreError`: 503)."""

from __future__ import annotations

import logging
import threading
import time

from coordinator.db import Database, close_quietly, connection_lost, open_database

log = logging.getLogger(__name__)

# A restart ends the connections of every request thread at once, and each thread finds
# out on its own: one warning per this many seconds, the rest at debug level.
WARN_EVERY_S = 30.0


class Connections:
    """One database connection per thread, all closed at shutdown."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._local = threading.local()
        self._all: list[Database] = []
        self._lock = threading.Lock()
        self.replaced = 0  # connections found lost and replaced
        self._warned_at: float | None = None

    def get(self) -> Database:
        db: Database | None = getattr(self._local, "db", None)
        if db is not None and connection_lost(db):
            self._forget(db)
            db = None
        if db is None:
            # requests never run a WAL checkpoint (an fsync) themselves: the app's
            # checkpointer thread does, so no request pays for one
            db = open_database(self.path, migrate=False, autocheckpoint=False)
            self._local.db = db
            with self._lock:
                self._all.append(db)
        return db

    def _forget(self, db: Database) -> None:
        """Drop this thread's lost connection (its next :meth:`get` opens another)."""
        self._local.db = None
        close_quietly(db)
        now = time.monotonic()
        with self._lock:
            self._all = [d for d in self._all if d is not db]
            self.replaced += 1
            warn = self._warned_at is None or now - self._warned_at >= WARN_EVERY_S
            if warn:
                self._warned_at = now
        if warn:
            log.warning("the database ended a request thread's connection; reconnecting "
                        "(%d replaced so far)", self.replaced)
        else:
            log.debug("the database ended a request thread's connection; reconnecting")

    def close(self) -> None:
        with self._lock:
            for db in self._all:
                close_quietly(db)
            self._all.clear()
        self._local = threading.local()
