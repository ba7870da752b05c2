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
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import sqlite_utils

from edge_agent.errors import StoreCorrupt, StoreError
from edge_agent.messages import OutgoingMessage
from edge_agent.outbox_queue import OutboxQueue
from edge_agent.readings import Reading
from protocols.timestamps import parse_stamp, stamp

if TYPE_CHECKING:
    from edge_agent.config import AgentConfig

log = logging.getLogger("edge_agent")

# What the budget sacrifices first when the outbox is full.
DROP_ORDER = ("telemetry", "audit")


class Store(OutboxQueue):
    def __init__(self, path: Path | str, *, outbox_max_bytes: int, readings_keep: int) -> None:
        self.path = Path(path)
        self.outbox_max_bytes = outbox_max_bytes
        self.readings_keep = readings_keep
        conn: sqlite3.Connection | None = None
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(str(path), isolation_level=None)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            # a file cut short or overwritten is found now, not by the first event's
            # commit (the store is small: its outbox has a byte budget)
            check = conn.execute("PRAGMA quick_check").fetchone()
            if check is None or check[0] != "ok":
                raise sqlite3.DatabaseError(f"quick_check: {check[0] if check else None}")
            self.db = sqlite_utils.Database(conn)
            self._create()
            self.seq = int(self._meta("seq") or 0)
            self.session_seq = int(self._meta("session_seq") or 0)
            self.incarnation = self._incarnation()
            self.outbox_bytes = self._outbox_bytes()
            self.outbox_count = self.outbox_depth()  # kept in memory: polled often
        except (sqlite3.Error, OSError, ValueError) as exc:
            if conn is not None:
                conn.close()
            message = f"cannot open state store {path}: {exc}"
            # OperationalError: the file cannot be opened or written (permissions, a
            # read-only or full disk); any other database error: the file is damaged
            corrupt = isinstance(exc, (sqlite3.DatabaseError, ValueError)) and not \
                isinstance(exc, sqlite3.OperationalError)
            raise (StoreCorrupt if corrupt else StoreError)(message) from exc
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
                # first: the outbox's ids are rowids, and a new row may take the id of
                # one deleted in this transaction (the budget's victims included)
                count, size = self._delete_rows(conn, sorted(self._undeleted))
                self.outbox_count -= count
                self.outbox_bytes -= size
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
        except sqlite3.Error as exc:
            self.outbox_bytes, self.outbox_count, self.dropped = mirrors
            message_text = f"cannot save state to {self.path}: {exc}"
            raise StoreError(message_text) from exc
        self._undeleted.clear()
        return refused

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



def open_store(config: AgentConfig, now: datetime | None = None) -> Store:
    """The state store ``config`` describes (its path, outbox budget, readings kept).

    A damaged file (a power cut, exactly when cold rooms warm) must not keep the agent
    from watching them: it is set aside as ``<name>.corrupt-<time>`` (with its WAL) for
    a person to look at, logged as an error, and a new store starts a new incarnation
    (the coordinator follows: docs/edge.md). What it held and had not sent is lost; the
    breakers' current states are published at start as always. A file that cannot be
    opened or written (permissions, a read-only or full disk) is an error to fix."""
    agent = config.agent

    def make() -> Store:
        return Store(config.state_db_path, outbox_max_bytes=agent.outbox_max_bytes,
                     readings_keep=agent.readings_log_per_sensor * len(config.sensors))

    try:
        return make()
    except StoreCorrupt as exc:
        path = Path(config.state_db_path)
        label = (now or datetime.now(UTC)).strftime("%Y%m%dT%H%M%SZ")
        aside = path.with_name(f"{path.name}.corrupt-{label}")
        n = 1
        while any(aside.with_name(aside.name + s).exists() for s in ("", "-wal", "-shm")):
            n += 1  # a second damaged file within the second: never over the first
            aside = path.with_name(f"{path.name}.corrupt-{label}-{n}")
        try:
            for suffix in ("", "-wal", "-shm"):
                part = path.with_name(path.name + suffix)
                if part.exists():
                    part.rename(aside.with_name(aside.name + suffix))
        except OSError as move:
            message = f"{exc}; and it cannot be set aside: {move}"
            raise StoreError(message) from move
        log.error("%s: set aside as %s; starting a new state store (new incarnation; "
                  "unsent events in it are lost)", exc, aside)
        return make()
