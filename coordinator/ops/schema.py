"""Schema of the operations tables (named migration set ``coordinator_ops``).

Times are text in the one format of :mod:`protocols.timestamps`; booleans are 0/1
integers; JSON columns are text.
"""

from __future__ import annotations

from sqlite_utils import Database, Migrations

from coordinator.schema import restamp

migrations = Migrations("coordinator_ops")


@migrations()
def m001_ops_tables(db: Database) -> None:
    db.execute(
        """
        CREATE TABLE ops_breaker_states (
            warehouse_id TEXT NOT NULL,
            breaker TEXT NOT NULL,
            agent_id TEXT NOT NULL,
            state TEXT NOT NULL,
            open INTEGER NOT NULL,
            episode_id TEXT,
            reason TEXT NOT NULL DEFAULT '',
            seq INTEGER NOT NULL,
            session_seq INTEGER NOT NULL,
            since TEXT NOT NULL,
            event_time TEXT NOT NULL,
            last_seen TEXT NOT NULL,
            PRIMARY KEY (warehouse_id, breaker)
        )
        """
    )
    db.execute(
        """
        CREATE TABLE ops_agent_sessions (
            agent_id TEXT PRIMARY KEY,
            warehouse_id TEXT NOT NULL,
            session_seq INTEGER NOT NULL,
            online INTEGER NOT NULL,
            offline_since TEXT,
            last_birth_at TEXT,
            last_death_at TEXT,
            last_seen TEXT NOT NULL
        )
        """
    )
    db.execute(
        """
        CREATE TABLE ops_processed_events (
            agent_id TEXT NOT NULL,
            seq INTEGER NOT NULL,
            warehouse_id TEXT NOT NULL,
            breaker TEXT NOT NULL,
            open INTEGER NOT NULL,
            historical INTEGER NOT NULL,
            outcome TEXT NOT NULL,
            received_at TEXT NOT NULL,
            PRIMARY KEY (agent_id, seq)
        )
        """
    )
    db.execute(
        """
        CREATE TABLE ops_holds (
            warehouse_id TEXT NOT NULL,
            hold TEXT NOT NULL,
            incident_hint TEXT NOT NULL,
            reason TEXT NOT NULL,
            since TEXT NOT NULL,
            PRIMARY KEY (warehouse_id, hold)
        )
        """
    )
    db.execute(
        """
        CREATE TABLE ops_incidents (
            incident_id TEXT PRIMARY KEY,
            warehouse_id TEXT NOT NULL,
            cause TEXT NOT NULL,
            reason TEXT NOT NULL,
            opened_at TEXT NOT NULL,
            closed_at TEXT,
            moved INTEGER NOT NULL DEFAULT 0,
            stuck INTEGER NOT NULL DEFAULT 0
        )
        """
    )
    db.execute("CREATE INDEX ops_incidents_open ON ops_incidents (warehouse_id, closed_at)")
    db.execute(
        """
        CREATE TABLE ops_notifications (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            kind TEXT NOT NULL CHECK (kind IN ('franchisee', 'wecom', 'sms', 'webhook')),
            dedupe_key TEXT NOT NULL UNIQUE,
            incident_id TEXT,
            payload TEXT NOT NULL,
            status TEXT NOT NULL CHECK (status IN ('pending', 'sent', 'failed')),
            attempts INTEGER NOT NULL DEFAULT 0,
            next_attempt_at TEXT NOT NULL,
            last_error TEXT,
            created_at TEXT NOT NULL,
            sent_at TEXT
        )
        """
    )
    db.execute("CREATE INDEX ops_notifications_due ON ops_notifications (status, next_attempt_at)")
    db.execute(
        """
        CREATE TABLE ops_shipments (
            shipment_id TEXT PRIMARY KEY,
            carrier TEXT NOT NULL,
            warehouse_id TEXT NOT NULL,
            order_id TEXT,
            status TEXT NOT NULL,
            open INTEGER NOT NULL,
            first_update_at TEXT NOT NULL,
            last_update_at TEXT NOT NULL
        )
        """
    )
    db.execute("CREATE INDEX ops_shipments_open ON ops_shipments (warehouse_id, carrier, open)")
    db.execute(
        """
        CREATE TABLE ops_warehouse_audit (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            warehouse_id TEXT NOT NULL,
            action TEXT NOT NULL,
            actor TEXT NOT NULL,
            reason TEXT NOT NULL,
            incident_id TEXT,
            at TEXT NOT NULL
        )
        """
    )
    db.execute(
        """
        CREATE TABLE ops_coupons (
            order_id TEXT NOT NULL,
            incident_id TEXT NOT NULL,
            code TEXT NOT NULL UNIQUE,
            created_at TEXT NOT NULL,
            PRIMARY KEY (order_id, incident_id)
        )
        """
    )
    db.execute(
        """
        CREATE TABLE ops_counters (
            name TEXT PRIMARY KEY,
            value INTEGER NOT NULL
        )
        """
    )


@migrations()
def m002_agent_incarnations(db: Database) -> None:
    """Incarnations: seq and session_seq are only comparable within one lifetime of an
    agent's state database, so dedupe keys, breaker states and sessions name theirs.
    ``''`` in ops_processed_events stands for "no incarnation" (v1 agents): a primary
    key column must not be NULL."""
    db.execute("ALTER TABLE ops_breaker_states ADD COLUMN incarnation TEXT")
    db.execute("ALTER TABLE ops_agent_sessions ADD COLUMN incarnation TEXT")
    db.execute(
        """
        CREATE TABLE ops_agent_lifetimes (
            agent_id TEXT PRIMARY KEY,
            warehouse_id TEXT NOT NULL,
            incarnation TEXT,
            retired TEXT NOT NULL DEFAULT '[]',
            since TEXT NOT NULL
        )
        """
    )
    db.execute(
        """
        CREATE TABLE ops_processed_events_v2 (
            agent_id TEXT NOT NULL,
            incarnation TEXT NOT NULL DEFAULT '',
            seq INTEGER NOT NULL,
            warehouse_id TEXT NOT NULL,
            breaker TEXT NOT NULL,
            open INTEGER NOT NULL,
            historical INTEGER NOT NULL,
            outcome TEXT NOT NULL,
            received_at TEXT NOT NULL,
            PRIMARY KEY (agent_id, incarnation, seq)
        )
        """
    )
    db.execute(
        "INSERT INTO ops_processed_events_v2 (agent_id, incarnation, seq, warehouse_id, "
        "breaker, open, historical, outcome, received_at) SELECT agent_id, '', seq, "
        "warehouse_id, breaker, open, historical, outcome, received_at "
        "FROM ops_processed_events ORDER BY rowid"
    )
    db.execute("DROP TABLE ops_processed_events")
    db.execute("ALTER TABLE ops_processed_events_v2 RENAME TO ops_processed_events")


@migrations()
def m003_cursors(db: Database) -> None:
    """Where a sweep over an append-only table got to (``placed_notices``: the last order
    event whose late placement franchisees were told about). It starts at the events that
    exist now, so upgrading never notifies history."""
    db.execute(
        """
        CREATE TABLE ops_cursors (
            name TEXT PRIMARY KEY,
            value INTEGER NOT NULL
        )
        """
    )
    db.execute(
        "INSERT INTO ops_cursors (name, value) "
        "SELECT 'placed_notices', coalesce(max(id), 0) FROM order_events"
    )


@migrations()
def m004_one_timestamp_format(db: Database) -> None:
    """The ops tables' times (microseconds until now) in the one format; see
    :func:`coordinator.schema.restamp`."""
    tables = [r[0] for r in db.conn.execute(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name LIKE 'ops\\_%' ESCAPE '\\' "
        "ORDER BY name").fetchall()]
    restamp(db, tables)
