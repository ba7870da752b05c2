"""Scenario files: validation with line and field, time references, determinism."""

from __future__ import annotations

import textwrap
from datetime import UTC, datetime, timedelta, timezone

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from simulators.event_stream import events
from simulators.events import ScenarioReading, Tracking
from simulators.region import builtin_region
from simulators.scenario import resolve_time
from simulators.scenario_files import ScenarioError, parse_scenario

GOOD = textwrap.dedent(
    """\
    format: 1
    name: tiny
    start: 2026-01-15T01:00:00+08:00
    end: "01:30"
    seed: 5
    warehouses:
      - id: wh-a
        sensors:
          - id: s1
            zone: cold_room_1
            metrics: [temperature_c, humidity_pct]
            baseline: {temperature_c: 4, humidity_pct: 80}
            noise: {temperature_c: 0.2, humidity_pct: 1}
            door_open: {per_hour: 10, duration_s: [30, 90], rise_c: [1, 3]}
            defrost: {every_s: 900, duration_s: 300, rise_c: 2}
            timeline:
              - {at: "01:10", kind: ramp, to: 9, over_s: 300}
              - {at: "+25m", kind: silence, for_s: 120}
    couriers:
      - {carrier: sf, warehouse: wh-a, shipments: 3, update_every_s: 60,
         silent: [{from: "01:05", to: "01:15"}]}
    """
)


def _error(text: str) -> ScenarioError:
    with pytest.raises(ScenarioError) as caught:
        parse_scenario(text, file="bad.yaml")
    return caught.value


def test_a_good_file_parses() -> None:
    scenario = parse_scenario(GOOD)
    assert scenario.end_at == datetime(2026, 1, 15, 1, 30, tzinfo=timezone(timedelta(hours=8)))


def test_unknown_field_names_its_line_and_path() -> None:
    error = _error(GOOD.replace("interval_s", "x").replace("noise:", "noize:"))
    assert error.file == "bad.yaml"
    assert error.line == 13
    assert error.field == "warehouses.0.sensors.0.noize"
    assert "bad.yaml:13" in str(error)


def test_bad_step_kind_names_the_step_line() -> None:
    error = _error(GOOD.replace("kind: ramp", "kind: rampp"))
    assert error.line == 17
    assert error.field.startswith("warehouses.0.sensors.0.timeline.0")


def test_bad_value_inside_a_step_names_the_field_line() -> None:
    error = _error(GOOD.replace("over_s: 300", "over_s: -3"))
    assert error.line == 17
    assert error.field == "warehouses.0.sensors.0.timeline.0.over_s"  # no pydantic union tag


def test_unquoted_clock_time_gets_a_hint() -> None:
    error = _error(GOOD.replace('{at: "01:10"', "{at: 1:10"))  # YAML 1.1: the int 70
    assert "quote" in str(error)
    assert error.line == 17


def test_time_outside_the_scenario_names_the_step() -> None:
    error = _error(GOOD.replace('"+25m"', '"+2h"'))
    assert error.line == 18
    assert error.field == "warehouses.0.sensors.0.timeline.1.at"
    assert "outside" in str(error)


def test_window_must_end_after_it_starts() -> None:
    error = _error(GOOD.replace('{from: "01:05", to: "01:15"}', '{from: "01:15", to: "01:05"}'))
    assert error.field == "couriers.0.silent.0.to"
    assert error.line == 21


def test_missing_baseline_metric_is_named() -> None:
    error = _error(
        GOOD.replace(
            "baseline: {temperature_c: 4, humidity_pct: 80}", "baseline: {temperature_c: 4}"
        )
    )
    assert "humidity_pct" in str(error)
    assert error.line == 9


def test_start_needs_an_offset() -> None:
    error = _error(GOOD.replace("2026-01-15T01:00:00+08:00", "2026-01-15T01:00:00"))
    assert error.field == "start"
    assert error.line == 3


def test_broken_yaml_names_the_line() -> None:
    error = _error(GOOD.replace("seed: 5", "seed: [5"))
    assert error.line >= 5
    assert "YAML" in str(error)


def test_not_a_mapping() -> None:
    assert "mapping" in str(_error("- just\n- a list\n"))


def test_duplicate_sensor_ids_are_refused() -> None:
    doubled = GOOD.replace(
        "couriers:", "      - {id: s1, zone: z, baseline: {temperature_c: 1}}\ncouriers:"
    )
    error = _error(doubled)
    assert "repeat" in str(error)
    assert error.field == "warehouses.0"


@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(st.text(max_size=300))
def test_junk_text_never_escapes_as_anything_but_a_scenario_error(junk: str) -> None:
    try:
        parse_scenario(junk, file="junk.yaml")
    except ScenarioError as exc:
        assert str(exc).startswith("junk.yaml")


_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(10**6), 10**6)
    | st.floats(allow_nan=True)
    | st.text(max_size=12),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=12,
)


@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(
    path=st.sampled_from(
        ["seed", "end", "name", "warehouses", "couriers", "orders", "expect", "markers"]
    ),
    value=_VALUES,
)
def test_junk_values_in_a_good_file_give_a_line_and_field(path: str, value: object) -> None:
    data = yaml.safe_load(GOOD)
    data[path] = value
    text = yaml.safe_dump(data, sort_keys=False)
    try:
        parse_scenario(text, file="j.yaml")
    except ScenarioError as exc:
        assert exc.line >= 1
        assert exc.field or "YAML" in str(exc) or "end" in str(exc)


def test_clock_times_roll_over_midnight() -> None:
    start = datetime(2026, 1, 14, 23, 30, tzinfo=UTC)
    assert resolve_time("02:12", start) == datetime(2026, 1, 15, 2, 12, tzinfo=UTC)
    assert resolve_time("23:45", start) == datetime(2026, 1, 14, 23, 45, tzinfo=UTC)
    assert resolve_time("+90s", start) == start + timedelta(seconds=90)
    assert resolve_time("2026-01-15T00:00:00", start) == datetime(2026, 1, 15, tzinfo=UTC)


def test_same_seed_same_stream_and_another_seed_another() -> None:
    scenario = parse_scenario(GOOD)
    region = builtin_region()
    first = list(events(scenario, region))
    assert first == list(events(scenario, region))
    other = list(events(scenario, region, seed=6))
    assert [e.at for e in first if isinstance(e, ScenarioReading)] == [
        e.at for e in other if isinstance(e, ScenarioReading)
    ]
    assert first != other


def test_events_are_time_ordered_and_silences_hold() -> None:
    scenario = parse_scenario(GOOD)
    stream = list(events(scenario))
    times = [e.at for e in stream]
    assert times == sorted(times)
    readings = [e for e in stream if isinstance(e, ScenarioReading)]
    silent_from = scenario.start + timedelta(minutes=25)
    assert not [r for r in readings if silent_from <= r.at < silent_from + timedelta(seconds=120)]
    tracking = [e for e in stream if isinstance(e, Tracking)]
    assert tracking
    quiet = (scenario.at("01:05"), scenario.at("01:15"))
    assert not [t for t in tracking if quiet[0] <= t.at < quiet[1]]


def test_a_ramp_reaches_its_target() -> None:
    text = GOOD.replace("noise: {temperature_c: 0.2, humidity_pct: 1}", "noise: {}")
    text = "".join(
        line
        for line in text.splitlines(keepends=True)
        if "door_open" not in line and "defrost" not in line
    )
    scenario = parse_scenario(text)
    readings = {r.at: r.value("temperature_c") for r in events(scenario)
                if isinstance(r, ScenarioReading)}
    assert readings[scenario.at("01:10")] == 4.0
    assert readings[scenario.at("01:12:30")] == 6.5
    assert readings[scenario.at("01:15")] == 9.0
    assert readings[scenario.at("01:20")] == 9.0
