"""The pure rule state machine, fed event time: scenarios plus hypothesis properties."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from edge_agent import rule_snapshots
from edge_agent.rule_types import Notice, RuleSpec, Transition
from edge_agent.rules import Reading, RuleMachine
from protocols.models import BreakerState

T0 = datetime(2026, 1, 15, 2, 0, tzinfo=UTC)
OK, PENDING, TRIPPED = BreakerState.OK, BreakerState.PENDING, BreakerState.TRIPPED
CLEARING, UNKNOWN = BreakerState.CLEARING, BreakerState.UNKNOWN


def make_spec(**overrides: Any) -> RuleSpec:
    values: dict[str, Any] = {
        "id": "temp_high",
        "zone": "cold_room_2",
        "breaker": "cold_chain",
        "metric": "temperature_c",
        "above": 8.0,
        "below": None,
        "for_s": 300.0,
        "min_readings": 3,
        "dip_grace_s": 0.0,
        "clear_threshold": 7.5,
        "clear_for_s": 120.0,
        "min_tripped_s": 0.0,
        "silence_trips_after_s": None,
        "max_gap_s": {"s1": 120.0},
    }
    values.update(overrides)
    return RuleSpec(**values)


def machine(**overrides: Any) -> RuleMachine:
    m = RuleMachine.create(make_spec(**overrides), "gw-1", T0)
    m.feed(reading(0, 5.0))  # a normal first reading: unknown -> ok
    assert m.state is OK
    return m


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def reading(seconds: float, value: float, sensor: str = "s1") -> Reading:
    return Reading(sensor, "cold_room_2", "temperature_c", value, at(seconds), at(seconds))


def feed_all(m: RuleMachine, points: Sequence[tuple[float, float]]) -> list[Transition]:
    out: list[Transition] = []
    for seconds, value in points:
        out += [a for a in m.feed(reading(seconds, value)) if isinstance(a, Transition)]
    return out


def test_trips_at_the_first_reading_at_five_minutes_never_earlier() -> None:
    m = machine()
    for seconds in range(10, 300, 30):  # 10 .. 280: held 270 s at most
        assert TRIPPED not in [t.state for t in feed_all(m, [(seconds, 9.0)])]
        assert m.state is PENDING
    trips = feed_all(m, [(310, 9.0)])
    assert [t.state for t in trips] == [TRIPPED]
    assert trips[0].reason == "threshold_exceeded"
    assert trips[0].event_time == at(310)
    assert trips[0].episode_id is not None and "cold_room_2/temp_high" in trips[0].episode_id
    assert len(trips[0].values) == 11 and trips[0].values[0].ts == at(10)


def test_trips_exactly_at_the_duration_boundary() -> None:
    m = machine()
    trips = feed_all(m, [(100, 9.0), (250, 9.0), (399, 9.0), (400, 9.0)])
    assert [t.state for t in trips] == [PENDING, TRIPPED]
    assert trips[-1].event_time == at(400)


def test_one_reading_followed_by_silence_cannot_trip() -> None:
    m = machine(silence_trips_after_s=None)
    feed_all(m, [(10, 12.0)])
    actions = m.tick(at(10 + 121))
    assert m.state is UNKNOWN
    assert any(isinstance(a, Notice) and a.kind == "sensor_silent" for a in actions)
    m.tick(at(10_000))
    assert m.state is UNKNOWN


def test_needs_min_readings_in_the_span() -> None:
    m = machine(max_gap_s={"s1": 1000.0})
    assert [t.state for t in feed_all(m, [(10, 9.0), (320, 9.0)])] == [PENDING]
    assert [t.state for t in feed_all(m, [(330, 9.0)])] == [TRIPPED]


def test_reading_back_below_limit_resets_pending() -> None:
    m = machine()
    feed_all(m, [(10, 9.0), (100, 9.0), (200, 7.9)])
    assert m.state is OK
    trips = feed_all(m, [(250, 9.0), (400, 9.0), (549, 9.0)])
    assert m.state is PENDING and not [t for t in trips if t.state is TRIPPED]
    assert [t.state for t in feed_all(m, [(550, 9.0)])] == [TRIPPED]


def test_dip_grace_tolerates_a_short_dip_and_logs_it() -> None:
    m = machine(dip_grace_s=30.0)
    feed_all(m, [(10, 9.0), (100, 7.0)])
    assert m.state is PENDING
    actions = m.feed(reading(120, 9.0))
    assert any(isinstance(a, Notice) and a.kind == "dip_tolerated" for a in actions)
    assert [t.state for t in feed_all(m, [(310, 9.0)])] == [TRIPPED]


def test_dip_longer_than_grace_resets_pending() -> None:
    m = machine(dip_grace_s=30.0)
    feed_all(m, [(10, 9.0), (100, 7.0), (140, 7.0)])
    assert m.state is OK


def test_clears_only_below_clear_threshold_held_for_clear_time() -> None:
    m = machine()
    feed_all(m, [(0 + s, 9.0) for s in (10, 160, 310)])
    assert m.state is TRIPPED
    feed_all(m, [(320, 7.8), (330, 7.6)])  # below the limit, not below 7.5: still tripped
    assert m.state is TRIPPED
    assert [t.state for t in feed_all(m, [(340, 7.4)])] == [CLEARING]
    assert feed_all(m, [(400, 7.0), (459, 7.2)]) == []
    done = feed_all(m, [(460, 7.1)])
    assert [(t.state, t.reason) for t in done] == [(OK, "cleared")]
    assert m.episode is None


def test_clearing_interrupted_returns_to_tripped() -> None:
    m = machine()
    feed_all(m, [(10, 9.0), (160, 9.0), (310, 9.0), (320, 7.0)])
    assert m.state is CLEARING
    assert [(t.state, t.reason) for t in feed_all(m, [(330, 7.6)])] == [
        (TRIPPED, "clearing_interrupted")
    ]


def test_min_time_tripped_holds_the_trip() -> None:
    m = machine(clear_for_s=0.0, min_tripped_s=600.0)
    feed_all(m, [(10, 9.0), (160, 9.0), (310, 9.0), (320, 5.0), (800, 5.0)])
    assert m.state is CLEARING
    feed_all(m, [(910, 5.0)])
    assert m.state is OK


def test_noisy_sensor_near_the_limit_does_not_flap() -> None:
    m = machine()
    feed_all(m, [(10, 9.0), (160, 9.0), (310, 9.0)])
    noise = [(320 + 10 * i, 7.6 if i % 2 else 8.2) for i in range(200)]
    assert feed_all(m, noise) == []
    assert m.state is TRIPPED


def test_silence_never_clears_a_trip() -> None:
    m = machine()
    feed_all(m, [(10, 9.0), (160, 9.0), (310, 9.0), (320, 7.0)])
    assert m.state is CLEARING
    m.tick(at(1000))
    assert m.state is TRIPPED
    m.tick(at(10_000))
    assert m.state is TRIPPED


def test_cold_room_silence_trips_after_configured_time() -> None:
    m = machine(silence_trips_after_s=600.0)
    m.tick(at(121))
    assert m.state is UNKNOWN
    assert m.tick(at(599)) == []
    trips = [a for a in m.tick(at(600)) if isinstance(a, Transition)]
    assert [(t.state, t.reason) for t in trips] == [(TRIPPED, "sensor_silent")]
    assert trips[0].episode_id is not None


def test_data_returning_after_unknown_is_not_a_new_crossing() -> None:
    m = machine()
    m.tick(at(500))
    assert m.state is UNKNOWN
    back = feed_all(m, [(600, 9.0)])
    assert [(t.state, t.reason) for t in back] == [(PENDING, "data_returned")]
    # The trip still needs the full duration counted from the return.
    assert feed_all(m, [(700, 9.0), (899, 9.0)]) == []
    assert [t.state for t in feed_all(m, [(900, 9.0)])] == [TRIPPED]


def test_unknown_does_not_count_toward_a_trip() -> None:
    m = machine()
    feed_all(m, [(10, 9.0), (100, 9.0)])
    m.tick(at(300))
    assert m.state is UNKNOWN
    assert [t.state for t in feed_all(m, [(310, 9.0)])] == [PENDING]
    assert m.pending_since == at(310)


def test_out_of_order_and_duplicate_readings_are_dropped_deterministically() -> None:
    m = machine()
    feed_all(m, [(10, 9.0), (100, 9.0)])
    late = m.feed(reading(50, 1.0))
    dup = m.feed(reading(100, 1.0))
    assert [a.kind for a in late if isinstance(a, Notice)] == ["out_of_order"]
    assert [a.kind for a in dup if isinstance(a, Notice)] == ["duplicate"]
    assert m.state is PENDING and m.bad_count == 2


def test_countdown_while_pending() -> None:
    m = machine()
    feed_all(m, [(10, 9.0), (70, 9.0)])
    cd = m.countdown(at(100))
    assert cd.state is PENDING and cd.trips_at == at(310)
    assert cd.seconds_left == 210 and cd.readings_in_window == 2
    assert m.countdown(at(400)).seconds_left == 0


def test_below_rule_trips_when_too_cold() -> None:
    m = machine(above=None, below=2.0, clear_threshold=2.5)
    feed_all(m, [(10, 1.0), (160, 1.5), (310, 0.5)])
    assert m.state is TRIPPED
    feed_all(m, [(320, 2.2)])
    assert m.state is TRIPPED


def test_worst_live_sensor_of_the_zone_counts() -> None:
    m = machine(max_gap_s={"s1": 120.0, "s2": 120.0})
    for s in (10, 70, 130, 190, 250, 310):
        m.feed(reading(s, 5.0, "s1"))
        m.feed(reading(s + 1, 9.0, "s2"))
    assert m.state is TRIPPED


def restored(m: RuleMachine, down_s: float, tolerance: float = 900.0) -> RuleMachine:
    assert m.last_ts is not None
    return rule_snapshots.restore(
        m.spec,
        "gw-1",
        rule_snapshots.snapshot(m),
        saved_at=m.last_ts,
        now=m.last_ts + timedelta(seconds=down_s),
        outage_tolerance_s=tolerance,
    )


def test_restart_within_tolerance_rebuilds_pending() -> None:
    m = machine()
    feed_all(m, [(10, 9.0), (100, 9.0)])
    back = restored(m, 60)
    assert back.state is PENDING and back.pending_since == at(10) and back.bad_count == 2
    assert [t.state for t in feed_all(back, [(310, 9.0)])] == [TRIPPED]


def test_restart_within_tolerance_rebuilds_tripped_with_its_episode() -> None:
    m = machine()
    feed_all(m, [(10, 9.0), (160, 9.0), (310, 9.0)])
    back = restored(m, 600)
    assert back.state is TRIPPED and back.episode == m.episode


def test_restart_after_long_outage_starts_unknown_but_keeps_a_trip() -> None:
    pending = machine()
    feed_all(pending, [(10, 9.0), (100, 9.0)])
    assert restored(pending, 5000).state is UNKNOWN
    tripped = machine()
    feed_all(tripped, [(10, 9.0), (160, 9.0), (310, 9.0)])
    back = restored(tripped, 5000)
    assert back.state is TRIPPED and back.episode == tripped.episode


# -- properties -----------------------------------------------------------------
steps = st.lists(
    st.tuples(st.integers(min_value=1, max_value=90), st.sampled_from([5.0, 7.9, 8.0, 8.1, 12.0])),
    min_size=1,
    max_size=80,
)


def reference_trip_time(points: list[tuple[float, float]], for_s: float, k: int) -> float | None:
    """Independent statement of the trip condition (no dip grace, no gaps)."""
    start: float | None = None
    count = 0
    for ts, value in points:
        if value > 8.0:
            if start is None:
                start, count = ts, 0
            count += 1
            if ts - start >= for_s and count >= k:
                return ts
        else:
            start = None
    return None


@settings(max_examples=300, deadline=None)
@given(steps=steps, k=st.integers(min_value=1, max_value=5))
def test_property_trips_exactly_at_first_reading_past_duration(
    steps: list[tuple[int, float]], k: int
) -> None:
    m = machine(min_readings=k, max_gap_s={"s1": 10_000.0})
    points: list[tuple[float, float]] = []
    ts = 0.0
    for dt, value in steps:
        ts += dt
        points.append((ts, value))
    expected = reference_trip_time(points, 300.0, k)
    tripped_at = None
    for seconds, value in points:
        for t in feed_all(m, [(seconds, value)]):
            if t.state is TRIPPED and tripped_at is None:
                tripped_at = seconds
        if tripped_at is not None:
            break
    assert tripped_at == expected


@settings(max_examples=200, deadline=None)
@given(
    spikes=st.lists(
        st.tuples(
            st.integers(min_value=1, max_value=290),  # spike length < 5 min
            st.integers(min_value=30, max_value=3600),  # normal time after it
            st.floats(min_value=8.01, max_value=25.0),
        ),
        min_size=1,
        max_size=40,
    )
)
def test_property_noisy_day_of_short_door_open_spikes_never_trips(
    spikes: list[tuple[int, int, float]],
) -> None:
    m = machine()
    ts = 0.0
    for length, normal, peak in spikes:
        # a spike sampled every 10 s for less than 5 min, then normal readings
        for offset in range(0, length, 10):
            feed_all(m, [(ts + 1 + offset, peak)])
        ts += 1 + length
        for offset in range(0, normal, 30):
            feed_all(m, [(ts + 1 + offset, 4.0 + (offset % 3))])
        ts += 1 + normal
        assert m.state in (OK, PENDING)
    assert m.state is OK


@settings(max_examples=200, deadline=None)
@given(noise=st.lists(st.floats(min_value=7.5, max_value=10.0), min_size=1, max_size=200))
def test_property_no_flapping_while_noise_stays_above_the_clear_threshold(
    noise: list[float],
) -> None:
    m = machine()
    feed_all(m, [(10, 9.0), (160, 9.0), (310, 9.0)])
    feed_all(m, [(320 + 10 * i, v) for i, v in enumerate(noise)])
    assert m.state is TRIPPED


@settings(max_examples=200, deadline=None)
@given(
    events=st.lists(
        st.tuples(st.integers(min_value=0, max_value=2000), st.floats(min_value=-10, max_value=20)),
        max_size=60,
    )
)
def test_property_duplicates_change_nothing_and_replays_are_deterministic(
    events: list[tuple[int, float]],
) -> None:
    once, twice, again = machine(), machine(), machine()
    out_once = [(t.state, t.event_time) for t in feed_all(once, events)]
    doubled = [e for e in events for _ in (0, 1)]
    out_twice = [(t.state, t.event_time) for t in feed_all(twice, doubled)]
    assert out_once == out_twice
    assert out_once == [(t.state, t.event_time) for t in feed_all(again, events)]
    assert rule_snapshots.snapshot(once) == rule_snapshots.snapshot(twice)


# -- several sensors, several clocks ----------------------------------------------
MAX_SKEW_S = 30


@st.composite
def zone_feeds(draw: st.DrawFn) -> list[tuple[float, str, float]]:
    """Readings of 2-4 sensors as the agent times them: each by its own clock, offset
    from the gateway's by at most max_skew_s, merged in arrival order.
    Returns (event time s, sensor, value) in the order the agent receives them."""
    count = draw(st.integers(min_value=2, max_value=4))
    arrivals: list[tuple[float, int, float, float]] = []
    for i in range(count):
        offset = draw(st.integers(min_value=-MAX_SKEW_S, max_value=MAX_SKEW_S))
        arrival = 0.0
        for gap, value in draw(steps):
            arrival += gap
            arrivals.append((arrival, i, arrival + offset + MAX_SKEW_S, value))
    arrivals.sort(key=lambda a: (a[0], a[1]))  # the order the broker delivers them
    return [(event_ts, f"s{i}", value) for _, i, event_ts, value in arrivals]


@settings(max_examples=300, deadline=None)
@given(feed=zone_feeds(), k=st.integers(min_value=1, max_value=4))
def test_property_any_sensor_excursion_trips_at_its_first_reading_past_duration(
    feed: list[tuple[float, str, float]], k: int
) -> None:
    sensors = sorted({s for _, s, _ in feed})
    m = RuleMachine.create(
        make_spec(min_readings=k, max_gap_s=dict.fromkeys(sensors, 10_000.0)), "gw-1", T0
    )
    # Independently: each sensor's own trip time; the zone trips at the first reading
    # (in arrival order) that completes any sensor's excursion.
    trip_ts = {
        s: reference_trip_time([(ts, v) for ts, x, v in feed if x == s], 300.0, k)
        for s in sensors
    }
    expected = next(
        (n for n, (ts, s, _) in enumerate(feed) if trip_ts[s] is not None and ts == trip_ts[s]),
        None,
    )
    tripped_at = None
    for n, (ts, sensor, value) in enumerate(feed):
        actions = m.feed(reading(ts, value, sensor))
        assert not [a for a in actions if isinstance(a, Notice) and a.kind == "out_of_order"]
        if any(isinstance(a, Transition) and a.state is TRIPPED for a in actions):
            tripped_at = n
            break
    assert tripped_at == expected
    if expected is None:
        return
    trip = next(a for a in actions if isinstance(a, Transition) and a.state is TRIPPED)
    assert feed[expected][1] in trip.detail  # the operator sees which sensor did it


@settings(max_examples=100, deadline=None)
@given(feed=zone_feeds())
def test_property_a_zone_where_no_sensor_goes_beyond_the_limit_never_trips(
    feed: list[tuple[float, str, float]],
) -> None:
    sensors = sorted({s for _, s, _ in feed})
    m = RuleMachine.create(make_spec(max_gap_s=dict.fromkeys(sensors, 10_000.0)), "gw-1", T0)
    for ts, sensor, value in feed:
        m.feed(reading(ts, min(value, 8.0), sensor))
    assert m.state in (OK, UNKNOWN)


def test_a_sensor_behind_its_neighbours_clock_is_not_dropped() -> None:
    m = machine(max_gap_s={"s1": 120.0, "s2": 120.0})
    for s in range(10, 320, 10):
        m.feed(reading(s, 5.0, "s1"))  # timed on arrival
        late = m.feed(reading(s - 8, 9.0, "s2"))  # its own clock, 8 s behind
        assert not [a for a in late if isinstance(a, Notice)]
    assert m.state is TRIPPED


def combine_machine(combine: str, at_least: int = 1) -> RuleMachine:
    gaps = {"s1": 120.0, "s2": 120.0, "s3": 120.0}
    m = RuleMachine.create(
        make_spec(max_gap_s=gaps, combine=combine, at_least=at_least, min_readings=1), "gw-1", T0
    )
    for s in gaps:
        m.feed(reading(0, 5.0, s))
    return m


def test_combine_all_needs_every_live_sensor_and_at_least_needs_n() -> None:
    one_bad = [(s, 9.0, "s1") for s in (10, 100, 200, 310)]
    for combine, at_least, trips in (("any", 1, True), ("all", 1, False), ("at_least", 2, False)):
        m = combine_machine(combine, at_least)
        for s, v, sensor in one_bad:
            m.feed(reading(s, v, sensor))
        assert (m.state is TRIPPED) is trips, combine
    m = combine_machine("at_least", 2)
    for s in (10, 100, 200, 311):
        m.feed(reading(s, 9.0, "s1"))
        m.feed(reading(s + 1, 9.0, "s2"))
    assert m.state is TRIPPED
    m = combine_machine("all")
    for s in (10, 100, 200, 311):
        for sensor in ("s1", "s2", "s3"):
            m.feed(reading(s, 9.0, sensor))
    assert m.state is TRIPPED


def test_late_and_duplicate_readings_name_their_sensor() -> None:
    m = machine(max_gap_s={"s1": 120.0, "s2": 120.0})
    m.feed(reading(50, 5.0, "s2"))
    late = m.feed(reading(40, 5.0, "s2"))
    dup = m.feed(reading(50, 5.0, "s2"))
    assert [(a.kind, a.sensor_id) for a in late + dup if isinstance(a, Notice)] == [
        ("out_of_order", "s2"),
        ("duplicate", "s2"),
    ]


def test_a_snapshot_from_before_per_sensor_tracking_keeps_its_trip() -> None:
    old_tripped = {"state": "tripped", "since": at(310).isoformat(),
                   "tripped_since": at(310).isoformat(), "episode": "gw-1/cold_room_2/x",
                   "last_ts": at(310).isoformat(), "latest": {"s1": [at(310).isoformat(), 9.0]}}
    back = rule_snapshots.restore(make_spec(), "gw-1", old_tripped, saved_at=at(310),
                               now=at(320), outage_tolerance_s=900)
    assert back.state is TRIPPED and back.episode == "gw-1/cold_room_2/x"
    old_pending = {"state": "pending", "since": at(10).isoformat(),
                   "pending_since": at(10).isoformat(), "bad_count": 2}
    back = rule_snapshots.restore(make_spec(), "gw-1", old_pending, saved_at=at(100),
                               now=at(110), outage_tolerance_s=900)
    assert back.state is UNKNOWN  # its excursion cannot be rebuilt per sensor: start again


def test_a_hot_probe_that_dies_while_another_reads_cold_does_not_hold_the_rule_pending() -> None:
    m = RuleMachine.create(make_spec(max_gap_s={"s1": 120.0, "s2": 120.0}), "gw-1", T0)
    for t in range(0, 180, 30):  # s1 hot for 3 min, s2 cold
        m.feed(reading(t, 12.0, "s1"))
        m.feed(reading(t, 4.0, "s2"))
    assert m.state is PENDING
    for t in range(180, 3600, 30):  # s1 dies; s2 goes on reading 4 °C for an hour
        m.feed(reading(t, 4.0, "s2"))
        m.tick(at(t))
    assert m.state is OK  # not pending with its countdown at zero for the hour
    assert m.tracks["s1"].silent and m.tracks["s1"].pending_since is None
    m.feed(reading(3600, 12.0, "s1"))  # back and still hot: a new excursion, from now
    assert m.state is PENDING and m.pending_since == at(3600)
