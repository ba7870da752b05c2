"""The database connections of the app's request threads: one per thread, so a connection
is never shared by two threads at once (``app.state.connections``)."""

from __future__ import annotations

import threading

from coordinator.db import Database, open_database


class Connections:
    """One database connection per thread, all closed at shutdown."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._local = threading.local()
        self._all: list[Database] = []
        self._lock = threading.Lock()

    def get(self) -> Database:
        db: Database | None = getattr(self._local, "db", None)
        if db is None:
            # requests never run a WAL checkpoint (an fsync) themselves: the app's
            # checkpointer thread does, so no request pays for one
            db = open_database(self.path, migrate=False, autocheckpoint=False)
            self._local.db = db
            with self._lock:
                self._all.append(db)
        return db

    def close(self) -> None:
        with self._lock:
            for db in self._all:
                db.conn.close()
            self._all.clear()
        self._local = threading.local()
