"""Opening the database: migrations (the one timestamp format), WAL checkpoints off the
commit path."""

from __future__ import annotations

import shutil
import sqlite3
import time
from pathlib import Path

from coordinator.db import WalCheckpointer, open_database
from coordinator.schema import restamp


def _write_rows(path: Path, count: int) -> None:
    db = open_database(path, migrate=False, autocheckpoint=False)
    try:
        db.execute("CREATE TABLE IF NOT EXISTS filler (id INTEGER PRIMARY KEY, body TEXT)")
        for start in range(0, count, 500):
            with db.conn:
                db.conn.executemany("INSERT INTO filler (body) VALUES (?)",
                                    [("x" * 400,) for _ in range(start, min(count, start + 500))])
    finally:
        db.conn.close()


def _rows_in_main_file(path: Path, copy: Path) -> int:
    """Rows visible from the database file alone, as if the WAL were lost."""
    shutil.copyfile(path, copy)
    conn = sqlite3.connect(copy)
    try:
        tables = conn.execute("SELECT name FROM sqlite_master WHERE name = 'filler'").fetchall()
        return int(conn.execute("SELECT count(*) FROM filler").fetchone()[0]) if tables else 0
    finally:
        conn.close()


def test_writer_without_autocheckpoint_leaves_commits_in_the_wal(tmp_path: Path) -> None:
    path = tmp_path / "db.sqlite"
    keep_open = open_database(path, migrate=False)  # keeps the WAL from being folded at close
    keep_open.execute("SELECT count(*) FROM sqlite_master").fetchall()
    try:
        _write_rows(path, 6_000)  # ~2,400 pages: past the default 1,000-page autocheckpoint
        assert _rows_in_main_file(path, tmp_path / "copy.sqlite") == 0
    finally:
        keep_open.conn.close()


def test_checkpointer_folds_the_wal_into_the_database_file(tmp_path: Path) -> None:
    path = tmp_path / "db.sqlite"
    keep_open = open_database(path, migrate=False)
    try:
        with WalCheckpointer(path, interval_s=0.01) as checkpointer:
            _write_rows(path, 6_000)
        assert checkpointer.checkpoints >= 1
        assert checkpointer.failures == 0
        assert _rows_in_main_file(path, tmp_path / "copy.sqlite") == 6_000
    finally:
        keep_open.conn.close()


def test_connection_opened_without_autocheckpoint_says_so(tmp_path: Path) -> None:
    plain = open_database(tmp_path / "a.sqlite", migrate=False)
    quiet = open_database(tmp_path / "a.sqlite", migrate=False, autocheckpoint=False)
    try:
        assert plain.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == 1000
        assert quiet.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == 0
    finally:
        plain.conn.close()
        quiet.conn.close()


def test_checkpointer_survives_a_database_it_cannot_open_and_recovers(tmp_path: Path) -> None:
    folder = tmp_path / "not-yet"
    checkpointer = WalCheckpointer(folder / "db.sqlite", interval_s=0.01)
    with checkpointer:
        deadline = time.monotonic() + 10
        while checkpointer.failures < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert checkpointer.failures >= 2 and checkpointer.alive
        assert "cannot open database" in str(checkpointer.last_error)
        folder.mkdir()
        while checkpointer.checkpoints < 1 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert checkpointer.checkpoints >= 1
        health = checkpointer.health()
        assert health["alive"] is True and health["failures"] == checkpointer.failures
    assert not checkpointer.alive


def test_times_written_before_the_one_format_are_rewritten_and_nothing_else_is(
        tmp_path: Path) -> None:
    db = open_database(tmp_path / "old.sqlite")
    db.conn.execute("CREATE TABLE old_times (at TEXT, note TEXT)")
    db.conn.executemany("INSERT INTO old_times VALUES (?, ?)", [
        ("2026-11-24T02:17:00.123456+00:00", "WH-02-manual-20261124T021700"),
        ("2026-11-24T02:17:00.5+00:00", '{"at": "2026-11-24T02:17:00+00:00"}'),
        ("2026-11-24T10:17:00+08:00", None),
    ])
    restamp(db, ["old_times"])
    assert db.conn.execute("SELECT at, note FROM old_times").fetchall() == [
        ("2026-11-24T02:17:00.123Z", "WH-02-manual-20261124T021700"),
        ("2026-11-24T02:17:00.500Z", '{"at": "2026-11-24T02:17:00+00:00"}'),
        ("2026-11-24T02:17:00.000Z", None),
    ]


def test_the_timeline_stays_append_only_after_the_timestamp_migration(tmp_path: Path) -> None:
    db = open_database(tmp_path / "fresh.sqlite")
    triggers = {r[0] for r in db.conn.execute(
        "SELECT name FROM sqlite_master WHERE type = 'trigger'").fetchall()}
    assert {"order_events_append_only_update", "order_events_append_only_delete"} <= triggers
