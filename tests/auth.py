"""Credentials for tests: the session's admin token and real tokens of any role/scope.

Every app a test builds reads ``BREAKWATER_ADMIN_TOKEN`` (set for the whole session by
``tests/conftest.py``), so ``headers=ADMIN`` works on any coordinator a test starts.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path

from coordinator.auth.roles import Role, Scope
from coordinator.auth.store import add_user, issue_token
from coordinator.db import open_database

NOW = datetime(2026, 11, 24, 2, 17, tzinfo=UTC)
ADMIN_TOKEN = "bw_test-admin-token-for-the-test-session-only"
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def headers_for(db_path: str | Path, role: Role, *, stores: Iterable[str] | None = None,
                warehouses: Iterable[str] | None = None, name: str = "test") -> dict[str, str]:
    """A real token of ``role`` (and scope) issued in that database."""
    db = open_database(db_path)
    try:
        _, secret = issue_token(db, name=name, role=role, scope=Scope.of(stores, warehouses),
                                now=NOW, created_by="test")
    finally:
        db.conn.close()
    return bearer(secret)


def add_login(db_path: str | Path, username: str, role: Role = Role.VIEWER) -> str:
    """A person's login in that database; returns the password (for ``Browser.login``)."""
    password = f"{username}-test-password"
    db = open_database(db_path)
    try:
        add_user(db, username=username, password=password, role=role, scope=Scope(),
                 now=NOW)
    finally:
        db.conn.close()
    return password
