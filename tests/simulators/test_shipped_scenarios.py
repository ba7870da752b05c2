"""Each shipped scenario generates what it promises (the stream alone, no agents)."""

from __future__ import annotations

import itertools
from datetime import timedelta

import pytest

from simulators.event_stream import events
from simulators.events import Outage, ScenarioReading, Tracking
from simulators.reference import longest_run_s, sustained_trips
from simulators.region import builtin_region
from simulators.scenario import Scenario
from simulators.scenario_files import load_scenario, shipped_scenarios

REGION = builtin_region()


@pytest.fixture(scope="module")
def freezing_rain() -> Scenario:
    return load_scenario("freezing_rain_night")


def test_every_shipped_scenario_is_valid_and_non_empty() -> None:
    names = shipped_scenarios()
    assert {"freezing_rain_night", "power_cut", "courier_silence", "noisy_normal_day"} <= set(names)
    for name in names:
        scenario = load_scenario(name)
        assert any(isinstance(e, ScenarioReading) for e in events(scenario, REGION))


def test_freezing_rain_cold_room_2_crosses_at_0212_and_stays(freezing_rain: Scenario) -> None:
    room = [
        e
        for e in events(freezing_rain, REGION)
        if isinstance(e, ScenarioReading) and e.warehouse == "WH-02" and e.zone == "cold_room_2"
    ]
    crossing = freezing_rain.at("02:12")
    before = [r.value("temperature_c") or 0.0 for r in room if r.at < crossing]
    after = [r.value("temperature_c") or 0.0 for r in room if r.at >= crossing]
    assert max(before) <= 8.0
    assert min(after) > 8.0
    assert room[len(before)].at == crossing


def test_freezing_rain_trips_at_0217_and_nothing_else(freezing_rain: Scenario) -> None:
    trips = sustained_trips(events(freezing_rain, REGION))
    assert [(t.warehouse, t.zone, t.breaker) for t in trips] == [
        ("WH-02", "cold_room_2", "cold_chain")
    ]
    trip = trips[0]
    assert trip.crossed_at == freezing_rain.at("02:12")
    # the first reading at or past five minutes above 8 °C is the 02:17:00 reading
    assert trip.trips_at == freezing_rain.at("02:17")
    assert trip.readings >= 3
    expected = freezing_rain.expect.trips[0]
    assert expected.at is not None and freezing_rain.at(expected.at) == trip.trips_at
    assert [(w.warehouse, w.count) for w in freezing_rain.orders.waiting] == [("WH-02", 287)]


def test_freezing_rain_is_the_same_with_another_seed(freezing_rain: Scenario) -> None:
    # noise is clipped, so the promise does not hang on one lucky seed
    for seed in (1, 2, 3):
        trips = sustained_trips(events(freezing_rain, REGION, seed=seed))
        assert [t.trips_at for t in trips] == [freezing_rain.at("02:17")]


def test_noisy_day_has_spikes_above_8_but_none_lasting_5_minutes() -> None:
    scenario = load_scenario("noisy_normal_day")
    stream = list(events(scenario, REGION))
    assert sustained_trips(stream) == []
    runs = longest_run_s(stream, 8.0, "temperature_c")
    cold_runs = {k: v for k, v in runs.items() if "cold_room" in k}
    assert cold_runs, "the noisy day should have door-open spikes above 8 °C"
    assert max(cold_runs.values()) < 300
    humid = longest_run_s(stream, 75.0, "humidity_pct")
    assert max((v for k, v in humid.items() if "dry" in k), default=0.0) < 600
    readings = [e for e in stream if isinstance(e, ScenarioReading)]
    assert {r.format for r in readings} == {"native", "zigbee2mqtt", "tasmota", "plain"}
    assert any(r.temp_unit == "F" for r in readings)
    assert [e.active for e in stream if isinstance(e, Outage)] == [True, False]


def test_noisy_day_defrost_and_drift_move_the_rooms() -> None:
    scenario = load_scenario("noisy_normal_day")
    temps = [
        e.value("temperature_c") or 0.0
        for e in events(scenario, REGION)
        if isinstance(e, ScenarioReading) and e.warehouse == "WH-07" and e.zone == "cold_room_2"
    ]
    assert max(temps) - min(temps) > 3.0


def test_power_cut_silences_every_sensor_of_the_site() -> None:
    scenario = load_scenario("power_cut")
    stream = list(events(scenario, REGION))
    cut, back = scenario.at("01:10"), scenario.at("02:20")
    site = [e for e in stream if isinstance(e, ScenarioReading) and e.warehouse == "WH-05"]
    assert site and not [r for r in site if cut <= r.at < back]
    assert [r for r in site if r.at >= back]
    others = [e for e in stream if isinstance(e, ScenarioReading) and e.warehouse != "WH-05"]
    assert [r for r in others if cut <= r.at < back]
    outages = [e for e in stream if isinstance(e, Outage)]
    assert [(o.warehouse, o.kind, o.active, o.at) for o in outages] == [
        ("WH-05", "power", True, cut),
        ("WH-05", "power", False, back),
    ]
    assert sustained_trips(stream) == []  # the trip must come from silence, not heat
    assert scenario.expect.trips[0].reason == "sensor_silent"


def test_courier_goes_silent_for_40_minutes_from_one_warehouse() -> None:
    scenario = load_scenario("courier_silence")
    tracking = [e for e in events(scenario, REGION) if isinstance(e, Tracking)]
    sf_03 = sorted(
        t.at
        for t in tracking
        if t.update.carrier == "sf-express" and t.update.warehouse_id == "WH-03"
    )
    gaps = [b - a for a, b in itertools.pairwise(sf_03)]
    assert max(gaps) >= timedelta(minutes=40)
    assert max(gaps) < timedelta(minutes=43)
    silent_from, silent_to = scenario.at("14:00"), scenario.at("14:40")
    assert not [t for t in sf_03 if silent_from <= t < silent_to]
    others = [
        t.at
        for t in tracking
        if (t.update.carrier, t.update.warehouse_id) != ("sf-express", "WH-03")
    ]
    assert [t for t in others if silent_from <= t < silent_to]
    statuses = {t.update.status for t in tracking}
    assert {"picked_up", "in_transit", "delivered"} <= statuses
    assert sustained_trips(events(scenario, REGION)) == []
