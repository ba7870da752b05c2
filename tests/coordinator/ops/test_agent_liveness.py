"""The tracker's liveness rule: an agent that goes silent without a last will."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import timedelta

from coordinator.ops.availability import AvailabilityTracker, restore
from coordinator.ops.availability_state import (
    AGENT_OFFLINE_PREFIX,
    AgentRecorded,
    TrackerConfig,
    WarehouseAvailable,
    WarehouseUnavailable,
)
from protocols import AgentStatus
from tests.coordinator.ops.factories import T0, agent_status, breaker_event

GRACE = timedelta(seconds=120)
WH = "wh-cc-2"


def beat(session_seq: int, at_s: float, heartbeat_s: float | None = 30) -> AgentStatus:
    status = agent_status(online=True, session_seq=session_seq, at=T0 + timedelta(seconds=at_s))
    return status.model_copy(update={"heartbeat_s": heartbeat_s})


def s(seconds: float) -> timedelta:
    return timedelta(seconds=seconds)


def down(actions: Sequence[object]) -> list[WarehouseUnavailable]:
    return [a for a in actions if isinstance(a, WarehouseUnavailable)]


def tracker() -> AvailabilityTracker:
    return AvailabilityTracker(TrackerConfig(agent_offline_grace=GRACE))


def test_agent_silent_past_grace_without_a_last_will_pauses_its_warehouse() -> None:
    t = tracker()
    t.feed(beat(1, 0), T0)
    assert t.tick(T0 + GRACE) == []  # exactly the grace: still trusted
    assert t.available(WH)
    [pause] = down(t.tick(T0 + GRACE + s(1)))
    assert pause.cause == AGENT_OFFLINE_PREFIX + "gw-cc-2"
    assert "silent" in pause.reason
    assert t.tick(T0 + GRACE + s(60)) == []  # one hold, one reroute


def test_heartbeats_keep_the_agent_online_forever() -> None:
    t = tracker()
    t.feed(beat(1, 0), T0)
    for n in range(1, 200):
        at = T0 + s(30 * n)
        t.feed(beat(1, 30 * n), at)
        assert down(t.tick(at + s(100))) == []
    assert t.available(WH)


def test_fresh_heartbeat_after_silence_reopens_the_warehouse() -> None:
    t = tracker()
    t.feed(beat(1, 0), T0)
    assert down(t.tick(T0 + s(500)))
    back = t.feed(beat(1, 510), T0 + s(510))
    assert any(isinstance(a, WarehouseAvailable) for a in back)
    assert t.available(WH)


def test_retained_replay_of_the_same_status_is_no_evidence_of_life() -> None:
    t = tracker()
    t.feed(beat(1, 0), T0)
    # the broker hands the same retained birth to a resubscribing coordinator
    assert t.feed(beat(1, 0), T0 + s(100)) == []
    assert down(t.tick(T0 + GRACE + s(1)))
    assert not down(t.feed(beat(1, 0), T0 + s(200)))
    assert not t.available(WH)


def test_agent_clock_stepping_back_still_counts_as_heartbeats() -> None:
    t = tracker()
    t.feed(beat(1, 600), T0)  # the agent's clock was 10 min fast...
    for n in range(1, 8):  # ...then NTP set it right: its stamps go back in time
        at = T0 + s(30 * n)
        t.feed(beat(1, 30 * n), at)
        assert down(t.tick(at + s(100))) == []


def test_live_breaker_events_count_as_evidence_of_life() -> None:
    t = tracker()
    t.feed(beat(1, 0), T0)
    t.feed(breaker_event(seq=1, open=False, session_seq=1), T0 + s(100))
    assert down(t.tick(T0 + s(200))) == []
    # a historical replay from the outbox says nothing about the agent being alive now
    t.feed(breaker_event(seq=2, open=False, session_seq=1, historical=True), T0 + s(210))
    assert down(t.tick(T0 + s(221)))


def test_agent_without_heartbeat_is_never_judged_by_silence() -> None:
    t = tracker()
    t.feed(beat(1, 0, heartbeat_s=None), T0)
    assert t.tick(T0 + timedelta(days=3)) == []
    assert t.available(WH)


def test_slow_heartbeat_gets_three_intervals_even_with_a_short_grace() -> None:
    t = AvailabilityTracker(TrackerConfig(agent_offline_grace=s(10)))
    t.feed(beat(1, 0, heartbeat_s=60), T0)
    assert t.tick(T0 + s(180)) == []
    assert down(t.tick(T0 + s(181)))


def test_advertised_heartbeat_survives_a_restart_through_the_retained_replay() -> None:
    t = tracker()
    t.feed(beat(1, 0), T0)
    saved = t.state.agents["gw-cc-2"]
    # the store keeps no heartbeat_s column: a restart starts without it
    restarted = restore(
        TrackerConfig(agent_offline_grace=GRACE),
        breakers=[], agents=[replace(saved, heartbeat_s=None)],
        holds=[], processed=[], open_incidents={}, used_incidents=[],
    )
    actions = restarted.feed(beat(1, 0), T0 + s(60))
    assert [type(a) for a in actions] == [AgentRecorded]
    assert down(restarted.tick(T0 + GRACE + s(1)))


def test_last_will_still_uses_the_offline_grace_from_its_arrival() -> None:
    t = tracker()
    t.feed(beat(1, 0), T0)
    t.feed(agent_status(online=False, session_seq=1), T0 + s(10))
    assert t.tick(T0 + s(130)) == []
    assert down(t.tick(T0 + s(131)))

