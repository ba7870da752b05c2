"""An edge agent's footprint, each probe in a fresh process: cold start and idle RSS of a
50-sensor agent against a bare aiomqtt client, and RSS growth per 1000 sensors.

Run by :mod:`benchmarks.edge_ingest`; the probes are this module's ``__main__``.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiomqtt

from benchmarks.edge_bench_agent import ROOT, SENSORS, WAREHOUSE, agent_config, rss_mb, stop
from edge_agent.agent import EdgeAgent
from protocols import Topics
from simulators.brokers import MosquittoBroker

IDLE_SENSORS = 50
IDLE_ROUNDS = 3


def idle_probe(state_dir: Path, port: int) -> float:
    """Run one 50-sensor agent until both its connections are up, idle 1 s; its RSS."""

    async def main() -> float:
        config = agent_config(state_dir, port, sensors=IDLE_SENSORS)
        agent = EdgeAgent(config)
        task = asyncio.create_task(agent.run())
        while not (agent.stats.sensors_connected and agent.stats.uplink_connected):  # noqa: ASYNC110
            await asyncio.sleep(0.005)
        print("connected", flush=True)
        await asyncio.sleep(1.0)
        rss = rss_mb()
        await stop(task)
        return rss

    return asyncio.run(main())


def bare_probe(port: int) -> float:
    async def main() -> float:
        async with aiomqtt.Client("127.0.0.1", port, identifier="bench-idle-bare"):
            print("connected", flush=True)
            await asyncio.sleep(1.0)
            return rss_mb()

    return asyncio.run(main())


def _timed_probe(args: list[str]) -> tuple[float, float]:
    """(seconds from spawn to "connected", RSS MB it reports) of one probe process."""
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "benchmarks.edge_footprint", *args],
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    if proc.stdout.readline().strip() != "connected":
        proc.kill()
        raise RuntimeError(f"probe {args[0]} did not connect")
    started = time.perf_counter() - start
    out, _ = proc.communicate(timeout=60)
    return started, float(out.strip().splitlines()[-1])


def measure_idle() -> dict[str, float]:
    broker = MosquittoBroker(persistence=False)
    broker.start()
    found: dict[str, list[float]] = {k: [] for k in ("agent_start", "agent_rss", "bare_start",
                                                      "bare_rss")}
    try:
        for _ in range(IDLE_ROUNDS):  # interleaved, best of each: a shared machine
            with tempfile.TemporaryDirectory(prefix="bw-bench-idle-") as tmp:
                started, rss = _timed_probe(["--idle-probe", tmp, str(broker.port)])
            found["agent_start"].append(started)
            found["agent_rss"].append(rss)
            started, rss = _timed_probe(["--bare-probe", str(broker.port)])
            found["bare_start"].append(started)
            found["bare_rss"].append(rss)
    finally:
        broker.close()
    return {k: min(v) for k, v in found.items()}


def rss_probe(state_dir: Path) -> float:
    """RSS growth of one agent with SENSORS sensors that has seen 10 readings from each
    (run in a fresh process so the other measurements' buffers do not blur it)."""
    before = rss_mb()
    agent = EdgeAgent(agent_config(state_dir, 1883))
    agent.breaker_states()  # opens the store and builds the machines
    base = datetime.now(UTC)
    for i in range(SENSORS * 10):
        sensor = f"s{i % SENSORS:04d}"
        ts = (base + timedelta(microseconds=10 * i)).isoformat()
        payload = f'{{"v":1,"sensor_id":"{sensor}","ts":"{ts}","temperature_c":5.0}}'
        agent.handle_sensor_message(Topics(ROOT).sensor(WAREHOUSE, sensor), payload.encode())
    asyncio.run(agent.tick())
    return rss_mb() - before


def measure_rss() -> float:
    with tempfile.TemporaryDirectory(prefix="bw-bench-rss-") as tmp:
        out = subprocess.run(
            [sys.executable, "-m", "benchmarks.edge_footprint", "--rss-probe", tmp],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
    return float(out.stdout.strip().splitlines()[-1])


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--rss-probe":
        print(rss_probe(Path(sys.argv[2])))
    elif len(sys.argv) == 4 and sys.argv[1] == "--idle-probe":
        print(idle_probe(Path(sys.argv[2]), int(sys.argv[3])))
    elif len(sys.argv) == 3 and sys.argv[1] == "--bare-probe":
        print(bare_probe(int(sys.argv[2])))
