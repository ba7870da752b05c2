"""``[local_mqtt] persistent_session``: readings published while the agent is down."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from edge_agent.agent import EdgeAgent
from edge_agent.config import AgentConfig
from protocols import Topics
from protocols.clock import ManualClock
from simulators.brokers import Broker
from tests.edge_agent.conftest import (
    AGENT,
    SensorPublisher,
    cancel_and_wait,
    config_dict,
    wait_until,
)

T0 = datetime(2026, 1, 15, 2, 0, tzinfo=UTC)


def test_persistent_session_is_off_by_default(tmp_path: Path, topics: Topics) -> None:
    url = "mqtt://127.0.0.1:1883"
    config = AgentConfig.model_validate(config_dict(tmp_path, url, url, topics))
    assert config.local_mqtt.persistent_session is False


def test_persistent_session_is_a_local_option_only(tmp_path: Path, topics: Topics) -> None:
    url = "mqtt://127.0.0.1:1883"
    raw = config_dict(tmp_path, url, url, topics)
    raw["uplink_mqtt"]["persistent_session"] = True  # the uplink is always persistent
    with pytest.raises(ValueError, match=r"uplink_mqtt\.persistent_session"):
        AgentConfig.model_validate(raw)


async def run_until_sensors_connected(agent: EdgeAgent) -> asyncio.Task[None]:
    task = asyncio.create_task(agent.run())
    await wait_until(lambda: agent.stats.sensors_connected or task.done(), what="sensors")
    if task.done():
        task.result()
    return task


@pytest.mark.broker
async def test_readings_published_while_agent_is_down_count_after_restart(
    tmp_path: Path, broker: Broker, topics: Topics
) -> None:
    raw = config_dict(tmp_path, broker.url, broker.url, topics)
    raw["local_mqtt"].update(
        # A per-test client id: the broker keeps this session after the test.
        persistent_session=True,
        client_id=f"{topics.root}-sensors",
        username=AGENT,  # amqtt (the fallback broker) queues only for named clients
        qos=1,  # Mosquitto queues QoS 0 for offline clients only with queue_qos0_messages
    )
    config = AgentConfig.model_validate(raw)
    clock = ManualClock(T0)
    async with SensorPublisher(broker.url) as pub:
        first = EdgeAgent(config, clock=clock, topics=topics)
        task = await run_until_sensors_connected(first)
        await pub.native(topics, clock.now(), 5.0)
        await wait_until(lambda: first.stats.readings_accepted == 1, what="live reading")
        await cancel_and_wait(task)

        # Agent down: three readings, 30 s apart in event time.
        for i in range(3):
            await pub.native(topics, T0 + timedelta(seconds=30 * (i + 1)), 9.0)
        clock.advance(120)

        second = EdgeAgent(config, clock=clock, topics=topics)
        task = await run_until_sensors_connected(second)
        try:
            await wait_until(
                lambda: second.stats.readings_accepted >= 3, what="queued readings delivered"
            )
            await asyncio.sleep(0.2)  # nothing more is coming: exactly the three
            assert second.stats.readings_accepted == 3
            assert not second.stats.readings_rejected
        finally:
            await cancel_and_wait(task)
