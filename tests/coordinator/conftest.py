"""Fixtures for coordinator tests: real SQLite files with the shipped sample region."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlite_utils import Database

from coordinator.catalog import import_file
from coordinator.db import open_database
from coordinator.region import SAMPLE_DIR, SAMPLE_FILES
from coordinator.settings import AllocationConfig, Settings

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
