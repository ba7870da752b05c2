"""Agents' sessions, lifetimes and liveness, as the availability tracker judges them (the
rules are in :mod:`coordinator.ops.availability`): births and last wills ordered by
session, incarnations (an agent's state database) starting and retiring, heartbeats and
live events as evidence of life, and the ``agent_offline`` hold on the warehouse of an
agent offline past the grace period or silent past its heartbeat promise."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta
from typing import Literal

from coordinator.ops.availability_core import AvailabilityCore
from coordinator.ops.availability_state import (
    AGENT_OFFLINE_PREFIX,
    MISSED_HEARTBEATS,
    RETIRED_KEEP,
    Action,
    AgentRecord,
    AgentRecorded,
    Lifetime,
    LifetimeStarted,
)
from protocols import AgentState, AgentStatus


def _session_key(session_seq: int, online: bool) -> tuple[int, int]:
    # Within one session the birth comes before the death.
    return (session_seq, 0 if online else 1)


class AgentLiveness(AvailabilityCore):
    """The tracker's agent side: sessions, lifetimes, heartbeats and silence."""

    def incarnation(self, agent_id: str) -> str | None:
        """The agent's current incarnation (None: unknown or a v1 agent)."""
        lifetime = self.state.lifetimes.get(agent_id)
        return None if lifetime is None else lifetime.incarnation

    # -- silence and absence ----------------------------------------------------------
    def tick(self, now: datetime) -> list[Action]:
        """Put an ``agent_offline`` hold on warehouses whose agent stayed away too long."""
        actions: list[Action] = []
        for agent in sorted(self.state.agents.values(), key=lambda a: a.agent_id):
            if agent.online:
                actions += self._check_silence(agent, now)
            elif (agent.offline_since is not None
                  and now - agent.offline_since > self.config.agent_offline_grace):
                minutes = self.config.agent_offline_grace.total_seconds() / 60
                actions += self._hold_offline(
                    agent, agent.offline_since, "offline",
                    f"agent {agent.agent_id} offline for more than {minutes:g} min", now)
        return actions

    def silence_limit(self, agent: AgentRecord) -> timedelta | None:
        """How long an online agent may stay unheard, or None if it promised no heartbeat."""
        if agent.heartbeat_s is None:
            return None
        return max(self.config.agent_offline_grace,
                   timedelta(seconds=MISSED_HEARTBEATS * agent.heartbeat_s))

    def _check_silence(self, agent: AgentRecord, now: datetime) -> list[Action]:
        limit = self.silence_limit(agent)
        if limit is None or now - agent.last_seen <= limit:
            return []
        return self._hold_offline(
            agent, agent.last_seen, "silent",
            f"agent {agent.agent_id} silent (no heartbeat) for more than "
            f"{limit.total_seconds():g} s", now)

    def _hold_offline(self, agent: AgentRecord, last_known: datetime, how: str, reason: str,
                      now: datetime) -> list[Action]:
        """The ``agent_offline`` hold on the agent's warehouse (once: :meth:`hold` is
        idempotent), its incident named after when the agent was last known alive."""
        stamp = last_known.strftime("%Y%m%dT%H%M%S")
        return self.hold(agent.warehouse_id, AGENT_OFFLINE_PREFIX + agent.agent_id,
                         reason=reason, now=now,
                         incident_hint=f"{agent.warehouse_id}-agent-{how}-{stamp}")

    def _lift_offline(self, status: AgentStatus, now: datetime) -> list[Action]:
        """A birth or a fresh heartbeat: the agent is back, its ``agent_offline`` hold goes."""
        return self.release(status.warehouse_id, AGENT_OFFLINE_PREFIX + status.agent_id, now)

    # -- lifetimes (incarnations) ---------------------------------------------------
    def _lifetime_of(self, agent_id: str,
                     incarnation: str | None) -> Literal["current", "new", "old"]:
        """Which lifetime of the agent an event belongs to (see the module rules)."""
        current = self.incarnation(agent_id)
        if incarnation == current:
            return "current"
        if incarnation is None:
            return "old"  # a v1 payload while the agent's current lifetime has an id
        lifetime = self.state.lifetimes.get(agent_id)
        if lifetime is not None and incarnation in lifetime.retired:
            return "old"
        return "new"

    def _start_lifetime(self, agent_id: str, warehouse_id: str, incarnation: str | None,
                        now: datetime) -> list[Action]:
        old = self.state.lifetimes.get(agent_id)
        previous = old.incarnation if old is not None else None
        retired = [r for r in (old.retired if old else ()) if r not in (previous, incarnation)]
        if previous is not None:
            retired.append(previous)
        replaced = (old is not None or agent_id in self.state.agents
                    or any(r.agent_id == agent_id for r in self.state.breakers.values()))
        new = Lifetime(agent_id, warehouse_id, incarnation, tuple(retired[-RETIRED_KEEP:]), now)
        self.state.lifetimes[agent_id] = new
        # The new lifetime numbers its events from zero again: what dedupe knew of the
        # agent would only drop them.
        self.state.processed = {k for k in self.state.processed if k[0] != agent_id}
        return [LifetimeStarted(new, previous, replaced)]

    # -- sessions and heartbeats ------------------------------------------------------
    def _heard_from(self, agent_id: str, incarnation: str | None, session_seq: int,
                    now: datetime) -> None:
        # A live breaker event proves the session alive. Kept in memory only (the next
        # heartbeat persists last_seen): losing it on a restart only shortens the wait.
        current = self.state.agents.get(agent_id)
        if (current is not None and current.online and current.session_seq == session_seq
                and current.incarnation == incarnation and current.last_seen < now):
            self.state.agents[agent_id] = replace(current, last_seen=now)

    def _feed_heartbeat(self, current: AgentRecord, status: AgentStatus,
                        now: datetime) -> list[Action]:
        """An online status of the current session again: a heartbeat, or a replay."""
        # Any other ts is a new publication (QoS 1 keeps one client's order per topic); a
        # strict "newer" test would take an agent whose clock stepped back (NTP) for dead.
        fresh = status.ts != current.last_birth_at
        if not fresh:
            if status.heartbeat_s == current.heartbeat_s:
                return []
            # A retained replay after a restart brings back the advertised interval
            # (not persisted) but is no evidence of life.
            record = replace(current, heartbeat_s=status.heartbeat_s)
            self.state.agents[status.agent_id] = record
            return [AgentRecorded(record)]
        record = replace(current, last_birth_at=status.ts, heartbeat_s=status.heartbeat_s,
                         last_seen=max(now, current.last_seen))
        self.state.agents[status.agent_id] = record
        actions: list[Action] = [AgentRecorded(record)]
        actions += self._lift_offline(status, now)
        return actions

    def _feed_status(self, status: AgentStatus, now: datetime) -> list[Action]:
        online = status.state is AgentState.ONLINE
        actions: list[Action] = []
        if status.incarnation != self.incarnation(status.agent_id):
            if not online:
                # A will of another lifetime (the replaced gateway's, arriving late or
                # retained): it says nothing about the current one.
                return []
            actions += self._start_lifetime(status.agent_id, status.warehouse_id,
                                            status.incarnation, now)
        current = self.state.agents.get(status.agent_id)
        # Sessions of an earlier lifetime do not order this one's.
        if current is not None and current.incarnation == status.incarnation:
            new_key = _session_key(status.session_seq, online)
            old_key = _session_key(current.session_seq, current.online)
            if new_key == old_key and online:
                return actions + self._feed_heartbeat(current, status, now)
            if new_key <= old_key:
                # Stale or repeated (e.g. a last will older than the current birth).
                if current.last_seen < now and not current.online:
                    self.state.agents[status.agent_id] = replace(current, last_seen=now)
                    return [*actions, AgentRecorded(self.state.agents[status.agent_id])]
                return actions
        if online:
            record = AgentRecord(
                agent_id=status.agent_id,
                warehouse_id=status.warehouse_id,
                session_seq=status.session_seq,
                online=True,
                offline_since=None,
                last_birth_at=status.ts,
                last_death_at=current.last_death_at if current else None,
                last_seen=now,
                heartbeat_s=status.heartbeat_s,
                incarnation=status.incarnation,
            )
        else:
            # The will's own ts is stamped at connect time, so the receive time is
            # when the agent was last known to be gone.
            offline_since = now
            if current is not None and not current.online and current.offline_since:
                offline_since = current.offline_since
            record = AgentRecord(
                agent_id=status.agent_id,
                warehouse_id=status.warehouse_id,
                session_seq=status.session_seq,
                online=False,
                offline_since=offline_since,
                last_birth_at=current.last_birth_at if current else None,
                last_death_at=now,
                last_seen=now,
                incarnation=status.incarnation,
            )
        self.state.agents[status.agent_id] = record
        actions.append(AgentRecorded(record))
        if online:
            actions += self._lift_offline(status, now)
        return actions
