"""Broker node loss on a real 3-node NATS cluster: the coordinator's node is killed in the
middle of an incident; it moves to another node, its persistent session (replicated by
JetStream) delivers what was published meanwhile, and every breaker event is applied
exactly once."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path

import aiomqtt
import pytest

from benchmarks.reroute import seed_orders_at
from coordinator.db import open_database
from coordinator.ops.runner import OpsService
from protocols import BreakerEvent, Topics, encode
from simulators.nats_cluster import NatsCluster, node_of_port
from tests.coordinator.ops.factories import breaker_event
from tests.coordinator.ops.helpers import counter, ops_config, read, settings_for, wait_for

pytestmark = [pytest.mark.nats, pytest.mark.slow, pytest.mark.timeout(240)]
WH = "WH-02"
AGENT = "gw-WH-02"


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


def processed(db_path: Path) -> list[tuple[int, str]]:
    return [(int(seq), str(outcome)) for seq, outcome in read(
        db_path, "SELECT seq, outcome FROM ops_processed_events WHERE agent_id = ? "
                 "ORDER BY seq", [AGENT])]


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
