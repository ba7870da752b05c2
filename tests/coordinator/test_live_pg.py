"""Live updates across instances: two coordinators (real uvicorn) on one PostgreSQL
database; an order taken by one reaches a dashboard stream served by the other, also
after the listening connection was cut."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from coordinator import dashboard
from coordinator.app import create_app
from coordinator.catalog import import_file
from coordinator.db import open_database
from coordinator.live import LocalHub, hub_for
from coordinator.live_pg import PgHub
from coordinator.region import SAMPLE_DIR, SAMPLE_FILES
from coordinator.serving import serve_in_thread
from coordinator.settings import Settings
from tests.auth import ADMIN
from tests.coordinator.pg_sessions import end_sessions

from .conftest import NOW


def _order(trade_no: str) -> dict[str, Any]:
    return {"channel": "wechat_mini", "out_trade_no": trade_no, "store_code": "HZ-S001",
            "goods": [{"sku_id": "SKU-0001", "num": 1}],
            "address": {"latitude": 30.27, "longitude": 120.15}}


def _states(lines: Iterator[str]) -> Iterator[dict[str, Any]]:
    """The ``state`` events of a server-sent event stream, decoded."""
    event = None
    for line in lines:
        if line.startswith("event: "):
            event = line.removeprefix("event: ")
        elif line.startswith("data: ") and event == "state":
            yield json.loads(line.removeprefix("data: "))


def test_a_change_on_one_instance_reaches_the_stream_of_another(postgres_url: str) -> None:
    db = open_database(postgres_url)
    for name in SAMPLE_FILES:
        import_file(db, SAMPLE_DIR / f"{name}.csv", NOW)
    db.conn.close()
    # the coordinator API and the dashboard (its stream), without the ops side
    one = create_app(Settings(db_path=postgres_url), extra_routers=[dashboard.router])
    other = create_app(Settings(db_path=postgres_url), extra_routers=[dashboard.router])
    with serve_in_thread(one) as url_one, serve_in_thread(other) as url_other, \
            httpx.Client(base_url=url_one, headers=ADMIN, timeout=10) as taker, \
            httpx.Client(base_url=url_other, headers=ADMIN, timeout=10) as page:
        hub = other.state.live
        assert isinstance(hub, PgHub) and isinstance(one.state.live, PgHub)
        assert hub.wait_listening(10) and one.state.live.wait_listening(10)
        # the read timeout (10 s) is below the stream's keepalive (15 s): a change that
        # never arrives fails the test instead of hanging it
        with page.stream("GET", "/dashboard/events") as stream:
            assert stream.status_code == 200
            states = _states(stream.iter_lines())
            first = next(states)
            assert "changed" not in first
            created = taker.post("/orders", json=_order("LIVE-1"))
            assert created.status_code == 201
            changed = next(states)
            assert changed["changed"] == ["orders"]
            assert hub.received >= 1 and hub.published == 0

            # the listening connection is cut (a failover, a restart of PostgreSQL's
            # pooler): the hub reconnects, re-reads, and hears the next change
            cut = end_sessions(postgres_url, "query = 'LISTEN breakwater_live'")
            assert cut == 2  # one listener per instance
            deadline = time.monotonic() + 10
            while hub.reconnects < 1 or one.state.live.reconnects < 1:
                assert time.monotonic() < deadline, "the listener never reconnected"
                time.sleep(0.05)
            assert set(next(states)["changed"]) >= {"orders", "incidents"}  # everything
            assert taker.post("/orders", json=_order("LIVE-2")).status_code == 201
            assert next(states)["changed"] == ["orders"]


def test_sqlite_keeps_the_in_process_hub(tmp_path: Any) -> None:
    async def build() -> object:
        return hub_for(str(tmp_path / "c.sqlite"), asyncio.get_running_loop())

    assert isinstance(asyncio.run(build()), LocalHub)


@pytest.mark.parametrize("topic", ["", "order", "orders; DROP"])
def test_an_unknown_topic_is_refused_before_it_reaches_the_database(
        postgres_url: str, topic: str) -> None:
    async def publish() -> None:
        hub = PgHub(postgres_url, asyncio.get_running_loop())
        try:
            with pytest.raises(ValueError, match="topic"):
                hub.publish(topic)
            assert hub.published == 0
        finally:
            hub.close()

    asyncio.run(publish())


def test_junk_on_the_channel_is_counted_and_the_hub_goes_on_hearing_changes(
        postgres_url: str) -> None:
    """Anyone with database access can NOTIFY the channel: a payload naming no topic is
    counted and dropped, and a real change sent after it still arrives."""
    async def run() -> tuple[int, int]:
        hub = PgHub(postgres_url, asyncio.get_running_loop())
        try:
            assert await asyncio.to_thread(hub.wait_listening, 10)
            other = open_database(postgres_url, migrate=False)
            try:
                for junk in ("", "ORDERS", "x" * 7000, "{\"topic\": \"orders\"}"):
                    other.execute("SELECT pg_notify('breakwater_live', ?)", [junk])
                other.execute("SELECT pg_notify('breakwater_live', 'orders')")
            finally:
                other.conn.close()
            deadline = time.monotonic() + 10
            while hub.received < 1:
                assert time.monotonic() < deadline, "the real change never arrived"
                await asyncio.sleep(0.05)
            return hub.refused, hub.received
        finally:
            hub.close()

    refused, received = asyncio.run(run())
    assert (refused, received) == (4, 1)


def test_junk_on_the_channel_shows_on_metrics_of_the_instance_that_heard_it(
        postgres_url: str) -> None:
    app = create_app(Settings(db_path=postgres_url))
    with serve_in_thread(app) as url, \
            httpx.Client(base_url=url, headers=ADMIN, timeout=10) as client:
        hub = app.state.live
        assert isinstance(hub, PgHub) and hub.wait_listening(10)
        other = open_database(postgres_url, migrate=False)
        try:
            for junk in ("", "x" * 300):
                other.execute("SELECT pg_notify('breakwater_live', ?)", [junk])
        finally:
            other.conn.close()
        deadline = time.monotonic() + 10
        line = ""
        while line != "breakwater_live_notifications_refused_total 2.0":
            assert time.monotonic() < deadline, f"last seen: {line!r}"
            time.sleep(0.05)
            text = client.get("/metrics").text
            line = next(ln for ln in text.splitlines()
                        if ln.startswith("breakwater_live_notifications_refused_total"))
