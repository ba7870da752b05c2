"""The gateway's outbox as a queue: what is waiting, in sequence order, and forgetting
what the uplink acknowledged (a full disk never stops that: the rows are set aside until
a commit succeeds). The rows themselves are queued by :meth:`edge_agent.store.Store.commit`
in the transaction that changes the state they report.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import sqlite_utils

from protocols.timestamps import parse_stamp

log = logging.getLogger("edge_agent")


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


class OutboxQueue:
    """The outbox's reads and deletes, for :class:`edge_agent.store.Store` (which queues
    rows in its commits). Needs the store's connection, path and byte/count mirrors."""

    db: sqlite_utils.Database
    path: Path
    outbox_bytes: int
    outbox_count: int
    # Published (acknowledged) rows a full disk would not let us delete: never sent
    # again by this process, deleted by the next write that succeeds.
    _undeleted: set[int]

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
        # gone now: the id may be a new row's next (a rowid), which must not be deleted
        self._undeleted.difference_update(ids)
        self.outbox_bytes -= size
        self.outbox_count -= count
