"""The sensor simulator through the real broker: every format, routes from edge configs,
the clock set to event time before each publish, junk injection, courier tracking."""

from __future__ import annotations

import asyncio
import json
import textwrap
from datetime import UTC, datetime
from pathlib import Path

import aiomqtt
import pytest

from protocols import SensorReading, Topics, TrackingUpdate, decode
from protocols.clock import ManualClock
from simulators.brokers import Broker
from simulators.edge_configs import load_edge_configs, routing_table, write_configs
from simulators.event_stream import events
from simulators.events import ScenarioReading
from simulators.scenario_files import parse_scenario
from simulators.sensors import JUNK_PAYLOADS, MqttPublisher, Replayer, encode_reading, parse_speed
from simulators.sites import sites

pytestmark = pytest.mark.broker

SCENARIO = textwrap.dedent(
    """\
    name: formats
    start: 2026-01-15T02:00:00+08:00
    end: "+60s"
    seed: 3
    warehouses:
      - id: wh-x
        sensors:
          - {id: n1, zone: cold_room_1, format: native, metrics: [temperature_c, humidity_pct],
             baseline: {temperature_c: 4.25, humidity_pct: 80}}
          - {id: z1, zone: cold_room_2, format: zigbee2mqtt, metrics: [temperature_c, humidity_pct],
             baseline: {temperature_c: 5.5, humidity_pct: 81}}
          - {id: t1, zone: ambient, format: tasmota, temp_unit: F, tasmota_sensor: DS18B20,
             metrics: [temperature_c, humidity_pct],
             baseline: {temperature_c: -2.0, humidity_pct: 90}}
          - {id: p1, zone: dry_store, format: plain, metrics: [humidity_pct],
             baseline: {humidity_pct: 55.5}}
    couriers:
      - {carrier: sf, warehouse: wh-x, shipments: 2, update_every_s: 30}
    """
)


class ClockCheckingPublisher:
    """Publishes through the real client and notes the clock at each publish."""

    def __init__(self, inner: MqttPublisher, clock: ManualClock) -> None:
        self.inner = inner
        self.clock = clock
        self.seen: list[tuple[str, datetime]] = []

    async def publish(
        self, topic: str, payload: bytes, *, qos: int = 0, retain: bool = False
    ) -> None:
        self.seen.append((topic, self.clock.now()))
        await self.inner.publish(topic, payload, qos=qos, retain=retain)


async def _receive(client: aiomqtt.Client, count: int) -> list[tuple[str, bytes]]:
    got: list[tuple[str, bytes]] = []
    async with asyncio.timeout(10):
        async for message in client.messages:
            assert isinstance(message.payload, bytes)
            got.append((str(message.topic), message.payload))
            if len(got) >= count:
                break
    return got


async def _replay(
    broker: Broker, topics: Topics, tmp_path: Path, junk_every: int = 0
) -> tuple[list[tuple[str, bytes]], Replayer, ClockCheckingPublisher]:
    scenario = parse_scenario(SCENARIO)
    prefix = f"{topics.root}/"
    write_configs(sites(scenario), tmp_path, topics, external_prefix=prefix)
    routes = routing_table(load_edge_configs([tmp_path]))
    clock = ManualClock(scenario.start)
    async with aiomqtt.Client(broker.host, broker.port, username="test-sub") as sub:
        await sub.subscribe(f"{topics.root}/#", qos=1)
        async with MqttPublisher(broker.url) as real:
            publisher = ClockCheckingPublisher(real, clock)
            replayer = Replayer(
                scenario, publisher, clock, None, topics=topics, routes=routes,
                junk_every=junk_every, qos=1,
            )  # fmt: skip
            stats = await replayer.run()
        expected = stats.messages + stats.junk + stats.tracking
        got = await _receive(sub, expected)
    return got, replayer, publisher


async def test_every_format_arrives_as_the_agent_config_says(
    broker: Broker, topics: Topics, tmp_path: Path
) -> None:
    got, replayer, _ = await _replay(broker, topics, tmp_path)
    scenario = replayer.scenario
    by_topic: dict[str, list[bytes]] = {}
    for topic, payload in got:
        by_topic.setdefault(topic, []).append(payload)

    native = [decode(SensorReading, p) for p in by_topic[topics.sensor("wh-x", "n1")]]
    assert [r.ts for r in native] == [
        scenario.at(t).astimezone(UTC) for t in ("02:00", "02:00:30", "02:01")
    ]
    assert {r.temperature_c for r in native} == {4.25}
    assert {r.humidity_pct for r in native} == {80.0}

    z2m = [json.loads(p) for p in by_topic[f"{topics.root}/zigbee2mqtt/wh-x_z1"]]
    assert len(z2m) == 3
    assert {(z["temperature"], z["humidity"]) for z in z2m} == {(5.5, 81.0)}
    assert all(0 <= z["battery"] <= 100 and 0 < z["linkquality"] <= 255 for z in z2m)

    tasmota = [json.loads(p) for p in by_topic[f"{topics.root}/tele/wh-x_t1/SENSOR"]]
    assert len(tasmota) == 3
    assert tasmota[0]["TempUnit"] == "F"
    assert tasmota[0]["DS18B20"] == {"Temperature": 28.4, "Humidity": 90.0}  # -2 °C
    assert tasmota[0]["Time"] == "2026-01-14T18:00:00"  # UTC, no offset, as Tasmota writes

    plain = by_topic[f"{topics.root}/sensors/wh-x_p1/humidity"]
    assert [float(p) for p in plain] == [55.5, 55.5, 55.5]

    tracking = [decode(TrackingUpdate, p) for p in by_topic[topics.tracking("sf")]]
    assert tracking and {t.warehouse_id for t in tracking} == {"wh-x"}


async def test_clock_is_at_event_time_when_each_reading_is_published(
    broker: Broker, topics: Topics, tmp_path: Path
) -> None:
    _, replayer, publisher = await _replay(broker, topics, tmp_path)
    readings = [e for e in events(replayer.scenario) if isinstance(e, ScenarioReading)]
    reading_times = sorted({r.at for r in readings})
    publish_times = sorted({at for topic, at in publisher.seen if "tracking" not in topic})
    assert publish_times == reading_times
    assert replayer.clock.now() == replayer.scenario.end_at


async def test_junk_is_injected_on_sensor_topics(
    broker: Broker, topics: Topics, tmp_path: Path
) -> None:
    got, replayer, _ = await _replay(broker, topics, tmp_path, junk_every=3)
    assert replayer.stats.junk == replayer.stats.messages // 3
    junk = [p for t, p in got if p in JUNK_PAYLOADS and "tracking" not in t]
    assert len(junk) >= replayer.stats.junk  # a junk payload may equal a valid one only by chance


def test_a_plain_route_for_a_metric_the_reading_lacks_sends_nothing() -> None:
    scenario = parse_scenario(SCENARIO)
    reading = next(e for e in events(scenario)
                   if isinstance(e, ScenarioReading) and e.sensor == "n1")
    from simulators.edge_configs import SensorRoute

    route = SensorRoute(id="n1", zone="z", topic="t", format="plain", metric="temperature_c")
    assert encode_reading(reading, route) == b"4.25"
    humidity_only = SensorRoute(id="n1", zone="z", topic="t", format="plain", metric=None)
    assert encode_reading(reading, humidity_only) is None


def test_speed_parsing() -> None:
    assert parse_speed("max") is None
    assert parse_speed("60") == 60.0
    with pytest.raises(ValueError):
        parse_speed("-1")
