"""Schema of the coordinator's core tables (warehouses, stock, orders, decisions)."""

from __future__ import annotations

from sqlite_utils import Database, Migrations

migrations = Migrations("coordinator_core")


@migrations()
def m001_placeholder(db: Database) -> None:
    """Replaced by the store's first real migration."""
