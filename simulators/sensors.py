"""Sensor simulator: replay a scenario's events onto MQTT in the formats gateways emit.

Each reading goes out on the topic and in the format its edge agent's config names
(native :class:`protocols.SensorReading` JSON, Zigbee2MQTT JSON, Tasmota
``tele/<device>/SENSOR`` JSON in °C or °F, or a plain number per metric). Courier
updates go to ``Topics.tracking(carrier)``. Outages and markers are handed to an
``on_event`` hook (the demo cuts an agent's uplink on an uplink outage).

The :class:`Replayer` sets a :class:`protocols.clock.ManualClock` to each event's time
before publishing it, so agents running in-process on that clock see "gateway now" equal
to event time at any replay speed.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import TracebackType
from typing import Protocol
from urllib.parse import unquote, urlsplit

import aiomqtt
from tqdm import tqdm

from protocols import SensorReading, Topics, encode
from protocols.clock import ManualClock
from simulators.edge_configs import RouteKey, SensorRoute, default_routes
from simulators.event_stream import events
from simulators.events import Event, Marker, Outage, ScenarioReading, Tracking
from simulators.random_streams import rng_for
from simulators.region import Region
from simulators.scenario import Scenario
from simulators.sites import sites

DEFAULT_USERNAME = "breakwater-sim"


class Publisher(Protocol):
    async def publish(
        self, topic: str, payload: bytes, *, qos: int = 0, retain: bool = False
    ) -> None: ...


@dataclass(frozen=True, slots=True)
class MqttUrl:
    host: str
    port: int
    username: str | None
    password: str | None


def parse_mqtt_url(url: str) -> MqttUrl:
    """``mqtt://[user[:password]@]host[:port]`` (default port 1883)."""
    parts = urlsplit(url)
    if parts.scheme not in ("mqtt", "tcp") or not parts.hostname:
        raise ValueError(f"not an MQTT URL (mqtt://host:port): {url!r}")
    return MqttUrl(
        host=parts.hostname,
        port=parts.port or 1883,
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password else None,
    )


class MqttPublisher:
    """A thin aiomqtt client for publishing; use as ``async with MqttPublisher(url) as p``.

    It logs in with a username by default: the embedded amqtt broker keeps sessions only
    for clients that have one (see docs/simulators.md).
    """

    def __init__(
        self, url: str, *, client_id: str | None = None, username: str | None = None
    ) -> None:
        parsed = parse_mqtt_url(url)
        self._client = aiomqtt.Client(
            parsed.host,
            parsed.port,
            identifier=client_id,
            username=parsed.username or username or DEFAULT_USERNAME,
            password=parsed.password,
            max_queued_outgoing_messages=None,
        )
        self.published = 0

    async def __aenter__(self) -> MqttPublisher:
        await self._client.__aenter__()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._client.__aexit__(exc_type, exc, tb)

    async def publish(
        self, topic: str, payload: bytes, *, qos: int = 0, retain: bool = False
    ) -> None:
        await self._client.publish(topic, payload, qos=qos, retain=retain)
        self.published += 1


# -- payloads per format -------------------------------------------------------------------
def c_to_f(celsius: float) -> float:
    return round(celsius * 9 / 5 + 32, 2)


def encode_reading(reading: ScenarioReading, route: SensorRoute) -> bytes | None:
    """The payload for ``reading`` in ``route``'s format; None if it has nothing to send."""
    temperature = reading.value("temperature_c")
    humidity = reading.value("humidity_pct")
    match route.format:
        case "native":
            return encode(
                SensorReading(
                    sensor_id=reading.sensor,
                    ts=reading.at.astimezone(UTC),
                    temperature_c=temperature,
                    humidity_pct=humidity,
                )
            )
        case "zigbee2mqtt":
            z2m: dict[str, float | int] = {}
            if temperature is not None:
                z2m["temperature"] = temperature
            if humidity is not None:
                z2m["humidity"] = humidity
            z2m["battery"] = reading.battery
            z2m["linkquality"] = reading.linkquality
            return json.dumps(z2m).encode()
        case "tasmota":
            values: dict[str, float] = {}
            if temperature is not None:
                values["Temperature"] = (
                    c_to_f(temperature) if reading.temp_unit == "F" else temperature
                )
            if humidity is not None:
                values["Humidity"] = humidity
            # Tasmota writes its local time without an offset; our gateways run on UTC.
            stamp = reading.at.astimezone(UTC).replace(tzinfo=None).isoformat(timespec="seconds")
            name = route.tasmota_sensor or reading.tasmota_sensor
            return json.dumps({"Time": stamp, name: values, "TempUnit": reading.temp_unit}).encode()
        case "plain":
            value = reading.value(route.metric) if route.metric else None
            return None if value is None else f"{value}".encode()
    raise ValueError(f"unknown format {route.format}")


JUNK_PAYLOADS: tuple[bytes, ...] = (
    b"{not json",
    b"",
    b"\xff\xfe\x00garbage",
    b'{"temperature": "warm"}',
    b'{"temperature": NaN}',
    b'{"sensor_id": "x", "ts": "yesterday", "temperature_c": 4}',
    b'{"temperature_c": 500, "ts": "2026-01-15T02:00:00Z", "sensor_id": "s"}',
    b"[1, 2, 3]",
    b"-999",
    b'{"Time": "2026-01-15T02:00:00", "SHT3X": {"Temperature": "hot"}, "TempUnit": "K"}',
)


# -- replay -------------------------------------------------------------------------------
@dataclass(slots=True)
class ReplayStats:
    events: int = 0
    readings: int = 0
    messages: int = 0
    tracking: int = 0
    junk: int = 0
    controls: int = 0
    wall_s: float = 0.0
    last_event_at: datetime | None = None
    by_format: dict[str, int] = field(default_factory=dict)
    # sensor messages (junk included) per warehouse, for barriers that wait for agents
    by_warehouse: dict[str, int] = field(default_factory=dict)


EventHook = Callable[[Event], Awaitable[None]]
Barrier = Callable[[], Awaitable[None]]


class Replayer:
    """Publish a scenario's events at ``speed`` times real time (None = as fast as possible).

    - ``clock`` is set to each event's time before the event is published.
    - ``routes`` (from edge configs, see :func:`simulators.edge_configs.routing_table`)
      say where each sensor goes; sensors without a route use the default routes.
    - ``barrier`` is awaited whenever event time is about to move forward: the demo uses
      it to let in-process agents drain what was published, so at max speed no agent
      sees a reading after the clock has already passed it.
    - ``junk_every=N`` publishes a bad payload on a sensor's topic after every Nth reading
      (deterministic from the seed), for dead-letter tests.
    """

    def __init__(
        self,
        scenario: Scenario,
        publisher: Publisher,
        clock: ManualClock,
        speed: float | None = None,
        *,
        region: Region | None = None,
        seed: int | None = None,
        topics: Topics | None = None,
        routes: Mapping[RouteKey, Sequence[SensorRoute]] | None = None,
        external_prefix: str = "",
        junk_every: int = 0,
        qos: int = 0,
        on_event: EventHook | None = None,
        barrier: Barrier | None = None,
        progress: bool | None = None,
    ) -> None:
        if speed is not None and speed <= 0:
            raise ValueError("speed must be positive (None = as fast as possible)")
        self.scenario = scenario
        self.publisher = publisher
        self.clock = clock
        self.speed = speed
        self.region = region
        self.seed = scenario.seed if seed is None else seed
        self.topics = topics or Topics()
        self.qos = qos
        self.junk_every = junk_every
        self.on_event = on_event
        self.barrier = barrier
        self.progress = sys.stderr.isatty() if progress is None else progress
        self._routes: dict[RouteKey, list[SensorRoute]] = {
            k: list(v) for k, v in (routes or {}).items()
        }
        for site in sites(scenario, region):
            for sensor in site.sensors:
                key = (site.warehouse_id, sensor.id)
                if key not in self._routes:
                    self._routes[key] = default_routes(
                        site.warehouse_id, sensor, self.topics, external_prefix
                    )
        self._junk_rng = rng_for(self.seed, "junk")
        self.stats = ReplayStats()

    def routes(self, warehouse: str, sensor: str) -> list[SensorRoute]:
        return self._routes.get((warehouse, sensor), [])

    def event_list(self) -> list[Event]:
        return list(events(self.scenario, self.region, seed=self.seed))

    async def run(
        self, *, until: datetime | None = None, start: datetime | None = None
    ) -> ReplayStats:
        """Replay the events from ``start`` (default: the scenario's) to ``until``."""
        stream = self.event_list()
        if until is not None:
            stream = [e for e in stream if e.at <= until]
        if start is not None:
            stream = [e for e in stream if e.at >= start]
        stats = self.stats
        loop = asyncio.get_running_loop()
        wall0 = loop.time()
        started = time.perf_counter()
        first_at = stream[0].at if stream else self.scenario.start
        current: datetime | None = None
        with tqdm(
            total=len(stream), disable=not self.progress, unit="ev", desc=self.scenario.name
        ) as bar:
            for index, event in enumerate(stream):
                if current is None or event.at > current:
                    if current is not None and self.barrier is not None:
                        await self.barrier()
                    if self.speed is not None:
                        target = wall0 + (event.at - first_at).total_seconds() / self.speed
                        delay = target - loop.time()
                        if delay > 0:
                            await asyncio.sleep(delay)
                    elif index % 200 == 0:
                        await asyncio.sleep(0)  # let in-process agents run
                    current = event.at
                    self.clock.set(event.at)
                await self._publish(event)
                stats.events += 1
                stats.last_event_at = event.at
                if self.on_event is not None:
                    await self.on_event(event)
                bar.update(1)
                if index % 500 == 0:
                    bar.set_postfix_str(event.at.strftime("%H:%M:%S"), refresh=False)
        stats.wall_s = time.perf_counter() - started
        return stats

    async def _publish(self, event: Event) -> None:
        stats = self.stats
        match event:
            case ScenarioReading():
                stats.readings += 1
                for route in self.routes(event.warehouse, event.sensor):
                    payload = encode_reading(event, route)
                    if payload is None:
                        continue
                    await self.publisher.publish(route.topic, payload, qos=self.qos)
                    stats.messages += 1
                    wh = event.warehouse
                    stats.by_warehouse[wh] = stats.by_warehouse.get(wh, 0) + 1
                    stats.by_format[route.format] = stats.by_format.get(route.format, 0) + 1
                    if self.junk_every and stats.messages % self.junk_every == 0:
                        junk = self._junk_rng.choice(JUNK_PAYLOADS)
                        await self.publisher.publish(route.topic, junk, qos=self.qos)
                        stats.junk += 1
                        stats.by_warehouse[wh] += 1
            case Tracking():
                topic = self.topics.tracking(event.update.carrier)
                await self.publisher.publish(topic, encode(event.update), qos=1)
                stats.tracking += 1
            case Outage() | Marker():
                stats.controls += 1


def parse_speed(text: str) -> float | None:
    """``"max"`` (as fast as possible), or a positive factor like ``"60"`` / ``"1"``."""
    if text.strip().lower() in ("max", "inf", "0"):
        return None
    value = float(text)
    if value <= 0:
        raise ValueError("speed must be positive or 'max'")
    return value
