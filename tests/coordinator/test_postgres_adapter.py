"""The PostgreSQL adapter: many-row statements written as one, with the same effect and
row counts as one statement per row; parameter markers outside quotes only."""

from __future__ import annotations

import psycopg
import pytest
from hypothesis import given
from hypothesis import strategies as st

from coordinator.pg_sql import MULTI_ROW_MIN, copy_plan, multi_row, to_pg
from coordinator.postgres import PgDatabase

ROWS = MULTI_ROW_MIN * 3


@pytest.fixture
def pg(postgres_url: str) -> PgDatabase:
    db = PgDatabase(postgres_url)
    db.execute("CREATE TABLE stock (w TEXT, s TEXT, on_hand BIGINT, reserved BIGINT, "
               "km DOUBLE PRECISION, note TEXT, PRIMARY KEY (w, s))")
    return db


def _rows(db: PgDatabase) -> list[tuple[object, ...]]:
    return [tuple(r) for r in db.execute("SELECT * FROM stock ORDER BY w, s").fetchall()]


def test_many_rows_insert_and_update_as_one_statement_each(pg: PgDatabase) -> None:
    try:
        pg.conn.executemany(
            "INSERT INTO stock (w, s, on_hand, reserved, km, note) VALUES (?, ?, ?, 0, ?, ?)",
            [(f"W{i % 3}", f"S{i:03d}", 5, i if i % 2 else i + 0.5, None) for i in range(ROWS)])
        taken = pg.conn.executemany(  # the guarded reservation: only where stock suffices
            "UPDATE stock SET reserved = reserved + ?, note = ? "
            "WHERE w = ? AND s = ? AND on_hand - reserved >= ?",
            [(q, "held", f"W{i % 3}", f"S{i:03d}", q) for i, q in
             ((i, 6 if i % 5 == 0 else 2) for i in range(ROWS))])
        assert taken.rowcount == ROWS - len(range(0, ROWS, 5))
        rows = _rows(pg)
        assert len(rows) == ROWS
        assert {r[3] for r in rows} == {0, 2} and {r[5] for r in rows} == {None, "held"}
        assert all(isinstance(r[4], float) for r in rows)
    finally:
        pg.conn.close()


def test_a_guarded_many_row_update_in_a_transaction_counts_only_the_rows_it_took(
        pg: PgDatabase) -> None:
    try:
        pg.conn.executemany("INSERT INTO stock (w, s, on_hand, reserved) VALUES (?, ?, 5, 0)",
                            [("W", f"S{i:03d}") for i in range(ROWS)])
        with pg.atomic():  # inside a transaction the UPDATE is planned as key lookups
            taken = pg.conn.executemany(
                "UPDATE stock SET reserved = reserved + ? WHERE w = ? AND s = ? "
                "AND on_hand - reserved >= ?",
                [(q, "W", f"S{i:03d}", q) for i, q in
                 ((i, 9 if i % 4 == 0 else 1) for i in range(ROWS))])
            assert taken.rowcount == ROWS - len(range(0, ROWS, 4))
            # the planner switches were local to that statement
            assert pg.execute("SHOW enable_hashjoin").fetchone()[0] == "on"
        assert sum(r[3] for r in _rows(pg)) == ROWS - len(range(0, ROWS, 4))
    finally:
        pg.conn.close()


def test_the_same_row_twice_is_applied_twice(pg: PgDatabase) -> None:
    try:
        pg.execute("INSERT INTO stock VALUES ('W', 'S', 100, 0, 0, NULL)")
        assert multi_row("UPDATE stock SET reserved = reserved + ? WHERE w = ? AND s = ?",
                         [(1, "W", "S")] * ROWS) is None  # falls back to row by row
        pg.conn.executemany("UPDATE stock SET reserved = reserved + ? WHERE w = ? AND s = ?",
                            [(1, "W", "S")] * ROWS)
        assert _rows(pg)[0][3] == ROWS
    finally:
        pg.conn.close()


def test_a_plain_insert_of_awkward_text_is_copied_as_written(pg: PgDatabase) -> None:
    awkward = ["tab\there", "new\nline", "back\\slash \\N", "quote ' \" 冷链", "", "\\."]
    rows = [(f"W{i}", text, i, bool(i % 2), None)
            for i, text in enumerate(awkward * 2)]
    sql = "INSERT INTO stock (w, s, on_hand, reserved, km, note) VALUES (?, ?, ?, ?, ?, 'kept')"
    try:
        assert copy_plan(sql) is not None
        pg.conn.executemany(sql, rows)
        stored = _rows(pg)
        assert sorted((r[0], r[1], r[2], r[3], r[4], r[5]) for r in stored) == sorted(
            (w, s, n, int(b), None, "kept") for w, s, n, b, _ in rows)
    finally:
        pg.conn.close()


def test_a_copied_insert_that_breaks_a_key_writes_nothing(pg: PgDatabase) -> None:
    sql = "INSERT INTO stock (w, s, on_hand, reserved, km, note) VALUES (?, ?, ?, 0, 0, NULL)"
    try:
        with pytest.raises(psycopg.errors.UniqueViolation), pg.atomic():
            pg.conn.executemany(sql, [("W", f"S{i}", 1) for i in range(10)] + [("W", "S3", 1)])
        assert _rows(pg) == []
    finally:
        pg.conn.close()


@pytest.mark.parametrize("sql", [
    "INSERT INTO stock (w, s) VALUES (?, ?) ON CONFLICT (w, s) DO NOTHING",
    "INSERT INTO stock (w, s) VALUES (?, lower(?))",
    "INSERT INTO stock (w, s) VALUES (?, ?) RETURNING w",
])
def test_an_insert_that_copy_cannot_express_keeps_its_statement(sql: str) -> None:
    assert copy_plan(sql) is None


@given(st.text(alphabet="?%:'ab ", max_size=12))
def test_markers_inside_quotes_are_left_alone(literal: str) -> None:
    quoted = "'" + literal.replace("'", "''") + "'"
    out = to_pg(f"SELECT {quoted}, ? WHERE x = :name")
    assert out.endswith(", %s WHERE x = %(name)s")
    assert out.count("%s") == 1  # only the marker outside the quotes
