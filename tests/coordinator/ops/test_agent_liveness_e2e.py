"""Liveness through the real broker: a real edge agent's heartbeats keep its warehouse
open; when it goes silent while its MQTT session stays up (no last will is sent), the
coordinator pauses the warehouse after the grace, and the next heartbeat reopens it."""

from __future__ import annotations

import asyncio
import contextlib
from datetime import UTC, datetime
from pathlib import Path

import pytest

from benchmarks.reroute import seed_orders_at
from coordinator.db import open_database
from coordinator.ops.runner import OpsService
from edge_agent.agent import EdgeAgent
from edge_agent.config import AgentConfig
from protocols import Topics
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
from tests.edge_agent.conftest import cancel_and_wait, config_dict

pytestmark = pytest.mark.broker
WH = "WH-02"
AGENT = "gw-WH-02"
GRACE_S = 60
HEARTBEAT_S = 20


def agent_config(tmp_path: Path, broker: Broker, topics: Topics) -> AgentConfig:
    raw = config_dict(tmp_path, broker.url, broker.url, topics)
    raw["agent"].update(
        agent_id=AGENT,
        warehouse_id=WH,
        heartbeat_s=HEARTBEAT_S,
        tick_interval_s=3600,  # the test ticks the agent itself; no tick = a hung agent
    )
    raw["uplink_mqtt"]["username"] = AGENT
    for sensor in raw["sensors"]:
        sensor["max_gap_s"] = 100_000
    return AgentConfig.model_validate(raw)


def heard_ts(path: Path) -> str | None:
    rows = read(path, "SELECT last_birth_at FROM ops_agent_sessions WHERE agent_id = ?",
                [AGENT])
    return str(rows[0][0]) if rows else None


async def test_silent_agent_without_last_will_pauses_warehouse_and_heartbeat_reopens(
        broker: Broker, topics: Topics, tmp_path: Path) -> None:
    path = tmp_path / "coordinator.sqlite"
    db = open_database(path)
    assert seed_orders_at(db, WH, 20, datetime.now(UTC), stock_boost=100) == 20
    db.conn.close()
    clock = ManualClock(datetime.now(UTC))
    settings = settings_for(path, broker.url, topics)
    agent = EdgeAgent(agent_config(tmp_path, broker, topics), clock=clock, topics=topics)
    async with OpsService(settings, ops_config(tmp_path, grace_s=GRACE_S), clock) as ops:
        await asyncio.wait_for(ops.watcher.connected.wait(), 10)
        task = asyncio.create_task(agent.run())
        try:
            await wait_for(lambda: heard_ts(path) is not None, what="the birth")
            # Heartbeats for 4 intervals (longer than the grace): the warehouse stays open.
            for _ in range(4):
                before = heard_ts(path)
                clock.advance(HEARTBEAT_S)
                await agent.tick()
                await wait_for(lambda b=before: heard_ts(path) != b,  # type: ignore[misc]
                               what="a heartbeat")
            await asyncio.sleep(0.2)  # several coordinator ticks
            assert counter(path, "reroutes") == 0
            assert warehouse_available(path, WH)
            # The agent hangs: connected, so no last will, but nothing more is heard.
            clock.advance(GRACE_S + 1)
            await wait_for(lambda: counter(path, "reroutes") == 1, what="the silence hold")
            assert not warehouse_available(path, WH)
            assert agent.stats.uplink_connected
            # It comes back to life: its next tick heartbeats and the warehouse reopens.
            await agent.tick()
            await wait_for(lambda: warehouse_available(path, WH),
                           what="the heartbeat after the silence")
            assert counter(path, "reroutes") == 1
        finally:
            with contextlib.suppress(Exception):
                await cancel_and_wait(task)
