"""The agent's health and Prometheus metrics on a local port, scraped over real HTTP."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from edge_agent.agent import EdgeAgent
from edge_agent.config import AgentConfig
from protocols import Topics
from protocols.clock import ManualClock
from simulators.brokers import Broker, free_port
from tests.coordinator.test_observability import documented
from tests.edge_agent.conftest import (
    SENSOR,
    SensorPublisher,
    cancel_and_wait,
    config_dict,
    wait_until,
)

pytestmark = pytest.mark.broker
T0 = datetime(2026, 1, 15, 2, 0, tzinfo=UTC)


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


async def test_metrics_and_health_report_sensors_drops_outbox_and_rule_states(
    tmp_path: Path, broker: Broker, topics: Topics
) -> None:
    raw = config_dict(tmp_path, broker.url, broker.url, topics)
    port = free_port()
    raw["agent"]["metrics_port"] = port
    agent = EdgeAgent(AgentConfig.model_validate(raw), clock=ManualClock(T0), topics=topics)
    task = asyncio.create_task(agent.run())
    try:
        await wait_until(lambda: agent.stats.uplink_connected and agent.stats.sensors_connected,
                         what="connected")
        async with SensorPublisher(broker.url) as pub:
            await pub.native(topics, T0, 5.0)
            await pub.native(topics, T0, 5.0)  # a duplicate
            await pub.raw(topics.sensor("wh-t", SENSOR), b'{"v":1,"sensor_id":"cr2_t1"}')
            await wait_until(lambda: agent.stats.readings_accepted == 2, what="readings")
            await wait_until(lambda: sum(agent.stats.readings_rejected.values()) == 1,
                             what="the junk")
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
            metrics = await http.get("/metrics")
            health = await http.get("/healthz")
    finally:
        await cancel_and_wait(task)
    assert metrics.status_code == 200
    # exactly the agent metrics docs/metrics.md defines, no more, no fewer
    families = set()
    for family in text_string_to_metric_families(metrics.text):
        families.add(family.name + "_total" if family.type == "counter" else family.name)
    assert families == set(documented("breakwater_edge_"))
    got = samples(metrics.text)
    assert got[("breakwater_edge_readings_total", (("sensor", SENSOR),))] == 2
    assert got[("breakwater_edge_dead_letters_total", (("sensor", SENSOR),))] == 1
    assert got[("breakwater_edge_drops_total", (("cause", "duplicate"), ("sensor", SENSOR)))] == 1
    assert got[("breakwater_edge_uplink_connected", ())] == 1
    assert ("breakwater_edge_outbox_depth", ()) in got
    assert ("breakwater_edge_outbox_oldest_age_seconds", ()) in got
    state = (("rule", "temp_high"), ("state", "ok"), ("zone", "cold_room_2"))
    assert got[("breakwater_edge_rule_state", state)] == 1
    assert got[("breakwater_edge_breaker_open", (("breaker", "cold_chain"), ("state", "ok")))] == 0
    assert health.status_code == 200
    body = health.json()
    assert body["status"] == "ok" and body["breakers"]["cold_chain"]["open"] is False
    # the port is closed with the agent
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
        with pytest.raises(httpx.ConnectError):
            await http.get("/healthz", timeout=1)


async def test_a_taken_metrics_port_does_not_stop_the_agent(
    tmp_path: Path, broker: Broker, topics: Topics
) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        raw = config_dict(tmp_path, broker.url, broker.url, topics)
        raw["agent"]["metrics_port"] = taken.getsockname()[1]
        agent = EdgeAgent(AgentConfig.model_validate(raw), clock=ManualClock(T0),
                          topics=topics)
        task = asyncio.create_task(agent.run())
        try:
            await wait_until(lambda: agent.stats.uplink_connected or task.done(), what="up")
            assert not task.done()
        finally:
            await cancel_and_wait(task)
