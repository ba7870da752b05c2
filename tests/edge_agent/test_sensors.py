"""Sensor payload formats, units and junk."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge_agent.config import SensorConfig
from edge_agent.errors import SensorPayloadError
from edge_agent.sensors import SensorParser

NOW = datetime(2026, 1, 15, 2, 0, tzinfo=UTC)


def parser(fmt: str = "native", **extra: Any) -> SensorParser:
    base: dict[str, Any] = {"id": "s1", "zone": "cold_room_2", "format": fmt}
    if fmt != "native":
        base["topic"] = "some/topic"
    base.update(extra)
    return SensorParser(SensorConfig.model_validate(base), max_skew_s=30)


def native(**fields: Any) -> bytes:
    body = {"v": 1, "sensor_id": "s1", "ts": NOW.isoformat(), **fields}
    return json.dumps(body).encode()


def test_native_reading_keeps_event_time_within_skew() -> None:
    payload = native(
        temperature_c=7.9, humidity_pct=61.2, ts=(NOW - timedelta(seconds=5)).isoformat()
    )
    readings = parser().parse(payload, NOW).readings
    assert [(r.metric, r.value) for r in readings] == [
        ("temperature_c", 7.9),
        ("humidity_pct", 61.2),
    ]
    assert readings[0].ts == NOW - timedelta(seconds=5) and not readings[0].clock_suspect


def test_native_reading_beyond_skew_uses_receive_time_and_is_clock_suspect() -> None:
    payload = native(temperature_c=7.9, ts=(NOW - timedelta(hours=3)).isoformat())
    (reading,) = parser().parse(payload, NOW).readings
    assert reading.ts == NOW and reading.clock_suspect and reading.received_at == NOW


def test_zigbee2mqtt_uses_receive_time() -> None:
    payload = b'{"temperature": 7.9, "humidity": 61.2, "battery": 97, "linkquality": 120}'
    readings = parser("zigbee2mqtt").parse(payload, NOW).readings
    assert [(r.metric, r.value, r.ts) for r in readings] == [
        ("temperature_c", 7.9, NOW),
        ("humidity_pct", 61.2, NOW),
    ]


def test_tasmota_celsius_and_fahrenheit() -> None:
    c = b'{"Time": "2026-01-15T02:00:00", "DS18B20": {"Temperature": 7.9}, "TempUnit": "C"}'
    f = b'{"Time": "2026-01-15T01:59:50", "DS18B20": {"Temperature": 46.4}, "TempUnit": "F"}'
    (rc,) = parser("tasmota", tasmota_sensor="DS18B20").parse(c, NOW).readings
    (rf,) = parser("tasmota", tasmota_sensor="DS18B20").parse(f, NOW).readings
    assert rc.value == 7.9 and rc.ts == NOW
    assert rf.value == pytest.approx(8.0) and rf.ts == NOW - timedelta(seconds=10)


def test_tasmota_finds_the_sensor_block_by_itself() -> None:
    payload = b'{"Time": "2026-01-15T02:00:00", "AM2301": {"Temperature": 21.0, "Humidity": 40}}'
    readings = parser("tasmota").parse(payload, NOW).readings
    assert [(r.metric, r.value) for r in readings] == [
        ("temperature_c", 21.0),
        ("humidity_pct", 40.0),
    ]


def test_plain_number_on_a_metric_topic() -> None:
    (reading,) = parser("plain", metric="humidity_pct").parse(b" 55.5\n", NOW).readings
    assert (reading.metric, reading.value, reading.ts) == ("humidity_pct", 55.5, NOW)


@pytest.mark.parametrize(
    ("fmt", "extra", "payload", "field", "reason"),
    [
        ("native", {}, b"{not json", "$", "json"),
        ("native", {}, native(temperature_c="warm"), "temperature_c", "type"),
        ("native", {}, native(temperature_c=95.0), "temperature_c", "range"),
        ("native", {}, native(), "$", "missing"),
        (
            "native",
            {},
            b'{"v":1,"sensor_id":"s1","ts":"2026-01-15T02:00:00Z","temperature_c":NaN}',
            "temperature_c",
            "non_finite",
        ),
        ("native", {}, native(temperature_c=5.0, sensor_id="other"), "sensor_id", "sensor_id"),
        ("native", {}, native(temperature_c=5.0, ts="yesterday"), "ts", "type"),
        ("zigbee2mqtt", {}, b'{"temperature": "7.9"}', "temperature", "type"),
        ("zigbee2mqtt", {}, b'{"temperature": true}', "temperature", "type"),
        ("zigbee2mqtt", {}, b'{"temperature": Infinity}', "temperature", "non_finite"),
        ("zigbee2mqtt", {}, b'{"humidity": 140}', "humidity_pct", "range"),
        ("zigbee2mqtt", {}, b'{"battery": 97}', "temperature", "missing"),
        ("zigbee2mqtt", {}, b"[1, 2]", "$", "type"),
        (
            "tasmota",
            {"tasmota_sensor": "DS18B20"},
            b'{"DS18B20": {"Temperature": 300}, "TempUnit": "F"}',
            "temperature_c",
            "range",
        ),
        (
            "tasmota",
            {"tasmota_sensor": "DS18B20"},
            b'{"DS18B20": {"Temperature": 5}, "TempUnit": "K"}',
            "TempUnit",
            "type",
        ),
        (
            "tasmota",
            {"tasmota_sensor": "DS18B20"},
            b'{"AM2301": {"Temperature": 5}}',
            "DS18B20",
            "missing",
        ),
        ("tasmota", {}, b'{"Time": 5, "X": {"Temperature": 5}}', "Time", "type"),
        ("plain", {"metric": "temperature_c"}, b"nan", "$", "non_finite"),
        ("plain", {"metric": "temperature_c"}, b"-80", "temperature_c", "range"),
        ("plain", {"metric": "temperature_c"}, b"\xff\xfe", "$", "type"),
        # float() reads these as 85 and 7.9; no firmware prints them
        ("plain", {"metric": "temperature_c"}, b"8_5", "$", "type"),
        ("plain", {"metric": "temperature_c"}, "７.９".encode(), "$", "type"),
        ("plain", {"metric": "temperature_c"}, b"7,9", "$", "type"),
    ],
)
def test_junk_is_rejected_naming_the_field(
    fmt: str, extra: dict[str, Any], payload: bytes, field: str, reason: str
) -> None:
    with pytest.raises(SensorPayloadError) as caught:
        parser(fmt, **extra).parse(payload, NOW)
    assert caught.value.field == field
    assert caught.value.reason == reason


@settings(max_examples=300, deadline=None)
@given(
    payload=st.one_of(
        st.binary(max_size=200),
        st.recursive(
            st.none() | st.booleans() | st.floats() | st.integers() | st.text(max_size=10),
            lambda inner: (
                st.lists(inner, max_size=4)
                | st.dictionaries(
                    st.sampled_from(
                        [
                            "temperature",
                            "humidity",
                            "DS18B20",
                            "Temperature",
                            "Time",
                            "TempUnit",
                            "sensor_id",
                            "ts",
                            "temperature_c",
                            "v",
                        ]
                    ),
                    inner,
                    max_size=5,
                )
            ),
            max_leaves=12,
        ).map(lambda v: json.dumps(v).encode()),
    ),
    fmt=st.sampled_from(["native", "zigbee2mqtt", "tasmota", "plain"]),
)
def test_property_any_payload_is_parsed_or_rejected_with_a_field(payload: bytes, fmt: str) -> None:
    extra = {"metric": "temperature_c"} if fmt == "plain" else {}
    try:
        parsed = parser(fmt, **extra).parse(payload, NOW)
        readings = parsed.readings
        assert all(e.field and e.reason for e in parsed.errors)
    except SensorPayloadError as exc:
        assert exc.field and exc.reason
        return
    for r in readings:
        low, high = (-60, 80) if r.metric == "temperature_c" else (0, 100)
        assert low <= r.value <= high


def test_a_null_field_leaves_the_other_values_usable() -> None:
    parsed = parser("zigbee2mqtt").parse(b'{"temperature": 7.9, "humidity": null}', NOW)
    assert [(r.metric, r.value) for r in parsed.readings] == [("temperature_c", 7.9)]
    assert parsed.errors == []
    native_null = native(temperature_c=6.5, humidity_pct=None)
    assert [r.value for r in parser().parse(native_null, NOW).readings] == [6.5]


def test_a_bad_value_is_refused_alone_naming_its_field() -> None:
    parsed = parser("zigbee2mqtt").parse(b'{"temperature": 7.9, "humidity": "wet"}', NOW)
    assert [r.metric for r in parsed.readings] == ["temperature_c"]
    assert [(e.field, e.reason) for e in parsed.errors] == [("humidity", "type")]
    parsed = parser().parse(native(temperature_c=5.0, humidity_pct=140), NOW)
    assert [r.metric for r in parsed.readings] == ["temperature_c"]
    assert [(e.field, e.reason) for e in parsed.errors] == [("humidity_pct", "range")]


@pytest.mark.parametrize(
    ("fmt", "extra", "payload"),
    [
        ("zigbee2mqtt", {"unit": "F"}, b'{"temperature": 46.4}'),
        ("plain", {"unit": "F", "metric": "temperature_c"}, b"46.4"),
        ("native", {"unit": "F"}, native(temperature_c=46.4)),
        ("tasmota", {"unit": "F"}, b'{"DS18B20": {"Temperature": 46.4}}'),
        # Tasmota's own TempUnit wins over the declared unit
        ("tasmota", {"unit": "C"}, b'{"DS18B20": {"Temperature": 46.4}, "TempUnit": "F"}'),
    ],
)
def test_a_declared_fahrenheit_unit_is_converted(
    fmt: str, extra: dict[str, Any], payload: bytes
) -> None:
    (reading,) = parser(fmt, **extra).parse(payload, NOW).readings
    assert reading.value == pytest.approx(8.0)


@pytest.mark.parametrize(
    ("payload", "name"),
    [
        (b'{"DS18B20": {"Temperature": 85.0}, "TempUnit": "C"}', "power-on"),
        (b'{"DS18B20": {"Temperature": 185.0}, "TempUnit": "F"}', "power-on"),
        (b'{"DS18B20": {"Temperature": -127.0}, "TempUnit": "C"}', "disconnected"),
    ],
)
def test_probe_sentinels_are_rejected_by_name(payload: bytes, name: str) -> None:
    with pytest.raises(SensorPayloadError) as caught:
        parser("tasmota").parse(payload, NOW)
    assert caught.value.reason == "sentinel" and name in str(caught.value)


def test_a_unit_is_refused_for_a_humidity_only_sensor() -> None:
    with pytest.raises(ValueError, match="unit"):
        parser("plain", metric="humidity_pct", unit="F")
