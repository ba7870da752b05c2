"""Intake figures of the scale benchmark: the same closed-loop HTTP load on one
coordinator instance, then spread over two instances of the cluster topology (lease on)
sharing the database (``intake_1_per_s``, ``intake_2_per_s``, ``instances_2_over_1``;
alternated, medians: see :func:`measure`), and ``oversold``: (warehouse, SKU) pairs whose
held reservations exceed the stock on hand.

``--db``: one SQLite file (both instances queue on its one write lock: the figure says
what a second instance costs or gains on one host) or one PostgreSQL database (the
instances' intake transactions still take the one advisory write lock, so the gain is
what the second process adds in HTTP, validation and allocation work beside it).

The clients are a light load generator since 2026-11-30 (pre-encoded requests over one
keep-alive connection each, every response's status and order checked; see
:func:`_load`); before, an httpx client per client took 0.4 of the two cores. Both
figures of a run are always measured with the same generator.
"""

from __future__ import annotations

import asyncio
import random
import statistics
import subprocess
import sys
import time
from contextlib import ExitStack
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit

from benchmarks.databases import Databases, count, one
from benchmarks.http_load import Connection, request_bytes
from coordinator.auth.roles import Role, Scope
from coordinator.auth.store import issue_token
from coordinator.db import open_database
from simulators.brokers import MosquittoBroker
from simulators.coordinators import coordinators, seed_command

CLIENTS = 16


def _orders(count: int, prefix: str, seed: int) -> list[dict[str, object]]:
    rng = random.Random(seed)
    return [{"channel": "manual", "channel_order_id": f"{prefix}-{i}",
             "customer_id": f"c-{i % 97}",
             "lines": [{"sku_id": f"SKU-{rng.randint(1, 240):04d}", "qty": 1}],
             "lat": round(30.25 + rng.uniform(-0.1, 0.1), 5),
             "lon": round(120.16 + rng.uniform(-0.1, 0.1), 5)} for i in range(count)]


async def _load(urls: list[str], token: str, seconds: float, prefix: str) -> float:
    """Orders accepted per second by ``CLIENTS`` clients posting back to back, spread
    evenly over ``urls``.

    Each client keeps one connection open (HTTP/1.1 keep-alive) and sends requests
    encoded before the clock starts (:class:`benchmarks.http_load.Connection`): the
    generator shares the two cores with the instances, and an HTTP client library spent
    0.4-0.47 of a core on it (measured), more than the database server. Every response
    is checked: its status and the order it names."""
    bodies = _orders(100_000, prefix, seed=7)  # the same orders whatever the spread
    targets = [urlsplit(url) for url in urls]
    # body i always goes to client i % CLIENTS, so to one instance: encoded for it
    requests = [request_bytes(
        targets[(i % CLIENTS) % len(urls)].netloc, "POST", "/orders", body, token=token)
        for i, body in enumerate(bodies)]
    expected = [f'"channel_order_id":"{body["channel_order_id"]}"'.encode()
                for body in bodies]
    connections = [await Connection.open(t.hostname or "", t.port or 80)
                   for t in (targets[n % len(urls)] for n in range(CLIENTS))]
    done = 0
    failed: list[str] = []

    async def client(n: int) -> None:
        nonlocal done
        conn = connections[n]
        i = n
        while time.perf_counter() < stop_at:
            status, body = await conn.exchange(requests[i % len(requests)])
            if status in (200, 201) and expected[i % len(requests)] in body:
                done += 1
            else:
                failed.append(f"{status} {body[:200]!r}")
            i += CLIENTS

    started = time.perf_counter()
    stop_at = started + seconds
    try:
        await asyncio.gather(*(client(n) for n in range(CLIENTS)))
    finally:
        for conn in connections:
            conn.writer.close()
    if failed:
        raise RuntimeError(f"{len(failed)} orders refused, e.g. {failed[0]}")
    return done / (time.perf_counter() - started)


def _wait_for_leader(db_path: str, bound: float = 30.0) -> None:
    deadline = time.monotonic() + bound
    while time.monotonic() < deadline:
        if one(db_path, "SELECT 1 FROM ops_lease") is not None:
            return
        time.sleep(0.1)
    raise RuntimeError("no instance took the ops lease")


def _oversold(db_path: str) -> int:
    return count(db_path,
                 "SELECT count(*) FROM inventory i JOIN (SELECT warehouse_id, sku_id, "
                 "sum(qty) AS held FROM reservations WHERE status = 'held' "
                 "GROUP BY warehouse_id, sku_id) r ON r.warehouse_id = i.warehouse_id "
                 "AND r.sku_id = i.sku_id WHERE r.held > i.on_hand")


def _database(path: str) -> str:
    """The sample region (the coordinator's own CLI) and a channel's integration token."""
    subprocess.run(seed_command(sys.executable, path), check=True,
                   stdout=subprocess.DEVNULL)
    db = open_database(path)
    _, token = issue_token(db, name="bench", role=Role.INTEGRATION, scope=Scope(),
                           now=datetime.now(UTC), created_by="benchmark")
    db.conn.close()
    return token


def measure(quick: bool, workdir: Path, db: str = "sqlite",
            databases: Databases | None = None) -> dict[str, float]:
    """Two instances of the cluster topology on one database; the same clients post to
    instance ``a`` only (``b`` up as the standby it would be anyway), then spread over
    both, alternating ``rounds`` times: the machine is shared, and its load drifts over
    minutes, so the two figures are medians of rounds taken side by side."""
    seconds = 0.5 if quick else 10.0
    rounds = 1 if quick else 3
    one: list[float] = []
    two: list[float] = []
    with MosquittoBroker() as broker, ExitStack() as stack:
        if databases is None:  # one server for a whole run, else our own
            databases = stack.enter_context(Databases(db, workdir))
        run_dir = workdir / "intake"
        run_dir.mkdir()
        db_path = databases.new("intake")
        token = _database(db_path)
        with coordinators(db_path, [broker.url], "bwintake", run_dir, names=("a", "b"),
                          cluster=True, lease_ttl_s=4.0) as running:
            urls = [p.url for p in running.values()]
            _wait_for_leader(db_path)
            # warm-up, not measured: connections, caches, the leader's first ticks
            asyncio.run(_load(urls, token, seconds / 2, "w"))
            for n in range(rounds):
                # ABBA: neither side always runs later (the stock the orders take drains)
                order = (1, 2) if n % 2 == 0 else (2, 1)
                for instances in order:
                    rate = asyncio.run(_load(urls[:instances], token, seconds,
                                             f"i{instances}-{n}"))
                    (one if instances == 1 else two).append(rate)
        oversold = _oversold(db_path)
    intake_1, intake_2 = statistics.median(one), statistics.median(two)
    return {"intake_1_per_s": intake_1, "intake_2_per_s": intake_2,
            "instances_2_over_1": intake_2 / intake_1, "oversold": oversold,
            "intake_rounds": rounds, "intake_1_min_per_s": min(one),
            "intake_1_max_per_s": max(one), "intake_2_min_per_s": min(two),
            "intake_2_max_per_s": max(two)}
