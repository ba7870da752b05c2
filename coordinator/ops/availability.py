"""Warehouse availability, derived from breaker events, agent sessions and holds.

A pure state machine: ``feed(message, now)``, ``tick(now)``, ``hold(...)`` and
``release(...)`` return actions; nothing here does I/O or reads a clock. The MQTT
shell (:mod:`coordinator.ops.watcher`) persists the record actions and acts on
:class:`WarehouseUnavailable` / :class:`WarehouseAvailable`.

Rules:
- a warehouse is available when none of its breakers is open and it has no hold
  (``manual`` pause, ``agent_offline:<agent>`` after the grace period,
  ``courier_stale:<carrier>``);
- a breaker event is processed once per ``(agent_id, seq)``; an event older (by
  ``seq`` of the same agent) than the breaker's current state is stale and only
  recorded, so QoS 1 repeats, retained replays and late arrivals never reopen a
  warehouse nor reroute twice;
- ``historical`` events (replayed from an agent's outbox) are recorded only;
- agent sessions are ordered by ``(session_seq, online < offline)``: a last will
  whose ``session_seq`` is older than the current birth is ignored;
- an agent offline for longer than ``agent_offline_grace`` puts an
  ``agent_offline`` hold on its warehouse; a newer birth lifts it;
- liveness: an agent whose birth advertises ``heartbeat_s`` re-publishes its online
  status (same session, newer ``ts``) that often. One that stays online but is heard
  from (fresh heartbeat or live breaker event) for longer than
  ``max(agent_offline_grace, 3 * heartbeat_s)`` is treated as offline: a network
  partition where the broker keeps the session, or a hung process, sends no last will.
  A repeated status with the ``ts`` already seen (a retained replay on resubscribe)
  is not evidence of life; any other ``ts`` is, even an earlier one (clock stepped
  back). A fresh heartbeat lifts the hold.
- incarnations (the lifetime of an agent's state database, see
  :class:`protocols.BreakerEvent`): ``seq`` and ``session_seq`` are only compared
  within one incarnation. Per agent the tracker keeps the current incarnation and the
  ones it replaced (retired). A payload without incarnation counts as the incarnation
  ``None`` (v1 agents: everything behaves as before incarnations existed).

  * a birth whose incarnation differs from the current one starts a new lifetime (the
    status topic is ordered and its retained value is the newest, so the latest birth
    wins; a gateway whose state database was restored from a backup gets a new
    incarnation first, ``python -m edge_agent new-incarnation``);
  * a breaker event with a non-null incarnation that is neither current nor retired
    starts a new lifetime too (a retained event can arrive before its birth); an event
    of a retired incarnation, or without incarnation while the current one has one, is
    from an older lifetime: recorded as stale only;
  * a last will applies only when its incarnation is the current one (``None`` only
    while the current is ``None``): the old gateway's late will never takes the new
    one offline;
  * a new lifetime forgets the agent's dedupe keys and session ordering; the breaker
    states it had reported stay (fail safe) until the new lifetime reports them, and
    then its events win whatever their ``seq``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Literal

from protocols import AgentState, AgentStatus, BreakerEvent, BreakerState

MANUAL_HOLD = "manual"
# Missed heartbeats tolerated before silence counts, whatever the configured grace.
MISSED_HEARTBEATS = 3
AGENT_OFFLINE_PREFIX = "agent_offline:"
COURIER_STALE_PREFIX = "courier_stale:"

EventOutcome = Literal["applied", "stale", "historical"]
# Retired incarnations remembered per agent (one is added per wipe or replacement).
RETIRED_KEEP = 16
# A dedupe key: (agent_id, incarnation, seq).
DedupeKey = tuple[str, str | None, int]


# -- state records (persisted one to one in coordinator.ops.schema) ---------------
@dataclass(frozen=True, slots=True)
class BreakerRecord:
    warehouse_id: str
    breaker: str
    agent_id: str
    state: BreakerState
    open: bool
    episode_id: str | None
    reason: str
    seq: int
    session_seq: int
    since: datetime
    event_time: datetime
    last_seen: datetime
    # The lifetime of the agent that reported this state (None: a v1 agent).
    incarnation: str | None = None


@dataclass(frozen=True, slots=True)
class AgentRecord:
    agent_id: str
    warehouse_id: str
    session_seq: int
    online: bool
    offline_since: datetime | None
    # ``ts`` of the newest online status of the session (its birth or a heartbeat).
    last_birth_at: datetime | None
    last_death_at: datetime | None
    # When the agent last gave evidence of life (receive time, the tracker's clock).
    last_seen: datetime
    # The heartbeat interval the agent advertised; None = it promises none (no
    # silence rule for it).
    heartbeat_s: float | None = None
    # The incarnation of the session this record describes.
    incarnation: str | None = None


@dataclass(frozen=True, slots=True)
class Lifetime:
    """Which incarnation of an agent is current, and which ones it replaced."""

    agent_id: str
    warehouse_id: str
    incarnation: str | None
    retired: tuple[str, ...]
    since: datetime


@dataclass(frozen=True, slots=True)
class Hold:
    warehouse_id: str
    name: str
    incident_hint: str
    reason: str
    since: datetime


# -- actions ------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class BreakerRecorded:
    record: BreakerRecord


@dataclass(frozen=True, slots=True)
class AgentRecorded:
    record: AgentRecord


@dataclass(frozen=True, slots=True)
class LifetimeStarted:
    """An agent's state database was replaced: its seq and sessions start over."""

    lifetime: Lifetime
    previous: str | None
    # False for the first lifetime the tracker ever hears of an agent (nothing to audit).
    replaced: bool


@dataclass(frozen=True, slots=True)
class EventProcessed:
    agent_id: str
    seq: int
    warehouse_id: str
    breaker: str
    open: bool
    historical: bool
    outcome: EventOutcome
    incarnation: str | None = None


@dataclass(frozen=True, slots=True)
class DuplicateDropped:
    agent_id: str
    seq: int


@dataclass(frozen=True, slots=True)
class HoldSet:
    hold: Hold


@dataclass(frozen=True, slots=True)
class HoldLifted:
    warehouse_id: str
    name: str


@dataclass(frozen=True, slots=True)
class WarehouseUnavailable:
    """The warehouse stopped being available: reroute its unshipped orders."""

    warehouse_id: str
    incident_id: str
    cause: str
    reason: str
    at: datetime


@dataclass(frozen=True, slots=True)
class WarehouseAvailable:
    """Every cause cleared: the warehouse takes new orders again."""

    warehouse_id: str
    incident_id: str
    at: datetime


Action = (
    BreakerRecorded
    | AgentRecorded
    | LifetimeStarted
    | EventProcessed
    | DuplicateDropped
    | HoldSet
    | HoldLifted
    | WarehouseUnavailable
    | WarehouseAvailable
)


@dataclass(frozen=True, slots=True)
class TrackerConfig:
    agent_offline_grace: timedelta = timedelta(seconds=120)


@dataclass
class TrackerState:
    """Everything the tracker knows; rebuilt from the database on start."""

    breakers: dict[tuple[str, str], BreakerRecord] = field(default_factory=dict)
    agents: dict[str, AgentRecord] = field(default_factory=dict)
    holds: dict[tuple[str, str], Hold] = field(default_factory=dict)
    processed: set[DedupeKey] = field(default_factory=set)
    lifetimes: dict[str, Lifetime] = field(default_factory=dict)
    # warehouse -> incident id of the current unavailability episode
    incidents: dict[str, str] = field(default_factory=dict)
    used_incidents: set[str] = field(default_factory=set)


def _session_key(session_seq: int, online: bool) -> tuple[int, int]:
    # Within one session the birth comes before the death.
    return (session_seq, 0 if online else 1)


class AvailabilityTracker:
    def __init__(self, config: TrackerConfig | None = None,
                 state: TrackerState | None = None) -> None:
        self.config = config or TrackerConfig()
        self.state = state or TrackerState()

    # -- queries ---------------------------------------------------------------------
    def available(self, warehouse_id: str) -> bool:
        return not self._causes(warehouse_id)

    def incident(self, warehouse_id: str) -> str | None:
        return self.state.incidents.get(warehouse_id)

    def warehouses(self) -> set[str]:
        known = {wh for wh, _ in self.state.breakers}
        known |= {a.warehouse_id for a in self.state.agents.values()}
        known |= {wh for wh, _ in self.state.holds}
        return known

    def open_breakers(self, warehouse_id: str) -> list[BreakerRecord]:
        return sorted(
            (r for (wh, _), r in self.state.breakers.items() if wh == warehouse_id and r.open),
            key=lambda r: r.breaker,
        )

    def holds(self, warehouse_id: str) -> list[Hold]:
        return sorted(
            (h for (wh, _), h in self.state.holds.items() if wh == warehouse_id),
            key=lambda h: h.name,
        )

    def incarnation(self, agent_id: str) -> str | None:
        """The agent's current incarnation (None: unknown or a v1 agent)."""
        lifetime = self.state.lifetimes.get(agent_id)
        return None if lifetime is None else lifetime.incarnation

    def prune_processed(self, keep: int) -> int:
        """Keep the newest ``keep`` dedupe keys of each agent lifetime; return how many
        went. Enough: an older event is stale by the seq of its breaker's state anyway,
        and a repeat of that state's own event is caught by its seq (see _feed_breaker)."""
        by_lifetime: dict[tuple[str, str | None], list[int]] = {}
        for agent_id, incarnation, seq in self.state.processed:
            by_lifetime.setdefault((agent_id, incarnation), []).append(seq)
        dropped: set[DedupeKey] = set()
        for (agent_id, incarnation), seqs in by_lifetime.items():
            if len(seqs) > keep:
                seqs.sort(reverse=True)
                dropped.update((agent_id, incarnation, seq) for seq in seqs[keep:])
        self.state.processed -= dropped
        return len(dropped)

    def _causes(self, warehouse_id: str) -> list[str]:
        causes = [f"breaker:{r.breaker}" for r in self.open_breakers(warehouse_id)]
        causes += [h.name for h in self.holds(warehouse_id)]
        return causes

    # -- inputs ----------------------------------------------------------------------
    def feed(self, message: BreakerEvent | AgentStatus, now: datetime) -> list[Action]:
        if isinstance(message, BreakerEvent):
            return self._feed_breaker(message, now)
        return self._feed_status(message, now)

    def tick(self, now: datetime) -> list[Action]:
        """Put an ``agent_offline`` hold on warehouses whose agent stayed away too long."""
        actions: list[Action] = []
        for agent in sorted(self.state.agents.values(), key=lambda a: a.agent_id):
            if agent.online:
                actions += self._check_silence(agent, now)
                continue
            if agent.offline_since is None:
                continue
            if now - agent.offline_since <= self.config.agent_offline_grace:
                continue
            name = AGENT_OFFLINE_PREFIX + agent.agent_id
            if (agent.warehouse_id, name) in self.state.holds:
                continue
            stamp = agent.offline_since.strftime("%Y%m%dT%H%M%S")
            minutes = self.config.agent_offline_grace.total_seconds() / 60
            actions += self.hold(
                agent.warehouse_id,
                name,
                reason=f"agent {agent.agent_id} offline for more than {minutes:g} min",
                now=now,
                incident_hint=f"{agent.warehouse_id}-agent-offline-{stamp}",
            )
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
        name = AGENT_OFFLINE_PREFIX + agent.agent_id
        if (agent.warehouse_id, name) in self.state.holds:
            return []
        stamp = agent.last_seen.strftime("%Y%m%dT%H%M%S")
        return self.hold(
            agent.warehouse_id,
            name,
            reason=(f"agent {agent.agent_id} silent (no heartbeat) for more than "
                    f"{limit.total_seconds():g} s"),
            now=now,
            incident_hint=f"{agent.warehouse_id}-agent-silent-{stamp}",
        )

    def hold(self, warehouse_id: str, name: str, *, reason: str, now: datetime,
             incident_hint: str) -> list[Action]:
        """Make the warehouse unavailable for ``name`` (idempotent)."""
        key = (warehouse_id, name)
        if key in self.state.holds:
            return []
        before = self.available(warehouse_id)
        new = Hold(warehouse_id, name, incident_hint, reason, now)
        self.state.holds[key] = new
        actions: list[Action] = [HoldSet(new)]
        actions += self._transition(warehouse_id, before, now, incident_hint, name, reason)
        return actions

    def release(self, warehouse_id: str, name: str, now: datetime) -> list[Action]:
        """Lift the hold ``name`` (idempotent)."""
        key = (warehouse_id, name)
        if key not in self.state.holds:
            return []
        before = self.available(warehouse_id)
        del self.state.holds[key]
        actions: list[Action] = [HoldLifted(warehouse_id, name)]
        actions += self._transition(warehouse_id, before, now, "", name, "")
        return actions

    # -- internals -------------------------------------------------------------------
    def _feed_breaker(self, event: BreakerEvent, now: datetime) -> list[Action]:
        actions: list[Action] = []
        lifetime = self._lifetime_of(event.agent_id, event.incarnation)
        if lifetime == "new":
            actions += self._start_lifetime(event.agent_id, event.warehouse_id,
                                            event.incarnation, now)
        dedupe = (event.agent_id, event.incarnation, event.seq)
        key = (event.warehouse_id, event.breaker)
        current = self.state.breakers.get(key)
        if dedupe in self.state.processed or (
                current is not None and current.agent_id == event.agent_id
                and current.incarnation == event.incarnation and current.seq == event.seq):
            # The second test keeps a repeat of the breaker's current event out even
            # after its dedupe key was pruned (a retained replay on every resubscribe).
            return [*actions, DuplicateDropped(event.agent_id, event.seq)]
        self.state.processed.add(dedupe)
        if not event.historical and lifetime != "old":
            self._heard_from(event.agent_id, event.incarnation, event.session_seq, now)
        outcome: EventOutcome
        if event.historical:
            outcome = "historical"
        elif lifetime == "old" or (current is not None and self._is_older(event, current)):
            outcome = "stale"
        else:
            outcome = "applied"
        actions.append(
            EventProcessed(event.agent_id, event.seq, event.warehouse_id, event.breaker,
                           event.open, event.historical, outcome, event.incarnation)
        )
        if outcome != "applied":
            if current is not None and current.last_seen < now:
                self.state.breakers[key] = replace(current, last_seen=now)
                actions.append(BreakerRecorded(self.state.breakers[key]))
            return actions
        before = self.available(event.warehouse_id)
        record = BreakerRecord(
            warehouse_id=event.warehouse_id,
            breaker=event.breaker,
            agent_id=event.agent_id,
            state=event.state,
            open=event.open,
            episode_id=event.episode_id,
            reason=event.reason,
            seq=event.seq,
            session_seq=event.session_seq,
            since=event.since,
            event_time=event.event_time,
            last_seen=now,
            incarnation=event.incarnation,
        )
        self.state.breakers[key] = record
        actions.append(BreakerRecorded(record))
        hint = event.episode_id or f"{event.warehouse_id}-{event.breaker}-{event.seq}"
        actions += self._transition(event.warehouse_id, before, now, hint,
                                    f"breaker:{event.breaker}", event.reason)
        return actions

    @staticmethod
    def _is_older(event: BreakerEvent, current: BreakerRecord) -> bool:
        if event.agent_id == current.agent_id:
            if event.incarnation != current.incarnation:
                # Only an event of the current lifetime gets here: the state was
                # reported by an earlier lifetime, whose seq means nothing now.
                return False
            return event.seq < current.seq
        # A breaker that changed owner: fall back to event time.
        return event.event_time < current.event_time

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
        actions += self.release(status.warehouse_id, AGENT_OFFLINE_PREFIX + status.agent_id,
                                now)
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
            actions += self.release(status.warehouse_id,
                                    AGENT_OFFLINE_PREFIX + status.agent_id, now)
        return actions

    def _transition(self, warehouse_id: str, before: bool, now: datetime, hint: str,
                    cause: str, reason: str) -> list[Action]:
        after = self.available(warehouse_id)
        if before and not after:
            incident = hint
            n = 1
            while incident in self.state.used_incidents:
                n += 1
                incident = f"{hint}-{n}"
            self.state.used_incidents.add(incident)
            self.state.incidents[warehouse_id] = incident
            return [WarehouseUnavailable(warehouse_id, incident, cause, reason, now)]
        if after and not before:
            incident = self.state.incidents.pop(warehouse_id, "")
            return [WarehouseAvailable(warehouse_id, incident, now)]
        return []


def restore(config: TrackerConfig, *, breakers: Iterable[BreakerRecord],
            agents: Iterable[AgentRecord], holds: Iterable[Hold],
            processed: Iterable[DedupeKey], open_incidents: dict[str, str],
            used_incidents: Iterable[str],
            lifetimes: Iterable[Lifetime] = ()) -> AvailabilityTracker:
    """Rebuild a tracker from what was persisted."""
    state = TrackerState(
        breakers={(r.warehouse_id, r.breaker): r for r in breakers},
        agents={a.agent_id: a for a in agents},
        holds={(h.warehouse_id, h.name): h for h in holds},
        processed=set(processed),
        lifetimes={t.agent_id: t for t in lifetimes},
        incidents=dict(open_incidents),
        used_incidents=set(used_incidents),
    )
    return AvailabilityTracker(config, state)
