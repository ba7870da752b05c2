"""Fixtures of the ops tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from coordinator.db import Database, open_database
from simulators.pg_server import PostgresServer
from tests.coordinator.copies import Copies, seed_migrated


@pytest.fixture
def ops_db(request: pytest.FixtureRequest, db_target: str, copies: Copies
           ) -> Iterator[Database]:
    """An empty migrated database on each backend (``db_target``: a SQLite path or a
    fresh PostgreSQL database, made a copy of the session's migrated one), closed after
    the test."""
    server: PostgresServer | None = None
    if db_target.startswith("postgresql://"):
        server = request.getfixturevalue("postgres_server")
    db = open_database(copies.copy(seed_migrated, db_target, server))
    try:
        yield db
    finally:
        db.conn.close()
