"""Opening the coordinator's SQLite database and applying every module's migrations.

One connection per thread or task: call :func:`open_database` where the connection is
used (FastAPI runs sync endpoints in a thread pool). WAL lets readers and the writer
work at once.
"""

from __future__ import annotations

import importlib
import sqlite3
from pathlib import Path

from sqlite_utils import Database, Migrations

from coordinator.errors import StoreError

# Each module owns its schema history as a named migration set in the same file.
MIGRATION_MODULES = (
    "coordinator.schema",
    "coordinator.ops.schema",
)


def migration_sets() -> list[Migrations]:
    sets: list[Migrations] = []
    for name in MIGRATION_MODULES:
        module = importlib.import_module(name)
        sets.append(module.migrations)
    return sets


def open_database(path: str | Path, *, migrate: bool = True) -> Database:
    """Open (creating if needed) the database at ``path`` with WAL and migrations applied."""
    try:
        conn = sqlite3.connect(str(path), timeout=30, isolation_level=None,
                               check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("PRAGMA foreign_keys=ON")
        conn.execute("PRAGMA busy_timeout=30000")
        # 64 MiB page cache: stock and order indexes stay in memory (default is 2 MiB)
        conn.execute("PRAGMA cache_size=-65536")
        # reads through a memory map skip a system call and a copy per page
        conn.execute("PRAGMA mmap_size=1073741824")
        db = Database(conn)
        if migrate:
            for migrations in migration_sets():
                migrations.apply(db)
    except sqlite3.Error as exc:
        message = f"cannot open database {path}: {exc}"
        raise StoreError(message) from exc
    return db
