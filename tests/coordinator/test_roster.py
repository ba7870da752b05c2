"""The staff roster: on-duty hours (pure), the store, the import and the command line."""

from __future__ import annotations

import json
from datetime import UTC, datetime, time
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError
from sqlite_utils import Database

from coordinator.__main__ import main
from coordinator.db import open_database
from coordinator.errors import ImportFileError, NotFound
from coordinator.imports import ImportFormat
from coordinator.roster import StaffIn, StaffMember, minutes_in, parse_hours
from coordinator.roster_store import import_staff_file, on_duty, parse_staff, staff, upsert_staff

from .conftest import NOW

SHANGHAI = ZoneInfo("Asia/Shanghai")


def _member(hours: str, *, active: bool = True) -> StaffMember:
    return StaffMember(id="S1", warehouse_id="WH-01", name="王磊", role="仓管",
                       phone="13900000101", on_duty=hours, active=active)


def _local(hour: int, minute: int = 0) -> datetime:
    return datetime(2026, 11, 24, hour, minute, tzinfo=SHANGHAI)


def test_day_shift_covers_its_hours_in_local_time() -> None:
    day = _member("08:00-20:00")
    assert day.on_duty_at(_local(8), SHANGHAI)
    assert day.on_duty_at(_local(19, 59), SHANGHAI)
    assert not day.on_duty_at(_local(20), SHANGHAI)
    # 02:17 UTC is 10:17 in Shanghai: on duty, though the UTC hour is not
    assert day.on_duty_at(datetime(2026, 11, 24, 2, 17, tzinfo=UTC), SHANGHAI)


def test_night_shift_runs_past_midnight() -> None:
    night = _member("20:00-08:00")
    assert night.on_duty_at(_local(23, 30), SHANGHAI)
    assert night.on_duty_at(_local(3), SHANGHAI)
    assert not night.on_duty_at(_local(12), SHANGHAI)


def test_split_shifts_and_all_day_and_inactive() -> None:
    split = _member("08:00-12:00, 14:00-18:00")
    assert split.on_duty_at(_local(9), SHANGHAI)
    assert not split.on_duty_at(_local(13), SHANGHAI)
    assert _member("00:00-24:00").on_duty_at(_local(0), SHANGHAI)
    assert not _member("00:00-24:00", active=False).on_duty_at(_local(9), SHANGHAI)


@pytest.mark.parametrize("bad", ["8-20", "08:00-25:00", "08:00-08:00", "", "08:00", "ab:cd-ef"])
def test_bad_hours_name_the_part(bad: str) -> None:
    with pytest.raises(ValueError, match=r"HH:MM|empty"):
        parse_hours(bad)
    with pytest.raises(ValidationError, match="on_duty"):
        StaffIn(id="S", warehouse_id="WH-01", name="x", role="r", phone="13900000000",
                on_duty=bad)


@given(st.integers(0, 23), st.integers(0, 59), st.integers(0, 23), st.integers(0, 59),
       st.times())
def test_a_range_and_its_complement_cover_every_minute_once(
        h1: int, m1: int, h2: int, m2: int, at: time) -> None:
    if (h1, m1) == (h2, m2):
        return
    a, b = f"{h1:02d}:{m1:02d}", f"{h2:02d}:{m2:02d}"
    inside = minutes_in(parse_hours(f"{a}-{b}"), at)
    outside = minutes_in(parse_hours(f"{b}-{a}"), at)
    assert inside != outside


def test_phone_is_checked_and_named() -> None:
    with pytest.raises(ValidationError, match="phone"):
        StaffIn(id="S", warehouse_id="WH-01", name="x", role="r", phone="12345")


def test_store_upserts_and_answers_who_is_on_duty(store_db: Database) -> None:
    sample_db = store_db  # each backend
    rows = [StaffIn(id="A", warehouse_id="WH-01", name="甲", role="仓管", phone="13900000001",
                    on_duty="08:00-20:00"),
            StaffIn(id="B", warehouse_id="WH-01", name="乙", role="夜班", phone="13900000002",
                    on_duty="20:00-08:00"),
            StaffIn(id="C", warehouse_id="WH-01", name="丙", role="仓管", phone="13900000003",
                    active=False)]
    assert upsert_staff(sample_db, rows, NOW) == 3
    # NOW is 10:17 in Shanghai: the day shift only; the inactive one never
    assert [m.id for m in on_duty(sample_db, "WH-01", NOW)] == ["A"]
    assert [m.id for m in on_duty(sample_db, "WH-01", _local(22))] == ["B"]
    moved = rows[0].model_copy(update={"warehouse_id": "WH-02"})
    upsert_staff(sample_db, [moved], NOW)
    assert [m.id for m in staff(sample_db, warehouse_ids=["WH-02"])] == ["A"]
    assert staff(sample_db, warehouse_ids=[]) == []


def test_unknown_warehouse_writes_nothing(store_db: Database) -> None:
    rows = [StaffIn(id="A", warehouse_id="WH-01", name="甲", role="r", phone="13900000001"),
            StaffIn(id="B", warehouse_id="WH-99", name="乙", role="r", phone="13900000002")]
    with pytest.raises(NotFound, match="WH-99"):
        upsert_staff(store_db, rows, NOW)
    assert staff(store_db) == []


def test_a_big_roster_with_a_repeated_id_keeps_its_last_row(store_db: Database) -> None:
    """40 rows (PostgreSQL writes them as one multi-row upsert, which may not touch a row
    twice), one id given twice: the last one wins, as a row-by-row import does."""
    rows = [StaffIn(id=f"S{i:02d}", warehouse_id="WH-01", name=f"员工{i}", role="仓管",
                    phone=f"139000001{i:02d}") for i in range(39)]
    rows.append(rows[5].model_copy(update={"warehouse_id": "WH-02", "name": "调岗"}))
    assert upsert_staff(store_db, rows, NOW) == 40
    members = {m.id: m for m in staff(store_db)}
    assert len(members) == 39
    assert (members["S05"].warehouse_id, members["S05"].name) == ("WH-02", "调岗")


def test_import_file_rejects_a_bad_row_by_number(sample_db: Database, tmp_path: Path) -> None:
    good = tmp_path / "staff.json"
    good.write_text(json.dumps([
        {"id": "A", "warehouse_id": "WH-03", "name": "甲", "role": "仓管",
         "phone": "13900000001", "on_duty": "08:00-20:00", "active": "是"}]), encoding="utf-8")
    assert import_staff_file(sample_db, good, NOW) == 1
    # rows are numbered as Excel shows them: the header is row 1
    with pytest.raises(ImportFileError, match=r"row 3\.phone"):
        parse_staff("id,warehouse_id,name,role,phone\nA,WH-01,甲,r,13900000001\n"
                    "B,WH-01,乙,r,555\n".encode(), fmt=ImportFormat.CSV)


def test_cli_seeds_the_sample_roster_and_imports_staff(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db_path = tmp_path / "cli.sqlite"
    assert main(["seed-sample", "--db", str(db_path)]) == 0
    assert "sample staff: 16" in capsys.readouterr().out
    extra = tmp_path / "people.csv"
    extra.write_text("id,warehouse_id,name,role,phone,on_duty\n"
                     "X,WH-02,新人,仓管,13900000099,09:00-18:00\n", encoding="utf-8")
    assert main(["import", str(extra), "--kind", "staff", "--db", str(db_path)]) == 0
    bad = tmp_path / "staff.csv"
    bad.write_text("id,warehouse_id,name,role,phone,on_duty\nY,WH-02,x,r,13900000098,9-18\n",
                   encoding="utf-8")
    assert main(["import", str(bad), "--db", str(db_path)]) == 2
    assert "row 2.on_duty" in capsys.readouterr().err
    db = open_database(db_path)
    assert len(staff(db)) == 17
