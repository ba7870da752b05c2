"""The ops records a batch writes once, set-based, at its end.

A reconnect storm brings thousands of breaker events and births; written one statement
each (a breaker state, a dedupe mark, a counter or two, an agent session, the event's
timeline row, an audit row, the incident), they cost a round trip per row on PostgreSQL.
:class:`Deferred` collects them while a batch is applied and :meth:`Deferred.flush`
writes each table with one ``executemany`` (one multi-row statement on PostgreSQL)
inside the same transaction, so they commit with the batch's other effects or not at
all. Nothing read while the batch is applied comes from these tables (the tracker keeps
its records in memory), except a trip's facts, read from the breaker log by its reroute:
that log is written first (:meth:`Deferred.flush_breaker_log`). A later record of the
same breaker or agent replaces an earlier one (only the last state is kept, as row by
row upserts would leave it); counters add up; log and audit rows keep their order.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from coordinator.db import Database
from coordinator.ops import incident_log, incident_store
from coordinator.ops.availability_state import AgentRecord, BreakerRecord, EventProcessed
from protocols.timestamps import stamp, stamp_or_none

_BREAKER_STATE = (
    "INSERT INTO ops_breaker_states (warehouse_id, breaker, agent_id, "
    "state, open, episode_id, reason, seq, session_seq, since, event_time, "
    "last_seen, incarnation) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?) "
    "ON CONFLICT (warehouse_id, breaker) DO UPDATE SET "
    "agent_id = excluded.agent_id, state = excluded.state, "
    "open = excluded.open, episode_id = excluded.episode_id, "
    "reason = excluded.reason, seq = excluded.seq, "
    "session_seq = excluded.session_seq, since = excluded.since, "
    "event_time = excluded.event_time, last_seen = excluded.last_seen, "
    "incarnation = excluded.incarnation")
_AGENT_SESSION = (
    "INSERT INTO ops_agent_sessions (agent_id, warehouse_id, "
    "session_seq, online, offline_since, last_birth_at, last_death_at, last_seen,"
    " incarnation) VALUES (?,?,?,?,?,?,?,?,?) "
    "ON CONFLICT (agent_id) DO UPDATE SET warehouse_id = excluded.warehouse_id, "
    "session_seq = excluded.session_seq, online = excluded.online, "
    "offline_since = excluded.offline_since, "
    "last_birth_at = excluded.last_birth_at, "
    "last_death_at = excluded.last_death_at, last_seen = excluded.last_seen, "
    "incarnation = excluded.incarnation")
_PROCESSED = (
    "INSERT INTO ops_processed_events (agent_id, incarnation, seq, "
    "warehouse_id, breaker, open, historical, outcome, received_at) "
    "VALUES (?,?,?,?,?,?,?,?,?) ON CONFLICT DO NOTHING")
_COUNTER = (
    "INSERT INTO ops_counters (name, value) VALUES (?, ?) "
    "ON CONFLICT (name) DO UPDATE SET value = ops_counters.value + excluded.value")


@dataclass
class Deferred:
    """Rows waiting for :meth:`flush` (inside the applying transaction)."""

    breakers: dict[tuple[str, str], tuple[Any, ...]] = field(default_factory=dict)
    agents: dict[str, tuple[Any, ...]] = field(default_factory=dict)
    processed: dict[tuple[str, str, int], tuple[Any, ...]] = field(default_factory=dict)
    counters: Counter[str] = field(default_factory=Counter)
    # insert-only rows, kept in order: the incident timeline's breaker events and the
    # warehouses' audit trail
    breaker_log: list[tuple[Any, ...]] = field(default_factory=list)
    audits: list[tuple[Any, ...]] = field(default_factory=list)
    # incidents opened in this batch (counted and maybe closed before they are written)
    incidents: dict[str, list[Any]] = field(default_factory=dict)

    def breaker(self, r: BreakerRecord) -> None:
        self.breakers[(r.warehouse_id, r.breaker)] = (
            r.warehouse_id, r.breaker, r.agent_id, r.state.value, int(r.open),
            r.episode_id, r.reason, r.seq, r.session_seq, stamp(r.since),
            stamp(r.event_time), stamp(r.last_seen), r.incarnation)

    def agent(self, a: AgentRecord) -> None:
        self.agents[a.agent_id] = (
            a.agent_id, a.warehouse_id, a.session_seq, int(a.online),
            stamp_or_none(a.offline_since), stamp_or_none(a.last_birth_at),
            stamp_or_none(a.last_death_at), stamp(a.last_seen), a.incarnation)

    def processed_event(self, e: EventProcessed, now: datetime) -> None:
        key = (e.agent_id, e.incarnation or "", e.seq)
        # the first mark of a key wins, as ON CONFLICT DO NOTHING row by row would
        self.processed.setdefault(key, (*key, e.warehouse_id, e.breaker, int(e.open),
                                        int(e.historical), e.outcome, stamp(now)))

    def bump(self, name: str, by: int = 1) -> None:
        self.counters[name] += by

    def forget_agent(self, agent_id: str) -> None:
        """A new lifetime of the agent: its dedupe marks of this batch go with the old
        ones the caller deletes (the tracker forgot them too)."""
        for key in [k for k in self.processed if k[0] == agent_id]:
            del self.processed[key]

    def open_incident(self, row: list[Any]) -> None:
        self.incidents.setdefault(str(row[0]), row)  # the first opening is kept

    def count_incident(self, incident_id: str, *, moved: int, stuck: int) -> None:
        """Only for an incident this batch opened (its reroute follows its opening)."""
        row = self.incidents[incident_id]
        row[6], row[7] = moved, stuck

    def close_incident(self, db: Database, incident_id: str | None, at: datetime) -> None:
        if incident_id is not None and incident_id in self.incidents:
            self.incidents[incident_id][5] = incident_store.closed_at(at)
        else:
            incident_store.close_incident(db, incident_id, at)

    def flush_breaker_log(self, db: Database) -> None:
        """Now, before a trip's facts are read from the log."""
        incident_log.log_breaker_events(db, self.breaker_log)
        self.breaker_log.clear()

    def flush(self, db: Database) -> None:
        """Write and forget everything collected (a statement per table at most)."""
        self.flush_breaker_log(db)
        incident_store.audit_many(db, self.audits)
        self.audits.clear()
        incident_store.open_incidents(db, list(self.incidents.values()))
        self.incidents.clear()
        if self.breakers:
            db.conn.executemany(_BREAKER_STATE, list(self.breakers.values()))
        if self.agents:
            db.conn.executemany(_AGENT_SESSION, list(self.agents.values()))
        if self.processed:
            db.conn.executemany(_PROCESSED, list(self.processed.values()))
        counts = [(name, by) for name, by in sorted(self.counters.items()) if by]
        if counts:
            db.conn.executemany(_COUNTER, counts)
        self.breakers.clear()
        self.agents.clear()
        self.processed.clear()
        self.counters.clear()


def bump(db: Database, name: str, by: int = 1) -> None:
    """One counter now (outside a batch)."""
    db.conn.execute(_COUNTER, (name, by))
