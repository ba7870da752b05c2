"""Telemetry at head office: stored once, merged into buckets when old, pruned past
retention; on a real SQLite file."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from coordinator.db import Database
from coordinator.ops import telemetry
from coordinator.ops.config import TelemetryConfig
from protocols import TelemetrySummary

T0 = datetime(2026, 11, 24, 2, 0, tzinfo=UTC)


def summary(minute: int, *, zone: str = "cold-1", value: float = 4.0, spread: float = 0.5,
            warehouse: str = "WH-02", count: int = 12,
            metric: str = "temperature_c") -> TelemetrySummary:
    start = T0 + timedelta(minutes=minute)
    return TelemetrySummary.model_validate({
        "warehouse_id": warehouse, "agent_id": "gw-wh-02", "zone": zone, "metric": metric,
        "window_start": start, "window_end": start + timedelta(minutes=1), "count": count,
        "min": value - spread, "mean": value, "max": value + spread, "last": value,
        "seq": abs(minute)})


def test_a_redelivered_summary_is_stored_once_and_series_reads_a_window(
        ops_db: Database) -> None:
    db = ops_db
    assert telemetry.record(db, [summary(m, value=3.0 + m) for m in range(5)]) == 5
    assert telemetry.record(db, [summary(2, value=99.0)]) == 0  # QoS 1 redelivery
    found = telemetry.series(db, "WH-02", T0 + timedelta(minutes=1, seconds=30),
                             T0 + timedelta(minutes=3))
    assert [w.mean for w in found] == [4.0, 5.0, 6.0]
    assert {w.resolution_s for w in found} == {60}
    [newest] = telemetry.latest(db)
    assert (newest.zone, newest.last, newest.window_start) == (
        "cold-1", 7.0, T0 + timedelta(minutes=4))
    assert telemetry.series(db, "WH-02", T0, T0 + timedelta(hours=1), zone="dry") == []


def test_old_minutes_merge_into_buckets_and_retention_drops_the_oldest(
        ops_db: Database) -> None:
    db = ops_db
    # two hours of minutes in one zone, 10 of them above 8 °C, plus one far older minute
    minutes = [summary(m, value=9.0 if 30 <= m < 40 else 4.0) for m in range(120)]
    telemetry.record(db, [*minutes, summary(-60 * 24 * 100)])
    cfg = TelemetryConfig(raw_keep_h=1, bucket_s=900, retention_days=90)
    now = T0 + timedelta(hours=2)
    done = telemetry.maintain(db, now, raw_keep=cfg.raw_keep, bucket_s=cfg.bucket_s,
                              retention=cfg.retention)
    assert done.pruned == 1
    assert done.merged == 60 and done.buckets == 4  # the first hour: four 15-minute buckets
    rows = telemetry.series(db, "WH-02", T0, now)
    buckets = [w for w in rows if w.resolution_s == 900]
    assert [w.window_start for w in buckets] == [T0 + timedelta(minutes=15 * i)
                                                 for i in range(4)]
    hot = buckets[2]  # 02:30-02:45 holds the ten hot minutes
    assert (hot.count, hot.max, hot.min) == (15 * 12, 9.5, 3.5)
    assert hot.mean == pytest.approx((10 * 9.0 + 5 * 4.0) / 15)
    assert len([w for w in rows if w.resolution_s == 60]) == 60  # the last hour stays raw
    # a second pass finds nothing left to merge; a late raw minute joins its bucket
    telemetry.record(db, [summary(5, value=20.0)])
    again = telemetry.maintain(db, now, raw_keep=cfg.raw_keep, bucket_s=cfg.bucket_s,
                               retention=cfg.retention)
    assert (again.merged, again.buckets, again.pruned) == (1, 1, 0)
    first = telemetry.series(db, "WH-02", T0, T0 + timedelta(minutes=1))[0]
    assert (first.resolution_s, first.count, first.max) == (900, 16 * 12, 20.5)


def test_a_setting_that_keeps_raw_data_longer_than_everything_is_refused() -> None:
    with pytest.raises(ValueError, match="raw_keep_h must not exceed retention_days"):
        TelemetryConfig(raw_keep_h=48, retention_days=1)


window = st.builds(
    lambda minute, low, width, at, count: summary(
        minute, value=low + width * at, spread=0.0, count=count).model_copy(
            update={"min": low, "max": low + width, "mean": low + width * at,
                    "last": low + width * at}),
    st.integers(0, 14), st.floats(-40, 60), st.floats(0, 30), st.floats(0, 1),
    st.integers(1, 120))


@settings(max_examples=200, deadline=None)
@given(st.lists(window, min_size=1, max_size=15, unique_by=lambda w: w.window_start))
def test_a_merged_bucket_keeps_the_extremes_the_count_and_the_latest_value(
        parts: list[TelemetrySummary]) -> None:
    merged = telemetry.merge([telemetry.window_of(p) for p in parts], 900)
    assert merged.count == sum(p.count for p in parts)
    assert merged.min == min(p.min for p in parts)
    assert merged.max == max(p.max for p in parts)
    assert merged.min <= merged.mean <= merged.max
    assert merged.last == max(parts, key=lambda p: p.window_end).last
    assert merged.window_start == T0 and merged.resolution_s == 900
