"""Fixtures for coordinator tests: real SQLite files with the shipped sample region, and
a real uvicorn serving it."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlite_utils import Database

from coordinator.app import create_app
from coordinator.catalog import import_file
from coordinator.db import open_database
from coordinator.region import SAMPLE_DIR, SAMPLE_FILES
from coordinator.serving import serve_in_thread
from coordinator.settings import AllocationConfig, Settings
from protocols.clock import ManualClock

NOW = datetime(2026, 11, 24, 2, 17, tzinfo=UTC)


@pytest.fixture
def now() -> datetime:
    return NOW


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "coordinator.sqlite"


@pytest.fixture
def sample_db(db_path: Path) -> Database:
    """A database holding the shipped Hangzhou sample region."""
    db = open_database(db_path)
    for name in SAMPLE_FILES:
        import_file(db, SAMPLE_DIR / f"{name}.csv", NOW)
    return db


@pytest.fixture
def rules() -> AllocationConfig:
    return AllocationConfig()


@pytest.fixture
def settings(db_path: Path) -> Settings:
    return Settings(db_path=str(db_path))


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real uvicorn on a free loopback port serving the sample region (one per module:
    tests in a module share it, so each uses order ids and SKUs of its own)."""
    path = tmp_path_factory.mktemp("live") / "live.sqlite"
    db = open_database(path)
    for name in SAMPLE_FILES:
        import_file(db, SAMPLE_DIR / f"{name}.csv", NOW)
    db.conn.close()
    app = create_app(Settings(db_path=str(path)), clock=ManualClock(NOW))
    with serve_in_thread(app) as url:
        yield url
