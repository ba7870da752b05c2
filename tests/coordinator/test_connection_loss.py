"""The coordinator outlives its database connections: PostgreSQL ends every session (a
restart, a failover: ``pg_terminate_backend``), and the real app (uvicorn, the ops side,
the notification dispatcher) answers again within seconds on new connections, with no
request answered 500 in between (503, "try again", is allowed). On SQLite no connection
is ever lost: the same scenario runs without the termination (one code for both)."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from coordinator.app import create_app
from coordinator.catalog import import_file
from coordinator.connections import Connections
from coordinator.db import Database, connection_lost, open_database
from coordinator.errors import ConnectionLost
from coordinator.ops.notify import outbox
from coordinator.ops.notify.outbox import OutgoingNotice
from coordinator.postgres import is_postgres_url
from coordinator.region import SAMPLE_DIR, SAMPLE_FILES
from coordinator.serving import serve_in_thread
from coordinator.settings import Settings
from protocols import Topics
from protocols.clock import ManualClock
from protocols.orders import OrderIn
from simulators.brokers import Broker
from tests.auth import ADMIN
from tests.coordinator.ops.app_server import ops_app, serving
from tests.coordinator.ops.helpers import ops_config, settings_for, wait_for
from tests.coordinator.pg_sessions import end_sessions

RECOVERY_S = 10.0  # "within a few seconds", with room for a loaded build machine


def _order(trade_no: str) -> dict[str, Any]:
    return {"channel": "wechat_mini", "out_trade_no": trade_no, "store_code": "HZ-S001",
            "goods": [{"sku_id": "SKU-0001", "num": 1}],
            "address": {"latitude": 30.27, "longitude": 120.15}}


def _terminate_every_session(target: str) -> int:
    """What a restart of the server does to the app: every session of the database but
    this one ends. Returns how many were ended."""
    return end_sessions(target, "datname = current_database()")


def _queue_notice(target: str, key: str, now: datetime) -> None:
    """A franchisee notice queued by someone else (the ops loop does this on a trip)."""
    db = open_database(target, migrate=False)
    try:
        with db.atomic():
            outbox.queue(db, [OutgoingNotice("franchisee", key, {"order_id": key}, None)],
                         now)
    finally:
        db.conn.close()


def _delivered(sink: Path, key: str) -> bool:
    return sink.exists() and key in sink.read_text(encoding="utf-8")


class _Calls:
    """Every answer of the app, so none of them may have been a 500."""

    def __init__(self, http: httpx.AsyncClient) -> None:
        self.http = http
        self.statuses: list[tuple[str, int]] = []

    async def round(self, width: int) -> dict[str, list[int]]:
        """``width`` of each request at once (several request threads, each with its own
        connection); the status codes by request."""
        requests = {
            "healthz": lambda: self.http.get("/healthz"),
            "dashboard": lambda: self.http.get("/dashboard/state"),
            "orders": lambda: self.http.get("/orders", params={"limit": 5}),
            "post": lambda: self.http.post("/orders",
                                           json=_order(f"LOSS-{uuid.uuid4().hex[:10]}")),
        }
        names = [name for name in requests for _ in range(width)]
        answers = await asyncio.gather(*(requests[name]() for name in names))
        codes: dict[str, list[int]] = {name: [] for name in requests}
        for name, answer in zip(names, answers, strict=True):
            codes[name].append(answer.status_code)
            self.statuses.append((name, answer.status_code))
        return codes


def _seeded(target: str) -> str:
    """The sample catalogue imported into ``target``; returns ``target``."""
    db = open_database(target)
    try:
        for name in SAMPLE_FILES:
            import_file(db, SAMPLE_DIR / f"{name}.csv", datetime.now(UTC))
    finally:
        db.conn.close()
    return target


def _all_ok(codes: dict[str, list[int]]) -> bool:
    return all(200 <= code < 300 for answers in codes.values() for code in answers)


async def test_the_app_answers_again_after_the_database_ended_every_session(
        broker: Broker, topics: Topics, tmp_path: Path, db_target: str,
        caplog: pytest.LogCaptureFixture) -> None:
    postgres = is_postgres_url(_seeded(db_target))
    clock = ManualClock(datetime.now(UTC))
    config = ops_config(tmp_path)
    sink = config.notify.franchisee.jsonl_path
    app = ops_app(settings_for(db_target, broker.url, topics), config, clock)
    caplog.set_level(logging.WARNING)
    async with serving(app) as url, httpx.AsyncClient(base_url=url, timeout=20,
                                                      headers=ADMIN) as http:
        calls = _Calls(http)
        # every part holds its connections: request threads, intake, dispatcher
        assert _all_ok(await calls.round(4))
        _queue_notice(db_target, "before-loss", clock.now())
        await wait_for(lambda: _delivered(sink, "before-loss"), what="a first delivery")

        if postgres:
            assert await asyncio.to_thread(_terminate_every_session, db_target) > 0
        caplog.clear()

        # back within seconds; a request meeting the loss may be refused with a 503
        deadline = time.monotonic() + RECOVERY_S
        while not _all_ok(await calls.round(4)):
            assert time.monotonic() < deadline, calls.statuses[-16:]
            await asyncio.sleep(0.1)
        # and stays back: every request thread works, not only the ones that met the loss
        for _ in range(3):
            codes = await calls.round(8)
            assert _all_ok(codes), codes
        _queue_notice(db_target, "after-loss", clock.now())
        await wait_for(lambda: _delivered(sink, "after-loss"), within=RECOVERY_S,
                       what="a delivery after the loss")

    assert [s for s in calls.statuses if s[1] >= 500 and s[1] != 503] == []
    # one warning per lost connection, not one per round for as long as it lasts
    failed_rounds = [r for r in caplog.records
                     if r.getMessage().startswith("notification round failed")]
    assert len(failed_rounds) <= 1


def _end_own_session(db: Database) -> None:
    """The server ends this connection's session while it is in use (what a restart
    does to a request that is running)."""
    db.execute("SELECT pg_terminate_backend(pg_backend_pid())")


def test_a_request_thread_replaces_a_connection_lost_idle_or_in_use(
        postgres_url: str) -> None:
    open_database(postgres_url).conn.close()  # migrated
    connections = Connections(postgres_url)
    try:
        first = connections.get()
        assert connection_lost(first) is False
        # idle: known lost before any statement fails on it, and replaced
        assert _terminate_every_session(postgres_url) == 1
        # the server ends the session a moment after the call returns
        deadline = time.monotonic() + 5
        while not connection_lost(first):
            assert time.monotonic() < deadline, "the ended session was never noticed"
            time.sleep(0.01)
        second = connections.get()
        assert second is not first
        assert second.execute("SELECT 1").fetchone()[0] == 1
        # in use, inside a transaction: the coordinator's error (a 503), not the driver's
        with pytest.raises(ConnectionLost, match="terminating connection"), second.atomic():
            second.execute("SELECT 1")
            _end_own_session(second)
        third = connections.get()
        assert third is not second
        assert third.execute("SELECT 1").fetchone()[0] == 1
        assert connections.replaced == 2
    finally:
        connections.close()


def test_an_order_whose_connection_dies_mid_commit_is_answered_503_and_the_next_works(
        postgres_url: str) -> None:
    _seeded(postgres_url)
    app = create_app(Settings(db_path=postgres_url))
    cut = {"armed": True}

    def hook(db: Database, created: Sequence[tuple[str, OrderIn]], now: datetime) -> None:
        # runs inside the intake's transaction, after the orders' rows were written
        if cut["armed"]:
            cut["armed"] = False
            _end_own_session(db)

    with serve_in_thread(app) as url, httpx.Client(base_url=url, headers=ADMIN,
                                                   timeout=20) as http:
        app.state.intake.on_stored = hook
        refused = http.post("/orders", json=_order("CUT-1"))
        assert refused.status_code == 503, refused.text
        assert "connection was lost" in refused.json()["detail"]
        # the intake writer is on a new connection; the lost transaction left nothing
        again = http.post("/orders", json=_order("CUT-1"))
        assert again.status_code == 201, again.text
        assert http.get("/healthz").status_code == 200
        orders = http.get("/orders", params={"limit": 100}).json()
    assert len([o for o in _rows(orders) if "CUT-1" in str(o)]) == 1


def _rows(listing: Any) -> list[Any]:
    return list(listing["orders"] if isinstance(listing, dict) else listing)


async def test_a_database_away_for_many_rounds_leaves_one_line_per_loop_not_one_per_round(
        broker: Broker, topics: Topics, tmp_path: Path, postgres_url: str,
        caplog: pytest.LogCaptureFixture) -> None:
    # the server refuses every new connection for a while (a restart that takes long):
    # the ops loops (ticking every 0.05 s), the dispatcher and the live feed each fail
    # dozens of rounds, and each says so once, then once that it works again
    name = conninfo_to_dict(_seeded(postgres_url))["dbname"]
    clock = ManualClock(datetime.now(UTC))
    app = ops_app(settings_for(postgres_url, broker.url, topics), ops_config(tmp_path), clock)
    # from another database of the server: a database cannot refuse its own sessions
    admin = psycopg.connect(make_conninfo(postgres_url, dbname="postgres"), autocommit=True)
    caplog.set_level(logging.DEBUG)
    try:
        async with serving(app) as url, httpx.AsyncClient(base_url=url, timeout=20,
                                                          headers=ADMIN) as http:
            assert (await http.get("/dashboard/state")).status_code == 200
            caplog.clear()
            admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
            ended = admin.execute("SELECT count(pg_terminate_backend(pid)) FROM "
                                  "pg_stat_activity WHERE datname = %s", [name]).fetchone()
            assert ended is not None and ended[0] > 0
            await asyncio.sleep(2.0)  # dozens of rounds of every loop
            away = [r for r in caplog.records if "retrying until the database" in
                    r.getMessage()]
            again = [r for r in caplog.records if "failed again" in r.getMessage()]
            admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
            deadline = time.monotonic() + RECOVERY_S
            while (await http.get("/dashboard/state")).status_code != 200:
                assert time.monotonic() < deadline, "the app did not answer again"
                await asyncio.sleep(0.1)
            loops = [r.getMessage().split(" failed: ")[0] for r in away]

            def back() -> set[str]:
                return {r.getMessage().split(" works again")[0] for r in caplog.records
                        if " works again " in r.getMessage()}

            # each loop, once a round works again (spaced out meanwhile: up to 5 s)
            await wait_for(lambda: set(loops) <= back(), within=RECOVERY_S,
                           what=f"every loop back: {loops}")
    finally:
        admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
        admin.close()
    assert len(loops) == len(set(loops)), loops  # each loop said it once
    assert {"ops tick", "notification round", "customer tick", "live LISTEN"} <= set(loops)
    assert len(again) > 3 * len(loops)  # the rounds that failed again said so quietly
    assert all(r.levelno == logging.DEBUG for r in again)
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) < 30, [r.getMessage()[:100] for r in warnings]
