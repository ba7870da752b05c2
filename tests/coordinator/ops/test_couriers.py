"""The pure courier-silence detector."""

from __future__ import annotations

from datetime import timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from coordinator.ops.couriers import CourierResumed, CourierSilenceDetector, CourierStale
from tests.coordinator.ops.factories import T0, minutes, tracking


def test_carrier_silent_for_more_than_thirty_minutes_is_stale() -> None:
    detector = CourierSilenceDetector(timedelta(minutes=30))
    detector.feed(tracking("SF1", at=T0), T0)
    detector.feed(tracking("SF2", at=T0 + minutes(10)), T0 + minutes(10))
    assert detector.tick(T0 + minutes(40)) == []
    [stale] = detector.tick(T0 + minutes(40) + timedelta(seconds=1))
    assert isinstance(stale, CourierStale)
    assert (stale.warehouse_id, stale.carrier, stale.open_shipments) == ("wh-cc-2", "sf-express", 2)
    assert detector.tick(T0 + minutes(90)) == []  # reported once


def test_fresh_update_clears_and_old_late_scan_does_not() -> None:
    detector = CourierSilenceDetector(timedelta(minutes=30))
    detector.feed(tracking("SF1", at=T0), T0)
    detector.tick(T0 + minutes(31))
    assert detector.feed(tracking("SF1", at=T0 - minutes(5)), T0 + minutes(32)) == []
    late = detector.feed(tracking("SF1", at=T0 + minutes(1)), T0 + minutes(32))
    assert not any(isinstance(a, CourierResumed) for a in late)  # itself 31 min old
    actions = detector.feed(tracking("SF1", at=T0 + minutes(32)), T0 + minutes(32))
    assert CourierResumed("wh-cc-2", "sf-express") in actions


def test_delivered_shipments_do_not_count_as_silent() -> None:
    detector = CourierSilenceDetector(timedelta(minutes=30))
    detector.feed(tracking("SF1", at=T0, status="delivered"), T0)
    detector.feed(tracking("SF1", at=T0 + minutes(1), status="in_transit"), T0 + minutes(1))
    assert detector.tick(T0 + minutes(120)) == []


def test_other_carriers_and_warehouses_are_judged_separately() -> None:
    detector = CourierSilenceDetector(timedelta(minutes=30))
    detector.feed(tracking("SF1", at=T0), T0)
    detector.feed(tracking("YT1", at=T0 + minutes(30), carrier="yto"), T0 + minutes(30))
    detector.feed(tracking("SF9", at=T0 + minutes(30), warehouse="wh-9"), T0 + minutes(30))
    stale = detector.tick(T0 + minutes(31))
    assert [(s.warehouse_id, s.carrier) for s in stale if isinstance(s, CourierStale)] == [
        ("wh-cc-2", "sf-express")]


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=120), min_size=1, max_size=20),
       st.randoms(use_true_random=False))
def test_staleness_depends_on_the_latest_update_not_on_arrival_order(
        offsets: list[int], rnd: object) -> None:
    import random

    assert isinstance(rnd, random.Random)
    updates = [tracking(f"S{i % 3}", at=T0 + minutes(m)) for i, m in enumerate(offsets)]
    shuffled = list(updates)
    rnd.shuffle(shuffled)
    now = T0 + minutes(150)
    verdicts = []
    for order in (updates, shuffled):
        detector = CourierSilenceDetector(timedelta(minutes=30))
        for u in order:
            detector.feed(u, T0 + minutes(120))  # every scan arrives after the last one
        verdicts.append(bool(detector.tick(now)))
    assert verdicts[0] == verdicts[1] == (150 - max(offsets) > 30)


def test_scan_stamped_in_the_future_counts_as_now_and_cannot_mute_silence() -> None:
    detector = CourierSilenceDetector(timedelta(minutes=30))
    far = T0 + timedelta(days=365 * 70)
    [recorded] = detector.feed(tracking("SF1", at=far), T0)
    assert recorded.shipment.last_update_at == T0  # type: ignore[union-attr]
    [stale] = detector.tick(T0 + minutes(31))
    assert isinstance(stale, CourierStale)
