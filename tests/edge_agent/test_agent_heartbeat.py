"""The agent's heartbeat through the real broker: the retained online status again, same
session, fresh ``ts``, every ``heartbeat_s`` of clock time; none when it is 0."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from edge_agent.agent import EdgeAgent
from edge_agent.config import AgentConfig
from protocols import AgentState, AgentStatus, Topics
from protocols.clock import ManualClock
from simulators.brokers import Broker
from tests.edge_agent.conftest import AGENT, WH, Collector, config_dict, wait_until
from tests.edge_agent.test_agent_e2e import running

pytestmark = pytest.mark.broker
T0 = datetime(2026, 1, 15, 2, 0, tzinfo=UTC)


def agent_with(tmp_path: Path, broker: Broker, topics: Topics, heartbeat_s: float,
               clock: ManualClock) -> EdgeAgent:
    raw = config_dict(tmp_path, broker.url, broker.url, topics)
    raw["agent"].update(heartbeat_s=heartbeat_s, tick_interval_s=3600)  # ticked by the test
    return EdgeAgent(AgentConfig.model_validate(raw), clock=clock, topics=topics)


def statuses(hq: Collector, topics: Topics) -> list[AgentStatus]:
    return [AgentStatus.model_validate_json(m.payload)
            for m in hq.on(topics.agent_status(WH, AGENT)) if m.payload]


async def test_heartbeat_repeats_the_online_status_with_a_fresh_ts(
        tmp_path: Path, broker: Broker, topics: Topics) -> None:
    clock = ManualClock(T0)
    agent = agent_with(tmp_path, broker, topics, 20, clock)
    async with Collector(broker.url, [topics.agent_status(WH, AGENT)]) as hq, running(agent):
        await wait_until(lambda: len(statuses(hq, topics)) == 1, what="the birth")
        clock.advance(19)
        await agent.tick()  # not due yet
        clock.advance(1)
        await agent.tick()
        await wait_until(lambda: len(statuses(hq, topics)) == 2, what="a heartbeat")
        clock.advance(45)
        await agent.tick()
        await wait_until(lambda: len(statuses(hq, topics)) == 3, what="another heartbeat")
    seen = statuses(hq, topics)[:3]
    assert [s.state for s in seen] == [AgentState.ONLINE] * 3
    assert len({s.session_seq for s in seen}) == 1
    assert [(s.ts - T0).total_seconds() for s in seen] == [0, 20, 65]
    assert all(s.heartbeat_s == 20 for s in seen)


async def test_no_heartbeat_when_it_is_off(
        tmp_path: Path, broker: Broker, topics: Topics) -> None:
    clock = ManualClock(T0)
    agent = agent_with(tmp_path, broker, topics, 0, clock)
    async with Collector(broker.url, [topics.agent_status(WH, AGENT)]) as hq, running(agent):
        await wait_until(lambda: len(statuses(hq, topics)) == 1, what="the birth")
        for _ in range(3):
            clock.advance(3600)
            await agent.tick()
        await wait_until(lambda: agent.stats.outbox_depth == 0, what="the outbox drained")
        # the online status was last published at the birth (set only when it is sent)
        assert agent.publisher.last_heartbeat == T0
        born = statuses(hq, topics)
    assert len(born) == 1 and born[0].heartbeat_s is None
