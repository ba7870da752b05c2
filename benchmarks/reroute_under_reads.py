"""Reroute under reads: a breaker trip applied while 32 clients poll the read endpoints.

The coordinator (real uvicorn, ops side, private Mosquitto) holds orders at one cold-chain
warehouse; its breaker trips over MQTT. ``loaded``: meanwhile 32 HTTP clients (another
process, so they share no interpreter with the server) poll ``GET /metrics`` and
``GET /dashboard/state`` as fast as they are answered. ``ratio``: the reroute's
arrival -> commit time under that load over the same trip without it, on fresh copies
of the same database, in the same run (median of the trials). Reads run on their own
connections and threads, never on the ops thread, and while the trip is applied they give
way to it (``coordinator/read_yield.py``): ``read_wait_s`` is what that cost a read.
``ratio_reads_never_wait``: the same loaded trip with ``[reads] max_yield_s = 0``.

``--db postgresql``: the same on a private PostgreSQL (seeded once, each trial on a
copy made with ``CREATE DATABASE ... TEMPLATE``); the ratio compares PostgreSQL with
itself (the trip alone on PostgreSQL is the baseline, measured in the same run).
"""

from __future__ import annotations

import asyncio
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import aiomqtt

from benchmarks.reroute import TARGET, copy_sqlite, seed_orders_at, trip_event
from benchmarks.runner import Result
from coordinator.auth.roles import Role, Scope
from coordinator.auth.store import issue_token
from coordinator.db import open_database
from coordinator.ops.app import create_app_with_ops
from coordinator.ops.config import FranchiseeConfig, NotifyConfig, OpsConfig
from coordinator.ops.handler import HandleResult
from coordinator.serving import serve_in_thread
from coordinator.settings import ReadsConfig, Settings
from protocols import Topics, encode
from simulators.brokers import Broker, start_test_broker
from simulators.pg_server import start_postgres

CLIENTS = 32

# the pollers, in a process of their own: prints how many reads were answered
_POLLER = r"""
import asyncio, os, sys, time, httpx
url, clients, stop, token = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
done = 0
started = 0
slowest = 0.0
async def client(n):
    global done, started, slowest
    async with httpx.AsyncClient(base_url=url, timeout=30,
                                 headers={"Authorization": f"Bearer {token}"}) as http:
        paths = ["/metrics", "/dashboard/state"]
        i = n
        while not os.path.exists(stop):
            asked = time.perf_counter()
            r = await http.get(paths[i % 2])
            r.raise_for_status()
            slowest = max(slowest, time.perf_counter() - asked)
            done += 1
            if i == n:
                started += 1
                if started == clients:  # every client has been answered once: polling
                    slowest = 0.0  # from here on: the first answers waited for start-up
                    print("ready", flush=True)
            i += 1
async def main():
    await asyncio.gather(*(client(n) for n in range(clients)))
asyncio.run(main())
print(done, slowest, flush=True)
"""


def _wait_until(probe: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if probe():
            return
        time.sleep(0.02)
    message = "the coordinator did not get ready in time"
    raise RuntimeError(message)


async def _publish(broker: Broker, topic: str, payload: bytes) -> None:
    async with aiomqtt.Client(broker.host, broker.port) as agent:
        await agent.publish(topic, payload, qos=1, retain=True)


@dataclass
class Trial:
    seconds: float  # the reroute's arrival -> commit
    reads: int = 0  # answered while the trip ran (and 1 s before it)
    slowest_s: float = 0.0  # the slowest of them, as its client saw it
    deferred: int = 0  # reads that gave way to it
    waited_s: float = 0.0  # their waits, summed


def _trial(target: str, work: Path, broker: Broker, loaded: bool, n: int, *,
           yield_s: float = 1.0) -> Trial:
    """The trip on ``target``, a fresh copy of the seeded database (a SQLite path or a
    PostgreSQL URL); ``yield_s``: ``[reads] max_yield_s``."""
    db = open_database(target)  # the dashboards' read-only token, as in production
    _, token = issue_token(db, name=f"wall-{n}", role=Role.VIEWER, scope=Scope(),
                           now=datetime.now(UTC), created_by="benchmark")
    db.conn.close()
    topics = Topics(f"bench-{uuid.uuid4().hex[:8]}")
    settings = Settings(db_path=target, mqtt_url=(broker.url,), topic_root=topics.root,
                        reads=ReadsConfig(max_yield_s=yield_s))
    config = OpsConfig(tick_interval_s=5.0, mqtt={"client_id": f"bench-{uuid.uuid4().hex[:8]}"},
                       notify=NotifyConfig(franchisee=FranchiseeConfig(
                           jsonl_path=work / f"trial-{n}.franchisee.jsonl")))
    app = create_app_with_ops(settings, config=config)
    done = threading.Event()
    results: list[HandleResult] = []

    def seen(result: HandleResult) -> None:
        if result.rerouted:
            results.append(result)
            done.set()

    reads, slowest = 0, 0.0
    with serve_in_thread(app) as url:
        ops = app.state.ops
        ops.on_result = seen
        _wait_until(lambda: ops.watcher.stats.connects > 0, 20)
        stop = work / f"stop-{n}"
        poller = None
        if loaded:
            poller = subprocess.Popen([sys.executable, "-c", _POLLER, url, str(CLIENTS),
                                       str(stop), token], stdout=subprocess.PIPE, text=True)
            assert poller.stdout is not None
            if poller.stdout.readline().strip() != "ready":
                message = "the pollers failed before polling"
                raise RuntimeError(message)
        time.sleep(1.0)  # the readers are polling; the coordinator is past its start-up
        try:
            event = trip_event(TARGET, seq=1, episode=f"bench-{n}", now=datetime.now(UTC))
            asyncio.run(_publish(broker, topics.breaker(TARGET, "cold_chain"), encode(event)))
            if not done.wait(120):
                message = "the reroute did not commit within 120 s"
                raise RuntimeError(message)
        finally:
            stop.touch()
            if poller is not None:
                out, _ = poller.communicate(timeout=60)
                if poller.returncode != 0:
                    message = "the pollers failed while polling"
                    raise RuntimeError(message)
                answered, slowest_text = out.split()
                reads, slowest = int(answered), float(slowest_text)
            asyncio.run(_publish(broker, topics.breaker(TARGET, "cold_chain"), b""))
        stats = app.state.read_yield.stats
    timing = results[0].rerouted[0]
    return Trial(timing.committed - timing.started, reads, slowest, stats.deferred,
                 stats.waited_s)


def run(quick: bool, db: str = "sqlite") -> Result:
    result = Result("reroute_under_reads")
    count, trials = (287, 1) if quick else (2_000, 3)
    server = start_postgres() if db == "postgresql" else None
    if isinstance(server, str):
        raise RuntimeError(server)
    broker = start_test_broker()
    try:
        with tempfile.TemporaryDirectory(prefix="bw-reroute-reads-") as tmp:
            work = Path(tmp)
            seeded = str(work / "seeded.sqlite") if server is None else server.create_database()
            store = open_database(seeded)
            held = seed_orders_at(store, TARGET, count, datetime.now(UTC),
                                  stock_boost=count * 2)
            store.conn.close()

            def fresh(n: int) -> str:
                if server is None:
                    return str(copy_sqlite(Path(seeded), work / f"trial-{n}.sqlite"))
                return server.create_database(template=seeded)

            quiet: list[float] = []
            loaded: list[Trial] = []
            unyielding: list[float] = []
            for n in range(trials):  # interleaved: drifting machine load hits all alike
                quiet.append(_trial(fresh(3 * n), work, broker, False, 3 * n).seconds)
                loaded.append(_trial(fresh(3 * n + 1), work, broker, True, 3 * n + 1))
                unyielding.append(_trial(fresh(3 * n + 2), work, broker, True, 3 * n + 2,
                                         yield_s=0.0).seconds)
    finally:
        broker.close()
        if server is not None:
            server.stop()
    backend = "PostgreSQL" if server is not None else "SQLite"
    alone = statistics.median(quiet)
    busy = statistics.median(t.seconds for t in loaded)
    deferred = sum(t.deferred for t in loaded)
    result.add("reroute_alone_s", alone, "s",
               f"{held} orders held; arrival -> commit, median of {trials}; {backend}")
    result.add("reroute_under_reads_s", busy, "s",
               f"same trip while {CLIENTS} clients poll /metrics and /dashboard/state")
    result.add("reads_answered", float(statistics.median(t.reads for t in loaded)),
               "requests", "reads answered while the loaded trip ran (incl. 1 s before it)")
    result.add("read_wait_s", sum(t.waited_s for t in loaded) / max(1, deferred), "s",
               f"mean wait of the {deferred} reads that waited for a trip")
    result.add("slowest_read_s", statistics.median(t.slowest_s for t in loaded), "s",
               "the slowest read of a loaded trial, as its client saw it (median)")
    result.add("ratio", busy / alone, "x", f"under reads / alone, {backend}", "< 1.5")
    result.add("ratio_reads_never_wait", statistics.median(unyielding) / alone, "x",
               "the same with [reads] max_yield_s = 0 (reads never give way)")
    # every trial, so a reader can tell a ratio from the noise of a shared machine
    result.details["trials_s"] = {"alone": [round(t, 3) for t in quiet],
                                  "under_reads": [round(t.seconds, 3) for t in loaded],
                                  "reads_never_wait": [round(t, 3) for t in unyielding]}
    return result
