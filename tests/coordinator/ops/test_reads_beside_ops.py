"""Reads never queue behind the ops thread: with it busy (a reroute would hold it the same
way), metrics, the dashboard, the outbox and the audit trail still answer at once."""

from __future__ import annotations

import asyncio
import threading
from datetime import UTC, datetime
from pathlib import Path

import httpx

from coordinator.db import open_database
from coordinator.ops.handler import OpsCore
from coordinator.region import SAMPLE_DIR, SAMPLE_FILES
from protocols import Topics
from protocols.clock import ManualClock
from simulators.brokers import Broker
from tests.auth import ADMIN
from tests.coordinator.ops.app_server import ops_app, serving
from tests.coordinator.ops.helpers import ops_config, settings_for

READS = ["/metrics", "/metrics/summary", "/dashboard/state", "/notifications",
         "/warehouses/WH-02/audit"]


async def test_reads_answer_while_the_ops_thread_is_busy(
        broker: Broker, topics: Topics, tmp_path: Path, db_target: str) -> None:
    from coordinator.catalog import import_file

    path = db_target
    db = open_database(path)
    for name in SAMPLE_FILES:
        import_file(db, SAMPLE_DIR / f"{name}.csv", datetime.now(UTC))
    db.conn.close()
    app = ops_app(settings_for(path, broker.url, topics), ops_config(tmp_path),
                  ManualClock(datetime.now(UTC)))
    release = threading.Event()
    busy = threading.Event()

    def hold(core: OpsCore) -> None:
        busy.set()
        release.wait(30)

    async with serving(app) as url, httpx.AsyncClient(base_url=url, timeout=10,
                                                      headers=ADMIN) as http:
        held = asyncio.ensure_future(app.state.ops.call(hold))
        try:
            await asyncio.to_thread(busy.wait, 10)
            answers = await asyncio.wait_for(
                asyncio.gather(*(http.get(p) for p in READS * 4)), timeout=5)
            assert [a.status_code for a in answers] == [200] * len(READS) * 4
            assert not held.done()  # every read was answered while the ops thread was held
        finally:
            release.set()
            await held


def test_identical_reads_in_flight_share_one_computation() -> None:
    from coordinator.coalesce import Coalescer

    reads = Coalescer()
    started, finish = threading.Event(), threading.Event()
    calls: list[int] = []

    def slow() -> dict[str, int]:
        calls.append(1)
        started.set()
        finish.wait(5)
        return {"n": len(calls)}

    results: list[dict[str, int]] = []
    first = threading.Thread(target=lambda: results.append(reads.run("k", slow)))
    first.start()
    started.wait(5)
    others = [threading.Thread(target=lambda: results.append(reads.run("k", slow)))
              for _ in range(5)]
    for t in others:
        t.start()
    while reads.shared < 5:  # all five are waiting on the first computation
        threading.Event().wait(0.01)
    finish.set()
    for t in [first, *others]:
        t.join(5)
    assert calls == [1] and results == [{"n": 1}] * 6
    assert reads.run("k", lambda: {"n": 2}) == {"n": 2}  # nothing kept afterwards
