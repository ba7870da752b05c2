"""Schema of the gateway registry (named migration set ``coordinator_gateways``).

Portable SQL. ``m001`` also registers every agent the coordinator has already seen
(agent sessions and breaker states), with its current incarnation as the confirmed one,
so a deployment that upgrades keeps accepting its gateways.
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlite_utils import Database, Migrations

from protocols.timestamps import stamp

migrations = Migrations("coordinator_gateways")


@migrations()
def m001_gateway_registry(db: Database) -> None:
    db.execute(
        """
        CREATE TABLE gateways (
            agent_id TEXT PRIMARY KEY,
            warehouse_id TEXT NOT NULL,
            incarnation TEXT,
            pending_incarnation TEXT,
            command_key TEXT NOT NULL,
            registered_at TEXT NOT NULL,
            registered_by TEXT NOT NULL
        )
        """
    )
    db.execute("CREATE INDEX gateways_by_warehouse ON gateways (warehouse_id)")
    db.execute(
        """
        CREATE TABLE gateway_audit (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            at TEXT NOT NULL,
            agent_id TEXT NOT NULL,
            warehouse_id TEXT NOT NULL,
            action TEXT NOT NULL,
            actor TEXT NOT NULL,
            detail TEXT NOT NULL DEFAULT ''
        )
        """
    )
    db.execute(
        """
        CREATE TABLE security_events (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            at TEXT NOT NULL,
            outcome TEXT NOT NULL,
            reason TEXT NOT NULL,
            field TEXT,
            agent_id TEXT NOT NULL,
            warehouse_id TEXT NOT NULL,
            kind TEXT NOT NULL,
            detail TEXT NOT NULL,
            payload TEXT NOT NULL
        )
        """
    )
    db.execute("CREATE INDEX security_events_at ON security_events (at)")
    db.execute(
        """
        CREATE TABLE gateway_held_messages (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            agent_id TEXT NOT NULL,
            incarnation TEXT NOT NULL,
            kind TEXT NOT NULL,
            payload TEXT NOT NULL,
            held_at TEXT NOT NULL
        )
        """
    )
    _register_seen_agents(db)


def _register_seen_agents(db: Database) -> None:
    import secrets

    now = stamp(datetime.now(UTC))
    seen: dict[str, tuple[str, str | None]] = {}
    if "ops_breaker_states" in db.table_names():
        for agent, warehouse, incarnation in db.execute(
                "SELECT agent_id, warehouse_id, incarnation FROM ops_breaker_states "
                "ORDER BY last_seen").fetchall():
            seen[agent] = (warehouse, incarnation)
    if "ops_agent_sessions" in db.table_names():
        for agent, warehouse, incarnation in db.execute(
                "SELECT agent_id, warehouse_id, incarnation FROM ops_agent_sessions "
                "ORDER BY last_seen").fetchall():
            seen[agent] = (warehouse, incarnation)  # the session is the newest word
    for agent, (warehouse, incarnation) in sorted(seen.items()):
        db.execute(
            "INSERT INTO gateways (agent_id, warehouse_id, incarnation, command_key, "
            "registered_at, registered_by) VALUES (:a, :w, :i, :k, :now, 'migration')",
            {"a": agent, "w": warehouse, "i": incarnation, "k": secrets.token_hex(32),
             "now": now})
        db.execute(
            "INSERT INTO gateway_audit (at, agent_id, warehouse_id, action, actor, detail) "
            "VALUES (:now, :a, :w, 'register', 'migration', 'seen before the registry')",
            {"now": now, "a": agent, "w": warehouse})
