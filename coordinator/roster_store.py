"""SQL of the staff roster (:mod:`coordinator.roster`): its table, upserts and reads.

Migration set ``coordinator_roster``: table ``staff`` (id, warehouse_id, name, role,
phone, on_duty, active, updated_at), indexed by warehouse. Portable SQL (named
parameters, ``ON CONFLICT ... DO UPDATE``) that PostgreSQL accepts as well.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

from sqlite_utils import Database as SqliteDatabase
from sqlite_utils import Migrations

from coordinator.db import Database, write_transaction
from coordinator.errors import ImportFileError, NotFound
from coordinator.imports import ImportFormat, detect_format, load_all
from coordinator.roster import DEFAULT_TIMEZONE, StaffIn, StaffMember
from protocols.timestamps import stamp

migrations = Migrations("coordinator_roster")
REGION_TZ = ZoneInfo(DEFAULT_TIMEZONE)


@migrations()
def m001_staff(db: SqliteDatabase) -> None:
    db.conn.execute(
        "CREATE TABLE staff ("
        " id TEXT PRIMARY KEY,"
        " warehouse_id TEXT NOT NULL,"
        " name TEXT NOT NULL,"
        " role TEXT NOT NULL,"
        " phone TEXT NOT NULL,"
        " on_duty TEXT NOT NULL,"
        " active INTEGER NOT NULL DEFAULT 1,"
        " updated_at TEXT NOT NULL)"
    )
    db.conn.execute("CREATE INDEX staff_warehouse ON staff (warehouse_id, active)")


_COLUMNS = "id, warehouse_id, name, role, phone, on_duty, active"


def upsert_staff(db: Database, rows: Sequence[StaffIn], now: datetime) -> int:
    """All rows or none; an unknown warehouse raises :class:`NotFound` naming it."""
    with write_transaction(db):
        known = {r[0] for r in db.conn.execute("SELECT id FROM warehouses").fetchall()}
        for row in rows:
            if row.warehouse_id not in known:
                raise NotFound("warehouse", row.warehouse_id)
        # positional rows: both backends take them in executemany
        db.conn.executemany(
            "INSERT INTO staff (id, warehouse_id, name, role, phone, on_duty, active, "
            "updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO UPDATE SET "
            "warehouse_id = excluded.warehouse_id, name = excluded.name, role = excluded.role, "
            "phone = excluded.phone, on_duty = excluded.on_duty, active = excluded.active, "
            "updated_at = excluded.updated_at",
            # one row per id, the last given: PostgreSQL's multi-row upsert refuses to
            # update a row twice in one statement
            [(row.id, row.warehouse_id, row.name, row.role, row.phone, row.on_duty,
              int(row.active), stamp(now)) for row in {r.id: r for r in rows}.values()],
        )
    return len(rows)


def parse_staff(source: bytes | Path, *, fmt: ImportFormat) -> list[StaffIn]:
    """A roster export (CSV, JSON, JSON lines, xlsx) through the one import reader, all
    rows or none: a bad row raises :class:`ImportFileError` (``row N.column``)."""
    return load_all(source, StaffIn, fmt=fmt)


def import_staff_file(db: Database, path: Path, now: datetime) -> int:
    if not path.is_file():
        raise ImportFileError("file", f"{path}: no such file")
    return upsert_staff(db, parse_staff(path, fmt=detect_format(name=path.name)), now)


def staff(db: Database, *, warehouse_ids: Collection[str] | None = None,
          active_only: bool = False) -> list[StaffMember]:
    """The roster (of some warehouses), by warehouse then id."""
    sql = f"SELECT {_COLUMNS} FROM staff"
    where: list[str] = []
    params: dict[str, object] = {}
    if warehouse_ids is not None:
        names = [f":w{i}" for i in range(len(warehouse_ids))]
        if not names:
            return []
        where.append(f"warehouse_id IN ({', '.join(names)})")
        params |= {f"w{i}": w for i, w in enumerate(warehouse_ids)}
    if active_only:
        where.append("active = 1")
    if where:
        sql += " WHERE " + " AND ".join(where)
    cur = db.conn.execute(sql + " ORDER BY warehouse_id, id", params)
    names_ = [c[0] for c in cur.description]
    return [StaffMember.of_row(dict(zip(names_, r, strict=True))) for r in cur.fetchall()]


def on_duty(db: Database, warehouse_id: str, at: datetime,
            tz: ZoneInfo = REGION_TZ) -> list[StaffMember]:
    """Active staff of ``warehouse_id`` whose hours cover ``at`` (local wall clock of ``tz``)."""
    return on_duty_of(db, [warehouse_id], at, tz)


def on_duty_of(db: Database, warehouse_ids: Collection[str], at: datetime,
               tz: ZoneInfo = REGION_TZ) -> list[StaffMember]:
    return [m for m in staff(db, warehouse_ids=warehouse_ids, active_only=True)
            if m.on_duty_at(at, tz)]
