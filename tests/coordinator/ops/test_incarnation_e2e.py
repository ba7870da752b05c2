"""A wiped gateway through the real broker: a real edge agent trips its warehouse, stops,
loses its state database, restarts from seq 0 / session 1 with a new incarnation, and the
coordinator follows it (reopens on its first state, trips and clears with it) instead of
taking everything it says for stale."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from benchmarks.reroute import seed_orders_at
from coordinator.db import open_database
from coordinator.ops.api import availability_view
from coordinator.ops.runner import OpsService
from edge_agent.agent import EdgeAgent
from edge_agent.config import AgentConfig
from protocols import SensorReading, Topics, encode
from protocols.clock import ManualClock
from simulators.brokers import Broker
from tests.coordinator.ops.helpers import (
    counter,
    ops_config,
    read,
    settings_for,
    wait_for,
    warehouse_available,
)
from tests.edge_agent.conftest import SENSOR, SensorPublisher, cancel_and_wait, config_dict

pytestmark = pytest.mark.broker
WH = "WH-02"
AGENT = "gw-WH-02"


def agent_config(tmp_path: Path, broker: Broker, topics: Topics) -> AgentConfig:
    raw = config_dict(tmp_path, broker.url, broker.url, topics)
    raw["agent"].update(agent_id=AGENT, warehouse_id=WH, heartbeat_s=0)
    raw["uplink_mqtt"]["username"] = AGENT
    for sensor in raw["sensors"]:
        sensor["max_gap_s"] = 100_000
    return AgentConfig.model_validate(raw)


def session(path: Path) -> tuple[str | None, int, int] | None:
    rows = read(path, "SELECT incarnation, session_seq, online FROM ops_agent_sessions "
                      "WHERE agent_id = ?", [AGENT])
    return (rows[0][0], int(rows[0][1]), int(rows[0][2])) if rows else None


def wipe_state(directory: Path) -> None:
    for leftover in directory.glob("edge.sqlite*"):
        leftover.unlink()


@contextlib.asynccontextmanager
async def running(agent: EdgeAgent) -> AsyncIterator[None]:
    task = asyncio.create_task(agent.run())
    try:
        await wait_for(lambda: agent.stats.uplink_connected or task.done(), what="uplink")
        if task.done():
            task.result()
        yield
    finally:
        await cancel_and_wait(task)


async def send(pub: SensorPublisher, agent: EdgeAgent, clock: ManualClock, topics: Topics,
               value: float, times: int) -> None:
    """``times`` readings of ``value``, 30 s apart in the agent's clock."""
    for _ in range(times):
        before = agent.stats.readings_accepted
        reading = SensorReading(sensor_id=SENSOR, ts=clock.now(), temperature_c=value)
        await pub.raw(topics.sensor(WH, SENSOR), encode(reading))
        await wait_for(lambda b=before: agent.stats.readings_accepted > b,  # type: ignore[misc]
                       what="the reading")
        clock.advance(30)


async def test_wiped_gateway_restarts_from_seq_zero_and_the_coordinator_follows_it(
        broker: Broker, topics: Topics, tmp_path: Path) -> None:
    path = tmp_path / "coordinator.sqlite"
    db = open_database(path)
    assert seed_orders_at(db, WH, 10, datetime.now(UTC), stock_boost=100) == 10
    db.conn.close()
    clock = ManualClock(datetime.now(UTC))
    config = agent_config(tmp_path, broker, topics)
    settings = settings_for(path, broker.url, topics)
    async with OpsService(settings, ops_config(tmp_path), clock) as ops, \
            SensorPublisher(broker.url) as pub:
        await asyncio.wait_for(ops.watcher.connected.wait(), 10)
        # The old gateway: two runs (session 2), then a five-minute excursion trips it.
        for _ in range(2):
            old = EdgeAgent(config, clock=clock, topics=topics)
            async with running(old):
                await wait_for(lambda: session(path) is not None and session(path)[2] == 1,
                               what="the old birth")
        old_incarnation = old.stats.incarnation
        async with running(old):
            await send(pub, old, clock, topics, 9.0, 12)
            await wait_for(lambda: counter(path, "reroutes") == 1, what="the old trip")
        old_seq = old.stats.seq
        await wait_for(lambda: session(path) == (old_incarnation, 3, 0), what="the old will")
        assert not warehouse_available(path, WH)
        # The gateway is replaced: its state database is gone.
        wipe_state(tmp_path)
        new = EdgeAgent(config, clock=clock, topics=topics)
        async with running(new):
            assert new.stats.incarnation not in (None, old_incarnation)
            assert new.stats.seq < old_seq and new.stats.session_seq == 1
            # Its birth and first breaker state (not tripped) would reopen the warehouse:
            # they wait until an operator confirms the replacement (an impostor with a
            # made-up incarnation must not reopen it)
            await wait_for(lambda: counter(path, "security_held") >= 2,
                           what="the new incarnation's reopening messages held")
            assert not warehouse_available(path, WH)
            pending = read(path, "SELECT pending_incarnation FROM gateways "
                                 "WHERE agent_id = ?", [AGENT])
            assert pending == [(new.stats.incarnation,)]
            await ops.confirm_incarnation(AGENT, actor="user:duty-lead",
                                          reason="SD card re-imaged")
            # ...then they apply, although seq and session_seq went backwards
            await wait_for(lambda: session(path) == (new.stats.incarnation, 1, 1),
                           what="the new birth")
            await wait_for(lambda: warehouse_available(path, WH),
                           what="the new gateway's breaker state")
            # It trips and clears, and the coordinator follows both.
            await send(pub, new, clock, topics, 9.0, 12)
            await wait_for(lambda: counter(path, "reroutes") == 2, what="the new trip")
            assert not warehouse_available(path, WH)
            await send(pub, new, clock, topics, 5.0, 6)
            await wait_for(lambda: warehouse_available(path, WH), what="the new clear")
            listing = await ops.call(lambda core: availability_view(core, WH))
            assert [a["incarnation"] for a in listing["agents"]] == [new.stats.incarnation]
        assert counter(path, "agent_lifetimes_replaced") == 1
        audit = read(path, "SELECT actor, reason FROM ops_warehouse_audit "
                           "WHERE warehouse_id = ? AND action = 'agent_incarnation'", [WH])
        assert len(audit) == 1 and audit[0][0] == AGENT
        assert str(new.stats.incarnation) in audit[0][1]
