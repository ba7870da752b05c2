"""What the customer tests share: the loopback receiver standing for the channels, the
SMS gateway and the WeCom robot, and the seeded database (sample region and roster) on
each backend (``customer_db``) or on SQLite alone (``customer_sqlite``: tests whose
subject is not the SQL, kept to one backend so the suite stays quick)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from simulators.pg_server import PostgresServer
from simulators.receiver import Receiver
from tests.coordinator.copies import Copies

from .harness import seed


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver() as r:
        yield r


@pytest.fixture(params=["sqlite", "postgresql"])
def customer_db(request: pytest.FixtureRequest, tmp_path: Path, copies: Copies
                ) -> Iterator[str]:
    """The seeded database on each backend: a SQLite path, or a fresh database on the
    session's private PostgreSQL (copies of the session's seeded one; dropped after)."""
    if request.param == "sqlite":
        yield copies.sqlite(seed, tmp_path / "customer.sqlite")
        return
    server: PostgresServer = request.getfixturevalue("postgres_server")
    url = copies.postgres(seed, server)
    yield url
    server.drop_database(url)


@pytest.fixture
def customer_sqlite(tmp_path: Path, copies: Copies) -> str:
    return copies.sqlite(seed, tmp_path / "customer.sqlite")
