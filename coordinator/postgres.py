"""The PostgreSQL backend: the same :class:`coordinator.db.Database` surface over psycopg 3.

Store modules keep one SQL text for both backends (``?`` parameters, standard SQL that
SQLite and PostgreSQL both accept); :func:`to_pg` rewrites the parameter markers once per
statement and caches it. The few statements that cannot be shared ask :func:`dialect`.

Transactions work as on SQLite (``isolation_level=None``): the connection is in
autocommit until ``BEGIN``; :meth:`PgDatabase.atomic` opens a transaction or, inside one,
a savepoint. :func:`coordinator.db.write_transaction` additionally takes one
transaction-level advisory lock, PostgreSQL's equivalent of SQLite's single write lock:
what a writer reads cannot change before it commits, whichever process runs it.

The schema is the SQLite schema the migrations build, translated (:mod:`.pg_schema`).
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg.pq import TransactionStatus

from coordinator.errors import StoreError

# the advisory lock every write transaction takes (one writer at a time, like SQLite)
WRITE_LOCK_KEY = 0x6277_6C65_6467_6572 & 0x7FFF_FFFF_FFFF_FFFF  # "bwledger"

_translated: dict[str, str] = {}


def is_postgres_url(target: str) -> bool:
    return target.startswith(("postgresql://", "postgres://", "postgresql+psycopg://"))


def to_pg(sql: str) -> str:
    """``?`` and ``:name`` markers to psycopg's ``%s`` and ``%(name)s`` (and a literal
    ``%`` to ``%%``), outside quotes."""
    done = _translated.get(sql)
    if done is not None:
        return done
    out: list[str] = []
    quote: str | None = None
    i, n = 0, len(sql)
    while i < n:
        ch = sql[i]
        if quote is not None:
            out.append("%%" if ch == "%" else ch)
            if ch == quote:
                quote = None
        elif ch in ("'", '"'):
            quote = ch
            out.append(ch)
        elif ch == "?":
            out.append("%s")
        elif ch == "%":
            out.append("%%")
        elif ch == ":" and i + 1 < n and sql[i + 1] == ":":  # a cast: ::text
            out.append("::")
            i += 1
        elif ch == ":" and i + 1 < n and (sql[i + 1].isalpha() or sql[i + 1] == "_"):
            j = i + 1  # a named parameter (:name) -> %(name)s
            while j < n and (sql[j].isalnum() or sql[j] == "_"):
                j += 1
            out.append(f"%({sql[i + 1:j]})s")
            i = j
            continue
        else:
            out.append(ch)
        i += 1
    done = "".join(out)
    if len(_translated) < 4096:  # statements are few; generated IN-lists are not cached
        _translated[sql] = done
    return done


MULTI_ROW_MIN = 32  # fewer rows: plain executemany (pipelined) is as fast
_INSERT = re.compile(r"^\s*INSERT INTO (?P<head>\w+ \([^)]*\)) VALUES (?P<row>\([^()]*\))"
                     r"(?P<tail>(?:\s+ON CONFLICT.*)?)$", re.S | re.I)
_UPDATE = re.compile(r"^\s*UPDATE (?P<table>\w+) SET (?P<set>.+?) WHERE (?P<where>.+)$",
                     re.S | re.I)
_CASTS = {bool: "bigint", int: "bigint", float: "double precision", str: "text"}


def _column_casts(rows: list[tuple[Any, ...]]) -> list[str | None] | None:
    """The SQL type of each parameter column, from its values: None for a column of
    NULLs only (written as a plain NULL); None for all when a type cannot be told."""
    casts: list[str | None] = []
    for column in zip(*rows, strict=True):
        kinds = {type(v) for v in column if v is not None}
        if kinds == {int, float}:
            kinds = {float}
        if not kinds:
            casts.append(None)
            continue
        if len(kinds) != 1 or next(iter(kinds)) not in _CASTS:
            return None
        casts.append(_CASTS[next(iter(kinds))])
    return casts


def multi_row(sql: str, rows: list[tuple[Any, ...]]) -> list[tuple[str, list[Any]]] | None:
    """``executemany`` of an ``INSERT ... VALUES (...)`` or of an ``UPDATE`` whose
    parameters are all plain ``?``, as one statement over ``unnest`` of one array per
    parameter (a few parameters, whatever the row count); None when the statement has
    another shape, a column's type cannot be told from its values, or an UPDATE names
    the same row twice (one multi-row UPDATE would apply only one of them)."""
    width = len(rows[0])
    inserted = _INSERT.match(sql)
    updated = None if inserted is not None else _UPDATE.match(sql)
    if inserted is None and (updated is None or " FROM " in sql.upper() or "'" in sql):
        return None
    casts = _column_casts(rows)
    if casts is None:
        return None
    typed = [(f"c{i}", c) for i, c in enumerate(casts, 1) if c is not None]
    if not typed:
        return None
    source = (f"unnest({', '.join(f'%s::{c}[]' for _, c in typed)}) "
              f"AS v({', '.join(n for n, _ in typed)})")
    arrays = [[None if v is None else float(v) for v in column]
              if c == "double precision" else list(column)
              for column, c in zip(zip(*rows, strict=True), casts, strict=True) if c is not None]
    # a parameter becomes its array's column, or NULL where every row holds NULL
    counter = iter([f"v.c{i}" if c is not None else "NULL" for i, c in enumerate(casts, 1)])
    if inserted is not None:
        if inserted["row"].count("?") != width:
            return None
        select = re.sub(r"\?", lambda _: next(counter), inserted["row"][1:-1])
        return [(f"INSERT INTO {inserted['head']} SELECT {to_pg(select)} FROM {source}"
                 f"{to_pg(inserted['tail'])}", arrays)]
    assert updated is not None
    set_marks, where_marks = updated["set"].count("?"), updated["where"].count("?")
    if set_marks + where_marks != width or where_marks == 0:
        return None
    if len({r[set_marks:] for r in rows}) != len(rows):
        return None  # the same row twice: one multi-row UPDATE would apply one of them
    table = updated["table"]
    set_part = re.sub(r"\?", lambda _: next(counter), updated["set"])
    where_part = re.sub(r"\?", lambda _: next(counter), updated["where"])
    # the assigned columns stay bare (PostgreSQL refuses "SET t.c = ..."); the rest are
    # qualified, since the unnested arrays bring columns of their own
    assigned = re.sub(rf"(^|,\s*){table}\.(\w+)\s*=", r"\1\2 =", _qualify(set_part, table))
    return [(f"UPDATE {table} SET {assigned} FROM {source} "
             f"WHERE {_qualify(where_part, table)}", arrays)]


def _qualify(part: str, table: str) -> str:
    """Column names of ``table`` written bare are qualified: ``v`` also has columns."""
    return re.sub(r"(?<![.\w])([a-z_][a-z0-9_]*)(?=\s*(?:[-+=<>!,)]|$|\s+(?:AND|OR|IS|IN)\b))",
                  lambda m: m[1] if m[1].upper() in _KEYWORDS else f"{table}.{m[1]}", part)


_KEYWORDS = {"AND", "OR", "NOT", "NULL", "IS", "IN", "TRUE", "FALSE", "CASE", "WHEN", "THEN",
             "ELSE", "END", "DISTINCT", "FROM"}


class PgCursor:
    """What callers read from a statement: rows, ``rowcount``, ``description``."""

    __slots__ = ("_cur", "rowcount")

    def __init__(self, cur: psycopg.Cursor[Any], rowcount: int) -> None:
        self._cur = cur
        self.rowcount = rowcount

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
        except psycopg.Error as exc:
            message = f"cannot open database {_safe(url)}: {exc}"
            raise StoreError(message) from exc
        self._changes = 0

    @property
    def in_transaction(self) -> bool:
        return self.raw.info.transaction_status != TransactionStatus.IDLE

    @property
    def total_changes(self) -> int:
        """Rows changed by INSERT/UPDATE/DELETE on this connection (like SQLite's)."""
        return self._changes

    def execute(self, sql: str, parameters: Any = (), /) -> PgCursor:
        cur = self.raw.cursor()
        if parameters:
            cur.execute(to_pg(sql), parameters)
        else:  # psycopg reads no placeholders (and no %% escapes) without parameters
            cur.execute(sql)
        changed = max(cur.rowcount, 0) if cur.description is None else 0
        self._changes += changed
        return PgCursor(cur, cur.rowcount)

    def executemany(self, sql: str, parameters: Iterable[Sequence[Any] | Mapping[str, Any]],
                   /) -> PgCursor:
        given = list(parameters)
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
        plan = multi_row(sql, rows) if len(rows) >= MULTI_ROW_MIN else None
        if plan is None:
            cur.executemany(to_pg(sql), rows)
            count = cur.rowcount
        else:
            # one statement per chunk of rows instead of one per row: a reroute writes
            # ten thousand rows, and per-row statements cost a round of the protocol each
            count = 0
            for statement, values in plan:
                cur.execute(statement, values)
                count += max(cur.rowcount, 0)
        self._changes += max(count, 0)
        return PgCursor(cur, count)

    def close(self) -> None:
        self.raw.close()


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
            except BaseException:
                if conn.raw.info.transaction_status == TransactionStatus.INERROR or \
                        conn.in_transaction:
                    conn.execute(f"ROLLBACK TO SAVEPOINT {name}")
                    conn.execute(f"RELEASE SAVEPOINT {name}")
                raise
            conn.execute(f"RELEASE SAVEPOINT {name}")
            return
        conn.execute("BEGIN")
        try:
            yield self
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")


def _safe(url: str) -> str:
    """The URL without its password (never in logs or errors)."""
    head, sep, tail = url.partition("@")
    if not sep or ":" not in head.split("//", 1)[-1]:
        return url
    scheme, _, userinfo = head.partition("//")
    return f"{scheme}//{userinfo.split(':', 1)[0]}:***@{tail}"
