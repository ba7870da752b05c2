"""Broker node loss on a real 3-node NATS cluster: the coordinator's node is killed in the
middle of an incident; it moves to another node, its persistent session (replicated by
JetStream) delivers what was published meanwhile, and every breaker event is applied
exactly once."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiomqtt
import pytest

from benchmarks.reroute import seed_orders_at
from coordinator.db import open_database
from coordinator.ops.runner import OpsService
from edge_agent.agent import EdgeAgent
from edge_agent.config import AgentConfig
from protocols import BreakerEvent, SensorReading, Topics, encode
from protocols.clock import ManualClock
from simulators.brokers import Broker
from simulators.nats_cluster import NatsCluster, node_of_port
from tests.coordinator.ops.factories import breaker_event
from tests.coordinator.ops.helpers import (
    counter,
    ops_config,
    read,
    settings_for,
    wait_for,
    warehouse_available,
)
from tests.edge_agent.conftest import SENSOR, cancel_and_wait, config_dict

pytestmark = [pytest.mark.nats, pytest.mark.slow, pytest.mark.timeout(240)]
WH = "WH-02"
AGENT = "gw-WH-02"
AGENT_WH = "WH-05"
AGENT_2 = "gw-WH-05"


async def publish(cluster: NatsCluster, node: int, topics: Topics,
                  events: list[BreakerEvent], within: float = 120) -> int:
    """What an agent's uplink does: QoS 1, retained live events, through ``node``; after
    a node loss the cluster needs a while to elect new stream leaders, so like an agent
    it retries the whole batch (receivers drop the repeats). Returns the attempts."""
    address = cluster.nodes[node]
    deadline = asyncio.get_running_loop().time() + within
    attempts = 0
    while True:
        attempts += 1
        try:
            async with aiomqtt.Client(cluster.host, address.mqtt_port, timeout=10,
                                      identifier=f"{AGENT}-uplink", clean_session=False,
                                      ) as agent:
                for event in events:
                    await agent.publish(topics.breaker(WH, event.breaker), encode(event),
                                        qos=1, retain=True)
            return attempts
        except aiomqtt.MqttError:
            if asyncio.get_running_loop().time() > deadline:
                raise
            await asyncio.sleep(0.5)


def opened(db_path: Path) -> list[int]:
    """The agent's applied breaker events, open (1) or closed (0), in seq order."""
    return [int(r[0]) for r in read(
        db_path, "SELECT open FROM ops_processed_events WHERE agent_id = ? "
                 "AND outcome = 'applied' ORDER BY seq", [AGENT_2])]


def processed(db_path: Path, agent: str = AGENT) -> list[tuple[int, str]]:
    return [(int(seq), str(outcome)) for seq, outcome in read(
        db_path, "SELECT seq, outcome FROM ops_processed_events WHERE agent_id = ? "
                 "ORDER BY seq", [agent])]


async def test_losing_the_coordinators_node_mid_incident_loses_and_repeats_nothing(
    tmp_path: Path, nats_cluster: NatsCluster, topics: Topics
) -> None:
    path = tmp_path / "coordinator.sqlite"
    db = open_database(path)
    seed_orders_at(db, WH, 5, datetime.now(UTC), stock_boost=100)
    db.conn.close()
    settings = settings_for(path, nats_cluster.urls, topics)
    config = ops_config(tmp_path)
    config = config.model_copy(update={"mqtt": config.mqtt.model_copy(
        update={"reconnect_min_s": 0.2, "reconnect_max_s": 2.0})})
    trip = breaker_event(seq=1, open=True, agent=AGENT, warehouse=WH)
    async with OpsService(settings, config) as ops:
        await asyncio.wait_for(ops.watcher.connected.wait(), 60)
        watched = node_of_port(nats_cluster, int(str(ops.watcher.stats.broker).split(":")[1]))
        other = (watched + 1) % 3
        await publish(nats_cluster, other, topics, [trip])
        await wait_for(lambda: processed(path) == [(1, "applied")], 60, "the trip")
        # mid-incident: the coordinator's node dies; the agent goes on through another
        nats_cluster.kill(watched)
        more = [breaker_event(seq=s, open=s % 2 == 1, agent=AGENT, warehouse=WH,
                              breaker=f"b{s}", episode=f"ep-{s}") for s in range(2, 7)]
        await publish(nats_cluster, other, topics, more)
        await wait_for(lambda: [s for s, _ in processed(path)] == list(range(1, 7)), 90,
                       "every event published while the coordinator's node was dead")
        assert ops.watcher.stats.broker is not None
        assert ops.watcher.stats.connection_errors >= 1
    assert all(outcome == "applied" for _, outcome in processed(path))
    incidents = read(path, "SELECT count(*) FROM ops_incidents WHERE warehouse_id = ?", [WH])
    assert incidents == [(1,)]
    assert counter(path, "breaker_events_applied") == 6


async def test_losing_the_agents_node_mid_incident_loses_and_repeats_nothing(
    tmp_path: Path, nats_cluster: NatsCluster, broker: Broker, topics: Topics
) -> None:
    """A real edge agent with the cluster's URL list trips; the node it is connected to
    dies; it clears on its own while moving to another node; the coordinator (on the
    cluster too) applies every event the agent made, each once."""
    path = tmp_path / "coordinator.sqlite"
    db = open_database(path)
    seed_orders_at(db, AGENT_WH, 5, datetime.now(UTC), stock_boost=100)
    db.conn.close()
    raw = config_dict(tmp_path, broker.url, ",".join(nats_cluster.urls), topics)
    raw["agent"].update(agent_id=AGENT_2, warehouse_id=AGENT_WH, heartbeat_s=0)
    raw["uplink_mqtt"].update(username=AGENT_2, reconnect_max_s=2.0)
    # readings 7 minutes apart in all: start in the past so none is ahead of the
    # coordinator's clock (it refuses far-future events)
    clock = ManualClock(datetime.now(UTC) - timedelta(minutes=10))
    agent = EdgeAgent(AgentConfig.model_validate(raw), clock=clock, topics=topics)
    sensor_topic = topics.sensor(AGENT_WH, SENSOR)

    def feed(value: float, seconds: float) -> None:
        clock.advance(seconds)
        reading = SensorReading(sensor_id=SENSOR, ts=clock.now(), temperature_c=value)
        agent.handle_sensor_message(sensor_topic, encode(reading))

    settings = settings_for(path, nats_cluster.urls, topics)
    task = asyncio.create_task(agent.run())
    try:
        # the coordinator shares the agent's (fast-forwarded) clock: on the real clock the
        # agent's event times would be minutes in the future, and a future clear is refused
        async with OpsService(settings, ops_config(tmp_path), clock) as ops:
            await asyncio.wait_for(ops.watcher.connected.wait(), 60)
            await wait_for(lambda: agent.stats.uplink_connected, 60, "the agent's uplink")
            for value, gap in ((12.0, 0), (12.0, 150), (12.0, 151)):
                feed(value, gap)
            await wait_for(lambda: opened(path)[-1:] == [1], 60, "the trip")
            node = node_of_port(nats_cluster, int(str(agent.stats.uplink_broker).split(":")[1]))
            nats_cluster.kill(node)  # mid-incident: the agent's node dies
            for value, gap in ((5.0, 1), (5.0, 60), (5.0, 61)):
                feed(value, gap)  # it clears on its own, whatever the uplink does
            made = agent.stats.events_created  # its breaker events, the trip and the clear
            assert made >= 2
            await wait_for(lambda: len(processed(path, AGENT_2)) == made
                           and opened(path)[-1:] == [0], 120,
                           "every event the agent made, through another node")
            assert agent.stats.uplink_broker != f"127.0.0.1:{nats_cluster.nodes[node].mqtt_port}"
    finally:
        await cancel_and_wait(task)
    # events the agent made while it had no uplink arrive replayed (historical) unless
    # they are the breaker's newest: recorded, never applied over newer state
    assert {o for _, o in processed(path, AGENT_2)} <= {"applied", "historical"}, \
        processed(path, AGENT_2)
    assert read(path, "SELECT count(*) FROM ops_incidents WHERE warehouse_id = ?",
                [AGENT_WH]) == [(1,)]
    assert warehouse_available(path, AGENT_WH)
