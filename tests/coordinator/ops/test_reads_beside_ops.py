"""Reads never queue behind the ops thread's ordinary work: with it busy, metrics, the
dashboard, the outbox and the audit trail still answer at once. While it applies a
warehouse's transition they give way (coordinator.read_yield), at most reads.max_yield_s;
writes and the health probe never do."""

from __future__ import annotations

import asyncio
import threading
from datetime import UTC, datetime
from pathlib import Path

import httpx

from benchmarks.reroute import seed_orders_at
from coordinator.db import Database, open_database
from coordinator.ops.handler import OpsCore
from coordinator.ops.notify import outbox
from coordinator.read_yield import ReadYield
from coordinator.region import SAMPLE_DIR, SAMPLE_FILES
from coordinator.settings import ReadsConfig, Settings
from protocols import Topics
from protocols.clock import ManualClock
from simulators.brokers import Broker
from tests.auth import ADMIN
from tests.coordinator.ops.app_server import ops_app, serving
from tests.coordinator.ops.factories import T0, breaker_event
from tests.coordinator.ops.helpers import next_state, ops_config, refuse_inserts, settings_for

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


async def test_during_a_transition_reads_wait_but_writes_and_the_health_probe_do_not(
        broker: Broker, topics: Topics, tmp_path: Path, db_target: str) -> None:
    # a limit no loaded machine reaches here: the read must wait for the release
    settings = settings_for(db_target, broker.url, topics).model_copy(
        update={"reads": ReadsConfig(max_yield_s=30)})
    app = ops_app(settings, ops_config(tmp_path), ManualClock(datetime.now(UTC)))
    async with serving(app) as url, httpx.AsyncClient(base_url=url, timeout=40,
                                                      headers=ADMIN) as http:
        gate: ReadYield = app.state.read_yield
        async with http.stream("GET", "/dashboard/events") as stream:
            lines = stream.aiter_lines()
            await next_state(lines)  # the stream is open and has sent its first state
            await asyncio.to_thread(gate.hold)  # what the ops thread does when a trip starts
            try:
                dashboard = asyncio.ensure_future(http.get("/dashboard/state"))
                app.state.live.publish("orders")  # a change the open stream recomputes on
                pushed = asyncio.ensure_future(next_state(lines))
                await asyncio.sleep(0.3)
                assert not dashboard.done() and not pushed.done()  # both give way
                assert (await http.get("/healthz")).status_code == 200
                write = await http.post("/orders", json={"orders": [{"order_id": ""}]})
                assert write.status_code == 422  # a write is answered (here refused)
                assert not dashboard.done() and not pushed.done()
            finally:
                await asyncio.to_thread(gate.release)
            assert (await asyncio.wait_for(dashboard, 10)).status_code == 200
            assert (await asyncio.wait_for(pushed, 10))["changed"] == ["orders"]
        scraped = (await http.get("/metrics")).text
    assert "breakwater_reads_deferred_total 2.0" in scraped  # the GET, the recompute
    assert "breakwater_read_yields_total 1.0" in scraped
    assert "breakwater_reads_deferral_timeouts_total 0.0" in scraped


HELD_AT_WH02 = ("SELECT count(*) FROM reservations "
                "WHERE warehouse_id = 'WH-02' AND status = 'held'")


class _Watched(ReadYield):
    """The real yield, noting what the ops transaction had written whenever the ops
    thread held or released it (read on the ops connection itself, on the ops thread,
    so what is not committed yet is seen too)."""

    def __init__(self, db: Database) -> None:
        super().__init__(max_wait_s=5.0, max_active=8)
        self.db = db
        self.seen: list[tuple[str, int, int]] = []

    def _note(self, event: str) -> None:
        held = self.db.execute(HELD_AT_WH02).fetchone()[0]
        notices = outbox.counts(self.db).get(("franchisee", "pending"), 0)
        self.seen.append((event, int(held), notices))

    def hold(self) -> None:
        self._note("hold")
        super().hold()

    def release(self) -> None:
        super().release()
        self._note("release")


def _committed_held(target: str) -> int:
    db = open_database(target, migrate=False)
    try:
        return int(db.execute(HELD_AT_WH02).fetchone()[0])
    finally:
        db.conn.close()


def test_a_trip_holds_reads_from_before_its_reroute_until_its_store_notices_are_queued(
        db_target: str, tmp_path: Path) -> None:
    db = open_database(db_target)
    seed_orders_at(db, "WH-02", 12, T0, stock_boost=50)
    before = db.execute(HELD_AT_WH02).fetchone()[0]
    core = OpsCore(db, Settings(db_path=db_target), ops_config(tmp_path))
    core.read_yield = gate = _Watched(db)
    try:
        result = core.handle(breaker_event(seq=1, warehouse="WH-02", agent="gw-WH-02"), T0)
        assert result.rerouted[0].moved == 12
        (hold, held_then, notices_then), (release, held_after, notices) = gate.seen
        assert (hold, held_then, notices_then) == ("hold", before, 0)  # nothing moved yet
        assert release == "release" and held_after == 0 < before and notices > 0
        assert _committed_held(db_target) == 0  # released after the commit
        assert not gate.held and gate.stats.transitions == 1
        core.handle(breaker_event(seq=2, warehouse="WH-02", agent="gw-WH-02"), T0)
        assert len(gate.seen) == 2  # a repeat of the trip is no transition: reads go on
    finally:
        db.conn.close()


def test_a_reroute_that_fails_releases_the_reads_it_held(db_target: str,
                                                          tmp_path: Path) -> None:
    db = open_database(db_target)
    seed_orders_at(db, "WH-02", 5, T0, stock_boost=50)
    refuse_inserts(db, "ops_pending_store_notices")  # inside the reroute's transaction
    core = OpsCore(db, Settings(db_path=db_target), ops_config(tmp_path))
    core.read_yield = gate = ReadYield(max_wait_s=5.0, max_active=8)
    try:
        try:
            core.handle(breaker_event(seq=1, warehouse="WH-02", agent="gw-WH-02"), T0)
        except Exception as exc:
            assert "disk says no" in str(exc)
        else:
            raise AssertionError("the reroute should have failed")
        assert gate.stats.transitions == 1 and not gate.held
    finally:
        db.conn.close()


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


def test_inputs_applied_inside_an_outer_scope_hold_reads_until_it_ends(
        db_target: str, tmp_path: Path) -> None:
    # the leader's one-row-at-a-time fallback wraps several inputs in one transaction:
    # a trip among them keeps reads held until that transaction is over
    db = open_database(db_target)
    seed_orders_at(db, "WH-02", 5, T0, stock_boost=50)
    core = OpsCore(db, Settings(db_path=db_target), ops_config(tmp_path))
    core.read_yield = gate = ReadYield(max_wait_s=5.0, max_active=8)
    try:
        with core.holding_reads():
            core.handle(breaker_event(seq=1, warehouse="WH-02", agent="gw-WH-02"), T0)
            assert gate.held  # the trip's own call has returned; the scope has not
        assert not gate.held and gate.stats.transitions == 1
    finally:
        db.conn.close()
