"""Fixtures for coordinator tests: real SQLite files with the shipped sample region, and
a real uvicorn serving it. Seeded databases are copies of one seeded per session
(tests/coordinator/copies.py)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from coordinator.app import create_app
from coordinator.db import Database, open_database
from coordinator.serving import serve_in_thread
from coordinator.settings import AllocationConfig, Settings
from protocols.clock import ManualClock
from simulators.pg_server import PostgresServer

from .copies import Copies, seed_sample

NOW = datetime(2026, 11, 24, 2, 17, tzinfo=UTC)


@pytest.fixture
def now() -> datetime:
    return NOW


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "coordinator.sqlite"


@pytest.fixture(scope="session")
def copies(tmp_path_factory: pytest.TempPathFactory) -> Copies:
    return Copies(tmp_path_factory.mktemp("templates"))


def _server_of(request: pytest.FixtureRequest, target: str) -> PostgresServer | None:
    if not target.startswith("postgresql://"):
        return None
    server: PostgresServer = request.getfixturevalue("postgres_server")
    return server


@pytest.fixture
def sample_db(db_path: Path, copies: Copies) -> Database:
    """A database holding the shipped Hangzhou sample region."""
    return open_database(copies.sqlite(seed_sample, db_path))


@pytest.fixture(params=["sqlite", "postgresql"])
def db_target(request: pytest.FixtureRequest, db_path: Path) -> Iterator[str]:
    """An empty database on each backend: a SQLite path, or a fresh database on the
    session's private PostgreSQL (skipped, or failed under CI, without one; dropped
    after the test)."""
    if request.param == "sqlite":
        yield str(db_path)
        return
    server: PostgresServer = request.getfixturevalue("postgres_server")
    url = server.create_database()
    yield url
    server.drop_database(url)


@pytest.fixture
def store_db(request: pytest.FixtureRequest, db_target: str, copies: Copies
             ) -> Iterator[Database]:
    """The sample region on each backend (modules opt in by naming it ``sample_db``),
    in ``db_target`` itself: tests open second connections to it."""
    db = open_database(copies.copy(seed_sample, db_target, _server_of(request, db_target)))
    try:
        yield db
    finally:
        db.conn.close()


@pytest.fixture
def rules() -> AllocationConfig:
    return AllocationConfig()


@pytest.fixture
def settings(db_path: Path) -> Settings:
    return Settings(db_path=str(db_path))


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def live(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
         copies: Copies) -> Iterator[str]:
    """A real uvicorn on a free loopback port serving the sample region, on each backend
    (one per module and backend: tests in a module share it, so each uses order ids and
    SKUs of its own)."""
    server: PostgresServer | None
    if request.param == "sqlite":
        target = copies.sqlite(seed_sample, tmp_path_factory.mktemp("live") / "live.sqlite")
        server = None
    else:
        server = request.getfixturevalue("postgres_server")
        target = copies.postgres(seed_sample, server)
    app = create_app(Settings(db_path=target), clock=ManualClock(NOW))
    with serve_in_thread(app) as url:
        yield url
    if server is not None:
        server.drop_database(target)
