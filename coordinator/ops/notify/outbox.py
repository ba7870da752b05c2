"""The notifications outbox: queued in the caller's transaction, delivered later.

Every notification has a dedupe key (``UNIQUE``): queueing the same key twice is a
no-op, so a replayed incident never notifies twice. Status is ``pending`` until
delivered (``sent``) or until it has failed ``max_attempts`` times (``failed``: dead,
visible via ``GET /notifications?status=failed``).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

from pydantic_core import to_json

from coordinator.db import Database, dialect, json_text
from protocols.timestamps import stamp

Kind = Literal["franchisee", "wecom", "sms", "webhook", "customer"]
Status = Literal["pending", "sent", "failed"]
KINDS: tuple[Kind, ...] = ("franchisee", "wecom", "sms", "webhook", "customer")
STATUSES: tuple[Status, ...] = ("pending", "sent", "failed")


@dataclass(frozen=True, slots=True)
class OutgoingNotice:
    kind: Kind
    dedupe_key: str
    payload: dict[str, Any]
    incident_id: str | None = None


@dataclass(frozen=True, slots=True)
class Notification:
    id: int
    kind: Kind
    dedupe_key: str
    incident_id: str | None
    payload: dict[str, Any]
    status: Status
    attempts: int
    next_attempt_at: str
    last_error: str | None
    created_at: str
    sent_at: str | None

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "kind": self.kind,
            "dedupe_key": self.dedupe_key,
            "incident_id": self.incident_id,
            "payload": self.payload,
            "status": self.status,
            "attempts": self.attempts,
            "next_attempt_at": self.next_attempt_at,
            "last_error": self.last_error,
            "created_at": self.created_at,
            "sent_at": self.sent_at,
        }


def queue(db: Database, notices: Iterable[OutgoingNotice], now: datetime) -> int:
    """Queue notices inside the caller's transaction; return how many were new."""
    at = stamp(now)
    rows = [
        (n.kind, n.dedupe_key, n.incident_id, to_json(n.payload).decode(), at, at)
        for n in notices
    ]
    if not rows:
        return 0
    before = db.conn.total_changes
    db.conn.executemany(
        "INSERT INTO ops_notifications "
        "(kind, dedupe_key, incident_id, payload, status, attempts, next_attempt_at, created_at) "
        "VALUES (?, ?, ?, ?, 'pending', 0, ?, ?) ON CONFLICT DO NOTHING",
        rows,
    )
    return db.conn.total_changes - before


def _row(row: tuple[Any, ...]) -> Notification:
    return Notification(
        id=row[0], kind=row[1], dedupe_key=row[2], incident_id=row[3],
        payload=json.loads(row[4]), status=row[5], attempts=row[6], next_attempt_at=row[7],
        last_error=row[8], created_at=row[9], sent_at=row[10],
    )


_COLUMNS = ("id, kind, dedupe_key, incident_id, payload, status, attempts, next_attempt_at, "
            "last_error, created_at, sent_at")


def due(db: Database, now: datetime, limit: int) -> list[Notification]:
    cursor = db.conn.execute(
        f"SELECT {_COLUMNS} FROM ops_notifications "
        "WHERE status = 'pending' AND next_attempt_at <= ? ORDER BY next_attempt_at, id LIMIT ?",
        (stamp(now), limit),
    )
    return [_row(r) for r in cursor.fetchall()]


def claim(db: Database, now: datetime, limit: int, lease: timedelta) -> list[Notification]:
    """The due notifications this dispatcher delivers now, oldest due first.

    On PostgreSQL any instance may run a dispatcher: the due rows are locked with
    ``FOR UPDATE SKIP LOCKED`` (a row another instance is claiming is passed over, never
    waited for) and claimed for ``lease`` by moving their ``next_attempt_at`` past it, in
    one statement. The claimant renews its claim while the batch is out
    (:mod:`coordinator.ops.notify.claims`), so the lease can be short: another instance
    takes a claimed notice again only when it ran out (its claimant died, hung, or lost
    the database for that long): at least once, and the sinks drop a repeat (the file
    sink knows the keys it wrote, HTTP receivers get the ``Idempotency-Key``). On SQLite
    (one file, one writer, one dispatcher: the ops leader's) the due rows are read."""
    if dialect(db) != "postgresql":
        return due(db, now, limit)
    rows = db.conn.execute(
        "WITH picked AS (SELECT id, next_attempt_at AS was FROM ops_notifications "
        "WHERE status = 'pending' AND next_attempt_at <= ? ORDER BY next_attempt_at, id "
        "LIMIT ? FOR UPDATE SKIP LOCKED) "
        "UPDATE ops_notifications AS n SET next_attempt_at = ? FROM picked "
        f"WHERE n.id = picked.id RETURNING picked.was, "
        f"{', '.join(f'n.{c}' for c in _COLUMNS.split(', '))}",
        (stamp(now), limit, stamp(now + lease))).fetchall()
    return [_row(r[1:]) for r in sorted(rows, key=lambda r: (r[0], r[1]))]


def listing(db: Database, *, status: Status | None = None, kind: Kind | None = None,
            incident_id: str | None = None, limit: int = 100,
            stores: Sequence[str] | None = None) -> list[Notification]:
    """``stores``: only the franchisee notices of these stores (a scoped caller)."""
    where: list[str] = []
    args: list[str] = []
    if stores is not None:
        where.append(f"kind = 'franchisee' AND {json_text(db, 'payload', 'store_id')} IN "
                     f"({','.join('?' * len(stores)) or 'NULL'})")
        args.extend(stores)
    if status is not None:
        where.append("status = ?")
        args.append(status)
    if kind is not None:
        where.append("kind = ?")
        args.append(kind)
    if incident_id is not None:
        where.append("incident_id = ?")
        args.append(incident_id)
    clause = f"WHERE {' AND '.join(where)}" if where else ""
    cursor = db.conn.execute(
        f"SELECT {_COLUMNS} FROM ops_notifications {clause} ORDER BY id LIMIT ?",
        (*args, limit),
    )
    return [_row(r) for r in cursor.fetchall()]


def mark_sent(db: Database, notification_id: int, now: datetime) -> None:
    db.conn.execute(
        "UPDATE ops_notifications SET status = 'sent', attempts = attempts + 1, sent_at = ?, "
        "last_error = NULL WHERE id = ? AND status = 'pending'",
        (stamp(now), notification_id),
    )


def backoff_delay(attempts: int, base_s: float, max_s: float) -> timedelta:
    """Exponential: base, 2*base, 4*base ... capped."""
    return timedelta(seconds=min(max_s, base_s * (2 ** max(0, attempts - 1))))


def mark_failed(db: Database, notification: Notification, now: datetime, error: str, *,
                max_attempts: int, backoff_base_s: float, backoff_max_s: float) -> Status:
    attempts = notification.attempts + 1
    status: Status = "failed" if attempts >= max_attempts else "pending"
    next_at = now + backoff_delay(attempts, backoff_base_s, backoff_max_s)
    db.conn.execute(
        "UPDATE ops_notifications SET status = ?, attempts = ?, next_attempt_at = ?, "
        # a notice another instance delivered meanwhile (its claim ran out) stays sent
        "last_error = ? WHERE id = ? AND status = 'pending'",
        (status, attempts, stamp(next_at), error[:500], notification.id),
    )
    return status


def defer(db: Database, notification_id: int, until: datetime) -> None:
    """Push a notification back without counting an attempt (rate limit)."""
    db.conn.execute(
        "UPDATE ops_notifications SET next_attempt_at = ? WHERE id = ? AND status = 'pending'",
        (stamp(until), notification_id),
    )


def release(db: Database, notification_id: int, held_until: str, now: datetime) -> None:
    """Hand a picked notice back undelivered, due ``now``: only while it is still as this
    dispatcher holds it (``next_attempt_at`` = ``held_until``: a claim that ran out and
    was taken by another instance stays theirs)."""
    db.conn.execute(
        "UPDATE ops_notifications SET next_attempt_at = ? "
        "WHERE id = ? AND status = 'pending' AND next_attempt_at = ?",
        (stamp(now), notification_id, held_until),
    )


def extend_claim(db: Database, notification_ids: Sequence[int], held_until: str,
                 until: datetime) -> set[int]:
    """Renew a claimed batch to ``until`` (PostgreSQL): the notices still pending and
    still held to ``held_until``; returns their ids (one another instance took after
    the claim ran out stays theirs, and is not among them)."""
    if not notification_ids:
        return set()
    rows = db.conn.execute(
        "UPDATE ops_notifications SET next_attempt_at = ? WHERE status = 'pending' "
        f"AND next_attempt_at = ? AND id IN ({', '.join('?' * len(notification_ids))}) "
        "RETURNING id",
        (stamp(until), held_until, *notification_ids),
    ).fetchall()
    return {int(r[0]) for r in rows}


def retry(db: Database, notification_id: int, now: datetime) -> bool:
    """Give a dead notification another round of attempts (operator action)."""
    cursor = db.conn.execute(
        "UPDATE ops_notifications SET status = 'pending', attempts = 0, next_attempt_at = ? "
        "WHERE id = ? AND status = 'failed'",
        (stamp(now), notification_id),
    )
    return cursor.rowcount == 1


def counts(db: Database) -> dict[tuple[str, str], int]:
    cursor = db.conn.execute(
        "SELECT kind, status, count(*) FROM ops_notifications GROUP BY kind, status"
    )
    return {(k, s): n for k, s, n in cursor.fetchall()}
