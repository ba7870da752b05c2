"""Seeded databases made once per session and copied for each test.

Migrating an empty database and importing the sample region costs 0.5-2.5 s a test on
the loaded CI machine (PostgreSQL's migrations are the dearest); hundreds of tests start
from the same few states. Each state is built once by its seeder, then copied: SQLite by
copying the closed file, PostgreSQL by ``CREATE DATABASE ... TEMPLATE`` (a file copy on
the server, ~0.1 s). A copy is the very database the seeder made, so the tests see what
they saw when each seeded its own; each test still gets a database of its own.
"""

from __future__ import annotations

import shutil
import threading
from collections.abc import Callable
from pathlib import Path

import psycopg

from coordinator.catalog import import_file
from coordinator.db import open_database
from coordinator.region import SAMPLE_DIR, SAMPLE_FILES
from simulators.pg_server import PostgresServer
from tests.auth import NOW

Seeder = Callable[[str], None]  # fills the (empty) database at a SQLite path or URL


def seed_sample(target: str) -> None:
    """The shipped Hangzhou sample region in an empty database."""
    db = open_database(target)
    try:
        for name in SAMPLE_FILES:
            import_file(db, SAMPLE_DIR / f"{name}.csv", NOW)
    finally:
        db.conn.close()


def seed_migrated(target: str) -> None:
    """The schema alone."""
    open_database(target).conn.close()


class Copies:
    """Templates per seeder, made on first use: one SQLite file, and one template
    database per PostgreSQL server (the session's)."""

    def __init__(self, root: Path) -> None:
        self._root = root
        self._sqlite: dict[Seeder, Path] = {}
        self._postgres: dict[tuple[int, Seeder], str] = {}
        self._lock = threading.Lock()

    def sqlite(self, seeder: Seeder, dest: Path | str) -> str:
        """A copy of the seeder's SQLite database at ``dest`` (which must not exist)."""
        with self._lock:
            template = self._sqlite.get(seeder)
            if template is None:
                template = self._root / f"template-{len(self._sqlite)}.sqlite"
                seeder(str(template))
                # a clean close folds the WAL into the file: the file is the database
                leftovers = [p for p in (template.with_name(template.name + "-wal"),)
                             if p.exists() and p.stat().st_size]
                assert not leftovers, f"a seeder left a connection open: {leftovers}"
                self._sqlite[seeder] = template
        target = Path(dest)
        assert not target.exists(), f"{target} exists: a copy replaces no database"
        shutil.copyfile(template, target)
        return str(target)

    def postgres(self, seeder: Seeder, server: PostgresServer, into: str | None = None) -> str:
        """A copy of the seeder's database on ``server``: a new database, or the empty
        database ``into`` (a URL nobody is connected to) replaced by the copy, same name."""
        key = (id(server), seeder)
        with self._lock:
            template = self._postgres.get(key)
            if template is None:
                template = server.create_database("tmpl")
                seeder(template)  # closes its connections: a template must have none
                self._postgres[key] = template
        if into is None:
            return server.create_database(template=template)
        name = into.rsplit("/", 1)[-1]
        source = template.rsplit("/", 1)[-1]
        with psycopg.connect(server.admin_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE "{name}"')
            conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{source}"')
        return into

    def copy(self, seeder: Seeder, target: str, server: PostgresServer | None) -> str:
        """``target`` (an empty ``db_target``: a SQLite path or a fresh PostgreSQL
        database) made a copy of the seeder's database."""
        if server is None:
            return self.sqlite(seeder, target)
        return self.postgres(seeder, server, into=target)
