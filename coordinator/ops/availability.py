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
from dataclasses import replace
from datetime import datetime

from coordinator.ops.agent_liveness import AgentLiveness
from coordinator.ops.availability_state import (
    Action,
    AgentRecord,
    BreakerRecord,
    BreakerRecorded,
    DedupeKey,
    DuplicateDropped,
    EventOutcome,
    EventProcessed,
    Hold,
    Lifetime,
    TrackerConfig,
    TrackerState,
)
from protocols import AgentStatus, BreakerEvent


class AvailabilityTracker(AgentLiveness):
    """The whole tracker: breaker events here, agent sessions and silence in
    :class:`AgentLiveness`, holds and incidents in :class:`AvailabilityCore`."""

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

    # -- inputs ----------------------------------------------------------------------
    def feed(self, message: BreakerEvent | AgentStatus, now: datetime) -> list[Action]:
        if isinstance(message, BreakerEvent):
            return self._feed_breaker(message, now)
        return self._feed_status(message, now)

    # -- breaker events --------------------------------------------------------------
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
