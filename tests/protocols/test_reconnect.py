"""Broker rotation with full-jitter backoff: spread, caps, rotation, sessions, bad input."""

from __future__ import annotations

import random
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocols.mqtt_url import MqttUrlError
from protocols.reconnect import Attempt, BackoffPolicy, BrokerRotation

T0 = datetime(2026, 1, 15, 2, 0, tzinfo=UTC)
A, B, C = "mqtt://10.0.0.1:1883", "mqtt://10.0.0.2:1883", "mqtts://10.0.0.3:8883"


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def fleet_delays(policy: BackoffPolicy, failures: int, clients: int = 2000) -> list[float]:
    """The delay each of ``clients`` gateways (own random stream) waits after its
    ``failures``-th failure in a row, all losing the broker at the same instant."""
    delays = []
    for seed in range(clients):
        rotation = BrokerRotation([A, B], policy, rng=random.Random(seed).random)
        attempt = rotation.first()
        for _ in range(failures):
            attempt = rotation.failed(T0)
        delays.append(attempt.delay_s)
    return delays


policies = st.builds(
    BackoffPolicy,
    base_s=st.floats(0.01, 5),
    cap_s=st.floats(5, 120),
    multiplier=st.floats(1, 4),
    stable_after_s=st.floats(0, 60),
)


@settings(max_examples=15, deadline=None)
@given(policy=policies, failures=st.integers(1, 12))
def test_a_fleet_that_fails_together_spreads_over_the_whole_window(
    policy: BackoffPolicy, failures: int
) -> None:
    window = policy.window(failures)
    delays = fleet_delays(policy, failures)
    assert all(0 <= d <= window for d in delays)
    # no lockstep: every tenth of the window gets its share (uniform: 200 expected each)
    tenths = Counter(min(int(d / window * 10), 9) for d in delays)
    assert len(tenths) == 10
    assert all(120 <= n <= 280 for n in tenths.values()), tenths
    # and no two gateways share a moment (within a thousandth of the window)
    moments = Counter(round(d / window, 3) for d in delays)
    assert max(moments.values()) <= 10


@given(policy=policies, failures=st.integers(0, 10_000))
def test_the_window_grows_to_the_cap_and_never_overflows(
    policy: BackoffPolicy, failures: int
) -> None:
    window = policy.window(failures)
    assert 0 <= window <= policy.cap_s
    if failures >= 1:
        assert window >= min(policy.base_s, policy.cap_s)
        assert policy.window(failures + 1) >= window


def test_windows_double_from_base_until_the_cap() -> None:
    policy = BackoffPolicy(base_s=0.5, cap_s=3.0)
    assert [policy.window(n) for n in range(6)] == [0.0, 0.5, 1.0, 2.0, 3.0, 3.0]


def test_each_failure_moves_to_the_next_broker_and_wraps_around() -> None:
    rotation = BrokerRotation([A, B, C], rng=lambda: 0.5, start=1)
    assert rotation.first() == Attempt(B, 0.0, 0)
    urls = [rotation.failed(at(i)).url for i in range(4)]
    assert urls == [C, A, B, C]


def test_a_single_broker_is_retried_with_growing_waits() -> None:
    rotation = BrokerRotation([A], BackoffPolicy(base_s=1, cap_s=4), rng=lambda: 0.999)
    attempts = [rotation.failed(at(i)) for i in range(4)]
    assert {a.url for a in attempts} == {A}
    assert [round(a.delay_s, 3) for a in attempts] == [0.999, 1.998, 3.996, 3.996]
    assert [a.failures for a in attempts] == [1, 2, 3, 4]


def test_a_connection_that_stayed_up_resets_the_backoff() -> None:
    rotation = BrokerRotation([A, B], BackoffPolicy(base_s=1, cap_s=60, stable_after_s=10),
                              rng=lambda: 0.999)
    for i in range(5):
        rotation.failed(at(i))
    rotation.connected(at(10))
    after = rotation.failed(at(25))  # up for 15 s: a session
    assert after.failures == 1
    assert after.delay_s < 1


def test_a_broker_that_drops_every_connection_at_once_keeps_the_backoff_growing() -> None:
    rotation = BrokerRotation([A, B], BackoffPolicy(base_s=1, cap_s=60, stable_after_s=10),
                              rng=lambda: 0.999)
    windows = []
    for i in range(5):
        rotation.connected(at(i * 100))
        windows.append(rotation.failed(at(i * 100 + 2)).delay_s)  # up only 2 s each time
    assert windows == sorted(windows)
    assert rotation.failures == 5


def test_the_default_start_spreads_a_fleet_over_the_cluster_nodes() -> None:
    starts = Counter(
        BrokerRotation([A, B, C], rng=random.Random(seed).random).current
        for seed in range(900)
    )
    assert set(starts) == {A, B, C}
    assert all(240 <= n <= 360 for n in starts.values()), starts


def test_the_same_random_stream_gives_the_same_schedule() -> None:
    def schedule(seed: int) -> list[Attempt]:
        rotation = BrokerRotation([A, B, C], rng=random.Random(seed).random)
        return [rotation.failed(at(i)) for i in range(6)]

    assert schedule(7) == schedule(7)
    assert schedule(7) != schedule(8)


@pytest.mark.parametrize("urls", [[], [""], [A, "http://x:1"], [A, "mqtt://:1883"]])
def test_a_bad_broker_list_is_refused(urls: list[str]) -> None:
    with pytest.raises(MqttUrlError, match="urls"):
        BrokerRotation(urls)


def test_the_error_names_the_position_of_the_bad_url() -> None:
    with pytest.raises(MqttUrlError, match=r"urls\[2\]"):
        BrokerRotation([A, B, "mqtt://host:notaport"])


def test_one_string_is_not_taken_for_a_list_of_characters() -> None:
    with pytest.raises(TypeError, match="urls"):
        BrokerRotation(A)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [({"base_s": 0}, "base_s"), ({"base_s": 2, "cap_s": 1}, "cap_s"),
     ({"multiplier": 0.5}, "multiplier"), ({"stable_after_s": -1}, "stable_after_s"),
     ({"base_s": float("nan")}, "base_s")],
)
def test_a_bad_policy_is_refused_naming_the_field(kwargs: dict[str, float], field: str) -> None:
    with pytest.raises(ValueError, match=field):
        BackoffPolicy(**kwargs)


@given(junk=st.lists(st.text(max_size=30), min_size=1, max_size=4))
def test_junk_urls_are_refused_or_accepted_never_crash(junk: list[str]) -> None:
    try:
        rotation = BrokerRotation(junk, rng=lambda: 0.0)
    except MqttUrlError as exc:
        assert "urls" in str(exc)
    else:
        assert rotation.current in junk
