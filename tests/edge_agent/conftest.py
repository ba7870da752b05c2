"""Helpers for edge agent tests that run through a real broker."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import aiomqtt

from edge_agent.config import AgentConfig
from protocols import BreakerEvent, SensorReading, Topics, encode

WH = "wh-t"
AGENT = "gw-t"
SENSOR = "cr2_t1"


def config_dict(
    tmp_path: Path, local_url: str, uplink_url: str, topics: Topics, **rule: Any
) -> dict[str, Any]:
    rule_cfg: dict[str, Any] = {
        "id": "temp_high",
        "zone": "cold_room_2",
        "breaker": "cold_chain",
        "metric": "temperature_c",
        "above": 8.0,
        "for_s": 300,
        "min_readings": 3,
        "clear_below": 7.5,
        "clear_for_s": 120,
        "silence_trips_after_s": 600,
    }
    rule_cfg.update(rule)
    fast = {"reconnect_min_s": 0.1, "reconnect_max_s": 0.5}
    return {
        "agent": {
            "agent_id": AGENT,
            "warehouse_id": WH,
            "state_db": str(tmp_path / "edge.sqlite"),
            "tick_interval_s": 0.05,
            "unsigned_commands": True,  # the command tests without keys; signed: their own
        },
        "local_mqtt": {"url": local_url, **fast},
        "uplink_mqtt": {"url": uplink_url, "username": AGENT, "topic_root": topics.root, **fast},
        "sensors": [
            {"id": SENSOR, "zone": "cold_room_2", "max_gap_s": 120},
            {
                "id": "cr2_z2m",
                "zone": "cold_room_2",
                "topic": f"z2m-{topics.root}/cr2_z2m",
                "format": "zigbee2mqtt",
                "max_gap_s": 100_000,
            },
        ],
        "rules": [rule_cfg],
        "breakers": [{"name": "cold_chain"}],
    }


def write_site_config(tmp_path: Path, broker_url: str, topics: Topics, *, name: str,
                      tick_interval_s: float, for_s: float,
                      client_id: str | None = None) -> Path:
    """A gateway's TOML file for ``python -m edge_agent --config`` (one probe, one rule,
    one breaker, both links on ``broker_url``), as a technician writes it."""
    ids = ("" if client_id is None else f'client_id = "{client_id}-sensors"\n',
           "" if client_id is None else f'client_id = "{client_id}"\n')
    path = tmp_path / f"{name}.toml"
    path.write_text(f"""
[agent]
agent_id = "{AGENT}"
warehouse_id = "{WH}"
state_db = "edge.sqlite"
tick_interval_s = {tick_interval_s}
[local_mqtt]
url = "{broker_url}"
{ids[0]}[uplink_mqtt]
url = "{broker_url}"
username = "{AGENT}"
{ids[1]}topic_root = "{topics.root}"
keepalive_s = 2
reconnect_min_s = 0.1
reconnect_max_s = 0.5
[[sensors]]
id = "{SENSOR}"
zone = "cold_room_2"
[[rules]]
id = "temp_high"
zone = "cold_room_2"
breaker = "cold_chain"
metric = "temperature_c"
above = 8.0
for_s = {for_s}
min_readings = 2
[[breakers]]
name = "cold_chain"
""")
    return path


def make_config(
    tmp_path: Path, local_url: str, uplink_url: str, topics: Topics, **rule: Any
) -> AgentConfig:
    return AgentConfig.model_validate(config_dict(tmp_path, local_url, uplink_url, topics, **rule))


async def wait_until(predicate: Callable[[], bool], limit_s: float = 15.0, what: str = "") -> None:
    deadline = time.monotonic() + limit_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or predicate}")
        await asyncio.sleep(0.02)


async def cancel_and_wait(task: asyncio.Task[None]) -> None:
    """Cancel until it ends: Python 3.11's wait_for (inside aiomqtt) can swallow a cancel."""
    while not task.done():
        task.cancel()
        await asyncio.wait({task}, timeout=1.0)
    if not task.cancelled() and task.exception() is not None:
        raise task.exception()  # type: ignore[misc]


def host_port(url: str) -> tuple[str, int]:
    rest = url.split("://", 1)[1]
    host, port = rest.rsplit(":", 1)
    return host, int(port)


@dataclass
class Received:
    topic: str
    payload: bytes
    retain: bool


class Collector:
    """Subscribes on a broker and keeps every message; reconnects if the broker goes away.

    With ``persistent=True`` it uses a persistent session and QoS 1, so messages published
    while it is disconnected are queued for it by the broker.
    """

    def __init__(
        self,
        url: str,
        filters: list[str],
        *,
        persistent: bool = False,
        identifier: str | None = None,
    ) -> None:
        self.host, self.port = host_port(url)
        self.filters = filters
        self.persistent = persistent
        self.identifier = identifier
        self.messages: list[Received] = []
        self.subscribed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Collector:
        self._task = asyncio.create_task(self._run())
        await asyncio.wait_for(self.subscribed.wait(), 10)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        await cancel_and_wait(self._task)

    async def _run(self) -> None:
        while True:
            try:
                async with aiomqtt.Client(
                    self.host,
                    self.port,
                    identifier=self.identifier,
                    username="hq-test",
                    clean_session=not self.persistent,
                ) as client:
                    for flt in self.filters:
                        await client.subscribe(flt, qos=1)
                    self.subscribed.set()
                    async for message in client.messages:
                        payload = message.payload
                        assert isinstance(payload, bytes)
                        self.messages.append(Received(message.topic.value, payload, message.retain))
            except aiomqtt.MqttError:
                await asyncio.sleep(0.1)

    def on(self, topic: str) -> list[Received]:
        return [m for m in self.messages if m.topic == topic]

    def events(self, topic: str) -> list[BreakerEvent]:
        return [BreakerEvent.model_validate_json(m.payload) for m in self.on(topic)]


class SensorPublisher:
    def __init__(self, url: str) -> None:
        self.host, self.port = host_port(url)
        self._client: aiomqtt.Client | None = None

    async def __aenter__(self) -> SensorPublisher:
        self._client = aiomqtt.Client(self.host, self.port)
        await self._client.__aenter__()
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._client is not None
        await self._client.__aexit__(None, None, None)

    async def raw(self, topic: str, payload: bytes) -> None:
        assert self._client is not None
        await self._client.publish(topic, payload, qos=1)

    async def native(
        self, topics: Topics, ts: datetime, value: float, sensor: str = SENSOR
    ) -> None:
        reading = SensorReading(sensor_id=sensor, ts=ts, temperature_c=value)
        await self.raw(topics.sensor(WH, sensor), encode(reading))
