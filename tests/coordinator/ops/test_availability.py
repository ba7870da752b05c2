"""The pure availability tracker, scenario by scenario, and as a property."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from coordinator.ops.availability import AvailabilityTracker, restore
from coordinator.ops.availability_state import (
    MANUAL_HOLD,
    DuplicateDropped,
    EventProcessed,
    TrackerConfig,
    WarehouseAvailable,
    WarehouseUnavailable,
)
from protocols import AgentStatus, BreakerEvent
from tests.coordinator.ops.factories import T0, agent_status, breaker_event


def unavailable(actions: Sequence[object]) -> list[WarehouseUnavailable]:
    return [a for a in actions if isinstance(a, WarehouseUnavailable)]


def test_trip_makes_warehouse_unavailable_with_the_episode_as_incident() -> None:
    tracker = AvailabilityTracker()
    actions = tracker.feed(breaker_event(seq=5, episode="ep-7"), T0)
    [down] = unavailable(actions)
    assert (down.warehouse_id, down.incident_id) == ("wh-cc-2", "ep-7")
    assert not tracker.available("wh-cc-2")


def test_qos1_repeat_is_dropped_as_duplicate() -> None:
    tracker = AvailabilityTracker()
    tracker.feed(breaker_event(seq=5), T0)
    again = tracker.feed(breaker_event(seq=5), T0)
    assert again == [DuplicateDropped("gw-cc-2", 5)]


def test_late_trip_after_clear_never_reopens_or_reroutes() -> None:
    tracker = AvailabilityTracker()
    tracker.feed(breaker_event(seq=5), T0)
    back = tracker.feed(breaker_event(seq=6, open=False), T0)
    assert any(isinstance(a, WarehouseAvailable) for a in back)
    late = tracker.feed(breaker_event(seq=4, episode="ep-0"), T0)
    assert not unavailable(late)
    assert [a.outcome for a in late if isinstance(a, EventProcessed)] == ["stale"]
    assert tracker.available("wh-cc-2")


def test_clear_arriving_before_its_trip_keeps_warehouse_available() -> None:
    tracker = AvailabilityTracker()
    tracker.feed(breaker_event(seq=6, open=False), T0)
    assert not unavailable(tracker.feed(breaker_event(seq=5), T0))
    assert tracker.available("wh-cc-2")


def test_historical_trip_is_recorded_but_never_overwrites_live_state() -> None:
    tracker = AvailabilityTracker()
    tracker.feed(breaker_event(seq=10, open=False), T0)
    actions = tracker.feed(breaker_event(seq=11, historical=True), T0)
    assert not unavailable(actions)
    assert [a.outcome for a in actions if isinstance(a, EventProcessed)] == ["historical"]
    assert tracker.available("wh-cc-2")


def test_second_breaker_trip_in_same_outage_does_not_reroute_again() -> None:
    tracker = AvailabilityTracker()
    tracker.feed(breaker_event(seq=1, breaker="cold_chain", episode="a"), T0)
    more = tracker.feed(breaker_event(seq=2, breaker="humidity", episode="b"), T0)
    assert not unavailable(more)
    tracker.feed(breaker_event(seq=3, breaker="cold_chain", open=False), T0)
    assert not tracker.available("wh-cc-2")
    tracker.feed(breaker_event(seq=4, breaker="humidity", open=False), T0)
    assert tracker.available("wh-cc-2")


def test_stale_last_will_from_an_older_session_is_ignored() -> None:
    tracker = AvailabilityTracker(TrackerConfig(agent_offline_grace=timedelta(seconds=60)))
    tracker.feed(agent_status(online=True, session_seq=4), T0)
    tracker.feed(agent_status(online=False, session_seq=3), T0)
    assert tracker.state.agents["gw-cc-2"].online
    assert tracker.tick(T0 + timedelta(minutes=10)) == []
    assert tracker.available("wh-cc-2")


def test_agent_offline_longer_than_grace_pauses_warehouse_until_it_returns() -> None:
    tracker = AvailabilityTracker(TrackerConfig(agent_offline_grace=timedelta(seconds=60)))
    tracker.feed(agent_status(online=True, session_seq=4), T0)
    tracker.feed(agent_status(online=False, session_seq=4), T0)
    assert tracker.tick(T0 + timedelta(seconds=60)) == []
    [down] = unavailable(tracker.tick(T0 + timedelta(seconds=61)))
    assert down.cause == "agent_offline:gw-cc-2"
    assert tracker.tick(T0 + timedelta(seconds=600)) == []
    back = tracker.feed(agent_status(online=True, session_seq=5), T0 + timedelta(seconds=700))
    assert [a.incident_id for a in back if isinstance(a, WarehouseAvailable)] == [down.incident_id]


def test_birth_of_a_session_already_dead_is_stale() -> None:
    tracker = AvailabilityTracker()
    tracker.feed(agent_status(online=False, session_seq=4), T0)
    tracker.feed(agent_status(online=True, session_seq=4), T0)
    assert not tracker.state.agents["gw-cc-2"].online


def test_manual_hold_is_idempotent_and_release_reopens() -> None:
    tracker = AvailabilityTracker()
    first = tracker.hold("wh-1", MANUAL_HOLD, reason="flood", now=T0, incident_hint="m-1")
    assert [a.incident_id for a in unavailable(first)] == ["m-1"]
    assert tracker.hold("wh-1", MANUAL_HOLD, reason="flood", now=T0, incident_hint="m-2") == []
    assert any(isinstance(a, WarehouseAvailable) for a in tracker.release("wh-1", MANUAL_HOLD, T0))
    assert tracker.release("wh-1", MANUAL_HOLD, T0) == []


def test_reused_incident_id_gets_a_fresh_suffix() -> None:
    tracker = AvailabilityTracker()
    tracker.hold("wh-1", MANUAL_HOLD, reason="x", now=T0, incident_hint="m-1")
    tracker.release("wh-1", MANUAL_HOLD, T0)
    again = tracker.hold("wh-1", MANUAL_HOLD, reason="x", now=T0, incident_hint="m-1")
    assert [a.incident_id for a in unavailable(again)] == ["m-1-2"]


def test_restored_tracker_drops_retained_replay_after_restart() -> None:
    tracker = AvailabilityTracker()
    tracker.feed(breaker_event(seq=5), T0)
    s = tracker.state
    reborn = restore(
        tracker.config, breakers=s.breakers.values(), agents=s.agents.values(),
        holds=s.holds.values(), processed=s.processed, open_incidents=s.incidents,
        used_incidents=s.used_incidents,
    )
    assert reborn.feed(breaker_event(seq=5), T0) == [DuplicateDropped("gw-cc-2", 5)]
    assert not reborn.available("wh-cc-2")


# -- property: order and repetition do not matter ----------------------------------
def agent_history(opens: list[bool], breakers: list[str]) -> list[BreakerEvent | AgentStatus]:
    """One agent's honest history: seq grows; every open run has its own episode."""
    events: list[BreakerEvent | AgentStatus] = [agent_status(online=True, session_seq=1)]
    episode_of: dict[str, str | None] = {}
    for seq, (is_open, breaker) in enumerate(zip(opens, breakers, strict=True), start=1):
        if is_open and episode_of.get(breaker) is None:
            episode_of[breaker] = f"ep-{breaker}-{seq}"
        episode = episode_of.get(breaker) if is_open else None
        if not is_open:
            episode_of[breaker] = None
        events.append(breaker_event(seq=seq, open=is_open, breaker=breaker, episode=episode))
    return events


history = st.integers(min_value=1, max_value=12).flatmap(
    lambda n: st.tuples(
        st.lists(st.booleans(), min_size=n, max_size=n),
        st.lists(st.sampled_from(["cold_chain", "humidity"]), min_size=n, max_size=n),
    )
)


@settings(max_examples=200, deadline=None)
@given(history, st.randoms(use_true_random=False), st.integers(min_value=0, max_value=6))
def test_any_permutation_or_duplication_gives_same_availability_and_one_reroute_per_episode(
    hist: tuple[list[bool], list[str]], rnd: object, dups: int
) -> None:
    import random

    assert isinstance(rnd, random.Random)
    events = agent_history(*hist)
    expected = AvailabilityTracker()
    for e in events:
        expected.feed(e, T0)
    shuffled = list(events) + [rnd.choice(events) for _ in range(dups)]
    rnd.shuffle(shuffled)
    tracker = AvailabilityTracker()
    reroutes: list[str] = []
    for e in shuffled:
        reroutes += [a.incident_id for a in unavailable(list(tracker.feed(e, T0)))]
    assert tracker.available("wh-cc-2") == expected.available("wh-cc-2")
    assert len(reroutes) == len(set(reroutes))
    episodes = {e.episode_id for e in events if isinstance(e, BreakerEvent) and e.open}
    assert set(reroutes) <= episodes
