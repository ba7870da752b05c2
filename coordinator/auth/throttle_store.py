"""SQL of login rate limiting (:mod:`coordinator.auth.throttle`): failures and lockouts
by username (``user``) and by source address (``address``). Times are stamps (one
fixed-width format), so text order is time order on both backends."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from coordinator.db import Database, write_transaction
from protocols.timestamps import parse_stamp, stamp

By = Literal["user", "address"]


def active_lockouts(db: Database, username: str, address: str,
                    now: datetime) -> dict[By, datetime]:
    rows = db.execute(
        "SELECT kind, locked_until FROM auth_lockouts WHERE locked_until > ? AND "
        "((kind = 'user' AND login_key = ?) OR (kind = 'address' AND login_key = ?))",
        [stamp(now), username, address]).fetchall()
    return {kind: parse_stamp(until) for kind, until in rows}


def record_failure(db: Database, username: str, address: str, now: datetime, *,
                   window_start: datetime, lock_until: datetime,
                   limits: dict[By, int]) -> list[By]:
    """Record one failed login for both keys; lock a key out that reached its limit within
    the window. Returns the kinds locked out by this failure."""
    keys: list[tuple[By, str]] = [("user", username), ("address", address)]
    at = stamp(now)
    with write_transaction(db):
        # old failures go for good; an ended lockout forgets the failures that caused it
        db.execute("DELETE FROM auth_login_failures WHERE failed_at <= ?",
                   [stamp(window_start)])
        ended = db.execute("SELECT kind, login_key FROM auth_lockouts "
                           "WHERE locked_until <= ?", [at]).fetchall()
        if ended:
            db.conn.executemany("DELETE FROM auth_login_failures WHERE kind = ? AND login_key = ?",
                           [tuple(row) for row in ended])
            db.execute("DELETE FROM auth_lockouts WHERE locked_until <= ?", [at])
        db.conn.executemany(
            "INSERT INTO auth_login_failures (kind, login_key, failed_at) VALUES (?, ?, ?)",
            [(kind, key, at) for kind, key in keys])
        counts = dict(db.execute(
            "SELECT kind, COUNT(*) FROM auth_login_failures WHERE "
            "(kind = 'user' AND login_key = ?) OR (kind = 'address' AND login_key = ?) "
            "GROUP BY kind", [username, address]).fetchall())
        locked = {kind for (kind,) in db.execute(
            "SELECT kind FROM auth_lockouts WHERE "
            "(kind = 'user' AND login_key = ?) OR (kind = 'address' AND login_key = ?)",
            [username, address]).fetchall()}
        started: list[By] = [kind for kind, _ in keys
                             if counts.get(kind, 0) >= limits[kind] and kind not in locked]
        if started:
            db.conn.executemany(
                "INSERT INTO auth_lockouts (kind, login_key, locked_until) VALUES (?, ?, ?)",
                [(kind, key, stamp(lock_until)) for kind, key in keys if kind in started])
    return started


def clear_user(db: Database, username: str) -> None:
    with write_transaction(db):
        db.execute("DELETE FROM auth_login_failures WHERE kind = 'user' AND login_key = ?",
                   [username])
        db.execute("DELETE FROM auth_lockouts WHERE kind = 'user' AND login_key = ?",
                   [username])
