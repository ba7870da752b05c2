"""Fresh databases of one backend for the cluster benchmarks (failover, intake, storm):
SQLite files in the run's directory, or databases on a private PostgreSQL server
(``simulators.pg_server``) started for the run and stopped after it."""

from __future__ import annotations

from pathlib import Path
from types import TracebackType
from typing import Any

from coordinator.db import open_database
from simulators.pg_server import PostgresServer, start_postgres

BACKENDS = ("sqlite", "postgresql")


class Databases:
    def __init__(self, backend: str, workdir: Path) -> None:
        if backend not in BACKENDS:
            message = f"db: must be one of {', '.join(BACKENDS)}, got {backend!r}"
            raise ValueError(message)
        self.backend = backend
        self.workdir = workdir
        self._server: PostgresServer | None = None

    def __enter__(self) -> Databases:
        if self.backend == "postgresql":
            server = start_postgres()
            if isinstance(server, str):
                raise RuntimeError(server)
            self._server = server
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None

    def new(self, name: str) -> str:
        """An empty database (a path or a URL) for ``name``, never used before."""
        if self._server is not None:
            return self._server.create_database(prefix="bw_" + name.replace("-", "_"))
        return str(self.workdir / f"{name}.sqlite")


def one(target: str, sql: str, args: tuple[Any, ...] = ()) -> tuple[Any, ...] | None:
    """The first row of ``sql`` as committed on ``target`` (a read on its own connection)."""
    db = open_database(target, migrate=False)
    try:
        row = db.execute(sql, list(args)).fetchone()
        return None if row is None else tuple(row)
    finally:
        db.conn.close()


def count(target: str, sql: str) -> int:
    """``sql``'s single number (0 for NULL)."""
    row = one(target, sql)
    return 0 if row is None else int(row[0] or 0)
