"""Ending PostgreSQL sessions from a test, as a server restart, a failover or an
administrator does (``pg_terminate_backend``)."""

from __future__ import annotations

from coordinator.db import open_database


def end_sessions(target: str, where: str) -> int:
    """End the sessions of ``target``'s server matching ``where`` (SQL over
    ``pg_stat_activity``; never this admin session); return how many were ended."""
    admin = open_database(target, migrate=False)
    try:
        row = admin.execute(
            "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            f"WHERE ({where}) AND pid <> pg_backend_pid()) t").fetchone()
    finally:
        admin.conn.close()
    return int(row[0])
