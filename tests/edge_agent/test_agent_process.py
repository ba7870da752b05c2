"""The agent as a process (``python -m edge_agent``): SIGKILL keeps state and seq, and a
late last will from an old session is told apart by its session_seq."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from protocols import AgentState, AgentStatus, BreakerState, Topics
from simulators.brokers import Broker
from tests.edge_agent.conftest import (
    AGENT,
    WH,
    Collector,
    SensorPublisher,
    wait_until,
    write_site_config,
)

pytestmark = [pytest.mark.broker, pytest.mark.slow]
ROOT = Path(__file__).resolve().parents[2]


def write_config(tmp_path: Path, broker: Broker, topics: Topics, client_id: str) -> Path:
    return write_site_config(tmp_path, broker.url, topics, name=client_id,
                             tick_interval_s=0.2, for_s=0.5, client_id=client_id)


def start(config: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "edge_agent", "--config", str(config)],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def statuses(hq: Collector, topics: Topics) -> list[AgentStatus]:
    topic = topics.agent_status(WH, AGENT)
    return [AgentStatus.model_validate_json(m.payload) for m in hq.on(topic)]


async def test_killed_process_keeps_state_and_seq_and_a_late_will_is_recognisable(
    tmp_path: Path, broker: Broker, topics: Topics
) -> None:
    breaker_topic = topics.breaker(WH, "cold_chain")
    config_a = write_config(tmp_path, broker, topics, "gw-t-a")
    # The same gateway state after a hardware swap: a new client id, the same database.
    config_b = write_config(tmp_path, broker, topics, "gw-t-b")
    procs: list[subprocess.Popen[bytes]] = []
    try:
        async with (
            Collector(broker.url, [topics.agent_status(WH, AGENT), breaker_topic]) as hq,
            SensorPublisher(broker.url) as pub,
        ):
            first = start(config_a)
            procs.append(first)
            await wait_until(
                lambda: any(s.state is AgentState.ONLINE for s in statuses(hq, topics)), 30, "birth"
            )
            birth_a = statuses(hq, topics)[-1]
            for _ in range(3):
                await pub.native(topics, datetime.now(UTC), 9.5)
                await asyncio.sleep(0.4)  # real time: the process runs on the system clock
            await wait_until(
                lambda: any(e.state is BreakerState.TRIPPED for e in hq.events(breaker_topic)),
                15,
                "trip",
            )
            seq_a = max(e.seq for e in hq.events(breaker_topic))
            episode = next(e for e in hq.events(breaker_topic) if e.open).episode_id

            # Freeze the first process (as good as killed: it never runs again). Its will is
            # published only when its keepalive expires, after the replacement is online.
            os.kill(first.pid, signal.SIGSTOP)
            second = start(config_b)
            procs.append(second)
            await wait_until(
                lambda: any(
                    s.state is AgentState.ONLINE and s.session_seq > birth_a.session_seq
                    for s in statuses(hq, topics)
                ),
                30,
                "second birth",
            )
            birth_b = next(
                s
                for s in statuses(hq, topics)
                if s.state is AgentState.ONLINE and s.session_seq > birth_a.session_seq
            )
            await wait_until(
                lambda: any(s.state is AgentState.OFFLINE for s in statuses(hq, topics)),
                30,
                "late will",
            )
            will = next(s for s in statuses(hq, topics) if s.state is AgentState.OFFLINE)
            order = [(s.state, s.session_seq) for s in statuses(hq, topics)]
            assert order.index((AgentState.OFFLINE, will.session_seq)) > order.index(
                (AgentState.ONLINE, birth_b.session_seq)
            )
            assert will.session_seq == birth_a.session_seq < birth_b.session_seq
            assert not will.graceful  # a stale death: receivers ignore it

            await wait_until(
                lambda: any(e.reason == "restored" for e in hq.events(breaker_topic)),
                15,
                "restored",
            )
            restored = [e for e in hq.events(breaker_topic) if e.reason == "restored"]
            assert restored[-1].state is BreakerState.TRIPPED and restored[-1].open
            assert restored[-1].seq > seq_a and restored[-1].episode_id == episode
    finally:
        for proc in procs:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            proc.wait(timeout=10)
