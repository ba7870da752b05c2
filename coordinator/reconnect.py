"""The long-lived database connections of the coordinator's workers (the intake writer,
the notification dispatcher, the customer side's tick and lookups), each replaced when
the server has ended it.

PostgreSQL ends every session at a restart or a failover (and an administrator may end
any); the worker holding one finds out at its next use and opens another, so it serves
again as soon as the database does, without a restart of the coordinator. SQLite never
loses a connection: there the holder only opens once. The ops loop's own connection is
the ops core's (:meth:`coordinator.ops.runner.OpsService._with_core`), the request
threads' are :class:`coordinator.connections.Connections`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from coordinator.db import Database, close_quietly, connection_lost
from coordinator.errors import StoreError

log = logging.getLogger(__name__)


class ReconnectingDatabase:
    """One worker's connection (a thread's, or a task's: one user at a time), opened on
    first use and opened anew after the server ended it.

    A loss is logged once, as a warning: while the database stays away every use raises
    :class:`StoreError` (the worker's round or request fails, and is retried or answered
    503), logged once more only when the connection is back."""

    def __init__(self, open_db: Callable[[], Database], what: str) -> None:
        self._open_db = open_db
        self.what = what  # who holds it, for the log ("order intake")
        self._db: Database | None = None
        self._away = False  # a loss (or a failed open) reported, not yet recovered from
        self.reconnects = 0

    def get(self) -> Database:
        """The connection, opened anew when it was lost (:class:`StoreError` while the
        database cannot be reached)."""
        db = self._db
        if db is not None and connection_lost(db):
            log.warning("%s: the database ended its connection; reconnecting", self.what)
            self._away = True
            self.drop()
            db = None
        if db is None:
            try:
                db = self._open_db()
            except StoreError as exc:
                if not self._away:
                    log.warning("%s: cannot open the database (%s); retrying", self.what, exc)
                    self._away = True
                raise
            if self._away:
                self.reconnects += 1
                log.info("%s: connected to the database again", self.what)
            self._away = False
            self._db = db
        return db

    def drop(self) -> None:
        """Close the connection (the next :meth:`get` opens another)."""
        if self._db is not None:
            close_quietly(self._db)
            self._db = None

    close = drop


class OutageLog:
    """How a worker's loop logs a round that failed on the database: the first failure of
    a run of them as a warning, the others at debug level, so a database away for minutes
    leaves one line, not one per round. ``backoff_s`` spaces the rounds out meanwhile."""

    def __init__(self, what: str, *, max_backoff_s: float = 5.0) -> None:
        self.what = what
        self.max_backoff_s = max_backoff_s
        self.failures = 0  # in a row
        self._since = 0.0

    def failed(self, exc: Exception) -> None:
        if self.failures == 0:
            self._since = time.monotonic()
            log.warning("%s failed: %s; retrying until the database answers", self.what, exc)
        else:
            log.debug("%s failed again: %s", self.what, exc)
        self.failures += 1

    def succeeded(self) -> None:
        if self.failures:
            log.info("%s works again (after %d failed rounds, %.1f s)", self.what,
                        self.failures, time.monotonic() - self._since)
        self.failures = 0

    def backoff_s(self, interval_s: float) -> float:
        """The wait before the next round: ``interval_s``, doubled per failure in a row
        up to ``max_backoff_s`` (never below ``interval_s``)."""
        if not self.failures:
            return interval_s
        return max(interval_s, min(interval_s * (1 << min(self.failures, 16)),
                                   self.max_backoff_s))
