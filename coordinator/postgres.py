"""The PostgreSQL backend: the same :class:`coordinator.db.Database` surface over psycopg 3.

Store modules keep one SQL text for both backends (``?`` parameters, standard SQL that
SQLite and PostgreSQL both accept); :func:`coordinator.pg_sql.to_pg` rewrites the
parameter markers once per statement and caches it, and many-row ``executemany`` calls
become ``COPY`` or one statement over arrays (:mod:`coordinator.pg_sql`). The few
statements that cannot be shared ask :func:`dialect`.

Transactions work as on SQLite (``isolation_level=None``): the connection is in
autocommit until ``BEGIN``; :meth:`PgDatabase.atomic` opens a transaction or, inside one,
a savepoint. :func:`coordinator.db.write_transaction` additionally takes one
transaction-level advisory lock, PostgreSQL's equivalent of SQLite's single write lock:
what a writer reads cannot change before it commits, whichever process runs it.

The schema is the SQLite schema the migrations build, translated (:mod:`.pg_schema`).
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from typing import Any

import psycopg
from psycopg.pq import TransactionStatus

from coordinator.errors import ConnectionLost, StoreError, WriteLockBusy
from coordinator.pg_sql import COPY_MIN, MULTI_ROW_MIN, copy_rows, multi_row, to_pg

# the advisory lock every write transaction takes (one writer at a time, like SQLite)
IDLE_IN_TRANSACTION_MS = 10_000  # see PgConnection
WRITE_LOCK_KEY = 0x6277_6C65_6467_6572 & 0x7FFF_FFFF_FFFF_FFFF  # "bwledger"
# SQLSTATEs of a session the server ends (besides class 08, connection exceptions):
# admin_shutdown, crash_shutdown, cannot_connect_now, idle_session_timeout,
# idle_in_transaction_session_timeout
SESSION_ENDED = frozenset({"57P01", "57P02", "57P03", "57P05", "25P03"})


def is_postgres_url(target: str) -> bool:
    return target.startswith(("postgresql://", "postgres://", "postgresql+psycopg://"))


class PgCursor:
    """What callers read from a statement: rows, ``rowcount``, ``description``.

    A statement sent inside :meth:`PgConnection.pipeline` has no count yet (None here):
    ``rowcount`` then reads the driver's, known once the pipeline has been synced."""

    __slots__ = ("_count", "_cur")

    def __init__(self, cur: psycopg.Cursor[Any], rowcount: int | None) -> None:
        self._cur = cur
        self._count = rowcount

    @property
    def rowcount(self) -> int:
        return self._cur.rowcount if self._count is None else self._count

    @property
    def lastrowid(self) -> int | None:
        return None  # use RETURNING

    @property
    def description(self) -> Any:
        return self._cur.description

    def fetchone(self) -> Any:
        return self._cur.fetchone() if self._cur.description is not None else None

    def fetchall(self) -> list[Any]:
        return self._cur.fetchall() if self._cur.description is not None else []

    def __iter__(self) -> Iterator[Any]:
        return iter(self.fetchall())


class PgConnection:
    def __init__(self, url: str) -> None:
        self.url = url
        try:
            self.raw = psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://"),
                                       autocommit=True)
            # Every transaction here issues its statements back to back. A session idle
            # inside one is a process stopped or frozen mid-transaction (SIGSTOP, a paused
            # VM), perhaps holding the write lock every instance needs: the server ends
            # it. The ops sessions of a cluster set a shorter limit (the lease TTL).
            self.raw.execute(
                f"SET idle_in_transaction_session_timeout = {IDLE_IN_TRANSACTION_MS:d}")
        except psycopg.Error as exc:
            message = f"cannot open database {_safe(url)}: {exc}"
            raise StoreError(message) from exc
        self._changes = 0
        # write transactions begun on this connection, and the number of the one running
        # (None outside one): what was read under this write lock is told apart from what
        # an earlier one read (the snapshot cache checks catalogue versions once in each)
        self.write_transactions = 0
        self.write_lock_held: int | None = None
        # inside pipeline(): the statements sent, counted into _changes at its end
        self._pipelined: list[psycopg.Cursor[Any]] | None = None

    @property
    def in_transaction(self) -> bool:
        return self.raw.info.transaction_status != TransactionStatus.IDLE

    @property
    def total_changes(self) -> int:
        """Rows changed by INSERT/UPDATE/DELETE on this connection (like SQLite's)."""
        return self._changes

    @property
    def closed(self) -> bool:
        """Closed here, or ended by the server (as far as a statement has found out)."""
        return self.raw.closed

    def session_ended(self, exc: psycopg.Error) -> bool:
        """Whether ``exc`` says the session is gone. The statement that meets the end
        of its session gets the server's reason (its SQLSTATE) before the driver has
        seen the socket close, so both are asked."""
        state = exc.sqlstate or ""
        return self.raw.closed or state.startswith("08") or state in SESSION_ENDED

    def lost(self) -> bool:
        """Whether the server has ended this session (see :class:`ConnectionLost`).

        Also reads what the server sent while the connection sat idle: PostgreSQL tells
        each session it ends (a restart, ``pg_terminate_backend``) before it closes the
        socket, so a connection found lost here is replaced before a statement fails on
        it. The read never blocks (psycopg's sockets are non-blocking): a system call
        that finds nothing. Not while a statement or a pipeline is in flight: what is
        pending then is its answer, which psycopg reads itself."""
        raw = self.raw
        if raw.closed:
            return True
        if self._pipelined is not None or \
                raw.info.transaction_status == TransactionStatus.ACTIVE:
            return False
        # Only under the driver's own lock, never waiting for it: a statement of another
        # thread under way (a connection handed across threads) reads its own answer,
        # and this read must not take it from the socket.
        if not raw.lock.acquire(blocking=False):
            return False
        try:
            # The first read takes in the server's farewell (an error message, unparsed
            # while no statement runs), the second finds the socket closed behind it:
            # the connection turns bad then, which is what ``closed`` tells (the error
            # raised says the same). Two reads of nothing on a live connection.
            for _ in range(2):
                with suppress(psycopg.OperationalError):
                    raw.pgconn.consume_input()
        finally:
            raw.lock.release()
        return raw.closed

    @contextmanager
    def pipeline(self) -> Iterator[None]:
        """Writes inside go to the server together and are answered in one round trip at
        the end, when their row counts become known (an error, e.g. a unique key, is
        raised there too). For writes whose results nobody reads before the end."""
        if self._pipelined is not None:
            yield
            return
        self._pipelined = []
        try:
            with self.raw.pipeline():
                yield
        except psycopg.Error as exc:
            if self.session_ended(exc):
                raise _lost(exc) from exc
            raise
        finally:
            sent, self._pipelined = self._pipelined, None
        self._changes += sum(max(cur.rowcount, 0) for cur in sent)

    def execute(self, sql: str, parameters: Any = (), /) -> PgCursor:
        try:
            cur = self.raw.cursor()
            if parameters:
                cur.execute(to_pg(sql), parameters)
            else:  # psycopg reads no placeholders (and no %% escapes) without parameters
                cur.execute(sql)
        except psycopg.Error as exc:
            if self.session_ended(exc):
                raise _lost(exc) from exc
            raise
        if self._pipelined is not None:
            self._pipelined.append(cur)
            return PgCursor(cur, None)
        changed = max(cur.rowcount, 0) if cur.description is None else 0
        self._changes += changed
        return PgCursor(cur, cur.rowcount)

    def executemany(self, sql: str, parameters: Iterable[Sequence[Any] | Mapping[str, Any]],
                   /) -> PgCursor:
        try:
            return self._executemany(sql, list(parameters))
        except psycopg.Error as exc:
            if self.session_ended(exc):
                raise _lost(exc) from exc
            raise

    def _executemany(self, sql: str, given: list[Sequence[Any] | Mapping[str, Any]]
                     ) -> PgCursor:
        if given and isinstance(given[0], Mapping):
            # rows of named parameters (:name): tuple() of a mapping would keep only its keys
            cur = self.raw.cursor()
            cur.executemany(to_pg(sql), given)
            self._changes += max(cur.rowcount, 0)
            return PgCursor(cur, cur.rowcount)
        rows = [tuple(r) for r in given]
        cur = self.raw.cursor()
        if not rows:
            return PgCursor(cur, 0)
        if self._pipelined is not None:  # COPY cannot run in a pipeline; rows per INSERT
            cur.executemany(to_pg(sql), rows)
            self._pipelined.append(cur)
            return PgCursor(cur, None)
        if len(rows) >= COPY_MIN and copy_rows(cur, sql, rows):
            self._changes += len(rows)
            return PgCursor(cur, len(rows))
        plan = multi_row(sql, rows) if len(rows) >= MULTI_ROW_MIN else None
        if plan is None:
            cur.executemany(to_pg(sql), rows)
            count = cur.rowcount
        else:
            # one statement per chunk of rows instead of one per row: a reroute writes
            # ten thousand rows, and per-row statements cost a round of the protocol each
            count = 0
            for statement, values in plan:
                self._execute_by_key(cur, statement, values)
                count += max(cur.rowcount, 0)
        self._changes += max(count, 0)
        return PgCursor(cur, count)

    def _execute_by_key(self, cur: psycopg.Cursor[Any], statement: str,
                        values: list[Any]) -> None:
        """One multi-row statement; an UPDATE is planned as a key lookup per row.

        Over a table of some thousands of rows the planner hashes the whole table to
        update a few hundred of them (measured: 9-11 ms against 5-7 ms for the index
        lookups, per 400-row batch of stock reservations). The switches are local to the
        transaction, set and reset in the same round trip (a pipeline)."""
        if not statement.startswith("UPDATE ") or not self.in_transaction:
            cur.execute(statement, values)
            return
        raw = self.raw
        with raw.pipeline():
            for setting in _KEY_LOOKUP:
                raw.execute(f"SET LOCAL {setting} = off")
            cur.execute(statement, values)
            for setting in _KEY_LOOKUP:
                raw.execute(f"SET LOCAL {setting} TO DEFAULT")

    def close(self) -> None:
        self.raw.close()


_KEY_LOOKUP = ("enable_hashjoin", "enable_mergejoin")


class PgDatabase:
    """The :class:`coordinator.db.Database` surface on PostgreSQL."""

    dialect = "postgresql"

    def __init__(self, url: str) -> None:
        self.conn = PgConnection(url)

    def execute(self, sql: str, parameters: Any = None) -> PgCursor:
        return self.conn.execute(sql, parameters or ())

    @contextmanager
    def atomic(self) -> Iterator[PgDatabase]:
        """A transaction, or a savepoint inside one; rolled back on any error."""
        conn = self.conn
        if conn.in_transaction:
            name = f"bw_{secrets.token_hex(8)}"
            conn.execute(f"SAVEPOINT {name}")
            try:
                yield self
            except BaseException as exc:
                if not _gone(conn, exc) and (
                        conn.raw.info.transaction_status == TransactionStatus.INERROR or
                        conn.in_transaction):
                    conn.execute(f"ROLLBACK TO SAVEPOINT {name}")
                    conn.execute(f"RELEASE SAVEPOINT {name}")
                raise
            conn.execute(f"RELEASE SAVEPOINT {name}")
            return
        conn.execute("BEGIN")
        try:
            yield self
        except BaseException as exc:
            if not _gone(conn, exc):  # a lost session was rolled back by the server
                conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    @contextmanager
    def write_atomic(self, lock_wait_s: float | None = None) -> Iterator[PgDatabase]:
        """A transaction holding the advisory write lock (see
        :func:`coordinator.db.write_transaction`); ``BEGIN`` and the lock go to the server
        in one round trip. Inside a transaction: a savepoint (the lock is held already).
        ``lock_wait_s`` is the transaction's ``lock_timeout``: the lock not taken by
        then, :class:`WriteLockBusy`."""
        conn = self.conn
        if conn.in_transaction:
            with self.atomic():
                yield self
            return
        # SET takes no parameters; the value is a number computed here
        bound = ("" if lock_wait_s is None
                 else f"SET LOCAL lock_timeout = {max(1, round(lock_wait_s * 1000)):d}; ")
        try:
            conn.raw.execute(f"BEGIN; {bound}SELECT pg_advisory_xact_lock({WRITE_LOCK_KEY:d})")
        except BaseException as exc:
            if isinstance(exc, psycopg.Error) and conn.session_ended(exc):
                raise _lost(exc) from exc
            if conn.closed:
                raise
            if conn.in_transaction:  # e.g. the wait for the lock was cancelled
                conn.execute("ROLLBACK")
            if isinstance(exc, psycopg.errors.LockNotAvailable):
                within = "in time" if lock_wait_s is None else f"within {lock_wait_s:g} s"
                message = f"the write lock was not free {within}"
                raise WriteLockBusy(message) from exc
            raise
        conn.write_transactions += 1
        conn.write_lock_held = conn.write_transactions
        try:
            yield self
        except BaseException as exc:
            if not _gone(conn, exc):  # a lost session was rolled back by the server
                conn.execute("ROLLBACK")
            raise
        finally:
            conn.write_lock_held = None
        conn.execute("COMMIT")


def _gone(conn: PgConnection, exc: BaseException) -> bool:
    """The session of a failed transaction is gone: nothing to roll back (the server
    did), and a ROLLBACK would only raise again."""
    return conn.closed or isinstance(exc, ConnectionLost)


def _lost(exc: psycopg.Error) -> ConnectionLost:
    """The driver's error on a connection the server ended, as the coordinator's own
    (:class:`StoreError`: answered 503, retried by the loops that catch it)."""
    return ConnectionLost(f"the database connection was lost: {exc}")


def _safe(url: str) -> str:
    """The URL without its password (never in logs or errors)."""
    head, sep, tail = url.partition("@")
    if not sep or ":" not in head.split("//", 1)[-1]:
        return url
    scheme, _, userinfo = head.partition("//")
    return f"{scheme}//{userinfo.split(':', 1)[0]}:***@{tail}"
