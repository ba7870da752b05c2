"""Agent incarnations in the pure tracker: a wiped or replaced gateway (new state
database, seq and session_seq back at zero) is heard again; the old one's late will and
in-flight events are not; payloads without incarnation keep the v1 ordering."""

from __future__ import annotations

import random
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st
from sqlite_utils import Migrations

from coordinator.db import open_database, write_transaction
from coordinator.ops import schema, tracker_store
from coordinator.ops.availability import AvailabilityTracker
from coordinator.ops.availability_state import (
    AGENT_OFFLINE_PREFIX,
    DuplicateDropped,
    EventProcessed,
    LifetimeStarted,
    TrackerConfig,
    WarehouseAvailable,
    WarehouseUnavailable,
)
from protocols import AgentStatus, BreakerEvent
from tests.coordinator.ops.factories import T0, agent_status, breaker_event

WH = "wh-cc-2"
AGENT = "gw-cc-2"
OLD = "0a1b2c3d4e5f60718293a4b5c6d7e8f9"
NEW = "f9e8d7c6b5a4039281706f5e4d3c2b1a"
GRACE = timedelta(seconds=120)


def tracker() -> AvailabilityTracker:
    return AvailabilityTracker(TrackerConfig(agent_offline_grace=GRACE))


def outcomes(actions: Sequence[object]) -> list[str]:
    return [a.outcome for a in actions if isinstance(a, EventProcessed)]


def started(actions: Sequence[object]) -> list[LifetimeStarted]:
    return [a for a in actions if isinstance(a, LifetimeStarted)]


def old_gateway_tripped(t: AvailabilityTracker, incarnation: str | None = OLD) -> None:
    """A gateway that has been up for a long time (session 57, seq 900) and is tripped."""
    t.feed(agent_status(online=True, session_seq=57, incarnation=incarnation), T0)
    t.feed(breaker_event(seq=900, session_seq=57, incarnation=incarnation), T0)
    assert not t.available(WH)


def test_wiped_gateway_with_new_incarnation_is_heard_again() -> None:
    t = tracker()
    old_gateway_tripped(t)
    # The replacement starts from an empty state database.
    birth = t.feed(agent_status(online=True, session_seq=1, incarnation=NEW), T0)
    [lifetime] = started(birth)
    assert (lifetime.previous, lifetime.lifetime.incarnation) == (OLD, NEW)
    assert lifetime.replaced and lifetime.lifetime.retired == (OLD,)
    agent = t.state.agents[AGENT]
    assert (agent.online, agent.session_seq, agent.incarnation) == (True, 1, NEW)
    # Its breaker states are the truth now, whatever their seq.
    assert not t.available(WH)  # fail safe until it reports the breaker
    clear = t.feed(breaker_event(seq=1, open=False, incarnation=NEW), T0)
    assert outcomes(clear) == ["applied"]
    assert any(isinstance(a, WarehouseAvailable) for a in clear)
    trip = t.feed(breaker_event(seq=2, episode="ep-new", incarnation=NEW), T0)
    assert [a.incident_id for a in trip if isinstance(a, WarehouseUnavailable)] == ["ep-new"]
    assert t.feed(breaker_event(seq=2, episode="ep-new", incarnation=NEW), T0) == [
        DuplicateDropped(AGENT, 2)]


def test_payload_without_incarnation_keeps_v1_ordering() -> None:
    t = tracker()
    old_gateway_tripped(t, incarnation=None)
    # A v1 gateway wiped: nothing tells the tracker, so it fails safe as before.
    assert t.feed(agent_status(online=True, session_seq=1), T0) == []
    late = t.feed(breaker_event(seq=1, open=False), T0)
    assert outcomes(late) == ["stale"]
    assert not t.available(WH)
    assert t.feed(breaker_event(seq=900, session_seq=57), T0) == [DuplicateDropped(AGENT, 900)]
    assert t.incarnation(AGENT) is None and not t.state.lifetimes


def test_old_incarnations_last_will_does_not_take_new_gateway_offline() -> None:
    t = tracker()
    old_gateway_tripped(t)
    t.feed(agent_status(online=True, session_seq=1, incarnation=NEW), T0)
    # The broker publishes the old gateway's will late (keepalive timeout), even with a
    # higher session_seq than the new birth.
    will = agent_status(online=False, session_seq=57, incarnation=OLD)
    assert t.feed(will, T0 + timedelta(seconds=30)) == []
    assert t.state.agents[AGENT].online
    assert t.tick(T0 + GRACE * 3) == []
    assert (WH, AGENT_OFFLINE_PREFIX + AGENT) not in t.state.holds
    # A v1 will (an agent from before the upgrade) does not either.
    assert t.feed(agent_status(online=False, session_seq=99), T0) == []
    # The new gateway's own will does.
    t.feed(agent_status(online=False, session_seq=1, incarnation=NEW), T0 + GRACE)
    assert not t.state.agents[AGENT].online


def test_new_gateways_retained_event_before_its_birth_starts_its_lifetime() -> None:
    t = tracker()
    old_gateway_tripped(t)
    # On a resubscribe the retained messages of different topics come in any order.
    clear = t.feed(breaker_event(seq=3, open=False, incarnation=NEW), T0)
    assert [s.previous for s in started(clear)] == [OLD]
    assert outcomes(clear) == ["applied"] and t.available(WH)
    birth = t.feed(agent_status(online=True, session_seq=1, incarnation=NEW), T0)
    assert started(birth) == []
    assert t.state.agents[AGENT].session_seq == 1 and t.state.agents[AGENT].online


def test_in_flight_events_of_the_replaced_gateway_are_stale() -> None:
    t = tracker()
    old_gateway_tripped(t)
    t.feed(agent_status(online=True, session_seq=1, incarnation=NEW), T0)
    t.feed(breaker_event(seq=1, open=False, incarnation=NEW), T0)
    assert t.available(WH)
    late_old = t.feed(breaker_event(seq=901, episode="ep-old", incarnation=OLD), T0)
    late_v1 = t.feed(breaker_event(seq=902, episode="ep-v1"), T0)
    assert outcomes(late_old) == outcomes(late_v1) == ["stale"]
    assert started(late_old) == started(late_v1) == []
    assert t.available(WH) and t.incarnation(AGENT) == NEW


def test_gateway_restored_from_a_backup_comes_back_with_its_birth() -> None:
    t = tracker()
    old_gateway_tripped(t)
    t.feed(agent_status(online=True, session_seq=1, incarnation=NEW), T0)
    t.feed(breaker_event(seq=1, open=False, incarnation=NEW), T0)
    # The old database comes back from a backup taken at seq 800: a birth is the newest
    # word on the status topic, so it wins, and seqs it had used before count again.
    back = t.feed(agent_status(online=True, session_seq=50, incarnation=OLD), T0)
    assert [(s.previous, s.lifetime.retired) for s in started(back)] == [(NEW, (NEW,))]
    trip = t.feed(breaker_event(seq=801, episode="ep-back", incarnation=OLD), T0)
    assert outcomes(trip) == ["applied"] and not t.available(WH)


def test_first_incarnation_of_an_unknown_agent_is_not_reported_as_a_replacement() -> None:
    t = tracker()
    [first] = started(t.feed(agent_status(online=True, session_seq=1, incarnation=NEW), T0))
    assert not first.replaced and first.previous is None
    upgraded = tracker()
    old_gateway_tripped(upgraded, incarnation=None)
    # An agent upgraded in place keeps its database (and seq), and gets an incarnation.
    [up] = started(upgraded.feed(
        agent_status(online=True, session_seq=58, incarnation=NEW), T0))
    assert up.replaced and up.lifetime.retired == ()
    assert outcomes(upgraded.feed(breaker_event(seq=901, open=False, incarnation=NEW),
                                  T0)) == ["applied"]


def test_pruned_dedupe_keys_still_refuse_repeats() -> None:
    t = tracker()
    t.feed(breaker_event(seq=1, breaker="humidity", open=False, incarnation=NEW), T0)
    for seq in range(2, 21):
        t.feed(breaker_event(seq=seq, open=seq % 2 == 1, episode=f"ep-{seq}",
                             incarnation=NEW), T0)
    assert t.prune_processed(5) == 15
    assert {k[2] for k in t.state.processed} == {16, 17, 18, 19, 20}
    # A repeat of a breaker's current event is refused even with its key pruned (the
    # retained state replays on every resubscribe) ...
    assert t.feed(breaker_event(seq=1, breaker="humidity", open=False, incarnation=NEW),
                  T0) == [DuplicateDropped(AGENT, 1)]
    assert t.feed(breaker_event(seq=20, open=False, incarnation=NEW), T0) == [
        DuplicateDropped(AGENT, 20)]
    # ... and an older one is stale: it never reopens nor trips anything.
    older = t.feed(breaker_event(seq=3, episode="ep-3", incarnation=NEW), T0)
    assert outcomes(older) == ["stale"] and t.available(WH)


def test_incarnations_survive_a_coordinator_restart(db_target: str) -> None:
    db = open_database(db_target)
    t = tracker()
    feed = [
        (agent_status(online=True, session_seq=57, incarnation=OLD)),
        (breaker_event(seq=900, session_seq=57, incarnation=OLD)),
        (agent_status(online=True, session_seq=1, incarnation=NEW)),
        (breaker_event(seq=1, session_seq=1, episode="ep-new", incarnation=NEW)),
    ]
    for message in feed:
        with write_transaction(db):
            tracker_store.persist(db, t.feed(message, T0), T0)
    [audit] = db.execute("SELECT action, actor, reason FROM ops_warehouse_audit "
                         "WHERE action = 'agent_incarnation'").fetchall()
    assert audit[1] == AGENT and NEW in audit[2] and OLD in audit[2]
    reborn = tracker_store.load_tracker(db, TrackerConfig(agent_offline_grace=GRACE))
    db.conn.close()
    assert reborn.incarnation(AGENT) == NEW
    assert reborn.state.lifetimes[AGENT].retired == (OLD,)
    assert reborn.state.agents[AGENT].incarnation == NEW
    assert reborn.state.breakers[(WH, "cold_chain")].incarnation == NEW
    assert reborn.feed(breaker_event(seq=1, session_seq=1, episode="ep-new",
                                     incarnation=NEW), T0) == [DuplicateDropped(AGENT, 1)]
    # the old will, retained on the broker, replays on every resubscribe
    assert reborn.feed(agent_status(online=False, session_seq=57, incarnation=OLD), T0) == []
    assert reborn.state.agents[AGENT].online


def test_a_v1_database_migrates_and_keeps_refusing_what_it_had_processed(
        tmp_path: Path) -> None:
    path = tmp_path / "coordinator.sqlite"
    db = open_database(path, migrate=False)
    before = Migrations("coordinator_ops")  # the ops schema as it was before m002
    before()(schema.m001_ops_tables)
    before.apply(db)
    t = tracker()
    for message in (agent_status(online=True, session_seq=57),
                    breaker_event(seq=900, session_seq=57)):
        actions = t.feed(message, T0)
        with write_transaction(db):
            for action in actions:
                if isinstance(action, EventProcessed):  # the v1 insert, without incarnation
                    db.execute("INSERT INTO ops_processed_events (agent_id, seq, warehouse_id, "
                               "breaker, open, historical, outcome, received_at) VALUES "
                               "(?,?,?,?,?,?,?,?)", [action.agent_id, action.seq, WH,
                                                     action.breaker, 1, 0, "applied", "x"])
    db.conn.close()
    db = open_database(path)  # applies m002
    assert db.execute("SELECT agent_id, incarnation, seq FROM ops_processed_events"
                      ).fetchall() == [(AGENT, "", 900)]
    reborn = tracker_store.load_tracker(db, TrackerConfig(agent_offline_grace=GRACE))
    db.conn.close()
    assert (AGENT, None, 900) in reborn.state.processed


# -- property: the old lifetime's stragglers never override the new one --------------
old_and_new = st.tuples(
    st.lists(st.tuples(st.booleans(), st.sampled_from(["cold_chain", "humidity"])),
             min_size=1, max_size=8),
    st.lists(st.tuples(st.booleans(), st.sampled_from(["cold_chain", "humidity"])),
             min_size=1, max_size=8),
)


def lifetime_events(steps: list[tuple[bool, str]], incarnation: str,
                    first_seq: int) -> list[BreakerEvent]:
    return [breaker_event(seq=first_seq + i, open=is_open, breaker=breaker,
                          episode=f"ep-{incarnation[:4]}-{first_seq + i}",
                          session_seq=1 if first_seq == 1 else 57, incarnation=incarnation)
            for i, (is_open, breaker) in enumerate(steps)]


@settings(max_examples=200, deadline=None)
@given(old_and_new, st.randoms(use_true_random=False), st.integers(min_value=0, max_value=6))
def test_after_the_new_birth_any_order_of_stragglers_ends_in_the_new_gateways_state(
        lives: tuple[list[tuple[bool, str]], list[tuple[bool, str]]], rnd: random.Random,
        dups: int) -> None:
    old_steps, new_steps = lives
    old_events = lifetime_events(old_steps, OLD, first_seq=900)
    new_events = lifetime_events(new_steps, NEW, first_seq=1)
    t = tracker()
    t.feed(agent_status(online=True, session_seq=57, incarnation=OLD), T0)
    for e in old_events:
        t.feed(e, T0)
    t.feed(agent_status(online=True, session_seq=1, incarnation=NEW), T0)
    # Redeliveries of the old lifetime, its late will and the new events, in any order.
    mixed: list[BreakerEvent | AgentStatus] = [
        *old_events, *new_events, agent_status(online=False, session_seq=57, incarnation=OLD)]
    mixed += [rnd.choice(mixed) for _ in range(dups)]
    rnd.shuffle(mixed)
    for message in mixed:
        t.feed(message, T0)
    # What each breaker last reported: the new lifetime where it spoke, else the old one.
    last: dict[str, bool] = {b: o for o, b in old_steps}
    last.update({b: o for o, b in new_steps})
    assert t.available(WH) == (not any(last.values()))
    assert t.state.agents[AGENT].online and t.incarnation(AGENT) == NEW
