"""Per-zone, per-minute telemetry summaries."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from edge_agent.readings import Reading
from edge_agent.telemetry import TelemetryAggregator
from protocols import TelemetrySummary

T0 = datetime(2026, 1, 15, 2, 0, tzinfo=UTC)


def reading(seconds: float, value: float, zone: str = "cold_room_2") -> Reading:
    ts = T0 + timedelta(seconds=seconds)
    return Reading("s1", zone, "temperature_c", value, ts, ts)


def test_a_minute_is_summarised_when_the_next_one_starts() -> None:
    agg = TelemetryAggregator(60)
    assert [agg.add(reading(s, v)) for s, v in [(0, 5.0), (20, 7.0), (40, 6.0)]] == [None] * 3
    summary = agg.add(reading(61, 9.0))
    assert summary is not None
    assert (summary.count, summary.min, summary.max, summary.last) == (3, 5.0, 7.0, 6.0)
    assert summary.mean == 6.0
    assert summary.window_start == T0 and summary.window_end == T0 + timedelta(seconds=60)
    assert agg.add(reading(30, 1.0)) is None  # late for a closed window: not in charts


def test_flush_closes_windows_once_time_has_moved_past_them() -> None:
    agg = TelemetryAggregator(60)
    agg.add(reading(10, 5.0))
    agg.add(reading(10, 50.0, zone="dock"))
    assert agg.flush(T0 + timedelta(seconds=59)) == []
    assert sorted(s.zone for s in agg.flush(T0 + timedelta(seconds=60))) == ["cold_room_2", "dock"]
    assert agg.flush(T0 + timedelta(seconds=600)) == []


@settings(max_examples=200, deadline=None)
@given(values=st.lists(st.floats(min_value=-60, max_value=80), min_size=1, max_size=50))
def test_property_summaries_are_valid_contract_payloads(values: list[float]) -> None:
    agg = TelemetryAggregator(60)
    for i, value in enumerate(values):
        agg.add(reading(i * 0.5, value))
    (summary,) = agg.flush(T0 + timedelta(hours=1))
    TelemetrySummary(
        warehouse_id="wh-1",
        agent_id="gw-1",
        zone=summary.zone,
        metric="temperature_c",
        window_start=summary.window_start,
        window_end=summary.window_end,
        count=summary.count,
        min=summary.min,
        mean=summary.mean,
        max=summary.max,
        last=summary.last,
        seq=1,
    )
    assert summary.count == len(values) and summary.last == values[-1]
