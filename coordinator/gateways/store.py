"""The SQL of the gateway registry, its audit, the security dead letters and the messages
held for an operator's confirmation (tables of ``gateways.schema``).

Each gateway has a command key (64 hex characters, the HMAC key of signed commands). It is
stored in the coordinator's database because the coordinator signs with it: the database
file is the secret (file permissions, encrypted backups); the key leaves only through
:func:`command_key` (the CLI writing the gateway's key file), never in an API answer or a
log line.
"""

from __future__ import annotations

import csv
import io
import json
import secrets
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from coordinator.db import Database, write_transaction
from coordinator.errors import Conflict, ImportFileError, NotFound
from coordinator.gateways.policy import Gateway, GatewayMessage, Verdict
from protocols import AgentStatus, BreakerEvent
from protocols.models import Ident
from protocols.timestamps import stamp


@dataclass(frozen=True)
class GatewayInfo:
    agent_id: str
    warehouse_id: str
    incarnation: str | None
    pending_incarnation: str | None
    registered_at: str
    registered_by: str

    def as_json(self) -> dict[str, Any]:
        return {"agent_id": self.agent_id, "warehouse_id": self.warehouse_id,
                "incarnation": self.incarnation,
                "pending_incarnation": self.pending_incarnation,
                "registered_at": self.registered_at, "registered_by": self.registered_by}


_COLUMNS = ("agent_id, warehouse_id, incarnation, pending_incarnation, registered_at, "
            "registered_by")


def get_gateway(db: Database, agent_id: str) -> Gateway | None:
    row = db.execute("SELECT agent_id, warehouse_id, incarnation, pending_incarnation "
                     "FROM gateways WHERE agent_id = :a", {"a": agent_id}).fetchone()
    return None if row is None else Gateway(*row)


def get_gateways(db: Database, agent_ids: list[str]) -> dict[str, Gateway]:
    """The registered ones of ``agent_ids`` (one statement per 500 ids)."""
    found: dict[str, Gateway] = {}
    ids = sorted(set(agent_ids))
    for start in range(0, len(ids), 500):
        chunk = ids[start:start + 500]
        marks = ", ".join(f":a{n}" for n in range(len(chunk)))
        rows = db.execute("SELECT agent_id, warehouse_id, incarnation, pending_incarnation "
                          f"FROM gateways WHERE agent_id IN ({marks})",
                          {f"a{n}": a for n, a in enumerate(chunk)}).fetchall()
        found.update({str(r[0]): Gateway(*r) for r in rows})
    return found


def gateway_info(db: Database, agent_id: str) -> GatewayInfo:
    row = db.execute(f"SELECT {_COLUMNS} FROM gateways WHERE agent_id = :a",
                     {"a": agent_id}).fetchone()
    if row is None:
        raise NotFound("gateway", agent_id)
    return GatewayInfo(*row)


def list_gateways(db: Database, warehouse_id: str | None = None) -> list[GatewayInfo]:
    sql = f"SELECT {_COLUMNS} FROM gateways"
    params: dict[str, str] = {}
    if warehouse_id is not None:
        sql += " WHERE warehouse_id = :w"
        params["w"] = warehouse_id
    return [GatewayInfo(*r) for r in db.execute(sql + " ORDER BY agent_id", params).fetchall()]


def warehouse_exists(db: Database, warehouse_id: str) -> bool:
    return db.execute("SELECT 1 FROM warehouses WHERE id = :w",
                      {"w": warehouse_id}).fetchone() is not None


def _audit(db: Database, now: datetime, agent_id: str, warehouse_id: str, action: str,
           actor: str, detail: str = "") -> None:
    db.execute("INSERT INTO gateway_audit (at, agent_id, warehouse_id, action, actor, detail) "
               "VALUES (:at, :a, :w, :action, :actor, :detail)",
               {"at": stamp(now), "a": agent_id, "w": warehouse_id, "action": action,
                "actor": actor, "detail": detail})


def register(db: Database, agent_id: str, warehouse_id: str, *, actor: str,
             now: datetime) -> GatewayInfo:
    """Registers a gateway for a warehouse (again: nothing changes). A gateway registered
    for another warehouse is a 409: retire it first, an explicit act."""
    with write_transaction(db):
        if not warehouse_exists(db, warehouse_id):
            raise NotFound("warehouse", warehouse_id)
        found = get_gateway(db, agent_id)
        if found is not None:
            if found.warehouse_id != warehouse_id:
                message = (f"gateway {agent_id!r} is registered for {found.warehouse_id!r}: "
                           "retire it before registering it elsewhere")
                raise Conflict(message)
            return gateway_info(db, agent_id)
        db.execute("INSERT INTO gateways (agent_id, warehouse_id, command_key, registered_at, "
                   "registered_by) VALUES (:a, :w, :k, :now, :actor)",
                   {"a": agent_id, "w": warehouse_id, "k": secrets.token_hex(32),
                    "now": stamp(now), "actor": actor})
        _audit(db, now, agent_id, warehouse_id, "register", actor)
    return gateway_info(db, agent_id)


def retire(db: Database, agent_id: str, *, actor: str, reason: str, now: datetime) -> None:
    """A stolen or decommissioned gateway: from now on it speaks for nobody."""
    with write_transaction(db):
        found = gateway_info(db, agent_id)
        db.execute("DELETE FROM gateways WHERE agent_id = :a", {"a": agent_id})
        db.execute("DELETE FROM gateway_held_messages WHERE agent_id = :a", {"a": agent_id})
        _audit(db, now, agent_id, found.warehouse_id, "retire", actor, reason)


def command_key(db: Database, agent_id: str) -> str:
    row = db.execute("SELECT command_key FROM gateways WHERE agent_id = :a",
                     {"a": agent_id}).fetchone()
    if row is None:
        raise NotFound("gateway", agent_id)
    key: str = row[0]
    return key


def rotate_key(db: Database, agent_id: str, *, actor: str, now: datetime) -> str:
    with write_transaction(db):
        found = gateway_info(db, agent_id)
        key = secrets.token_hex(32)
        db.execute("UPDATE gateways SET command_key = :k WHERE agent_id = :a",
                   {"k": key, "a": agent_id})
        _audit(db, now, agent_id, found.warehouse_id, "rotate_key", actor)
    return key


def note_verdict(db: Database, verdict: Verdict, now: datetime) -> None:
    """What the verdict teaches the registry: a first incarnation adopted, a new one
    awaiting confirmation (audited once per incarnation)."""
    agent = verdict.message.agent_id
    if verdict.adopt_incarnation is not None:
        db.execute("UPDATE gateways SET incarnation = :i WHERE agent_id = :a "
                   "AND incarnation IS NULL", {"i": verdict.adopt_incarnation, "a": agent})
    pending = verdict.pending_incarnation
    if pending is not None:
        changed = db.execute(
            "UPDATE gateways SET pending_incarnation = :i WHERE agent_id = :a AND "
            "(pending_incarnation IS NULL OR pending_incarnation <> :i)",
            {"i": pending, "a": agent}).rowcount
        if changed:
            _audit(db, now, agent, verdict.message.warehouse_id, "new_incarnation_seen",
                   "gateway", f"incarnation {pending} awaits confirmation")


def confirm_incarnation(db: Database, agent_id: str, *, actor: str, reason: str,
                        now: datetime) -> tuple[GatewayInfo, list[GatewayMessage]]:
    """An operator confirms the gateway was replaced: its pending incarnation becomes
    the trusted one, and the messages it held are handed back to be applied in order."""
    with write_transaction(db):
        found = gateway_info(db, agent_id)
        if found.pending_incarnation is None:
            message = f"gateway {agent_id!r} has no new incarnation awaiting confirmation"
            raise Conflict(message)
        new = found.pending_incarnation
        db.execute("UPDATE gateways SET incarnation = :i, pending_incarnation = NULL "
                   "WHERE agent_id = :a", {"i": new, "a": agent_id})
        _audit(db, now, agent_id, found.warehouse_id, "confirm_incarnation", actor,
               f"{found.incarnation} -> {new}: {reason}")
        rows = db.execute("SELECT kind, payload FROM gateway_held_messages WHERE agent_id = :a "
                          "AND incarnation = :i ORDER BY id",
                          {"a": agent_id, "i": new}).fetchall()
        db.execute("DELETE FROM gateway_held_messages WHERE agent_id = :a", {"a": agent_id})
    held: list[GatewayMessage] = [
        BreakerEvent.model_validate_json(p) if k == "breaker" else
        AgentStatus.model_validate_json(p) for k, p in rows]
    return gateway_info(db, agent_id), held


def hold(db: Database, verdict: Verdict, now: datetime) -> None:
    message = verdict.message
    db.execute("INSERT INTO gateway_held_messages (agent_id, incarnation, kind, payload, "
               "held_at) VALUES (:a, :i, :k, :p, :now)",
               {"a": message.agent_id, "i": message.incarnation or "",
                "k": "breaker" if isinstance(message, BreakerEvent) else "status",
                "p": message.model_dump_json(), "now": stamp(now)})


def record_security_event(db: Database, verdict: Verdict, now: datetime) -> int:
    message = verdict.message
    cursor = db.execute(
        "INSERT INTO security_events (at, outcome, reason, field, agent_id, warehouse_id, "
        "kind, detail, payload) VALUES (:at, :o, :r, :f, :a, :w, :k, :d, :p)",
        {"at": stamp(now), "o": verdict.outcome.value,
         "r": verdict.reason.value if verdict.reason else "", "f": verdict.field,
         "a": message.agent_id, "w": message.warehouse_id,
         "k": "breaker" if isinstance(message, BreakerEvent) else "status",
         "d": verdict.detail, "p": message.model_dump_json()})
    return int(cursor.lastrowid or 0)


def security_events(db: Database, *, limit: int = 100,
                    warehouse_id: str | None = None) -> list[dict[str, Any]]:
    sql = ("SELECT id, at, outcome, reason, field, agent_id, warehouse_id, kind, detail, "
           "payload FROM security_events")
    params: dict[str, Any] = {"limit": limit}
    if warehouse_id is not None:
        sql += " WHERE warehouse_id = :w"
        params["w"] = warehouse_id
    cursor = db.execute(sql + " ORDER BY id DESC LIMIT :limit", params)
    names = [c[0] for c in cursor.description]
    rows = [dict(zip(names, r, strict=True)) for r in cursor.fetchall()]
    for row in rows:
        row["payload"] = json.loads(row["payload"])
    return rows


def security_summary(db: Database, limit: int = 10) -> dict[str, Any]:
    """For the dashboard: counts by outcome and the newest events (without payloads)."""
    by_outcome = dict(db.execute("SELECT outcome, count(*) FROM security_events "
                                 "GROUP BY outcome ORDER BY outcome").fetchall())
    recent = [{k: v for k, v in e.items() if k != "payload"}
              for e in security_events(db, limit=limit)]
    return {"by_outcome": by_outcome, "recent": recent}


def security_counts(db: Database) -> tuple[list[tuple[str, str, str, int]], int]:
    """For /metrics: security events by (outcome, reason, kind) since the store began (the
    table is never pruned, so these only grow), and the messages held right now."""
    counts = [(str(o), str(r), str(k), int(n)) for o, r, k, n in db.execute(
        "SELECT outcome, reason, kind, count(*) FROM security_events "
        "GROUP BY outcome, reason, kind ORDER BY outcome, reason, kind").fetchall()]
    held = db.execute("SELECT count(*) FROM gateway_held_messages").fetchone()
    return counts, int(held[0]) if held else 0


def audit_of(db: Database, agent_id: str) -> list[dict[str, Any]]:
    cursor = db.execute("SELECT at, action, actor, warehouse_id, detail FROM gateway_audit "
                        "WHERE agent_id = :a ORDER BY id", {"a": agent_id})
    names = [c[0] for c in cursor.description]
    return [dict(zip(names, r, strict=True)) for r in cursor.fetchall()]


# -- import (with the catalogue) ------------------------------------------------------
class GatewayIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    agent_id: Ident
    warehouse_id: Ident


def parse_gateways(text: str) -> list[GatewayIn]:
    """A CSV with columns ``agent_id,warehouse_id``; errors name ``row N.column``."""
    rows = []
    reader = csv.DictReader(io.StringIO(text))
    for number, raw in enumerate(reader, start=2):
        try:
            rows.append(GatewayIn.model_validate(raw))
        except ValidationError as exc:
            first = exc.errors()[0]
            column = ".".join(str(p) for p in first["loc"]) or "row"
            raise ImportFileError(f"row {number}.{column}", str(first["msg"])) from exc
    return rows


def import_gateways(db: Database, rows: list[GatewayIn], *, actor: str,
                    now: datetime) -> int:
    with write_transaction(db):
        for row in rows:
            register(db, row.agent_id, row.warehouse_id, actor=actor, now=now)
    return len(rows)
