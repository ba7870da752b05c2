"""Breaker commands on the incident's timeline: an operator's inhibit, force, release or
acknowledge (signed and published per gateway by ``POST
/warehouses/{id}/breakers/{breaker}/commands``, coordinator/gateways) is remembered here
(``ops_commands``: who, why, for which incident) and shown on the warehouse's open
incident; what the agent did with it comes back as an ``AuditRecord`` on
``wh/<warehouse>/audit`` and :func:`record_audit` adds that outcome to the same incident.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlite_utils import Migrations

from coordinator.db import Database, write_transaction
from coordinator.ops import incident_log
from protocols import AuditRecord, BreakerCommand
from protocols.timestamps import stamp

migrations = Migrations("coordinator_commands")


@migrations()
def m001_commands(db: Database) -> None:
    db.execute(
        """
        CREATE TABLE ops_commands (
            command_id TEXT PRIMARY KEY,
            agent_id TEXT NOT NULL,
            warehouse_id TEXT NOT NULL,
            breaker TEXT NOT NULL,
            command TEXT NOT NULL,
            actor TEXT NOT NULL,
            reason TEXT NOT NULL,
            incident_id TEXT,
            issued_at TEXT NOT NULL,
            outcome TEXT
        )
        """
    )


def _open_incident(db: Database, warehouse_id: str) -> str | None:
    row = db.conn.execute(
        "SELECT incident_id FROM ops_incidents WHERE warehouse_id = :w AND closed_at IS NULL "
        "ORDER BY opened_at DESC LIMIT 1", {"w": warehouse_id}).fetchone()
    return None if row is None else str(row[0])


def record_sent(db: Database, warehouse_id: str, breaker: str,
                sent: Sequence[BreakerCommand], now: datetime) -> str | None:
    """Remember commands just published (one per gateway) and put them on the warehouse's
    open incident's timeline; returns that incident's id (None: no open incident)."""
    with write_transaction(db):
        incident = _open_incident(db, warehouse_id)
        for cmd in sent:
            db.conn.execute(
                "INSERT INTO ops_commands (command_id, agent_id, warehouse_id, breaker, "
                "command, actor, reason, incident_id, issued_at) VALUES (:c, :a, :w, :b, :k, "
                ":actor, :r, :i, :t) ON CONFLICT (command_id) DO NOTHING",
                {"c": cmd.command_id, "a": cmd.agent_id or "", "w": warehouse_id,
                 "b": breaker, "k": cmd.command.value, "actor": cmd.actor, "r": cmd.reason,
                 "i": incident, "t": stamp(now)})
            if incident is not None:
                incident_log.add_action(db, incident, "command", cmd.actor,
                                        {"command": cmd.command.value, "breaker": breaker,
                                         "command_id": cmd.command_id, "reason": cmd.reason,
                                         "outcome": "sent", "agent_id": cmd.agent_id}, now)
    return incident


def record_audit(db: Database, record: AuditRecord) -> str | None:
    """An agent's answer to one of our commands: stored, and on its incident's timeline.
    Returns the incident id (None: not our command, or no incident)."""
    with write_transaction(db):
        row = db.conn.execute(
            "SELECT incident_id, warehouse_id, agent_id FROM ops_commands "
            "WHERE command_id = :c", {"c": record.command_id}).fetchone()
        if row is None or (row[1], row[2]) != (record.warehouse_id, record.agent_id):
            return None  # not ours, or another agent speaking for it
        db.conn.execute("UPDATE ops_commands SET outcome = :o WHERE command_id = :c",
                        {"o": record.outcome, "c": record.command_id})
        if row[0] is not None:
            incident_log.log_command_audit(db, row[0], record)
        return None if row[0] is None else str(row[0])
