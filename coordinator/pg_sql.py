"""SQL text for psycopg: the ``?`` markers translated (:func:`to_pg`), and the many-row
statements :meth:`coordinator.postgres.PgConnection.executemany` sends instead of one
statement per row:

- a plain ``INSERT INTO t (columns) VALUES (...)`` (parameters and constants only) of
  :data:`COPY_MIN` rows or more goes as ``COPY t (columns) FROM STDIN`` (:func:`copy_rows`):
  the rows stream to the server formatted by psycopg's C code;
- another ``INSERT ... VALUES`` or a plain ``UPDATE`` of :data:`MULTI_ROW_MIN` rows or more
  becomes one statement over ``unnest`` of one typed array per parameter
  (:func:`multi_row`), the arrays sent in binary.
"""

from __future__ import annotations

import re
from itertools import chain
from typing import Any

import psycopg

_translated: dict[str, str] = {}


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


COPY_MIN = 4  # fewer rows: one pipelined INSERT per row costs less than COPY's exchange
_PLAIN_INSERT = re.compile(r"^\s*INSERT INTO (?P<table>\w+) \((?P<columns>[^()]*)\) "
                           r"VALUES \((?P<row>[^()]*)\)\s*$", re.S | re.I)
_LITERAL = re.compile(r"^(?:'(?P<text>[^']*)'|(?P<number>-?\d+(?:\.\d+)?)|(?P<null>NULL))$",
                      re.I)
_COPY_KINDS = frozenset({str, int, float, bool, type(None)})
# (COPY statement, per row value: the parameter's index, or None for a constant; the
# constants) of each plain INSERT statement, worked out once
_copy_plans: dict[str, tuple[str, list[int | None], list[Any]] | None] = {}


def copy_plan(sql: str) -> tuple[str, list[int | None], list[Any]] | None:
    """``INSERT INTO t (columns) VALUES (...)`` whose values are all ``?`` or constants,
    with no ``ON CONFLICT`` or ``RETURNING``, as a ``COPY t (columns) FROM STDIN``; None
    for any other statement."""
    if sql in _copy_plans:
        return _copy_plans[sql]
    plan: tuple[str, list[int | None], list[Any]] | None = None
    m = _PLAIN_INSERT.match(sql)
    if m is not None:
        columns = [c.strip() for c in m["columns"].split(",")]
        items = [v.strip() for v in m["row"].split(",")]
        slots: list[int | None] = []
        constants: list[Any] = []
        marks = 0
        for item in items:
            if item == "?":
                slots.append(marks)
                constants.append(None)
                marks += 1
                continue
            literal = _LITERAL.match(item)
            if literal is None:
                slots = []
                break
            slots.append(None)
            number = literal["number"]
            constants.append(literal["text"] if literal["text"] is not None else
                             None if number is None else
                             float(number) if "." in number else int(number))
        if slots and len(slots) == len(columns):
            plan = (f"COPY {m['table']} ({', '.join(columns)}) FROM STDIN", slots, constants)
    if len(_copy_plans) < 1024:
        _copy_plans[sql] = plan
    return plan


def copy_rows(cur: psycopg.Cursor[Any], sql: str, rows: list[tuple[Any, ...]]) -> bool:
    """Write ``rows`` of a plain multi-row INSERT through ``COPY`` (its rows go to the
    server as one stream, formatted by psycopg's C code: a tenth of the time of one
    statement over unnested arrays); False when the statement or the values do not fit."""
    plan = copy_plan(sql)
    if plan is None:
        return False
    statement, slots, constants = plan
    kinds = set(map(type, chain.from_iterable(rows)))
    if not kinds <= _COPY_KINDS or len(rows[0]) != sum(s is not None for s in slots):
        return False
    if bool in kinds:  # booleans are stored as integers (the SQLite schema's BIGINT)
        rows = [tuple(int(v) if v.__class__ is bool else v for v in r) for r in rows]
    if any(s is None for s in slots):
        rows = [tuple(r[s] if s is not None else c for s, c in zip(slots, constants,
                                                                  strict=True))
                for r in rows]
    with cur.copy(statement) as copy:
        for row in rows:
            copy.write_row(row)
    return True


_CONFLICT_TARGET = re.compile(r"ON CONFLICT\s*\(([^)]*)\)\s*DO UPDATE", re.I)


def _conflicting_keys(head: str, row: str, tail: str, rows: list[tuple[Any, ...]]) -> bool:
    """Whether an ``INSERT ... ON CONFLICT (key) DO UPDATE`` names one key twice in
    ``rows``: PostgreSQL refuses that in one statement ("cannot affect row a second
    time"), while SQLite and row-by-row upserts let the last row win."""
    target = _CONFLICT_TARGET.search(tail)
    if target is None:
        return False
    columns = [c.strip() for c in head[head.index("(") + 1:head.rindex(")")].split(",")]
    values = [v.strip() for v in row[1:-1].split(",")]
    if len(columns) != len(values):
        return True  # cannot tell which parameter is which column: do not risk it
    position, slots = 0, {}
    for column, value in zip(columns, values, strict=True):
        if value == "?":
            slots[column] = position
        position += value.count("?")
    key = [slots[c.strip()] for c in target[1].split(",") if c.strip() in slots]
    if not key:
        return False
    return len({tuple(r[i] for i in key) for r in rows}) != len(rows)


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
    # binary arrays (%b): psycopg packs them four times faster than it escapes the text
    # form, and the server reads them without parsing
    source = (f"unnest({', '.join(f'%b::{c}[]' for _, c in typed)}) "
              f"AS v({', '.join(n for n, _ in typed)})")
    arrays = [_typed_array(column, c)
              for column, c in zip(zip(*rows, strict=True), casts, strict=True) if c is not None]
    # a parameter becomes its array's column, or NULL where every row holds NULL
    counter = iter([f"v.c{i}" if c is not None else "NULL" for i, c in enumerate(casts, 1)])
    if inserted is not None:
        if inserted["row"].count("?") != width:
            return None
        if _conflicting_keys(inserted["head"], inserted["row"], inserted["tail"], rows):
            return None  # one statement may not upsert a row twice; row by row may
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


def _typed_array(column: tuple[Any, ...], cast: str) -> list[Any]:
    if cast == "double precision":
        return [None if v is None else float(v) for v in column]
    if cast == "bigint" and any(v.__class__ is bool for v in column):
        return [None if v is None else int(v) for v in column]  # bool[] has no bigint cast
    return list(column)


def _qualify(part: str, table: str) -> str:
    """Column names of ``table`` written bare are qualified: ``v`` also has columns."""
    return re.sub(r"(?<![.\w])([a-z_][a-z0-9_]*)(?=\s*(?:[-+=<>!,)]|$|\s+(?:AND|OR|IS|IN)\b))",
                  lambda m: m[1] if m[1].upper() in _KEYWORDS else f"{table}.{m[1]}", part)


_KEYWORDS = {"AND", "OR", "NOT", "NULL", "IS", "IN", "TRUE", "FALSE", "CASE", "WHEN", "THEN",
             "ELSE", "END", "DISTINCT", "FROM"}
