"""Schema of the tables that let several coordinator instances share one database
(named migration set ``coordinator_cluster``): the ops lease and the shared inbox.

Portable SQL only (the PostgreSQL backend translates the DDL): times are text in the one
format of :mod:`protocols.timestamps`.
"""

from __future__ import annotations

from sqlite_utils import Database, Migrations

migrations = Migrations("coordinator_cluster")


@migrations()
def m001_lease_and_inbox(db: Database) -> None:
    # one row per lease name ('ops'): who runs the ops loop, under which epoch, until when
    db.execute(
        """
        CREATE TABLE ops_lease (
            name TEXT PRIMARY KEY,
            holder TEXT NOT NULL,
            epoch INTEGER NOT NULL,
            expires_at TEXT NOT NULL
        )
        """
    )
    # Every instance writes what its own MQTT session receives; the first copy of a
    # message wins (dedupe_key: agent lifetime + seq for breaker events), so the id order
    # is the order of first arrival. The leader applies rows in id order.
    db.execute(
        """
        CREATE TABLE ops_inbox (
            id INTEGER PRIMARY KEY,
            dedupe_key TEXT NOT NULL UNIQUE,
            kind TEXT NOT NULL,
            payload TEXT NOT NULL,
            received_by TEXT NOT NULL,
            received_at TEXT NOT NULL
        )
        """
    )
