"""What happened to an incident beyond availability: the breaker events behind it (with
the readings that tripped it and the rule's limit) and what people did (acknowledge,
assign, comment, breaker commands) and escalations. Append-only; every row says who and
when. Read by the incident view (:mod:`coordinator.incident_view`).

Portable SQL (named parameters) so it moves to PostgreSQL with the rest of the store.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from sqlite_utils import Migrations

from coordinator.db import Database, write_transaction
from coordinator.ops.availability_state import AGENT_OFFLINE_PREFIX, AgentRecorded, HoldSet
from coordinator.ops.notify.messages import TripFacts
from protocols import AuditRecord, BreakerEvent
from protocols.timestamps import stamp

migrations = Migrations("coordinator_incident_log")

Action = Literal["acknowledged", "assigned", "commented", "escalated", "command"]
ACTIONS: tuple[Action, ...] = ("acknowledged", "assigned", "commented", "escalated", "command")


@migrations()
def m001_incident_log(db: Database) -> None:
    db.execute(
        """
        CREATE TABLE ops_breaker_log (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            warehouse_id TEXT NOT NULL,
            breaker TEXT NOT NULL,
            agent_id TEXT NOT NULL,
            state TEXT NOT NULL,
            open INTEGER NOT NULL,
            reason TEXT NOT NULL,
            zone TEXT,
            rule TEXT,
            episode_id TEXT,
            limit_json TEXT,
            values_json TEXT NOT NULL,
            historical INTEGER NOT NULL,
            event_time TEXT NOT NULL,
            published_at TEXT NOT NULL,
            received_at TEXT NOT NULL
        )
        """
    )
    db.execute("CREATE INDEX ops_breaker_log_wh ON ops_breaker_log (warehouse_id, event_time)")
    db.execute(
        """
        CREATE TABLE ops_incident_actions (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            incident_id TEXT NOT NULL,
            action TEXT NOT NULL,
            actor TEXT NOT NULL,
            detail TEXT NOT NULL,
            at TEXT NOT NULL
        )
        """
    )
    db.execute("CREATE INDEX ops_incident_actions_inc ON ops_incident_actions (incident_id, id)")


@migrations()
def m002_uplink_log(db: Database) -> None:
    # an agent's uplink going and coming back, for the timelines of incidents around it
    db.execute(
        """
        CREATE TABLE ops_uplink_log (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            warehouse_id TEXT NOT NULL,
            agent_id TEXT NOT NULL,
            online INTEGER NOT NULL,
            how TEXT NOT NULL,
            at TEXT NOT NULL
        )
        """
    )
    db.execute("CREATE INDEX ops_uplink_log_wh ON ops_uplink_log (warehouse_id, at)")
    db.execute("CREATE INDEX ops_uplink_log_agent ON ops_uplink_log (agent_id, id)")


def log_uplink(db: Database, actions: Iterable[object], now: datetime) -> None:
    """Keep an agent's uplink changes from the tracker's actions (inside the caller's
    transaction): lost when its last will arrives or its heartbeats stop (the silence
    hold), regained at its next online status after that. Heartbeats of a live session
    and a second sign of the same loss change nothing and write nothing."""
    for action in actions:
        if isinstance(action, AgentRecorded):
            r = action.record
            if r.online:
                _uplink_change(db, r.warehouse_id, r.agent_id, True, "online_status", now)
            else:
                _uplink_change(db, r.warehouse_id, r.agent_id, False, "last_will",
                               r.offline_since or now)
        elif isinstance(action, HoldSet) and action.hold.name.startswith(AGENT_OFFLINE_PREFIX):
            agent = action.hold.name.removeprefix(AGENT_OFFLINE_PREFIX)
            _uplink_change(db, action.hold.warehouse_id, agent, False, "heartbeats_stopped",
                           action.hold.since)


def _uplink_change(db: Database, warehouse_id: str, agent_id: str, online: bool, how: str,
                   at: datetime) -> None:
    last = db.conn.execute(
        "SELECT online FROM ops_uplink_log WHERE agent_id = :a ORDER BY id DESC LIMIT 1",
        {"a": agent_id}).fetchone()
    if (last is None and online) or (last is not None and bool(last[0]) == online):
        return  # a first birth regains nothing; a repeat is no change
    db.conn.execute(
        "INSERT INTO ops_uplink_log (warehouse_id, agent_id, online, how, at) "
        "VALUES (:w, :a, :o, :h, :at)",
        {"w": warehouse_id, "a": agent_id, "o": int(online), "h": how, "at": stamp(at)})


def uplink_log(db: Database, warehouse_id: str, since: str, until: str
               ) -> list[dict[str, Any]]:
    """A warehouse's agents' uplink changes with ``at`` in [since, until], oldest first."""
    cur = db.conn.execute(
        "SELECT agent_id, online, how, at FROM ops_uplink_log WHERE warehouse_id = :w "
        "AND at >= :since AND at <= :until ORDER BY at, id",
        {"w": warehouse_id, "since": since, "until": until})
    return [{"agent_id": r[0], "online": bool(r[1]), "how": r[2], "at": r[3]}
            for r in cur.fetchall()]


_BREAKER_LOG = (
    "INSERT INTO ops_breaker_log (warehouse_id, breaker, agent_id, state, open, reason, "
    "zone, rule, episode_id, limit_json, values_json, historical, event_time, "
    "published_at, received_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)")


def breaker_log_row(event: BreakerEvent, received_at: datetime) -> tuple[Any, ...]:
    """A breaker event as kept for its incident's timeline (:func:`log_breaker_events`)."""
    return (event.warehouse_id, event.breaker, event.agent_id, event.state.value,
            int(event.open), event.reason, event.zone, event.rule, event.episode_id,
            event.limit.model_dump_json() if event.limit else None,
            json.dumps([v.model_dump(mode="json") for v in event.values]),
            int(event.historical), stamp(event.event_time), stamp(event.published_at),
            stamp(received_at))


def log_breaker_events(db: Database, rows: Sequence[tuple[Any, ...]]) -> None:
    """Rows of :func:`breaker_log_row`, in order (the ops batch writes those of its
    events at once, before a trip's facts are read and at its end). The tracker's
    duplicates are not logged; a repeat would be harmless: the view shows each state
    change once per ``(agent, event_time, state)``."""
    if len(rows) == 1:
        db.conn.execute(_BREAKER_LOG, rows[0])
    elif rows:
        db.conn.executemany(_BREAKER_LOG, list(rows))


def log_command_audit(db: Database, incident_id: str, record: AuditRecord) -> None:
    """An agent's answer to a breaker command, on the incident's timeline."""
    add_action(db, incident_id, "command", record.actor,
               {"command": record.command.value, "breaker": record.breaker,
                "outcome": record.outcome, "reason": record.reason,
                "command_id": record.command_id}, record.ts)


def add_action(db: Database, incident_id: str, action: Action, actor: str,
               detail: dict[str, Any], at: datetime) -> int:
    if action not in ACTIONS:
        raise ValueError(f"action: {action!r} is not one of {ACTIONS}")
    with write_transaction(db):
        # RETURNING, not lastrowid: PostgreSQL's cursor has none
        row = db.conn.execute(
            "INSERT INTO ops_incident_actions (incident_id, action, actor, detail, at) "
            "VALUES (:i, :a, :actor, :d, :at) RETURNING id",
            {"i": incident_id, "a": action, "actor": actor,
             "d": json.dumps(detail, ensure_ascii=False), "at": stamp(at)}).fetchone()
        return int(row[0])


def incident_known(db: Database, incident_id: str) -> bool:
    """Whether the ops side or the reroute record knows the incident (actions need one)."""
    row = db.conn.execute(
        "SELECT 1 FROM ops_incidents WHERE incident_id = :i UNION "
        "SELECT 1 FROM incidents WHERE id = :i", {"i": incident_id}).fetchone()
    return row is not None


@dataclass(frozen=True)
class ActionRow:
    id: int
    action: str
    actor: str
    detail: dict[str, Any]
    at: str

    def as_json(self) -> dict[str, Any]:
        return {"id": self.id, "action": self.action, "actor": self.actor,
                "detail": self.detail, "at": self.at}


def actions(db: Database, incident_id: str) -> list[ActionRow]:
    rows = db.conn.execute(
        "SELECT id, action, actor, detail, at FROM ops_incident_actions "
        "WHERE incident_id = :i ORDER BY id", {"i": incident_id}).fetchall()
    return [ActionRow(r[0], r[1], r[2], json.loads(r[3]), r[4]) for r in rows]


def acknowledged(db: Database, incident_id: str) -> ActionRow | None:
    """The first acknowledgement, if any (escalation stops there)."""
    return next((a for a in actions(db, incident_id) if a.action == "acknowledged"), None)


def trip_facts(db: Database, warehouse_id: str, incident_id: str) -> TripFacts | None:
    """The trip behind a breaker incident (its episode's first open event), or None."""
    row = db.conn.execute(
        "SELECT event_time, zone, limit_json, values_json FROM ops_breaker_log "
        "WHERE warehouse_id = :w AND episode_id = :e AND open = 1 "
        "ORDER BY event_time, id LIMIT 1", {"w": warehouse_id, "e": incident_id}).fetchone()
    if row is None:
        return None
    limit = json.loads(row[2]) if row[2] else None
    values = json.loads(row[3])
    metric = limit["metric"] if limit else (values[0]["metric"] if values else None)
    readings = [v["value"] for v in values if v["metric"] == metric]
    below = limit is not None and limit["op"] == "below"
    value = (min(readings) if below else max(readings)) if readings else None
    return TripFacts(at=datetime.fromisoformat(row[0]), zone=row[1], metric=metric,
                     value=value, op=limit["op"] if limit else None,
                     limit=limit["value"] if limit else None,
                     for_s=limit["for_s"] if limit else None)


def trip_times(db: Database, incident_ids: list[str]) -> dict[str, str]:
    """When each breaker incident's breaker tripped (event time), by incident id."""
    if not incident_ids:
        return {}
    marks = ", ".join(f":i{n}" for n in range(len(incident_ids)))
    rows = db.conn.execute(
        f"SELECT episode_id, min(event_time) FROM ops_breaker_log WHERE open = 1 "
        f"AND episode_id IN ({marks}) GROUP BY episode_id",
        {f"i{n}": i for n, i in enumerate(incident_ids)}).fetchall()
    return {str(r[0]): str(r[1]) for r in rows}


def breaker_log(db: Database, warehouse_id: str, since: str, until: str
                ) -> list[dict[str, Any]]:
    """A warehouse's breaker events with event time in [since, until], oldest first."""
    cur = db.conn.execute(
        "SELECT breaker, agent_id, state, open, reason, zone, rule, episode_id, limit_json, "
        "values_json, historical, event_time, published_at, received_at FROM ops_breaker_log "
        "WHERE warehouse_id = :w AND event_time >= :since AND event_time <= :until "
        "ORDER BY event_time, id", {"w": warehouse_id, "since": since, "until": until})
    out = []
    seen: set[tuple[str, str, str]] = set()
    for r in cur.fetchall():
        key = (r[1], r[11], r[2])
        if key in seen:
            continue  # a QoS 1 redelivery or a retained repeat: one line on the timeline
        seen.add(key)
        out.append({"breaker": r[0], "agent_id": r[1], "state": r[2], "open": bool(r[3]),
                    "reason": r[4], "zone": r[5], "rule": r[6], "episode_id": r[7],
                    "limit": json.loads(r[8]) if r[8] else None, "values": json.loads(r[9]),
                    "historical": bool(r[10]), "event_time": r[11], "published_at": r[12],
                    "received_at": r[13]})
    return out
