"""The gateway's SQLite state (sqlite-utils): rule and breaker state, a short log of recent
readings, the per-agent sequence, the per-connection session sequence, the incarnation
(the id of this database's lifetime), and the outbox.

Everything an event depends on is committed in one transaction *before* the event is
published, so a restarted agent neither forgets a trip nor reuses a sequence number.
The outbox has a byte budget: when it is full, telemetry summaries go first, then audit
records; breaker events are never dropped. One Store per agent, used from its event loop.
"""

from __future__ import annotations

import contextlib
import json
import logging
import sqlite3
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import sqlite_utils

from edge_agent.errors import StoreError
from edge_agent.messages import OutgoingMessage
from edge_agent.readings import Reading
from protocols.timestamps import parse_stamp, stamp

if TYPE_CHECKING:
    from edge_agent.config import AgentConfig

log = logging.getLogger("edge_agent")

# What the budget sacrifices first when the outbox is full.
DROP_ORDER = ("telemetry", "audit")


@dataclass(frozen=True, slots=True)
class OutboxRow:
    id: int
    kind: str
    topic: str
    payload: str
    qos: int
    retain: bool
    seq: int
    breaker: str | None


class Store:
    def __init__(self, path: Path | str, *, outbox_max_bytes: int, readings_keep: int) -> None:
        try:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(str(path), isolation_level=None)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            self.db = sqlite_utils.Database(conn)
            self._create()
        except sqlite3.Error as exc:
            message = f"cannot open state store {path}: {exc}"
            raise StoreError(message) from exc
        self.path = Path(path)
        self.outbox_max_bytes = outbox_max_bytes
        self.readings_keep = readings_keep
        self.seq = int(self._meta("seq") or 0)
        self.session_seq = int(self._meta("session_seq") or 0)
        self.incarnation = self._incarnation()
        self.outbox_bytes = self._outbox_bytes()
        self.outbox_count = self.outbox_depth()  # kept in memory: stats are polled often
        self.dropped: dict[str, int] = {}
        # Published (acknowledged) rows a full disk would not let us delete: never sent
        # again by this process, deleted by the next write that succeeds.
        self._undeleted: set[int] = set()

    def _create(self) -> None:
        db = self.db
        db.table("meta").create({"key": str, "value": str}, pk="key", if_not_exists=True)
        db.table("rules").create({"id": str, "data": str}, pk="id", if_not_exists=True)
        db.table("breakers").create({"name": str, "data": str}, pk="name", if_not_exists=True)
        db.table("readings").create(
            {
                "id": int,
                "sensor_id": str,
                "metric": str,
                "value": float,
                "ts": str,
                "received_at": str,
                "clock_suspect": int,
            },
            pk="id",
            if_not_exists=True,
        )
        db.table("outbox").create(
            {
                "id": int,
                "seq": int,
                "kind": str,
                "breaker": str,
                "topic": str,
                "payload": str,
                "qos": int,
                "retain": int,
                "size": int,
                "queued_at": str,
            },
            pk="id",
            if_not_exists=True,
        )
        if "queued_at" not in db.table("outbox").columns_dict:  # a database from before it
            db.table("outbox").add_column("queued_at", str)
        # The newest event of each breaker, kept after it is published: re-sent with its
        # original seq on every new uplink session (a broker may lose what it acknowledged).
        db.table("current").create(
            {"breaker": str, "seq": int, "topic": str, "payload": str},
            pk="breaker",
            if_not_exists=True,
        )
        # Nonces of accepted signed commands, until the command could no longer be accepted:
        # a restart does not reopen replays.
        db.table("nonces").create(
            {"nonce": str, "expires_at": str}, pk="nonce", if_not_exists=True
        )

    def close(self) -> None:
        self.db.close()

    # -- meta ------------------------------------------------------------------
    def _meta(self, key: str) -> str | None:
        row = self.db.execute("SELECT value FROM meta WHERE key = ?", [key]).fetchone()
        return None if row is None else str(row[0])

    def _set_meta(self, key: str, value: str) -> None:
        self.db.execute(
            "INSERT INTO meta(key, value) VALUES (?, ?) "
            "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            [key, value],
        )

    def _incarnation(self) -> str:
        # Created once with the database (or on the first open of a database older than
        # the field) and never changed: a wiped or replaced database restarts seq and
        # session_seq at zero, and a new incarnation tells receivers not to compare them
        # with the old ones.
        found = self._meta("incarnation")
        if found is not None:
            return found
        return self._save_new_incarnation()

    def _save_new_incarnation(self) -> str:
        created = uuid.uuid4().hex
        try:
            with self.db.atomic():
                self._set_meta("incarnation", created)
        except sqlite3.Error as exc:
            message = f"cannot save the incarnation to {self.path}: {exc}"
            raise StoreError(message) from exc
        return created

    def new_incarnation(self) -> str:
        """Start a new lifetime of this database (run after restoring it from a backup).

        A restored backup rewinds ``seq`` and ``session_seq`` but keeps the incarnation the
        coordinator already followed further, so it would take the gateway's next events
        for replays of ones it has seen. A new incarnation tells it they are not."""
        self.incarnation = self._save_new_incarnation()
        return self.incarnation

    def next_seq(self) -> int:
        """The next per-agent sequence number; persisted by the next :meth:`commit`."""
        self.seq += 1
        return self.seq

    def bump_session(self) -> int:
        """Start a new uplink session (Sparkplug bdSeq); persisted before connecting.

        Never raises: a full disk must not stop the agent (it would be restarted into the
        same failure, and a cold room nobody watches). Unsaved, the number is written by
        the next commit that succeeds (every commit writes it)."""
        self.session_seq += 1
        try:
            with self.db.atomic():
                self._set_meta("session_seq", str(self.session_seq))
        except sqlite3.Error as exc:
            log.warning("session %d not saved to %s (%s): saved by the next commit",
                        self.session_seq, self.path, exc)
        return self.session_seq

    @property
    def saved_at(self) -> datetime | None:
        value = self._meta("saved_at")
        return None if value is None else parse_stamp(value)

    def load_rules(self) -> dict[str, dict[str, Any]]:
        rows = self.db.execute("SELECT id, data FROM rules").fetchall()
        return {str(r[0]): json.loads(r[1]) for r in rows}

    def load_breakers(self) -> dict[str, dict[str, Any]]:
        rows = self.db.execute("SELECT name, data FROM breakers").fetchall()
        return {str(r[0]): json.loads(r[1]) for r in rows}

    def recent_readings(self, limit: int = 100) -> list[Reading]:
        rows = self.db.execute(
            "SELECT sensor_id, metric, value, ts, received_at, clock_suspect "
            "FROM readings ORDER BY id DESC LIMIT ?",
            [limit],
        ).fetchall()
        return [
            Reading(
                r[0],
                "",
                r[1],
                r[2],
                parse_stamp(r[3]),
                parse_stamp(r[4]),
                bool(r[5]),
            )
            for r in reversed(rows)
        ]

    # -- the one write path ----------------------------------------------------
    def commit(
        self,
        now: datetime,
        *,
        rules: dict[str, dict[str, Any]] | None = None,
        breakers: dict[str, dict[str, Any]] | None = None,
        readings: Iterable[Reading] = (),
        outgoing: Iterable[OutgoingMessage] = (),
        nonces: dict[str, datetime] | None = None,
    ) -> list[OutgoingMessage]:
        """Persist state, readings and outgoing messages in one transaction.

        Returns the messages the outbox budget refused (never breaker events).
        """
        refused: list[OutgoingMessage] = []
        # in-memory mirrors of the outbox, restored if the transaction rolls back
        mirrors = (self.outbox_bytes, self.outbox_count, dict(self.dropped))
        try:
            with self.db.atomic():
                conn = self.db.conn
                if rules:
                    conn.executemany(
                        "INSERT OR REPLACE INTO rules(id, data) VALUES (?, ?)",
                        [(k, json.dumps(v)) for k, v in rules.items()],
                    )
                if breakers:
                    conn.executemany(
                        "INSERT OR REPLACE INTO breakers(name, data) VALUES (?, ?)",
                        [(k, json.dumps(v)) for k, v in breakers.items()],
                    )
                rows = [
                    (
                        r.sensor_id,
                        r.metric,
                        r.value,
                        stamp(r.ts),
                        stamp(r.received_at),
                        int(r.clock_suspect),
                    )
                    for r in readings
                ]
                if rows:
                    conn.executemany(
                        "INSERT INTO readings(sensor_id, metric, value, ts, received_at, "
                        "clock_suspect) VALUES (?, ?, ?, ?, ?, ?)",
                        rows,
                    )
                    conn.execute(
                        "DELETE FROM readings WHERE id <= (SELECT max(id) FROM readings) - ?",
                        [self.readings_keep],
                    )
                for message in outgoing:
                    if not self._make_room(len(message.payload), message.kind):
                        refused.append(message)
                        self.dropped[message.kind] = self.dropped.get(message.kind, 0) + 1
                        continue
                    conn.execute(
                        "INSERT INTO outbox(seq, kind, breaker, topic, payload, qos, retain, size,"
                        " queued_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        [
                            message.seq,
                            message.kind,
                            message.breaker,
                            message.topic,
                            message.payload,
                            message.qos,
                            int(message.retain),
                            len(message.payload),
                            stamp(now),  # compared with min(): the one sortable format
                        ],
                    )
                    if message.kind == "breaker":
                        conn.execute(
                            "INSERT OR REPLACE INTO current(breaker, seq, topic, payload) "
                            "VALUES (?, ?, ?, ?)",
                            [message.breaker, message.seq, message.topic, message.payload],
                        )
                    self.outbox_bytes += len(message.payload)
                    self.outbox_count += 1
                if nonces:
                    conn.executemany(
                        "INSERT OR REPLACE INTO nonces(nonce, expires_at) VALUES (?, ?)",
                        # rounded up: a nonce is never forgotten before its command expires
                        [(n, stamp(t + timedelta(milliseconds=1))) for n, t in nonces.items()],
                    )
                self._set_meta("seq", str(self.seq))
                self._set_meta("session_seq", str(self.session_seq))
                self._set_meta("saved_at", stamp(now))
                undeleted = self._delete_rows(conn, sorted(self._undeleted))
        except sqlite3.Error as exc:
            self.outbox_bytes, self.outbox_count, self.dropped = mirrors
            message_text = f"cannot save state to {self.path}: {exc}"
            raise StoreError(message_text) from exc
        self._undeleted.clear()
        self.outbox_count -= undeleted[0]
        self.outbox_bytes -= undeleted[1]
        return refused

    @staticmethod
    def _delete_rows(conn: sqlite3.Connection, ids: list[int]) -> tuple[int, int]:
        """Delete outbox rows by id; their count and bytes."""
        if not ids:
            return 0, 0
        marks = ", ".join("?" for _ in ids)
        row = conn.execute(
            f"SELECT count(*), coalesce(sum(size), 0) FROM outbox WHERE id IN ({marks})", ids
        ).fetchone()
        conn.execute(f"DELETE FROM outbox WHERE id IN ({marks})", ids)
        return int(row[0]), int(row[1])

    def _make_room(self, size: int, kind: str) -> bool:
        if self.outbox_bytes + size <= self.outbox_max_bytes:
            return True
        for victim in DROP_ORDER:
            if kind != "breaker" and DROP_ORDER.index(victim) > DROP_ORDER.index(kind):
                break  # never drop a more important kind to make room for a lesser one
            while self.outbox_bytes + size > self.outbox_max_bytes:
                row = self.db.execute(
                    "SELECT id, size FROM outbox WHERE kind = ? ORDER BY id LIMIT 1", [victim]
                ).fetchone()
                if row is None:
                    break
                self.db.execute("DELETE FROM outbox WHERE id = ?", [row[0]])
                self.outbox_bytes -= int(row[1])
                self.outbox_count -= 1
                self.dropped[victim] = self.dropped.get(victim, 0) + 1
            if self.outbox_bytes + size <= self.outbox_max_bytes:
                return True
        # Breaker events are kept even past the budget: losing a trip is never acceptable.
        return kind == "breaker"

    # -- outbox ----------------------------------------------------------------
    def _outbox_bytes(self) -> int:
        row = self.db.execute("SELECT coalesce(sum(size), 0) FROM outbox").fetchone()
        return int(row[0])

    def outbox_depth(self) -> int:
        row = self.db.execute("SELECT count(*) FROM outbox").fetchone()
        return int(row[0])

    def outbox_max_seq(self) -> int:
        row = self.db.execute("SELECT coalesce(max(seq), 0) FROM outbox").fetchone()
        return int(row[0])

    def outbox_rows(
        self, *, after_seq: int = 0, upto_seq: int | None = None, limit: int = 100
    ) -> list[OutboxRow]:
        """Queued messages in sequence order (rowids get reused; seq never is)."""
        sql = "SELECT id, kind, topic, payload, qos, retain, seq, breaker FROM outbox WHERE seq > ?"
        params: list[Any] = [after_seq]
        if self._undeleted:  # published already; only the disk kept them
            sql += f" AND id NOT IN ({', '.join('?' for _ in self._undeleted)})"
            params.extend(sorted(self._undeleted))
        if upto_seq is not None:
            sql += " AND seq <= ?"
            params.append(upto_seq)
        sql += " ORDER BY seq LIMIT ?"
        params.append(limit)
        return [self._row(r) for r in self.db.execute(sql, params).fetchall()]

    def latest_breaker_rows(self, upto_seq: int) -> list[OutboxRow]:
        """The newest queued event of each breaker: the live state to send first."""
        rows = self.db.execute(
            "SELECT id, kind, topic, payload, qos, retain, seq, breaker FROM outbox "
            "WHERE seq IN (SELECT max(seq) FROM outbox WHERE kind = 'breaker' AND seq <= ? "
            "GROUP BY breaker) ORDER BY seq",
            [upto_seq],
        ).fetchall()
        return [self._row(r) for r in rows]

    def current_rows(self) -> list[OutboxRow]:
        """The newest event of each breaker (published or not), oldest first."""
        rows = self.db.execute(
            "SELECT 0, 'breaker', topic, payload, 1, 1, seq, breaker FROM current ORDER BY seq"
        ).fetchall()
        return [self._row(r) for r in rows]

    def oldest_queued_at(self) -> datetime | None:
        row = self.db.execute("SELECT min(queued_at) FROM outbox").fetchone()
        return None if row is None or row[0] is None else parse_stamp(row[0])

    # -- nonces ----------------------------------------------------------------
    def load_nonces(self, now: datetime) -> dict[str, datetime]:
        """Nonces still inside their command's validity; the expired ones are deleted."""
        try:
            rows = self.db.execute("SELECT nonce, expires_at FROM nonces").fetchall()
        except sqlite3.Error as exc:
            raise StoreError(f"cannot read command nonces from {self.path}: {exc}") from exc
        alive = {str(n): parse_stamp(t) for n, t in rows}
        gone = [n for n, t in alive.items() if t <= now]
        # forgetting is housekeeping: a full disk leaves them for the next start
        with contextlib.suppress(sqlite3.Error), self.db.atomic():
            self.db.conn.executemany("DELETE FROM nonces WHERE nonce = ?",
                                     [(n,) for n in gone])
        return {n: t for n, t in alive.items() if t > now}

    @staticmethod
    def _row(r: Any) -> OutboxRow:
        return OutboxRow(
            int(r[0]), str(r[1]), str(r[2]), str(r[3]), int(r[4]), bool(r[5]), int(r[6]), r[7]
        )

    def delete_outbox_seqs(self, seqs: Iterable[int]) -> None:
        """Remove queued messages by ``seq`` (the current states just re-sent)."""
        wanted = list(seqs)
        if not wanted:
            return
        marks = ", ".join("?" for _ in wanted)
        ids = [int(r[0]) for r in self.db.execute(
            f"SELECT id FROM outbox WHERE seq IN ({marks})", wanted).fetchall()]
        self._forget(ids)  # one transaction for them all (one sync on a gateway's card)

    def delete_outbox(self, row_id: int) -> None:
        """Forget a published row. Never raises: if the disk is full the row is kept
        aside (not sent again) and deleted by the next write that succeeds."""
        self._forget([row_id])

    def _forget(self, ids: list[int]) -> None:
        try:
            with self.db.atomic():
                count, size = self._delete_rows(self.db.conn, ids)
        except sqlite3.Error as exc:
            if not self._undeleted:
                log.warning("published outbox rows not deleted from %s (%s): deleted by "
                            "the next commit", self.path, exc)
            self._undeleted.update(ids)
            return
        self.outbox_bytes -= size
        self.outbox_count -= count


def open_store(config: AgentConfig) -> Store:
    """The state store ``config`` describes (its path, outbox budget, readings kept)."""
    agent = config.agent
    return Store(config.state_db_path, outbox_max_bytes=agent.outbox_max_bytes,
                 readings_keep=agent.readings_log_per_sensor * len(config.sensors))
