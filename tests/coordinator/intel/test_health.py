"""The health figures as pure functions of past orders."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from coordinator.errors import ConfigError
from coordinator.intel.config import IntelConfig, ReportConfig
from coordinator.intel.health import StorePoint, compute, fixed_cycles
from coordinator.intel.history_store import PastOrder
from coordinator.settings import Settings
from protocols.geo import offset_km

T0 = datetime(2026, 11, 1, 2, 0, tzinfo=UTC)
STORE = StorePoint("S1", 30.27, 120.16)


def _at(north_km: float, east_km: float, n: int = 0) -> PastOrder:
    lat, lon = offset_km(STORE.lat, STORE.lon, north_km, east_km)
    return PastOrder(f"O{n}", T0, "meituan", lat=lat, lon=lon,
                     delivered_at=T0 + timedelta(hours=1))


@pytest.mark.parametrize(("north", "east", "near"), [
    (4.9, 0, True), (5.1, 0, False), (0, 4.9, True), (0, -5.1, False), (3.5, 3.5, True),
    (3.6, 3.6, False),
])
def test_near_store_counts_by_great_circle_distance_across_grid_cells(
        north: float, east: float, near: bool) -> None:
    report = compute([_at(north, east)], [STORE], since=T0, until=T0 + timedelta(days=1),
                     config=ReportConfig())
    assert report.near_store["within"] == int(near)


def test_a_store_ordering_every_third_day_has_a_cycle_and_a_daily_one_does_not() -> None:
    day = T0.date()
    cycles = fixed_cycles({"every3": {day + timedelta(days=3 * k) for k in range(6)},
                           "daily": {day + timedelta(days=k) for k in range(20)},
                           "random": {day + timedelta(days=k) for k in (0, 1, 5, 6, 13, 14)}},
                          ReportConfig())
    assert [(c.store, c.period_days, c.spread_days) for c in cycles] == [("every3", 3.0, 0.0)]


def test_an_empty_history_gives_empty_figures_not_errors() -> None:
    report = compute([], [STORE], since=T0, until=T0, config=ReportConfig())
    assert report.orders == 0 and report.heat_map is None
    assert set(report.radar.values()) == {None}


@pytest.mark.parametrize(("section", "field"), [
    ({"parcels": {"stuck_after_h": -1}}, "intel.parcels.stuck_after_h"),
    ({"geocoder": {"region": "火星市"}}, "intel.geocoder.region"),
    ({"report": {"near_store_km": "far"}}, "intel.report.near_store_km"),
    ({"unknown": 1}, "intel.unknown"),
])
def test_bad_intel_settings_name_the_field(section: dict[str, object], field: str) -> None:
    with pytest.raises(ConfigError, match=field):
        IntelConfig.of(Settings(sections={"intel": section}))
