"""``python -m coordinator migrate-db SRC DST``: copy a SQLite database into PostgreSQL.

The destination gets the schema first (the same migrations, translated), must hold no
data of its own (only the rows a fresh schema seeds), and receives every table in one
transaction: a failure leaves it as it was. Identity columns continue after the copied
ids. Verified before the commit: the same row count in every table, and every stock
row's ``reserved`` equal to the units its held reservations name.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from coordinator.db import Database, dialect, open_database, sqlite_connection
from coordinator.errors import StoreError
from coordinator.postgres import is_postgres_url

_CHUNK = 5000


@dataclass(frozen=True, slots=True)
class MigrationReport:
    rows: dict[str, int] = field(default_factory=dict)
    reservations_checked: int = 0


def _tables(src: Database) -> list[str]:
    return [r[0] for r in src.execute(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' "
        # in creation order: a table is created after the tables its foreign keys name
        "AND name != '_sqlite_migrations' ORDER BY rowid").fetchall()]


def _columns(src: Database, table: str) -> list[str]:
    return [r[1] for r in src.execute(f"PRAGMA table_info({table})").fetchall()]


def _reservation_mismatches(db: Database) -> int:
    return len(db.execute(
        "SELECT i.warehouse_id, i.sku_id FROM inventory i LEFT JOIN reservations r "
        "ON r.warehouse_id = i.warehouse_id AND r.sku_id = i.sku_id AND r.status = 'held' "
        "GROUP BY i.warehouse_id, i.sku_id HAVING i.reserved != coalesce(sum(r.qty), 0)"
    ).fetchall())


def migrate_db(source: str, destination: str) -> MigrationReport:
    """Copy ``source`` (SQLite) into ``destination`` (PostgreSQL); see the module doc."""
    # checked before anything is opened: opening a SQLite path creates the file, so a
    # mistyped source would "migrate" an empty new database and report success
    if is_postgres_url(source) or not is_postgres_url(destination):
        message = "migrate-db copies a SQLite database (SRC) into PostgreSQL (DST)"
        raise StoreError(message)
    path = source.removeprefix("sqlite:///")
    if not Path(path).is_file():
        message = f"source database {source} does not exist (or is not a file)"
        raise StoreError(message)
    src = open_database(source)
    dst = open_database(destination)
    try:
        if dialect(src) != "sqlite" or dialect(dst) != "postgresql":
            message = "migrate-db copies a SQLite database (SRC) into PostgreSQL (DST)"
            raise StoreError(message)
        tables = _tables(src)
        seeded = _seeded_tables()
        rows: dict[str, int] = {}
        with dst.atomic():
            for table in tables:
                count = int(dst.execute(f"SELECT count(*) FROM {table}").fetchone()[0])
                if count and table not in seeded:
                    message = f"destination table {table} already holds {count} rows"
                    raise StoreError(message)
            # the copy is verbatim: the catalogue-version triggers (one UPDATE of one
            # meta row per inserted row) made a large copy quadratic inside this one
            # transaction (80,000 SKUs: 34 s; 372,000: over 10 min), and the source's
            # meta rows are copied anyway
            for table in tables:
                dst.execute(f"ALTER TABLE {table} DISABLE TRIGGER USER")
            for table in tables:
                rows[table] = _copy(src, dst, table, replace=table in seeded)
            for table in tables:
                dst.execute(f"ALTER TABLE {table} ENABLE TRIGGER USER")
            for table in tables:
                copied = int(dst.execute(f"SELECT count(*) FROM {table}").fetchone()[0])
                if copied != rows[table]:
                    message = f"{table}: {copied} rows copied of {rows[table]}"
                    raise StoreError(message)
            if _reservation_mismatches(dst) or _reservation_mismatches(src):
                message = "reserved stock does not match the held reservations"
                raise StoreError(message)
            checked = int(dst.execute("SELECT count(*) FROM inventory").fetchone()[0])
    finally:
        src.conn.close()
        dst.conn.close()
    return MigrationReport(rows, checked)


def _seeded_tables() -> set[str]:
    """Tables a fresh schema already fills (counters, cursors): the source's rows replace
    them rather than counting as the destination's own data."""
    scratch = open_database(":memory:")
    try:
        return {t for t in _tables(scratch)
                if scratch.execute(f"SELECT count(*) FROM {t}").fetchone()[0]}
    finally:
        scratch.conn.close()


def _copy(src: Database, dst: Database, table: str, *, replace: bool) -> int:
    columns = _columns(src, table)
    if replace:
        dst.execute(f"DELETE FROM {table}")
    insert = (f"INSERT INTO {table} ({', '.join(columns)}) "
              f"VALUES ({', '.join('?' * len(columns))})")
    cur = sqlite_connection(src, "migrate-db's source").execute(
        f"SELECT {', '.join(columns)} FROM {table}")
    total = 0
    while chunk := cur.fetchmany(_CHUNK):
        dst.conn.executemany(insert, chunk)
        total += len(chunk)
    if "id" in columns:
        sequence = dst.execute("SELECT pg_get_serial_sequence(?, 'id')", [table]).fetchone()[0]
        if sequence is not None:  # an identity column: new rows go on after the copied ids
            dst.execute(f"SELECT setval(?, coalesce((SELECT max(id) FROM {table}), 0) + 1, "
                        "false)", [sequence])
    return total
