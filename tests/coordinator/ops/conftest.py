"""Fixtures of the ops tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from coordinator.db import Database, open_database


@pytest.fixture
def ops_db(db_target: str) -> Iterator[Database]:
    """An empty migrated database on each backend (``db_target``: a SQLite path or a
    fresh PostgreSQL database), closed after the test."""
    db = open_database(db_target)
    try:
        yield db
    finally:
        db.conn.close()
