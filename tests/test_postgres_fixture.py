"""The private PostgreSQL fixture: a real server of its own, a fresh database per test."""

from __future__ import annotations

import psycopg

from simulators.pg_server import PostgresServer


def test_each_test_gets_an_empty_database_of_its_own_on_the_private_server(
        postgres_server: PostgresServer, postgres_url: str) -> None:
    other = postgres_server.create_database()
    assert other != postgres_url
    assert f":{postgres_server.port}/" in postgres_url and postgres_server.port != 5432
    with psycopg.connect(postgres_url) as conn:
        conn.execute("CREATE TABLE t (x integer)")
        conn.execute("INSERT INTO t VALUES (1)")
    with psycopg.connect(other) as conn:
        tables = conn.execute("SELECT count(*) FROM pg_tables WHERE tablename = 't'").fetchone()
        assert tables is not None and tables[0] == 0


def test_a_database_is_dropped_unless_somebody_is_still_connected(
        postgres_server: PostgresServer) -> None:
    kept, dropped = postgres_server.create_database(), postgres_server.create_database()
    with psycopg.connect(kept):
        assert postgres_server.drop_database(kept) is False  # in use: left for stop()
    assert postgres_server.drop_database(dropped) is True
    assert postgres_server.drop_database(dropped) is True  # gone already is fine
    with psycopg.connect(postgres_server.admin_url) as conn:
        names = {r[0] for r in conn.execute("SELECT datname FROM pg_database").fetchall()}
    assert kept.rsplit("/", 1)[-1] in names and dropped.rsplit("/", 1)[-1] not in names
