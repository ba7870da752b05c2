"""Breaker commands from head office: an operator inhibits, forces, releases or
acknowledges a breaker on the agent, through the documented ``BreakerCommand``.

:func:`prepare` builds one command per active gateway of the warehouse, signed with that
gateway's key (``protocols.command_auth``: HMAC over the canonical command, bound to the
agent, with a nonce and an expiry), remembers it (``ops_commands``: who, why, for which
incident) and puts it on the incident's timeline; the ops service publishes it on
``<root>/v1/wh/<warehouse>/cmd/<breaker>`` (QoS 1). What the agent did with it comes back
as an ``AuditRecord`` on ``wh/<warehouse>/audit``; :func:`record_audit` adds that outcome to
the incident the command belongs to.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlite_utils import Database, Migrations

from coordinator.db import write_transaction
from coordinator.gateways import store as gateway_store
from coordinator.ops import incident_log
from protocols import AuditRecord, BreakerCommand, CommandKind
from protocols.command_auth import sign_command
from protocols.timestamps import stamp

migrations = Migrations("coordinator_commands")
# an override nobody releases ends by itself; the agent refuses longer ones (12 h default)
MAX_OVERRIDE = timedelta(hours=12)


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


class NoGateway(LookupError):
    """The warehouse has no active gateway to command."""


@dataclass(frozen=True, slots=True)
class Prepared:
    warehouse_id: str
    breaker: str
    command: BreakerCommand


def _open_incident(db: Database, warehouse_id: str) -> str | None:
    row = db.conn.execute(
        "SELECT incident_id FROM ops_incidents WHERE warehouse_id = :w AND closed_at IS NULL "
        "ORDER BY opened_at DESC LIMIT 1", {"w": warehouse_id}).fetchone()
    return None if row is None else str(row[0])


def prepare(db: Database, warehouse_id: str, breaker: str, kind: CommandKind, *, actor: str,
            reason: str, minutes: float | None, now: datetime) -> list[Prepared]:
    """Signed commands for every active gateway of ``warehouse_id``, recorded.

    Raises :class:`NoGateway` when there is none, ``ValueError`` (naming the field) for
    an override without a duration or longer than :data:`MAX_OVERRIDE`."""
    expires = None
    if kind in (CommandKind.FORCE_TRIPPED, CommandKind.INHIBIT):
        if minutes is None:
            raise ValueError(f"minutes: required for {kind.value}")
        if timedelta(minutes=minutes) > MAX_OVERRIDE:
            raise ValueError(f"minutes: at most {MAX_OVERRIDE.total_seconds() / 60:g}")
        expires = now + timedelta(minutes=minutes)
    gateways = gateway_store.list_gateways(db, warehouse_id)  # retired ones are gone
    if not gateways:
        raise NoGateway(f"warehouse {warehouse_id!r} has no active gateway")
    out = []
    with write_transaction(db):
        incident = _open_incident(db, warehouse_id)
        for g in gateways:
            agent = g.agent_id
            key = gateway_store.command_key(db, agent).encode()
            cmd = sign_command(BreakerCommand(
                command_id=f"cmd-{uuid.uuid4().hex[:16]}", command=kind, actor=actor,
                reason=reason, issued_at=now, expires_at=expires, agent_id=agent), key)
            db.conn.execute(
                "INSERT INTO ops_commands (command_id, agent_id, warehouse_id, breaker, "
                "command, actor, reason, incident_id, issued_at) VALUES (:c, :a, :w, :b, :k, "
                ":actor, :r, :i, :t)",
                {"c": cmd.command_id, "a": agent, "w": warehouse_id, "b": breaker,
                 "k": kind.value, "actor": actor, "r": reason, "i": incident,
                 "t": stamp(now)})
            if incident is not None:
                incident_log.add_action(db, incident, "command", actor,
                                        {"command": kind.value, "breaker": breaker,
                                         "command_id": cmd.command_id, "reason": reason,
                                         "outcome": "sent", "agent_id": agent}, now)
            out.append(Prepared(warehouse_id, breaker, cmd))
    return out


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


def mark_unsent(db: Database, command_ids: list[str]) -> None:
    """The broker was unreachable: those commands never left head office."""
    with write_transaction(db):
        db.conn.executemany("UPDATE ops_commands SET outcome = 'unsent' WHERE command_id = :c",
                            [{"c": c} for c in command_ids])
