"""SQL of the shared inbox: every instance writes what its MQTT session receives, the
leader applies it in order.

Why an inbox: with several instances, each subscribes with its own persistent session,
so every message reaches every instance that is up. Writing them all into one table
(the first copy wins on ``dedupe_key``) means that nothing an instance received is lost
when it dies, whoever leads. The leader applies rows in id order and moves the
``inbox`` cursor in the same transaction as the effects, so a row is applied at most
once per commit; the tracker's dedupe by ``(agent, incarnation, seq)`` inside that
transaction makes a message that arrives again after a failover change nothing.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta

from coordinator.db import Database, dialect, write_transaction
from protocols import AgentStatus, BreakerEvent, TrackingUpdate, decode, encode
from protocols.timestamps import stamp

InboxMessage = BreakerEvent | AgentStatus | TrackingUpdate
CURSOR = "inbox"
# PostgreSQL: the lock puts take among themselves (not the one write lock of every store)
INBOX_LOCK_KEY = 0x6277_696E_626F_78  # "bwinbox"
KINDS: dict[str, type[InboxMessage]] = {
    "breaker": BreakerEvent, "status": AgentStatus, "tracking": TrackingUpdate}


@dataclass(frozen=True, slots=True)
class InboxRow:
    id: int
    kind: str
    payload: str


def dedupe_key(message: InboxMessage) -> str:
    """Two copies of one message (two instances, a redelivery, a retained replay) share
    it; two different messages never do."""
    if isinstance(message, BreakerEvent):
        return f"breaker/{message.agent_id}/{message.incarnation or ''}/{message.seq}"
    if isinstance(message, AgentStatus):
        return (f"status/{message.agent_id}/{message.incarnation or ''}/"
                f"{message.session_seq}/{message.state.value}/{stamp(message.ts)}")
    digest = hashlib.sha256(encode(message)).hexdigest()
    return f"tracking/{digest}"


def kind_of(message: InboxMessage) -> str:
    if isinstance(message, BreakerEvent):
        return "breaker"
    return "status" if isinstance(message, AgentStatus) else "tracking"


def put(db: Database, message: InboxMessage, instance: str, now: datetime) -> bool:
    """Store ``message`` unless a copy is there; True when this call stored it."""
    with _put_lock(db):
        cursor = db.execute(
            "INSERT INTO ops_inbox (dedupe_key, kind, payload, received_by, received_at) "
            "VALUES (?, ?, ?, ?, ?) ON CONFLICT (dedupe_key) DO NOTHING",
            [dedupe_key(message), kind_of(message), encode(message).decode(), instance,
             stamp(now)])
        return bool(cursor.rowcount == 1)


def put_many(db: Database, messages: Sequence[InboxMessage], instance: str,
             now: datetime) -> int:
    """Store those of ``messages`` no copy of is there, in order, in one transaction and
    one statement (a reconnect storm's burst); return how many were stored."""
    if not messages:
        return 0
    rows = [(dedupe_key(m), kind_of(m), encode(m).decode(), instance, stamp(now))
            for m in messages]
    with _put_lock(db):
        cursor = db.conn.executemany(
            "INSERT INTO ops_inbox (dedupe_key, kind, payload, received_by, received_at) "
            "VALUES (?, ?, ?, ?, ?) ON CONFLICT (dedupe_key) DO NOTHING", rows)
        return max(int(cursor.rowcount), 0)


@contextmanager
def _put_lock(db: Database) -> Iterator[None]:
    """The applier's cursor skips every id up to the last applied one, so ids must become
    visible in increasing order: a row that committed after a higher id was applied
    would never be applied. Puts are therefore serialised. On SQLite that is the write
    lock; on PostgreSQL a lock of their own (ids are drawn from the sequence under it,
    so commit order is id order), which leaves the leader's apply transactions and the
    intake free of an uplink storm's inserts."""
    if dialect(db) != "postgresql":
        with write_transaction(db):
            yield
        return
    with db.atomic():
        # Waited for without a bound, whatever the session's lock_timeout (the ops
        # sessions of a cluster have the lease TTL, for the lease round's sake): a put
        # that gave up would fail the watcher's attempts and drop the message for good,
        # while the holder (another instance's put, perhaps stopped in the middle of its
        # COPY) commits or is ended later. The puts have their own thread on PostgreSQL.
        # SET takes no parameters; the key is a constant (one round trip, no parameters)
        db.execute(f"SET LOCAL lock_timeout = 0; SELECT pg_advisory_xact_lock({INBOX_LOCK_KEY:d})")
        yield


def applied_up_to(db: Database) -> int:
    row = db.execute("SELECT value FROM ops_cursors WHERE name = ?", [CURSOR]).fetchone()
    return 0 if row is None else int(row[0])


def pending(db: Database, limit: int) -> list[InboxRow]:
    """The oldest rows not yet applied, in arrival order."""
    rows = db.execute(
        "SELECT id, kind, payload FROM ops_inbox WHERE id > ? ORDER BY id LIMIT ?",
        [applied_up_to(db), limit]).fetchall()
    return [InboxRow(int(r[0]), str(r[1]), str(r[2])) for r in rows]


def decode_row(row: InboxRow) -> InboxMessage:
    """The stored message (it was validated before it was stored)."""
    return decode(KINDS[row.kind], row.payload)


def mark_applied(db: Database, row_id: int) -> None:
    """Move the cursor past ``row_id``; inside the transaction that applied it."""
    db.execute(
        "INSERT INTO ops_cursors (name, value) VALUES (?, ?) "
        "ON CONFLICT (name) DO UPDATE SET value = excluded.value",
        [CURSOR, row_id])


def prune(db: Database, now: datetime, keep: timedelta) -> int:
    """Delete applied rows older than ``keep`` (their dedupe keys are then forgotten;
    the tracker's own dedupe still drops a late copy)."""
    with write_transaction(db):
        cursor = db.execute("DELETE FROM ops_inbox WHERE id <= ? AND received_at < ?",
                            [applied_up_to(db), stamp(now - keep)])
        return int(cursor.rowcount)


def backlog(db: Database) -> int:
    row = db.execute("SELECT count(*) FROM ops_inbox WHERE id > ?",
                     [applied_up_to(db)]).fetchone()
    return int(row[0])
