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
