"""A gateway whose disk fills up keeps protecting its cold room.

The agent runs as a process (``python -m edge_agent``) and its state-store files may not
grow (``RLIMIT_FSIZE`` set on the running process: the kernel refuses the writes, as a
full disk does; SQLite reports "database or disk is full"; so does its log file, so the
log says nothing of that time). Before, the uplink's next
reconnect saved its session number outside any error handling and the process died, the
trip it held in memory with it, and a restarted agent died the same way at start."""

from __future__ import annotations

import asyncio
import resource
import signal
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from protocols import BreakerState, SensorReading, Topics, encode
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
UNLIMITED = (resource.RLIM_INFINITY, resource.RLIM_INFINITY)


def _ignore_sigxfsz() -> None:
    # a write past the limit raises SIGXFSZ, which kills by default; a full disk does not
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)


def site(tmp_path: Path, broker: Broker, topics: Topics) -> Path:
    return write_site_config(tmp_path, broker.url, topics, name="site",
                             tick_interval_s=0.1, for_s=1)


@pytest.mark.skipif(not hasattr(resource, "prlimit"), reason="needs Linux prlimit")
async def test_a_full_disk_and_an_uplink_restart_neither_stop_the_agent_nor_lose_the_trip(
    tmp_path: Path, broker: Broker, topics: Topics
) -> None:
    breaker_topic = topics.breaker(WH, "cold_chain")
    with (tmp_path / "agent.log").open("wb") as log:
        proc = subprocess.Popen(  # noqa: ASYNC220 - started once, not awaited
            [sys.executable, "-m", "edge_agent", "--config", str(site(tmp_path, broker, topics))],
            cwd=ROOT, stdout=log, stderr=log, preexec_fn=_ignore_sigxfsz,
        )
    try:
        async with Collector(broker.url, [breaker_topic, topics.agent_status(WH, AGENT)]) as hq:
            await wait_until(lambda: bool(hq.on(topics.agent_status(WH, AGENT))), 30, "birth")
            resource.prlimit(proc.pid, resource.RLIMIT_FSIZE, (1, resource.RLIM_INFINITY))
            async with SensorPublisher(broker.url) as pub:
                for _ in range(4):  # 9.5 °C for 1.5 s: the trip, on the full disk
                    reading = SensorReading(sensor_id="cr2_t1", ts=datetime.now(UTC),
                                            temperature_c=9.5)
                    await pub.raw(topics.sensor(WH, "cr2_t1"), encode(reading))
                    await asyncio.sleep(0.5)
            # the uplink drops and comes back: a new session while nothing can be saved
            broker.stop()
            await asyncio.sleep(1.0)
            broker.start()
            await wait_until(lambda: len(hq.on(topics.agent_status(WH, AGENT))) >= 2, 30,
                             "second birth")
            assert proc.poll() is None, (tmp_path / "agent.log").read_text()[-2000:]
            # space again: the trip kept in memory is saved and delivered
            resource.prlimit(proc.pid, resource.RLIMIT_FSIZE, UNLIMITED)
            await wait_until(
                lambda: any(e.state is BreakerState.TRIPPED for e in hq.events(breaker_topic)),
                30, "the trip upstream",
            )
            assert proc.poll() is None
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
