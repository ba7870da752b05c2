"""The wire contract: topics round-trip, models reject junk naming the field."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocols import (
    AgentStatus,
    BreakerCommand,
    BreakerEvent,
    PayloadError,
    SensorReading,
    TopicError,
    Topics,
    TrackingUpdate,
    decode,
    encode,
)

NOW = datetime(2026, 11, 24, 2, 17, tzinfo=UTC)


def tripped_event(**changes: object) -> dict[str, object]:
    base: dict[str, object] = {
        "warehouse_id": "wh-cc-2",
        "agent_id": "gw-cc-2",
        "breaker": "cold_chain",
        "state": "tripped",
        "open": True,
        "reason": "threshold_exceeded",
        "since": NOW.isoformat(),
        "episode_id": "gw-cc-2:cold_room_2:temp_high:1795486320000",
        "seq": 42,
        "session_seq": 3,
        "event_time": NOW.isoformat(),
        "published_at": NOW.isoformat(),
    }
    base.update(changes)
    return base


def test_every_topic_parses_back_to_its_parts() -> None:
    t = Topics("bw")
    assert t.parse(t.breaker("wh-1", "cold_chain")).breaker == "cold_chain"
    assert t.parse(t.agent_status("wh-1", "gw-1")).agent == "gw-1"
    parsed = t.parse(t.countdown("wh-1", "room_2", "temp_high"))
    assert (parsed.kind, parsed.zone, parsed.rule) == ("countdown", "room_2", "temp_high")
    assert t.parse(t.tracking("sf-express")).carrier == "sf-express"
    assert t.parse(t.deadletter("wh-1")).kind == "deadletter"


def test_filters_are_valid_mqtt_filters_under_the_root() -> None:
    t = Topics("a/b")
    assert t.breaker_filter() == "a/b/v1/wh/+/breaker/+"
    assert t.agent_status_filter("wh-1") == "a/b/v1/wh/wh-1/agent/+/status"


@pytest.mark.parametrize("bad", ["wh.1", "wh 1", "", "wh/1", "wh#", "+", "温度"])
def test_levels_that_nats_or_mqtt_reject_are_refused(bad: str) -> None:
    with pytest.raises(TopicError):
        Topics().breaker(bad, "cold_chain")


def test_foreign_topic_is_refused() -> None:
    with pytest.raises(TopicError):
        Topics("bw").parse("other/v1/wh/x/breaker/y")
    with pytest.raises(TopicError):
        Topics("bw").parse("bw/v1/wh/x/nothing")


@given(st.from_regex(r"[A-Za-z0-9_-]{1,64}", fullmatch=True))
def test_any_legal_level_round_trips(level: str) -> None:
    t = Topics("bw")
    assert t.parse(t.breaker(level, level)).warehouse == level


def test_breaker_event_round_trips() -> None:
    event = decode(BreakerEvent, json.dumps(tripped_event()))
    assert decode(BreakerEvent, encode(event)) == event


def test_open_must_agree_with_state() -> None:
    with pytest.raises(PayloadError) as err:
        decode(BreakerEvent, json.dumps(tripped_event(open=False)))
    assert "open must be True" in str(err.value)


def test_force_trip_needs_an_actor() -> None:
    with pytest.raises(PayloadError, match="override_actor"):
        decode(BreakerEvent, json.dumps(tripped_event(override="force_tripped")))


def test_bad_field_is_named() -> None:
    with pytest.raises(PayloadError) as err:
        decode(BreakerEvent, json.dumps(tripped_event(seq=-1)))
    assert err.value.field == "seq"


def test_reading_rejects_nan_and_impossible_values() -> None:
    with pytest.raises(PayloadError) as err:
        decode(SensorReading, '{"sensor_id":"t1","ts":"2026-01-01T00:00:00Z","temperature_c":NaN}')
    assert err.value.field in ("temperature_c", "$")
    with pytest.raises(PayloadError) as err:
        decode(SensorReading, '{"sensor_id":"t1","ts":"2026-01-01T00:00:00Z","temperature_c":99}')
    assert err.value.field == "temperature_c"
    with pytest.raises(PayloadError, match="needs temperature_c or humidity_pct"):
        decode(SensorReading, '{"sensor_id":"t1","ts":"2026-01-01T00:00:00Z"}')


def test_naive_timestamps_are_refused() -> None:
    with pytest.raises(PayloadError) as err:
        decode(SensorReading, '{"sensor_id":"t1","ts":"2026-01-01T00:00:00","temperature_c":4}')
    assert err.value.field == "ts"


@pytest.mark.parametrize("ts", ["0001-01-01T00:00:00+01:00", "9999-12-31T23:30:00-01:00"])
def test_times_with_no_utc_form_are_refused_naming_the_field(ts: str) -> None:
    with pytest.raises(PayloadError) as err:
        decode(TrackingUpdate, json.dumps({"carrier": "sf-express", "shipment_id": "SF1",
                                           "warehouse_id": "WH-03", "status": "in_transit",
                                           "ts": ts}))
    assert err.value.field == "ts"
    with pytest.raises(PayloadError) as err:
        decode(BreakerEvent, json.dumps(tripped_event(event_time=ts)))
    assert err.value.field == "event_time"


@given(st.datetimes(timezones=st.timezones()))
def test_any_aware_time_either_converts_to_utc_or_is_refused(moment: datetime) -> None:
    text = json.dumps({"sensor_id": "t1", "ts": moment.isoformat(), "temperature_c": 4})
    try:
        reading = decode(SensorReading, text)
    except PayloadError as exc:
        assert exc.field == "ts"
    else:
        assert reading.ts.astimezone(UTC) == moment.astimezone(UTC)


def test_override_commands_need_an_expiry_after_issue() -> None:
    body = {"command_id": "c1", "command": "inhibit", "actor": "ops-li", "reason": "defrost",
            "issued_at": NOW.isoformat()}
    with pytest.raises(PayloadError, match="expires_at is required"):
        decode(BreakerCommand, json.dumps(body))
    body["expires_at"] = (NOW - timedelta(minutes=1)).isoformat()
    with pytest.raises(PayloadError, match="after issued_at"):
        decode(BreakerCommand, json.dumps(body))
    body["command"] = "ack"
    assert decode(BreakerCommand, json.dumps(body)).command.value == "ack"


@given(st.binary(max_size=256))
def test_junk_bytes_never_raise_anything_but_payload_error(raw: bytes) -> None:
    for model in (SensorReading, BreakerEvent, AgentStatus, BreakerCommand):
        try:
            decode(model, raw)
        except PayloadError as exc:
            assert exc.field
