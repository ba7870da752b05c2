"""Payloads as real gateways send them, through a real broker: nulls, declared units,
probe sentinels, and per-sensor drops visible upstream (telemetry) and in the stats."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from edge_agent.agent import EdgeAgent
from edge_agent.config import AgentConfig
from protocols import DeadLetter, SensorReading, TelemetrySummary, Topics, encode
from protocols.clock import ManualClock
from simulators.brokers import Broker
from tests.edge_agent.conftest import (
    SENSOR,
    WH,
    Collector,
    SensorPublisher,
    cancel_and_wait,
    config_dict,
    wait_until,
)

pytestmark = pytest.mark.broker
T0 = datetime(2026, 1, 15, 2, 0, tzinfo=UTC)


def fleet(tmp_path: Path, url: str, topics: Topics) -> AgentConfig:
    raw: dict[str, Any] = config_dict(tmp_path, url, url, topics)
    root = topics.root
    raw["sensors"] += [
        {"id": "z2m_f", "zone": "cold_room_2", "topic": f"z2m-{root}/z2m_f",
         "format": "zigbee2mqtt", "unit": "F", "max_gap_s": 100_000},
        {"id": "plain_f", "zone": "cold_room_2", "topic": f"plain-{root}/plain_f",
         "format": "plain", "metric": "temperature_c", "unit": "F", "max_gap_s": 100_000},
        {"id": "ds18", "zone": "cold_room_2", "topic": f"tele-{root}/ds18/SENSOR",
         "format": "tasmota", "tasmota_sensor": "DS18B20", "max_gap_s": 100_000},
    ]
    raw["sensors"][0]["max_gap_s"] = 100_000
    return AgentConfig.model_validate(raw)


@contextlib.asynccontextmanager
async def running(agent: EdgeAgent) -> AsyncIterator[None]:
    task = asyncio.create_task(agent.run())
    try:
        await wait_until(
            lambda: agent.stats.uplink_connected and agent.stats.sensors_connected, what="up"
        )
        yield
    finally:
        await cancel_and_wait(task)


async def test_nulls_units_and_sentinels_from_a_mixed_fleet(
    tmp_path: Path, broker: Broker, topics: Topics
) -> None:
    clock = ManualClock(T0)
    agent = EdgeAgent(fleet(tmp_path, broker.url, topics), clock=clock, topics=topics)
    root = topics.root
    async with (
        Collector(broker.url, [topics.deadletter(WH)]) as letters,
        SensorPublisher(broker.url) as pub,
        running(agent),
    ):
        # a Zigbee2MQTT payload with "humidity": null: the temperature (°F) is used
        await pub.raw(f"z2m-{root}/z2m_f", b'{"temperature": 48.2, "humidity": null}')
        await pub.raw(f"plain-{root}/plain_f", b"48.2")
        await wait_until(lambda: agent.stats.readings_accepted == 2, what="two readings")
        # 48.2 °F is 9 °C: beyond the 8 °C limit, so the zone is pending on both
        assert agent.breaker_states()["cold_chain"] == ("pending", False)
        assert agent.stats.readings_rejected == {}
        # a DS18B20 that lost power reports 85.0: refused by name, not as "out of range"
        await pub.raw(f"tele-{root}/ds18/SENSOR", b'{"DS18B20": {"Temperature": 85.0}}')
        await pub.raw(f"tele-{root}/ds18/SENSOR", b'{"DS18B20": {"Temperature": -127}}')
        await wait_until(lambda: len(letters.messages) == 2, what="two dead letters")
    errors = [DeadLetter.model_validate_json(m.payload) for m in letters.messages]
    assert {e.sensor_id for e in errors} == {"ds18"}
    assert "power-on" in errors[0].error and "disconnected" in errors[1].error
    assert agent.stats.readings_rejected == {"sentinel": 2}


async def test_late_and_duplicate_readings_are_counted_per_sensor_and_sent_upstream(
    tmp_path: Path, broker: Broker, topics: Topics
) -> None:
    clock = ManualClock(T0)
    agent = EdgeAgent(fleet(tmp_path, broker.url, topics), clock=clock, topics=topics)
    async with (
        Collector(broker.url, [topics.telemetry_filter(WH)]) as charts,
        SensorPublisher(broker.url) as pub,
        running(agent),
    ):
        async def native(ts: datetime) -> None:
            reading = SensorReading(sensor_id=SENSOR, ts=ts, temperature_c=5.0)
            before = agent.stats.readings_accepted
            await pub.raw(topics.sensor(WH, SENSOR), encode(reading))
            await wait_until(lambda: agent.stats.readings_accepted > before, what="taken")

        clock.advance(10)
        await native(T0 + timedelta(seconds=10))
        await native(T0 + timedelta(seconds=10))  # the same event time again
        await native(T0 + timedelta(seconds=5))  # older than this sensor's last
        # another sensor behind it in time is not dropped: ordering is per sensor
        await pub.raw(f"plain-{topics.root}/plain_f", b"41")
        await wait_until(lambda: agent.stats.readings_accepted == 4, what="plain")
        clock.advance(60)
        await agent.tick()  # closes the minute: the summary carries the drops
        await wait_until(lambda: bool(charts.messages), what="telemetry")
    assert dict(agent.stats.drops) == {(SENSOR, "duplicate"): 1, (SENSOR, "out_of_order"): 1}
    summary = TelemetrySummary.model_validate_json(charts.messages[0].payload)
    assert summary.drops == {SENSOR: {"duplicate": 1, "out_of_order": 1}}
    assert summary.count == 2  # the native reading and the plain one


async def test_an_excursion_seen_only_by_a_sensor_behind_its_neighbours_clock_trips(
    tmp_path: Path, broker: Broker, topics: Topics
) -> None:
    """One Zigbee2MQTT sensor timed on arrival reads normal; a native probe whose own clock
    is 8 s behind sees the room warm. Its readings are never dropped as out of order, it is
    never reported silent, and it trips at its first reading 300 s into the excursion."""
    clock = ManualClock(T0)
    agent = EdgeAgent(fleet(tmp_path, broker.url, topics), clock=clock, topics=topics)
    breaker = topics.breaker(WH, "cold_chain")
    async with (
        Collector(broker.url, [breaker]) as events,
        SensorPublisher(broker.url) as pub,
        running(agent),
    ):
        first_bad = None
        for step in range(13):
            now = clock.now()
            await pub.raw(f"z2m-{topics.root}/cr2_z2m", b'{"temperature": 4.0}')
            value = 5.0 if step == 0 else 9.0
            own_clock = now - timedelta(seconds=8)
            if value > 8 and first_bad is None:
                first_bad = own_clock
            reading = SensorReading(sensor_id=SENSOR, ts=own_clock, temperature_c=value)
            await pub.raw(topics.sensor(WH, SENSOR), encode(reading))
            await wait_until(lambda s=step: agent.stats.readings_accepted == 2 * (s + 1),
                             what="both readings")
            await agent.tick()
            clock.advance(30)
        assert agent.breaker_states()["cold_chain"] == ("tripped", True)
        await wait_until(lambda: any(e.open for e in events.events(breaker)), what="trip")
    trip = next(e for e in events.events(breaker) if e.open)
    assert first_bad is not None and trip.event_time == first_bad + timedelta(seconds=300)
    assert trip.detail == f"sensors {SENSOR}"
    assert dict(agent.stats.drops) == {}
    assert agent.stats.notices.get("sensor_silent", 0) == 0


async def test_a_probe_on_china_time_sending_true_and_strings_is_refused_and_trips_in_utc(
    tmp_path: Path, broker: Broker, topics: Topics
) -> None:
    """A native probe stamping its readings +08:00, whose firmware once writes
    ``"temperature_c": true`` and once ``"7.9"``: both are refused naming the field (lax
    parsing took ``true`` as 1.0 °C, a cold reading that reset the excursion), and the trip
    goes upstream in UTC: event time, values and an episode id whose Z is true (it was
    the local time labelled Z, eight hours off)."""
    clock = ManualClock(T0)
    agent = EdgeAgent(fleet(tmp_path, broker.url, topics), clock=clock, topics=topics)
    china = timezone(timedelta(hours=8))
    native = topics.sensor(WH, SENSOR)
    breaker_topic = topics.breaker(WH, "cold_chain")
    async with (
        Collector(broker.url, [topics.deadletter(WH), breaker_topic]) as hq,
        SensorPublisher(broker.url) as pub,
        running(agent),
    ):
        for minute in range(6):  # 9 °C every minute for 5 minutes: trips at 02:05
            if minute == 2:
                for bad in (b"true", b'"7.9"'):
                    stamp = clock.now().astimezone(china).isoformat()
                    body = b'{"v":1,"sensor_id":"%s","ts":"%s","temperature_c":%s}' % (
                        SENSOR.encode(), stamp.encode(), bad)
                    await pub.raw(native, body)
                    clock.advance(1)
            reading = SensorReading(sensor_id=SENSOR, ts=clock.now().astimezone(china),
                                    temperature_c=9.0)
            await pub.raw(native, encode(reading))
            await wait_until(lambda n=minute + 1: agent.stats.readings_accepted == n,
                             what=f"reading {minute + 1}")
            clock.advance(60)
        await wait_until(lambda: any(e.open for e in hq.events(breaker_topic)), what="trip")
        await wait_until(lambda: len(hq.on(topics.deadletter(WH))) == 2, what="dead letters")
    letters = [DeadLetter.model_validate_json(m.payload) for m in hq.on(topics.deadletter(WH))]
    assert [d.field for d in letters] == ["temperature_c", "temperature_c"]
    assert "bool" in letters[0].error and "str" in letters[1].error
    assert agent.stats.readings_rejected == {"type": 2}
    trip = next(e for e in hq.events(breaker_topic) if e.open)
    raw = next(m.payload for m in hq.on(breaker_topic) if b'"tripped"' in m.payload)
    assert b"+08:00" not in raw
    assert trip.event_time == datetime(2026, 1, 15, 2, 5, 2, tzinfo=UTC)
    assert trip.episode_id is not None and trip.episode_id.endswith("/20260115T020000.000000Z")
