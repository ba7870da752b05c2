"""A list of uplink brokers: the agent moves to the next one when its broker dies, and
the new broker gets the current breaker state at once (re-sent with its original seq)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from edge_agent.agent import EdgeAgent
from edge_agent.config import AgentConfig
from protocols import BreakerCommand, CommandKind, Topics
from protocols.clock import ManualClock
from simulators.brokers import Broker, MosquittoBroker, free_port
from tests.edge_agent.conftest import (
    WH,
    Collector,
    cancel_and_wait,
    config_dict,
    wait_until,
)

pytestmark = pytest.mark.broker


def test_a_broker_list_validates_each_url_and_keeps_the_first_as_url(tmp_path: Path) -> None:
    raw = config_dict(tmp_path, "mqtt://127.0.0.1:1", "mqtt://a:1883, mqtt://b:1883",
                      Topics("t"))
    config = AgentConfig.model_validate(raw)
    assert config.uplink_mqtt.broker_urls == ("mqtt://a:1883", "mqtt://b:1883")
    assert config.uplink_mqtt.url == "mqtt://a:1883"
    assert config.local_mqtt.broker_urls == ("mqtt://127.0.0.1:1",)
    raw["uplink_mqtt"]["url"] = ["mqtt://a:1883", "mqtts://b:8883"]
    with pytest.raises(ValueError, match="same scheme"):
        AgentConfig.model_validate(raw)
    raw["uplink_mqtt"]["url"] = ["mqtt://a:1883", "http://b"]
    with pytest.raises(ValueError, match="URL 2 of 2"):
        AgentConfig.model_validate(raw)


async def test_the_uplink_fails_over_to_the_next_broker_and_resends_current_state(
    tmp_path: Path, broker: Broker, topics: Topics
) -> None:
    first, second = MosquittoBroker(), MosquittoBroker()
    first.start()
    second.start()
    try:
        dead = f"mqtt://127.0.0.1:{free_port()}"  # a node that is down from the start
        raw = config_dict(tmp_path, broker.url, broker.url, topics)
        raw["uplink_mqtt"]["url"] = [dead, first.url, second.url]
        raw["uplink_mqtt"]["reconnect_max_s"] = 0.3
        agent = EdgeAgent(AgentConfig.model_validate(raw),
                          clock=ManualClock(datetime.now(UTC)), topics=topics)
        task = asyncio.create_task(agent.run())
        try:
            await wait_until(lambda: agent.stats.uplink_connected, what="some broker")
            now = datetime.now(UTC)
            agent.handle_command("cold_chain", BreakerCommand(
                command_id="c-1", command=CommandKind.FORCE_TRIPPED, actor="ops:li",
                reason="drill", issued_at=now, expires_at=now + timedelta(hours=1),
            ).model_dump_json().encode())
            assert agent.breaker_states()["cold_chain"][1]
            await wait_until(lambda: agent.stats.outbox_depth == 0, what="published")
            serving = first if agent.stats.uplink_broker == f"127.0.0.1:{first.port}" else second
            other = second if serving is first else first
            serving.kill()
            await wait_until(lambda: agent.stats.uplink_broker == f"127.0.0.1:{other.port}",
                             limit_s=20, what="the other broker")
            async with Collector(other.url, [topics.breaker(WH, "cold_chain")]) as seen:
                await wait_until(lambda: bool(seen.messages), what="retained current state")
            (event,) = seen.events(topics.breaker(WH, "cold_chain"))
            assert event.open and event.override.value == "force_tripped"
        finally:
            await cancel_and_wait(task)
    finally:
        first.close()
        second.close()
