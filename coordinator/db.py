"""Opening the coordinator's database (SQLite or PostgreSQL), applying every module's
migrations, and the write transaction every store module writes in.

``BREAKWATER_DB`` is a path or ``sqlite:///path`` (SQLite, the embedded default) or
``postgresql://user@host/db`` (:mod:`coordinator.postgres`). Both give a
:class:`Database`: ``execute``/``executemany`` with ``?`` parameters, ``atomic()``.

One connection per thread or task: call :func:`open_database` where the connection is
used (FastAPI runs sync endpoints in a thread pool). On SQLite, WAL lets readers and the
writer work at once.
"""

from __future__ import annotations

import importlib
import logging
import sqlite3
import threading
import weakref
from collections.abc import Iterable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext, suppress
from pathlib import Path
from typing import Any, Protocol

import sqlite_utils
from sqlite_utils import Migrations

from coordinator.errors import StoreError, WriteLockBusy
from coordinator.postgres import PgConnection, PgDatabase, is_postgres_url


class Cursor(Protocol):
    @property
    def rowcount(self) -> int: ...
    @property
    def lastrowid(self) -> int | None: ...
    @property
    def description(self) -> Any: ...
    def fetchone(self) -> Any: ...
    def fetchall(self) -> list[Any]: ...
    def __iter__(self) -> Iterator[Any]: ...


class Connection(Protocol):
    @property
    def in_transaction(self) -> bool: ...
    @property
    def total_changes(self) -> int: ...
    def execute(self, sql: str, parameters: Any = ..., /) -> Cursor: ...
    def executemany(self, sql: str, parameters: Iterable[Any], /) -> Cursor: ...
    def close(self) -> None: ...


class Database(Protocol):
    """What store modules use: ``sqlite_utils.Database`` or :class:`PgDatabase`."""

    @property
    def conn(self) -> Connection: ...
    def execute(self, sql: str, parameters: Any = None) -> Cursor: ...
    def atomic(self) -> AbstractContextManager[Any]: ...


def dialect(db: Database) -> str:
    """``sqlite`` or ``postgresql``: for the few statements the two cannot share."""
    return "postgresql" if isinstance(db, PgDatabase) else "sqlite"


def pipelined(db: Database) -> AbstractContextManager[None]:
    """Writes inside sent to PostgreSQL together, in one round trip, their row counts
    known (and their errors raised) at the end; on SQLite (in process, no round trips)
    each runs as it comes."""
    conn = db.conn
    return conn.pipeline() if isinstance(conn, PgConnection) else nullcontext()


def begin_read(db: Database) -> None:
    """Open a read transaction whose statements all see one snapshot (the caller rolls it
    back): SQLite's read transaction does; PostgreSQL's default isolation (read
    committed) takes a new snapshot per statement, so it asks for repeatable read."""
    db.conn.execute("BEGIN" if dialect(db) == "sqlite"
                    else "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")


def json_text(db: Database, column: str, key: str) -> str:
    """SQL for the value of top-level ``key`` of the JSON text in ``column``, as text:
    the one expression the two backends spell apart. Meant for strings (and numbers,
    converted in Python); JSON booleans read ``1`` on SQLite, ``true`` on PostgreSQL.
    ``column`` and ``key`` are identifiers written in the code, never input."""
    if dialect(db) == "postgresql":
        return f"({column}::json ->> '{key}')"
    return f"CAST(json_extract({column}, '$.{key}') AS TEXT)"


def connection_lost(db: Database) -> bool:
    """The server ended ``db``'s session (a restart, a failover, an administrator): the
    connection must be replaced, every statement on it would fail. PostgreSQL only: a
    SQLite connection is a file opened in this process, never lost."""
    conn = db.conn
    return isinstance(conn, PgConnection) and conn.lost()


def close_quietly(db: Database) -> None:
    """Close ``db``; a connection the server already ended may refuse to, and there is
    nothing left to release then."""
    with suppress(Exception):
        db.conn.close()


def sqlite_connection(db: Database, what: str) -> sqlite3.Connection:
    """The SQLite connection under ``db``, for ``what`` only SQLite can do (e.g. functions
    written in Python); :class:`StoreError` naming it on PostgreSQL."""
    conn = db.conn
    if not isinstance(conn, sqlite3.Connection):
        message = f"{what} needs a SQLite database"
        raise StoreError(message)
    return conn

log = logging.getLogger(__name__)

# Each module owns its schema history as a named migration set in the same file.
MIGRATION_MODULES = (
    "coordinator.schema",
    "coordinator.ops.schema",
    "coordinator.ops.cluster_schema",
    "coordinator.intel.schema",
    "coordinator.ops.telemetry",
    "coordinator.ops.incident_log",
    "coordinator.ops.notify.franchisee",
    "coordinator.ops.commands",
    "coordinator.auth.schema",
    "coordinator.gateways.schema",  # after ops: it registers the agents ops has seen
    "coordinator.roster_store",
    "coordinator.customer.schema",
)


def migration_sets() -> list[Migrations]:
    sets: list[Migrations] = []
    for name in MIGRATION_MODULES:
        module = importlib.import_module(name)
        sets.append(module.migrations)
    return sets


def open_database(path: str | Path, *, migrate: bool = True,
                  autocheckpoint: bool = True) -> Database:
    """Open (creating if needed) the database at ``path`` (a SQLite path or
    ``sqlite:///path``, or a ``postgresql://`` URL) with migrations applied.

    ``autocheckpoint=False``: this connection's commits never fold the WAL back into the
    database file (an fsync and a few hundred random writes); a :class:`WalCheckpointer`
    must then run beside it, as it does in the app.
    """
    target = str(path)
    if is_postgres_url(target):
        pg = PgDatabase(target)
        if migrate:
            from coordinator import pg_schema  # the translation needs the SQLite migrations

            pg_schema.migrate(pg)
        return pg
    target = target.removeprefix("sqlite:///") if target.startswith("sqlite:///") else target
    try:
        conn = sqlite3.connect(target, timeout=30, isolation_level=None,
                               check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("PRAGMA foreign_keys=ON")
        conn.execute("PRAGMA busy_timeout=30000")
        # 64 MiB page cache: stock and order indexes stay in memory (default is 2 MiB)
        conn.execute("PRAGMA cache_size=-65536")
        # reads through a memory map skip a system call and a copy per page
        conn.execute("PRAGMA mmap_size=1073741824")
        if not autocheckpoint:
            conn.execute("PRAGMA wal_autocheckpoint=0")
        db = sqlite_utils.Database(conn)
        if migrate:
            for migrations in migration_sets():
                migrations.apply(db)
    except sqlite3.Error as exc:
        message = f"cannot open database {path}: {exc}"
        raise StoreError(message) from exc
    return db


# -- transactions ---------------------------------------------------------------------
@contextmanager
def write_transaction(db: Database, lock_wait_s: float | None = None) -> Iterator[Database]:
    """All-or-nothing with the write lock held; reentrant (nested calls use savepoints).

    The outermost call issues ``BEGIN IMMEDIATE`` (on PostgreSQL: ``BEGIN`` and the
    advisory write lock) so what is read inside cannot be changed by another connection
    before this one commits.

    ``lock_wait_s`` bounds the wait for the lock (this process's queue, and on
    PostgreSQL the server's lock and every lock wait inside the transaction): past it,
    :class:`WriteLockBusy` and nothing is written. Unbounded by default; on SQLite the
    file lock keeps its busy timeout.
    """
    conn = db.conn
    if conn.in_transaction:
        with db.atomic():
            yield db
        return
    # Threads of this process queue on a lock instead of SQLite's busy handler, which
    # sleeps in steps of milliseconds; other processes still wait on the file lock.
    lock = _process_lock(db)
    if not lock.acquire(timeout=-1 if lock_wait_s is None else max(lock_wait_s, 0.0)):
        message = (f"the write lock was not free within {lock_wait_s:g} s "
                   "(another thread of this process holds it)")
        raise WriteLockBusy(message)
    try:
        if isinstance(db, PgDatabase):
            with db.write_atomic(lock_wait_s):
                yield db
            return
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            message = f"cannot take the database write lock: {exc}"
            raise StoreError(message) from exc
        try:
            with db.atomic():
                yield db
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
    finally:
        lock.release()

_file_locks: dict[str, threading.Lock] = {}
_file_locks_guard = threading.Lock()
_lock_of: weakref.WeakKeyDictionary[Database, threading.Lock] = weakref.WeakKeyDictionary()


def _process_lock(db: Database) -> threading.Lock:
    lock = _lock_of.get(db)
    if lock is None:
        if isinstance(db, PgDatabase):
            name = db.conn.url
        else:
            row = db.conn.execute("PRAGMA database_list").fetchone()
            name = row[2] if row and row[2] else f"memory:{id(db)}"
        with _file_locks_guard:
            lock = _file_locks.setdefault(name, threading.Lock())
        _lock_of[db] = lock
    return lock



class WalCheckpointer:
    """Folds the WAL back into the database file on a thread of its own.

    SQLite's automatic checkpoint runs inside whichever ``COMMIT`` pushes the WAL past
    1,000 pages, so every few batches one writer pays for an fsync and a checkpoint's
    random writes (a quarter of the intake's time on an 800-warehouse region). Writers
    opened with ``autocheckpoint=False`` skip that, and this thread runs a PASSIVE
    checkpoint every ``interval_s``: it never takes the write lock, so commits go on
    while it copies pages (SQLite runs it with the GIL released, on the other core).
    A final checkpoint runs at :meth:`stop`.
    """

    def __init__(self, path: str | Path, *, interval_s: float = 0.5) -> None:
        self._path = path
        self._interval_s = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="wal-checkpointer", daemon=True)
        self.checkpoints = 0
        self.failures = 0
        self.last_error: str | None = None

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def __enter__(self) -> WalCheckpointer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def health(self) -> dict[str, object]:
        """For ``/stats``: writers never checkpoint themselves, so a stuck checkpointer
        means a WAL that only grows."""
        return {"alive": self.alive, "checkpoints": self.checkpoints,
                "failures": self.failures, "last_error": self.last_error}

    def _run(self) -> None:
        db: Database | None = None
        while True:
            stopping = self._stop.wait(self._interval_s)
            try:
                if db is None:  # (re)opened here: a failed open is retried next round
                    db = open_database(self._path, migrate=False)
                db.conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
            except (StoreError, sqlite3.Error) as exc:
                # a busy or failing checkpoint leaves the WAL longer, nothing is lost; the
                # next round tries again on a fresh connection
                self.failures += 1
                self.last_error = str(exc)
                log.warning("WAL checkpoint of %s failed: %s", self._path, exc)
                if db is not None:
                    db.conn.close()
                    db = None
            else:
                self.checkpoints += 1
            if stopping:
                break
        if db is not None:
            db.conn.close()
