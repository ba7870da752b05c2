"""Edge ingest: readings/s from broker through the agent's rules, against a bare subscriber.

One private Mosquitto, one publisher process (paho, QoS 0, native JSON, 1000 sensors) that
prepares its payloads before the clock and publishes on request.

Headline figures (``agent_per_s``, ``bare_per_s``, ``ratio``) measure the *subscriber's*
throughput: each subscriber first registers a persistent session (clean_session=False, fixed
client id, subscriptions) and disconnects; the publisher publishes all N readings, which the
broker queues for the absent session (``queue_qos0_messages true``); a QoS 1 marker on an
unrelated topic is acknowledged only after the broker has taken every earlier publish; then
the clock starts, the subscriber connects and drains until N arrived. ``bare_per_s`` is a bare
aiomqtt subscriber that only counts; ``agent_per_s`` is a full EdgeAgent (parse + validate +
rules + telemetry + batched state persistence) with ``[local_mqtt] persistent_session``.

``*_live_per_s`` keep the earlier measurement: the subscriber connects (clock started before
connecting, as aiomqtt buffers what arrives before iteration) and the publisher runs at the
same time, so on 2 cores both figures are bound by the publisher and CPU contention.

The footprint figures (cold start, idle and per-sensor RSS) are measured by
:mod:`benchmarks.edge_footprint`; the agent's configuration is :mod:`benchmarks.edge_bench_agent`.
"""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

import aiomqtt

from benchmarks.edge_bench_agent import (
    AGENT_ID,
    ROOT,
    SENSORS,
    WAREHOUSE,
    ZONES,
    agent_config,
    stop,
)
from benchmarks.edge_footprint import IDLE_ROUNDS, IDLE_SENSORS, measure_idle, measure_rss
from benchmarks.runner import Result
from edge_agent.agent import EdgeAgent
from protocols import Topics
from simulators.brokers import MosquittoBroker

PUBLISHER = textwrap.dedent(
    """
    import sys, time
    from datetime import datetime, timedelta, timezone
    import paho.mqtt.client as mqtt
    from protocols import Topics

    port, n, sensors = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    wh, root = sys.argv[4], sys.argv[5]
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="bench-pub")
    client.max_queued_messages_set(0)
    client.connect("127.0.0.1", port)
    client.loop_start()
    topics = [Topics(root).sensor(wh, f"s{i:04d}") for i in range(sensors)]
    marker = Topics(root).sensor(wh + "-marker", "done")
    base = datetime.now(timezone.utc)
    payloads = []
    for i in range(n):
        ts = (base + timedelta(microseconds=10 * i)).isoformat().replace("+00:00", "Z")
        value = 4.0 + (i % 7) * 0.1
        payloads.append((topics[i % sensors],
            f'{{"v":1,"sensor_id":"s{i % sensors:04d}","ts":"{ts}","temperature_c":{value:.1f}}}'))
    sys.stdout.write("ready\\n"); sys.stdout.flush()
    for line in sys.stdin:
        if line.strip() == "quit":
            break
        for topic, payload in payloads:
            while True:
                info = client.publish(topic, payload, qos=0)
                if info.rc == mqtt.MQTT_ERR_SUCCESS:
                    break
                time.sleep(0.001)
        # Mosquitto handles one connection's packets in order: once this QoS 1 marker (on a
        # topic nobody measured subscribes to) is acknowledged, every reading is queued.
        client.publish(marker, b"", qos=1).wait_for_publish(30)
        sys.stdout.write("done\\n"); sys.stdout.flush()
    client.loop_stop()
    client.disconnect()
    """
)


class Publisher:
    def __init__(self, port: int, n: int) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", PUBLISHER, str(port), str(n), str(SENSORS), WAREHOUSE, ROOT],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        if self.proc.stdout.readline().strip() != "ready":
            raise RuntimeError("publisher did not start")

    def go(self) -> None:
        """Publish the prepared payloads (made before "ready", outside the measured span)."""
        assert self.proc.stdin is not None
        self.proc.stdin.write("go\n")
        self.proc.stdin.flush()

    def wait_done(self) -> None:
        assert self.proc.stdout is not None
        self.proc.stdout.readline()  # "done"

    def close(self) -> None:
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write("quit\n")
            self.proc.stdin.close()
        except BrokenPipeError:
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


BARE_ID = "bench-bare"
SENSOR_CLIENT_ID = f"{AGENT_ID}-sensors"  # the agent's default local client id


def stall_limit(received: int) -> float:
    """Seconds without progress that end a measurement. Before the first message it is
    long: a draining agent counts nothing until its SUBACKs arrive, and Mosquitto sends
    those after the whole queue."""
    return 2.0 if received else 15.0


def drain_broker() -> MosquittoBroker:
    """The benchmark's private Mosquitto, set up to queue N QoS 0 readings for an absent
    persistent session (the shared MosquittoBroker defaults stay as they are)."""
    broker = MosquittoBroker(max_queued_messages=1_000_000, persistence=False)
    with broker.config_path.open("a") as conf:
        conf.write("queue_qos0_messages true\nmax_queued_bytes 0\n")  # 0: no byte limit
    return broker


async def forget_session(port: int, identifier: str) -> None:
    """Drop a persistent session, so later rounds' readings are not queued for it."""
    async with aiomqtt.Client("127.0.0.1", port, identifier=identifier, clean_session=True):
        pass


async def count_bare(client: aiomqtt.Client, n: int) -> tuple[int, float]:
    """Count messages until n arrived or progress stalls; (count, time of the last)."""
    received = 0
    last = time.perf_counter()

    async def consume() -> None:
        nonlocal received, last
        async for _message in client.messages:
            received += 1
            last = time.perf_counter()
            if received >= n:
                return

    task = asyncio.create_task(consume())
    seen, seen_at = 0, time.perf_counter()
    while not task.done():
        await asyncio.sleep(0.05)
        if received != seen:
            seen, seen_at = received, time.perf_counter()
        elif time.perf_counter() - seen_at > stall_limit(seen):
            task.cancel()  # QoS 0: whatever was dropped is not coming
            break
    with contextlib.suppress(asyncio.CancelledError):
        await task
    return received, last


async def measure_bare_live(port: int, publisher: Publisher, n: int) -> tuple[float, int]:
    start = time.perf_counter()
    async with aiomqtt.Client("127.0.0.1", port, identifier=BARE_ID) as client:
        await client.subscribe(Topics(ROOT).sensor_filter(WAREHOUSE), qos=0)
        publisher.go()
        received, last = await count_bare(client, n)
    publisher.wait_done()
    return received / max(last - start, 1e-9), received


async def measure_bare_drain(port: int, publisher: Publisher, n: int) -> tuple[float, int]:
    async with aiomqtt.Client("127.0.0.1", port, identifier=BARE_ID, clean_session=False) as client:
        await client.subscribe(Topics(ROOT).sensor_filter(WAREHOUSE), qos=0)
    publisher.go()
    publisher.wait_done()  # all n queued at the broker for the absent session
    start = time.perf_counter()
    async with aiomqtt.Client("127.0.0.1", port, identifier=BARE_ID, clean_session=False) as client:
        received, last = await count_bare(client, n)
    await forget_session(port, BARE_ID)
    return received / max(last - start, 1e-9), received



async def wait_connected(agent: EdgeAgent) -> None:
    while not agent.stats.sensors_connected:  # noqa: ASYNC110 - polling a read-only counter
        await asyncio.sleep(0.005)


async def count_agent(agent: EdgeAgent, n: int, start: float) -> tuple[float, int]:
    """Poll the accepted count until n or progress stalls; (rate, count)."""
    last_count, last_change = 0, time.perf_counter()
    finished = last_change
    while True:
        count = agent.stats.readings_accepted
        now = time.perf_counter()
        if count != last_count:
            last_count, last_change, finished = count, now, now
        if count >= n or now - last_change > stall_limit(last_count):
            break
        await asyncio.sleep(0.02)
    return last_count / max(finished - start, 1e-9), last_count


async def measure_agent_live(
    port: int, publisher: Publisher, n: int, state_dir: Path
) -> tuple[float, int]:
    agent = EdgeAgent(agent_config(state_dir, port))
    agent.breaker_states()  # open the state store before the clock starts, as bare has none
    start = time.perf_counter()
    task = asyncio.create_task(agent.run())
    await wait_connected(agent)
    publisher.go()
    rate, count = await count_agent(agent, n, start)
    await stop(task)
    publisher.wait_done()
    return rate, count


async def measure_agent_drain(
    port: int, publisher: Publisher, n: int, state_dir: Path
) -> tuple[float, int]:
    config = agent_config(state_dir, port, persistent_session=True)
    # First run: the agent registers its persistent session and subscriptions, then stops.
    first = EdgeAgent(config)
    task = asyncio.create_task(first.run())
    await wait_connected(first)
    await stop(task)
    publisher.go()
    publisher.wait_done()  # all n queued at the broker while the agent is away
    agent = EdgeAgent(config)
    agent.breaker_states()  # open the state store before the clock starts, as bare has none
    start = time.perf_counter()
    task = asyncio.create_task(agent.run())
    rate, count = await count_agent(agent, n, start)
    await stop(task)
    await forget_session(port, SENSOR_CLIENT_ID)
    return rate, count


def run(quick: bool) -> Result:
    n = 20_000 if quick else 30_000
    # A drain round costs ~2 s, a live round ~5 s: more drain rounds, as they are the headline.
    rounds, live_rounds = (1, 1) if quick else (3, 2)
    result = Result("edge_ingest")
    broker = drain_broker()
    broker.start()
    rates: dict[str, list[float]] = {k: [] for k in ("bare", "agent", "bare_live", "agent_live")}
    received: dict[str, list[int]] = {k: [] for k in rates}
    with tempfile.TemporaryDirectory(prefix="bw-bench-") as tmp:
        try:
            publisher = Publisher(broker.port, n)
            try:
                # Interleaved rounds, best of each: the machine is shared, so a burst of
                # someone else's load must not decide the ratio.
                for r in range(rounds):
                    live_dir, drain_dir = Path(tmp) / f"live{r}", Path(tmp) / f"drain{r}"
                    live_dir.mkdir()
                    drain_dir.mkdir()
                    runs: list[tuple[str, Coroutine[Any, Any, tuple[float, int]]]] = []
                    if r < live_rounds:
                        runs += [
                            ("bare_live", measure_bare_live(broker.port, publisher, n)),
                            ("agent_live", measure_agent_live(broker.port, publisher, n, live_dir)),
                        ]
                    runs += [
                        ("bare", measure_bare_drain(broker.port, publisher, n)),
                        ("agent", measure_agent_drain(broker.port, publisher, n, drain_dir)),
                    ]
                    for key, measurement in runs:
                        rate, count = asyncio.run(measurement)
                        rates[key].append(rate)
                        received[key].append(count)
                        time.sleep(0.2)
            finally:
                publisher.close()
        finally:
            broker.close()
    best = {key: max(values) for key, values in rates.items()}

    def note(key: str) -> str:
        least = min(received[key])
        return f"best of {len(rates[key])} x {n:,}; received {least:,}+ of {n:,} each"

    drain = "drain of N readings queued at the broker (persistent session), clock from connect"
    live = "publisher running concurrently: publisher/CPU bound on 2 cores"
    result.add("agent_per_s", best["agent"], "readings/s", f"{drain}; {note('agent')}", ">= 20,000")
    result.add("bare_per_s", best["bare"], "msg/s", f"{drain}; {note('bare')}")
    result.add(
        "ratio",
        best["agent"] / best["bare"] if best["bare"] else 0.0,
        "",
        "agent/bare, drain",
        ">= 0.7",
    )
    result.add(
        "agent_live_per_s", best["agent_live"], "readings/s", f"{live}; {note('agent_live')}"
    )
    result.add("bare_live_per_s", best["bare_live"], "msg/s", f"{live}; {note('bare_live')}")
    result.add(
        "live_ratio",
        best["agent_live"] / best["bare_live"] if best["bare_live"] else 0.0,
        "",
        "agent/bare, live",
    )
    rss_delta = measure_rss()
    result.add(
        "rss_mb_per_1000_sensors",
        rss_delta * 1000 / SENSORS,
        "MB",
        f"{SENSORS} sensors, {ZONES} rules",
    )
    result.add("messages", float(n), "", "per measurement, QoS 0, native JSON")
    idle = measure_idle()
    what = f"one agent, {IDLE_SENSORS} sensors, connected to its broker"
    bare = "a bare process: Python + aiomqtt, one connection"
    result.add("cold_start_s", idle["agent_start"], "s",
               f"{what}: process spawn to both connections up; best of {IDLE_ROUNDS}")
    result.add("cold_start_bare_s", idle["bare_start"], "s", f"{bare}; best of {IDLE_ROUNDS}")
    result.add("rss_mb_idle", idle["agent_rss"], "MB", f"{what}, idle 1 s; VmRSS")
    result.add("rss_mb_idle_bare", idle["bare_rss"], "MB", f"{bare}, idle 1 s; VmRSS")
    return result


if __name__ == "__main__":
    print(run("--quick" in sys.argv).figures)
