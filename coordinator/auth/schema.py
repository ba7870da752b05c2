"""Schema of the authentication tables (named migration set ``coordinator_auth``).

Portable SQL (standard types, no SQLite-only syntax) so the tables move to PostgreSQL as
they are. Times are ISO 8601 UTC text; scopes are JSON lists (NULL: every store or
warehouse). Nothing secret is stored in clear: tokens and session ids as SHA-256 hex,
passwords as argon2id hashes.
"""

from __future__ import annotations

from sqlite_utils import Database, Migrations

migrations = Migrations("coordinator_auth")


@migrations()
def m001_auth_tables(db: Database) -> None:
    db.execute(
        """
        CREATE TABLE auth_tokens (
            id TEXT PRIMARY KEY,
            name TEXT NOT NULL,
            role TEXT NOT NULL,
            stores TEXT,
            warehouses TEXT,
            token_hash TEXT NOT NULL UNIQUE,
            created_at TEXT NOT NULL,
            created_by TEXT NOT NULL,
            revoked_at TEXT
        )
        """
    )
    db.execute(
        """
        CREATE TABLE auth_users (
            username TEXT PRIMARY KEY,
            password_hash TEXT NOT NULL,
            role TEXT NOT NULL,
            stores TEXT,
            warehouses TEXT,
            created_at TEXT NOT NULL,
            disabled_at TEXT
        )
        """
    )
    db.execute(
        """
        CREATE TABLE auth_sessions (
            id_hash TEXT PRIMARY KEY,
            username TEXT NOT NULL REFERENCES auth_users (username) ON DELETE CASCADE,
            csrf_token TEXT NOT NULL,
            created_at TEXT NOT NULL,
            expires_at TEXT NOT NULL
        )
        """
    )
    db.execute("CREATE INDEX auth_sessions_expiry ON auth_sessions (expires_at)")


@migrations()
def m002_login_failures(db: Database) -> None:
    # in the database, not in a process: every coordinator instance behind the proxy sees
    # the same failures, and a restart does not lift a lockout
    db.execute(
        """
        CREATE TABLE auth_login_failures (
            kind TEXT NOT NULL,
            login_key TEXT NOT NULL,
            failed_at TEXT NOT NULL
        )
        """
    )
    db.execute("CREATE INDEX auth_login_failures_key "
               "ON auth_login_failures (kind, login_key, failed_at)")
    db.execute("CREATE INDEX auth_login_failures_time ON auth_login_failures (failed_at)")
    db.execute(
        """
        CREATE TABLE auth_lockouts (
            kind TEXT NOT NULL,
            login_key TEXT NOT NULL,
            locked_until TEXT NOT NULL,
            PRIMARY KEY (kind, login_key)
        )
        """
    )
