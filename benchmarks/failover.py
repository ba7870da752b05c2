"""Failover figures of the scale benchmark: two coordinator processes on one database
(SQLite file or PostgreSQL, ``--db``) under the ops lease; the leader is SIGKILLed and
the clock runs until the standby has applied the first breaker event published after
the kill (``failover_s``).

The lease TTL is the default of ``[ops.cluster]`` (4 s): the standby waits for the dead
leader's lease to expire, takes it, rebuilds its machines from the database and applies
what its own MQTT session received meanwhile.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Callable
from contextlib import ExitStack
from datetime import UTC, datetime
from pathlib import Path

import aiomqtt

from benchmarks.databases import Databases, one
from coordinator.db import open_database, write_transaction
from coordinator.gateways.store import register
from coordinator.ops.config import ClusterConfig
from coordinator.region import generate_region, load_region
from protocols import BreakerEvent, BreakerState, Topics, encode
from simulators.brokers import MosquittoBroker
from simulators.coordinators import coordinators

BOUND_S = 60.0


def _holder(db_path: str) -> str | None:
    row = one(db_path, "SELECT holder FROM ops_lease WHERE name = 'ops'")
    return None if row is None else str(row[0])


def _applied(db_path: str, agent_id: str) -> bool:
    return one(db_path, "SELECT 1 FROM ops_processed_events WHERE agent_id = ?",
                (agent_id,)) is not None


def _trip(warehouse: str, seq: int) -> BreakerEvent:
    now = datetime.now(UTC)
    return BreakerEvent(
        warehouse_id=warehouse, agent_id=f"gw-{warehouse}", breaker="cold_chain",
        state=BreakerState.TRIPPED, open=True, reason="threshold_exceeded", since=now,
        episode_id=f"ep-{warehouse}-{seq}", seq=seq, session_seq=1, event_time=now,
        published_at=now)


async def _wait(check: Callable[[], bool], bound: float) -> float:
    started = time.perf_counter()
    while not check():
        if time.perf_counter() - started > bound:
            return bound
        await asyncio.sleep(0.02)
    return time.perf_counter() - started


async def _round(broker: MosquittoBroker, databases: Databases, workdir: Path,
                 round_no: int) -> float:
    topics = Topics(f"bwfailover-{round_no}-{int(time.time())}")
    region = generate_region(warehouses=8, stores=20, skus=20)
    db_path = databases.new(f"failover-{round_no}")
    db = open_database(db_path)
    now = datetime.now(UTC)
    load_region(db, region, now)
    first, second = region.warehouses[0].id, region.warehouses[1].id
    with write_transaction(db):  # the coordinator refuses events of unregistered gateways
        for wh in (first, second):
            register(db, f"gw-{wh}", wh, actor="benchmark", now=now)
    db.conn.close()
    run_dir = workdir / f"round-{round_no}"
    run_dir.mkdir()
    ttl = ClusterConfig().lease_ttl_s
    with coordinators(db_path, [broker.url], topics.root, run_dir,
                      lease_ttl_s=ttl) as running:
        await _wait(lambda: _holder(db_path) is not None, BOUND_S)
        async with aiomqtt.Client(broker.host, broker.port, timeout=30) as agent:
            await agent.publish(topics.breaker(first, "cold_chain"), encode(_trip(first, 1)),
                                qos=1)
            await _wait(lambda: _applied(db_path, f"gw-{first}"), BOUND_S)
            holder = _holder(db_path)
            leader = next(p for p in running.values() if p.instance == holder)
            leader.kill()
            started = time.perf_counter()
            await agent.publish(topics.breaker(second, "cold_chain"),
                                encode(_trip(second, 1)), qos=1)
            await _wait(lambda: _applied(db_path, f"gw-{second}"), BOUND_S)
            return time.perf_counter() - started


def measure(quick: bool, workdir: Path, db: str = "sqlite",
            databases: Databases | None = None) -> dict[str, float]:
    """``databases``: where to create them (one server for a whole run), else our own."""
    rounds = 1 if quick else 3
    with MosquittoBroker() as broker, ExitStack() as stack:
        if databases is None:
            databases = stack.enter_context(Databases(db, workdir))
        times = [asyncio.run(_round(broker, databases, workdir, i)) for i in range(rounds)]
    return {"failover_s": statistics.median(times), "failover_max_s": max(times),
            "lease_ttl_s": ClusterConfig().lease_ttl_s}
