"""Manual pause/resume and courier silence, through a real uvicorn and HTTP client."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from benchmarks.reroute import seed_orders_at
from coordinator.auth import Role
from coordinator.db import dialect, open_database
from coordinator.intake import submit_orders
from coordinator.settings import AllocationConfig, IntakeConfig
from protocols import Topics
from protocols.clock import ManualClock
from protocols.orders import Channel, OrderIn, OrderLine
from simulators.brokers import Broker
from simulators.receiver import Receiver
from tests.auth import ADMIN, headers_for
from tests.coordinator.ops.app_server import ops_app, serving
from tests.coordinator.ops.helpers import assignments, ops_config, read, settings_for, wait_for

WH = "WH-02"


@pytest.fixture
def seeded(db_target: str) -> str:
    """WH-02 holding 40 orders, on each backend (a SQLite path or a PostgreSQL URL)."""
    path = db_target
    db = open_database(path)
    assert seed_orders_at(db, WH, 40, datetime.now(UTC), stock_boost=100) == 40
    db.conn.close()
    return path


def available(path: str) -> bool:
    return read(path, "SELECT available = 1 AND paused = 0 FROM warehouses WHERE id = ?",
                [WH]) == [(1,)]


@pytest.fixture
def robot() -> Iterator[Receiver]:
    """A WeCom robot that is down: every request fails with 502."""
    with Receiver(fail_first=100, fail_status=502) as receiver:
        yield receiver


async def test_manual_pause_reroutes_like_a_trip_is_audited_and_resume_reopens(
        broker: Broker, topics: Topics, tmp_path: Path, seeded: str, robot: Receiver) -> None:
    clock = ManualClock(datetime.now(UTC))
    config = ops_config(tmp_path, wecom_url=robot.url + "/wecom", max_attempts=2)
    app = ops_app(settings_for(seeded, broker.url, topics), config, clock)
    operator = headers_for(seeded, Role.OPERATOR, name="duty-lead-wang")
    async with serving(app) as url, httpx.AsyncClient(base_url=url, headers=operator) as http:
        body = {"reason": "roof leak over cold room 2"}
        r = await http.post(f"/warehouses/{WH}/pause", json=body)
        assert r.status_code == 200, r.text
        [incident] = r.json()["incidents"]
        assert incident["moved"] + incident["needs_attention"] == 40
        assert r.json()["holds"][0]["hold"] == "manual"
        again = await http.post(f"/warehouses/{WH}/pause", json=body)
        assert again.json()["incidents"] == []
        assert not available(seeded)
        moved = assignments(seeded)
        r = await http.post(f"/warehouses/{WH}/resume",
                            json={"reason": "fixed"})
        assert r.json()["available"] is True
        audit = (await http.get(f"/warehouses/{WH}/audit")).json()
        assert [a["action"] for a in audit] == ["pause", "unavailable", "pause", "resume",
                                                "available"]
        # the audit names the authenticated caller, not anything the body says
        assert {a["actor"] for a in audit} == {"token:duty-lead-wang"}
        assert (await http.post("/warehouses/NOPE/pause", json=body)).status_code == 404
        bad = await http.post(f"/warehouses/{WH}/pause",
                              json={"actor": "someone-else", "reason": "x"})
        assert bad.status_code == 422 and "actor" in bad.text
        summary = (await http.get("/metrics/summary")).json()
        assert summary["self_healing"]["exceptions"] == 40
        text = (await http.get("/metrics")).text
        assert "# TYPE breakwater_self_healing_ratio gauge" in text
        franchisee = (await http.get("/notifications", params={"kind": "franchisee"})).json()
        assert len(franchisee) == incident["moved"]
        # the WeCom robot is down: two attempts each (the incident alert and the
        # "taking orders again" one), then they are dead and visible
        await wait_for(lambda: len(robot.on("/wecom")) >= 1, what="a first attempt")
        dead: list[dict[str, object]] = []
        async with asyncio.timeout(10):
            while len(dead) < 2:
                clock.advance(1)  # past the (tiny) backoff
                dead = (await http.get("/notifications", params={"status": "failed"})).json()
                await asyncio.sleep(0.05)
        assert {(d["kind"], d["attempts"]) for d in dead} == {("wecom", 2)}
        assert {d["dedupe_key"] for d in dead} == {f"wecom:{incident['incident_id']}:opened",
                                                   f"wecom:{incident['incident_id']}:closed"}
        assert all("HTTP 502" in str(d["last_error"]) for d in dead)
        assert len(robot.on("/wecom")) == 4
        r = await http.post(f"/notifications/{dead[0]['id']}/retry")
        assert r.json()["status"] == "pending"
        assert (await http.post("/notifications/999999/retry")).status_code == 404
    assert available(seeded)
    assert assignments(seeded) == moved


async def test_courier_silence_trips_courier_stale_and_clears_when_updates_resume(
        broker: Broker, topics: Topics, tmp_path: Path, seeded: str) -> None:
    t0 = datetime(2026, 11, 24, 2, 0, tzinfo=UTC)
    clock = ManualClock(t0)
    app = ops_app(settings_for(seeded, broker.url, topics), ops_config(tmp_path), clock)

    def update(shipment: str, at: datetime) -> dict[str, object]:
        return {"shipment_id": shipment, "carrier": "sf-express", "warehouse_id": WH,
                "status": "in_transit", "ts": at.isoformat()}

    async with serving(app) as url, httpx.AsyncClient(base_url=url, headers=ADMIN) as http:
        for shipment in ("SF1", "SF2"):
            r = await http.post("/tracking", json=update(shipment, t0))
            assert r.status_code == 202, r.text
        clock.advance(29 * 60)
        r = await http.post("/tracking", json=update("SF1", clock.now()))
        clock.advance(29 * 60)  # SF1 spoke 29 min ago: not silent yet
        await wait_for(lambda: read(seeded, "SELECT value FROM ops_counters WHERE name = "
                                    "'tracking_updates_received'") == [(3,)], what="updates")
        r = await http.get(f"/warehouses/{WH}/availability")
        assert r.json()["available"] is True
        for path in ("/warehouses/NOPE/availability", "/warehouses/NOPE/audit"):
            unknown = await http.get(path)  # never "available": it does not exist
            assert unknown.status_code == 404 and "unknown warehouse NOPE" in unknown.text
        clock.advance(2 * 60)
        await wait_for(lambda: not available(seeded), what="courier_stale to trip")
        r = await http.get(f"/warehouses/{WH}/availability")
        assert [h["hold"] for h in r.json()["holds"]] == ["courier_stale:sf-express"]
        assert read(seeded, "SELECT count(*) FROM reservations WHERE warehouse_id = ? "
                    "AND status = 'held'", [WH]) == [(0,)]
        moved = assignments(seeded)
        r = await http.post("/tracking", json=update("SF2", clock.now()))
        assert r.json()["transitions"] == ["WarehouseAvailable"]
        bad = await http.post("/tracking", json={**update("SF3", clock.now()), "lat": 30.1})
        assert bad.status_code == 422 and "lat and lon go together" in bad.text
    assert available(seeded)
    assert assignments(seeded) == moved


async def test_trip_over_mqtt_moves_orders_the_api_took_and_new_orders_avoid_the_warehouse(
        broker: Broker, topics: Topics, tmp_path: Path, seeded: str) -> None:
    import aiomqtt

    from benchmarks.reroute import trip_event
    from protocols import encode

    clock = ManualClock(datetime.now(UTC))
    app = ops_app(settings_for(seeded, broker.url, topics), ops_config(tmp_path), clock)
    wh02 = read(seeded, "SELECT lat, lon FROM warehouses WHERE id = ?", [WH])[0]
    sku = read(seeded, "SELECT sku_id FROM inventory i JOIN skus s ON s.id = i.sku_id "
               "WHERE warehouse_id = ? AND s.cold_chain = 1 ORDER BY sku_id LIMIT 1", [WH])[0][0]

    def order(n: int) -> dict[str, object]:
        return {"channel": "manual", "channel_order_id": f"api-{n}", "store_id": "HZ-S001",
                "lines": [{"sku_id": sku, "qty": 1}], "lat": wh02[0], "lon": wh02[1]}

    async with serving(app) as url, httpx.AsyncClient(base_url=url, headers=ADMIN) as http:
        taken = (await http.post("/orders", json=order(1))).json()
        assert taken["warehouse_id"] == WH  # at the warehouse's door
        async with aiomqtt.Client(broker.host, broker.port) as agent:
            await agent.publish(topics.breaker(WH, "cold_chain"),
                                encode(trip_event(WH, seq=1, episode="ep-api", now=clock.now())),
                                qos=1, retain=True)
            await wait_for(lambda: not available(seeded), what="the trip")
            await agent.publish(topics.breaker(WH, "cold_chain"), b"", qos=1, retain=True)
        moved = (await http.get(f"/orders/{taken['order_id']}")).json()
        assert moved["warehouse_id"] not in (None, WH)
        assert "rerouted" in [e["kind"] for e in moved["timeline"]]
        after = (await http.post("/orders", json=order(2))).json()
        assert after["warehouse_id"] != WH
        summary = (await http.get("/metrics/summary")).json()
        assert summary["self_healing"]["resolved_automatically"] == 41
        assert summary["counters"]["reroutes"] == 1


async def test_orders_stuck_during_a_pause_go_back_when_the_warehouse_resumes(
        broker: Broker, topics: Topics, tmp_path: Path, seeded: str) -> None:
    db = open_database(seeded, migrate=False)
    try:  # nobody else holds what the orders at WH-02 need: a pause strands them all
        db.execute("UPDATE inventory SET on_hand = reserved WHERE warehouse_id != ?", [WH])
    finally:
        db.conn.close()
    clock = ManualClock(datetime.now(UTC))
    app = ops_app(settings_for(seeded, broker.url, topics), ops_config(tmp_path), clock)
    async with serving(app) as url, httpx.AsyncClient(base_url=url, headers=ADMIN) as http:
        paused = await http.post(f"/warehouses/{WH}/pause",
                                 json={"reason": "inspection"})
        [incident] = paused.json()["incidents"]
        assert incident["needs_attention"] == 40 and incident["moved"] == 0
        stuck = read(seeded, "SELECT id FROM orders WHERE status = 'needs_attention'")
        assert len(stuck) == 40
        clock.advance(3600)

        resumed = await http.post(f"/warehouses/{WH}/resume",
                                  json={"reason": "done"})

        assert resumed.status_code == 200, resumed.text
        assert set(assignments(seeded).values()) == {(WH, "allocated")}
        order = (await http.get(f"/orders/{stuck[0][0]}")).json()
        assert [e["kind"] for e in order["timeline"]][-2:] == ["needs_attention", "allocated"]
        assert order["timeline"][-1]["detail"]["retry"] is True
        summary = (await http.get("/stats")).json()
        assert summary["orders_by_status"] == {"allocated": 40}
        # each franchisee hears where the order went after the wait, with a coupon for it
        placed: list[dict[str, Any]] = []

        async def placed_notices() -> int:
            nonlocal placed
            found = (await http.get("/notifications", params={"kind": "franchisee",
                                                               "limit": 1000})).json()
            placed = [n["payload"] for n in found if n["payload"]["type"] == "placed_notice"]
            return len(placed)

        async with asyncio.timeout(10):
            while await placed_notices() < 40:  # noqa: ASYNC110 - polls the HTTP API
                await asyncio.sleep(0.05)
        assert {p["order_id"] for p in placed} == {r[0] for r in stuck}
        assert {p["new_warehouse"]["id"] for p in placed} == {WH}
        assert all(p["coupon"]["code"] and p["new_eta"] for p in placed)
        assert {p["incident_id"] for p in placed} == {incident["incident_id"]}
        clock.advance(60)
        await asyncio.sleep(0.3)  # more ticks: nothing is queued twice
        assert await placed_notices() == 40
        # placed by the system itself once the warehouse reopened: healed, not by hand
        healing = (await http.get("/metrics/summary")).json()["self_healing"]
        assert (healing["exceptions"], healing["placed_later"], healing["rate"]) == (40, 40, 1.0)


async def test_a_failing_retry_still_lets_the_warehouse_reopen(
        broker: Broker, topics: Topics, tmp_path: Path, seeded: str) -> None:
    db = open_database(seeded, migrate=False)
    try:
        db.execute("UPDATE inventory SET on_hand = reserved WHERE warehouse_id != ?", [WH])
        # the database refuses the retry's decision rows: the retry fails as a whole
        if dialect(db) == "postgresql":
            db.execute("CREATE FUNCTION refuse_retry() RETURNS trigger LANGUAGE plpgsql AS "
                       "$$ BEGIN RAISE EXCEPTION 'disk says no'; END $$")
            db.execute("CREATE TRIGGER refuse_retry BEFORE INSERT ON allocation_decisions "
                       "FOR EACH ROW WHEN (NEW.kind = 'retry') EXECUTE FUNCTION refuse_retry()")
        else:
            db.execute("CREATE TRIGGER refuse_retry BEFORE INSERT ON allocation_decisions "
                       "WHEN NEW.kind = 'retry' BEGIN SELECT RAISE(ABORT, 'disk says no'); END")
    finally:
        db.conn.close()
    clock = ManualClock(datetime.now(UTC))
    app = ops_app(settings_for(seeded, broker.url, topics), ops_config(tmp_path), clock)
    async with serving(app) as url, httpx.AsyncClient(base_url=url, headers=ADMIN) as http:
        body = {"reason": "inspection"}
        assert (await http.post(f"/warehouses/{WH}/pause", json=body)).status_code == 200

        resumed = await http.post(f"/warehouses/{WH}/resume", json=body)

        assert resumed.status_code == 200 and resumed.json()["available"] is True
        assert available(seeded)
        waiting = read(seeded, "SELECT count(*) FROM orders WHERE status = 'needs_attention'")
        assert waiting == [(40,)]  # nothing half-placed
        held = read(seeded, "SELECT count(*) FROM reservations WHERE status = 'held'")
        assert held == [(0,)]
        counters = (await http.get("/metrics/summary")).json()["counters"]
        # both passes failed on their own: the incident's stuck orders, then all waiting
        assert counters["retry_failures"] == 2


async def test_reopening_retries_its_own_stuck_orders_ahead_of_an_older_backlog(
        broker: Broker, topics: Topics, tmp_path: Path, seeded: str) -> None:
    db = open_database(seeded, migrate=False)
    try:  # a day-old backlog waiting on a SKU nobody stocks any more
        gone = db.execute("SELECT id FROM skus WHERE cold_chain = 0 ORDER BY id DESC"
                          ).fetchone()[0]
        db.execute("UPDATE inventory SET on_hand = 0 WHERE sku_id = ?", [gone])
        backlog = [OrderIn(channel=Channel.WECHAT_MINI, channel_order_id=f"old-{i}",
                           store_id="HZ-S001", lines=[OrderLine(sku_id=gone, qty=1)],
                           lat=30.27, lon=120.15) for i in range(8)]
        submit_orders(db, backlog, now=datetime.now(UTC) - timedelta(days=1),
                      config=AllocationConfig())
        db.execute("UPDATE inventory SET on_hand = reserved WHERE warehouse_id != ?", [WH])
    finally:
        db.conn.close()
    settings = settings_for(seeded, broker.url, topics).model_copy(
        update={"intake": IntakeConfig(retry_limit=5)})
    app = ops_app(settings, ops_config(tmp_path), ManualClock(datetime.now(UTC)))
    async with serving(app) as url, httpx.AsyncClient(base_url=url, headers=ADMIN) as http:
        body = {"reason": "inspection"}
        assert (await http.post(f"/warehouses/{WH}/pause", json=body)).status_code == 200

        await http.post(f"/warehouses/{WH}/resume", json=body)

        by_status = (await http.get("/stats")).json()["orders_by_status"]
        # five (the limit) of the pause's 40 stuck orders are back; the backlog still waits
        assert by_status == {"allocated": 5, "needs_attention": 35, "unallocated": 8}
