"""End to end through the real broker: an agent's breaker event reroutes a warehouse."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from pathlib import Path

import aiomqtt
import pytest

from benchmarks.reroute import seed_orders_at, trip_event
from coordinator.db import open_database
from coordinator.ops.runner import OpsService
from protocols import Topics, encode
from simulators.brokers import Broker
from simulators.receiver import Receiver
from tests.coordinator.ops.helpers import (
    assignments,
    counter,
    ops_config,
    read,
    settings_for,
    wait_for,
)

pytestmark = pytest.mark.broker
WH = "WH-02"


@pytest.fixture
def seeded(db_target: str) -> tuple[str, int]:
    """WH-02 holding 60 orders, on each backend (a SQLite path or a PostgreSQL URL)."""
    path = db_target
    db = open_database(path)
    held = seed_orders_at(db, WH, 60, datetime.now(UTC), stock_boost=100)
    db.conn.close()
    assert held == 60
    return path, held


async def publish(broker: Broker, topic: str, payload: bytes) -> None:
    async with aiomqtt.Client(broker.host, broker.port) as agent:
        await agent.publish(topic, payload, qos=1, retain=True)


async def test_breaker_trip_reroutes_every_unshipped_order_once_even_after_restart(
        broker: Broker, topics: Topics, tmp_path: Path, seeded: tuple[str, int]) -> None:
    path, held = seeded
    settings = settings_for(path, broker.url, topics)
    with Receiver() as robot:
        config = ops_config(tmp_path, wecom_url=robot.url + "/wecom")
        event = trip_event(WH, seq=41, episode="ep-freezing-rain", now=datetime.now(UTC))
        async with OpsService(settings, config) as ops:
            await asyncio.wait_for(ops.watcher.connected.wait(), 10)
            await publish(broker, topics.breaker(WH, "cold_chain"), encode(event))
            await wait_for(lambda: counter(path, "reroutes") == 1, what="the reroute")
            after_first = assignments(path)
            await publish(broker, topics.breaker(WH, "cold_chain"), encode(event))
            await wait_for(lambda: counter(path, "duplicates_dropped") == 1, what="the repeat")
            await wait_for(lambda: len(robot.accepted("/wecom")) == 1, what="the WeCom alert")
            inbox = tmp_path / "franchisee.jsonl"
            await wait_for(lambda: inbox.exists() and len(inbox.read_text().splitlines())
                           == moved_stores(path), what="the franchisee notices")
        # Restart: the retained event comes back and must change nothing.
        async with OpsService(settings, config) as ops:
            await asyncio.wait_for(ops.watcher.connected.wait(), 10)
            await wait_for(lambda: counter(path, "duplicates_dropped") >= 2, what="the replay")
        await publish(broker, topics.breaker(WH, "cold_chain"), b"")
    assert assignments(path) == after_first
    assert counter(path, "reroutes") == 1
    moved = [oid for oid, (wid, status) in after_first.items() if status == "allocated"]
    stuck = [oid for oid, (_, status) in after_first.items() if status == "needs_attention"]
    assert len(moved) + len(stuck) == held
    assert all(after_first[oid][0] != WH for oid in moved)
    # every moved order went to an available warehouse that stocks its items (cold chain
    # when an item needs it), with its reservations moved along
    bad = read(path, (
        "SELECT r.order_id FROM reservations r JOIN warehouses w ON w.id = r.warehouse_id "
        "JOIN skus s ON s.id = r.sku_id WHERE r.status = 'held' AND "
        "(w.id = ? OR w.available = 0 OR (s.cold_chain = 1 AND w.cold_chain = 0))"), [WH])
    assert bad == []
    held_at_wh = read(path, "SELECT count(*) FROM reservations WHERE warehouse_id = ? "
                      "AND status = 'held'", [WH])
    assert held_at_wh == [(0,)]
    # one coupon and one notice per store, naming every moved order of that store
    stores = moved_stores(path)
    coupons = read(path, "SELECT store_id, incident_id, code, orders FROM ops_store_coupons")
    assert len(coupons) == stores and sum(c[3] for c in coupons) == len(moved)
    assert {c[1] for c in coupons} == {"ep-freezing-rain"}
    assert len({c[2] for c in coupons}) == len(coupons)
    notices = read(path, "SELECT kind, count(*) FROM ops_notifications GROUP BY kind")
    assert dict(notices) == {"franchisee": stores, "wecom": 1}
    [alert] = robot.accepted("/wecom")
    assert f'<font color="info">{len(moved)}</font>' in alert.body["markdown"]["content"]
    assert read(path, "SELECT available FROM warehouses WHERE id = ?", [WH]) == [(0,)]
    delivered = [json.loads(line) for line in inbox.read_text().splitlines()]
    # each moved order exactly once, in its store's one message
    assert sorted(o["order_id"] for d in delivered for o in d["orders"]) == sorted(moved)
    assert all(f"订单 {o['channel_order_id']}：" in d["text"]
               for d in delivered for o in d["orders"])
    assert {d["coupon"]["code"] for d in delivered} == {c[2] for c in coupons}


def moved_stores(path: str) -> int:
    """How many stores had an order moved away (one franchisee message each)."""
    return int(read(path, "SELECT count(DISTINCT o.store_id) FROM incident_orders io "
                          "JOIN orders o ON o.id = io.order_id WHERE io.outcome = 'moved'")[0][0])


async def test_breaker_clear_reopens_warehouse_and_rerouted_orders_stay(
        broker: Broker, topics: Topics, tmp_path: Path, seeded: tuple[str, int]) -> None:
    path, _ = seeded
    settings = settings_for(path, broker.url, topics)
    now = datetime.now(UTC)
    async with OpsService(settings, ops_config(tmp_path)) as ops:
        await asyncio.wait_for(ops.watcher.connected.wait(), 10)
        await publish(broker, topics.breaker(WH, "cold_chain"),
                      encode(trip_event(WH, seq=5, episode="ep-a", now=now)))
        await wait_for(lambda: counter(path, "reroutes") == 1, what="the reroute")
        moved = assignments(path)
        await publish(broker, topics.breaker(WH, "cold_chain"),
                      encode(trip_event(WH, seq=6, episode="ep-a", now=now, open_=False)))
        await wait_for(lambda: read(path, "SELECT available FROM warehouses WHERE id = ?",
                                    [WH]) == [(1,)], what="the warehouse to reopen")
        # a late duplicate of the trip (older seq) neither closes it nor reroutes again
        await publish(broker, topics.breaker(WH, "cold_chain"),
                      encode(trip_event(WH, seq=5, episode="ep-a", now=now)))
        await wait_for(lambda: counter(path, "duplicates_dropped") == 1, what="the late trip")
    await publish(broker, topics.breaker(WH, "cold_chain"), b"")
    assert assignments(path) == moved
    assert read(path, "SELECT available FROM warehouses WHERE id = ?", [WH]) == [(1,)]
    assert read(path, "SELECT closed_at IS NOT NULL FROM ops_incidents") == [(1,)]


async def test_junk_payloads_are_counted_and_never_stop_the_watcher(
        broker: Broker, topics: Topics, tmp_path: Path, seeded: tuple[str, int]) -> None:
    path, _ = seeded
    settings = settings_for(path, broker.url, topics)
    async with OpsService(settings, ops_config(tmp_path)) as ops:
        await asyncio.wait_for(ops.watcher.connected.wait(), 10)
        async with aiomqtt.Client(broker.host, broker.port) as agent:
            for junk in (b"{not json", b'{"v": 1}', b"\xff\xfe", b"[]"):
                await agent.publish(topics.breaker(WH, "cold_chain"), junk, qos=1)
            wrong = trip_event("WH-03", seq=1, episode="x", now=datetime.now(UTC))
            await agent.publish(topics.breaker(WH, "cold_chain"), encode(wrong), qos=1)
            await agent.publish(topics.tracking("sf"), b'{"shipment_id": ""}', qos=1)
        await wait_for(lambda: counter(path, "bad_payloads") == 6, what="six rejections")
        await publish(broker, topics.breaker(WH, "cold_chain"),
                      encode(trip_event(WH, seq=1, episode="ep-after-junk",
                                        now=datetime.now(UTC))))
        await wait_for(lambda: counter(path, "reroutes") == 1, what="the reroute after junk")
        assert ops.watcher.stats.bad_payloads == 6
    await publish(broker, topics.breaker(WH, "cold_chain"), b"")


async def test_agent_offline_past_grace_pauses_warehouse_and_stale_will_is_ignored(
        broker: Broker, topics: Topics, tmp_path: Path, seeded: tuple[str, int]) -> None:
    from protocols.clock import ManualClock
    from tests.coordinator.ops.factories import agent_status

    path, _ = seeded
    clock = ManualClock(datetime.now(UTC))
    settings = settings_for(path, broker.url, topics)
    topic = topics.agent_status(WH, "gw-WH-02")

    def status(online: bool, session: int) -> bytes:
        return encode(agent_status(online=online, session_seq=session, warehouse=WH,
                                   agent="gw-WH-02", at=clock.now()))

    async with OpsService(settings, ops_config(tmp_path, grace_s=60), clock) as ops:
        await asyncio.wait_for(ops.watcher.connected.wait(), 10)
        await publish(broker, topic, status(True, 7))
        await publish(broker, topic, status(False, 6))  # the will of an older session
        await wait_for(lambda: counter(path, "agent_status_received") >= 1, what="birth")
        await asyncio.sleep(0.2)
        clock.advance(600)
        await asyncio.sleep(0.2)  # several ticks
        assert counter(path, "reroutes") == 0
        await publish(broker, topic, status(False, 7))  # the current session's will
        await wait_for(lambda: read(path, "SELECT online FROM ops_agent_sessions") == [(0,)],
                       what="the death")
        clock.advance(59)
        await asyncio.sleep(0.2)
        assert counter(path, "reroutes") == 0
        clock.advance(2)
        await wait_for(lambda: counter(path, "reroutes") == 1, what="the grace to run out")
        assert read(path, "SELECT count(*) FROM reservations WHERE warehouse_id = ? "
                    "AND status = 'held'", [WH]) == [(0,)]
        await publish(broker, topic, status(True, 8))
        await wait_for(lambda: read(path, "SELECT available FROM warehouses WHERE id = ?",
                                    [WH]) == [(1,)], what="the agent's return")
    await publish(broker, topic, b"")


async def test_watcher_reconnects_after_broker_restart_and_gets_what_was_published_meanwhile(
        broker: Broker, topics: Topics, tmp_path: Path, seeded: tuple[str, int]) -> None:
    path, _ = seeded
    settings = settings_for(path, broker.url, topics)
    async with OpsService(settings, ops_config(tmp_path)) as ops:
        await asyncio.wait_for(ops.watcher.connected.wait(), 10)
        await asyncio.to_thread(broker.stop)
        await wait_for(lambda: not ops.watcher.connected.is_set(), what="the disconnect")
        await asyncio.to_thread(broker.start)
        # the agent publishes as soon as the broker is back, maybe before we resubscribed
        await publish(broker, topics.breaker(WH, "cold_chain"),
                      encode(trip_event(WH, seq=9, episode="ep-after-restart",
                                        now=datetime.now(UTC))))
        await wait_for(lambda: counter(path, "reroutes") == 1, within=30,
                       what="the reroute after reconnecting")
        assert ops.watcher.stats.connects >= 2
    await publish(broker, topics.breaker(WH, "cold_chain"), b"")


async def test_tracking_updates_over_mqtt_are_recorded_like_http_ones(
        broker: Broker, topics: Topics, tmp_path: Path, seeded: tuple[str, int]) -> None:
    from tests.coordinator.ops.factories import tracking

    path, _ = seeded
    settings = settings_for(path, broker.url, topics)
    async with OpsService(settings, ops_config(tmp_path)) as ops:
        await asyncio.wait_for(ops.watcher.connected.wait(), 10)
        async with aiomqtt.Client(broker.host, broker.port) as courier:
            for n in range(3):
                update = tracking(f"SF{n}", at=datetime.now(UTC), warehouse=WH,
                                  status="delivered" if n == 2 else "picked_up")
                await courier.publish(topics.tracking("sf-express"), encode(update), qos=1)
        await wait_for(lambda: counter(path, "tracking_updates_received") == 3, what="updates")
    assert read(path, "SELECT shipment_id, open FROM ops_shipments ORDER BY shipment_id") == [
        ("SF0", 1), ("SF1", 1), ("SF2", 0)]


async def test_retained_trip_published_before_the_coordinator_started_is_honoured(
        broker: Broker, topics: Topics, tmp_path: Path, seeded: tuple[str, int]) -> None:
    path, held = seeded
    await publish(broker, topics.breaker(WH, "cold_chain"),
                  encode(trip_event(WH, seq=3, episode="ep-while-down", now=datetime.now(UTC))))
    settings = settings_for(path, broker.url, topics)
    async with OpsService(settings, ops_config(tmp_path)) as ops:
        await asyncio.wait_for(ops.watcher.connected.wait(), 10)
        await wait_for(lambda: counter(path, "reroutes") == 1, what="the reroute at start")
    await publish(broker, topics.breaker(WH, "cold_chain"), b"")
    assert read(path, "SELECT incident_id, moved + stuck FROM ops_incidents") == [
        ("ep-while-down", held)]


async def test_orders_nobody_can_take_go_to_needs_attention_and_count_against_self_healing(
        broker: Broker, topics: Topics, tmp_path: Path, seeded: tuple[str, int]) -> None:
    from coordinator.catalog import set_warehouse_availability
    from coordinator.ops import metrics

    path, held = seeded
    db = open_database(path)
    for other_cold in ("WH-05", "WH-07"):  # the only other cold-chain warehouses
        set_warehouse_availability(db, other_cold, available=False, reason="test",
                                   now=datetime.now(UTC))
    cold_orders = {r[0] for r in db.execute(
        "SELECT DISTINCT r.order_id FROM reservations r JOIN skus s ON s.id = r.sku_id "
        "WHERE r.warehouse_id = ? AND r.status = 'held' AND s.cold_chain = 1", [WH]).fetchall()}
    db.conn.close()
    assert 0 < len(cold_orders) < held
    settings = settings_for(path, broker.url, topics)
    with Receiver() as robot:
        config = ops_config(tmp_path, wecom_url=robot.url + "/wecom")
        async with OpsService(settings, config) as ops:
            await asyncio.wait_for(ops.watcher.connected.wait(), 10)
            trip = trip_event(WH, seq=1, episode="ep-no-cold", now=datetime.now(UTC))
            await publish(broker, topics.breaker(WH, "cold_chain"), encode(trip))
            await wait_for(lambda: len(robot.accepted("/wecom")) == 1, what="the alert")
        await publish(broker, topics.breaker(WH, "cold_chain"), b"")
    stuck = {oid for oid, (_, status) in assignments(path).items() if status == "needs_attention"}
    assert stuck == cold_orders
    content = robot.accepted("/wecom")[0].body["markdown"]["content"]
    assert f'<font color="warning">{len(stuck)}</font>' in content
    db = open_database(path)
    healing = metrics.self_healing(db)
    db.conn.close()
    assert healing == {"exceptions": held, "resolved_automatically": held - len(stuck),
                       "moved": held - len(stuck), "placed_later": 0,
                       "needs_attention": len(stuck), "rate": (held - len(stuck)) / held,
                       "by_kind": {"reroute": {"exceptions": held,
                                               "resolved_automatically": held - len(stuck)}}}
    assert read(path, "SELECT sum(orders) FROM ops_store_coupons") == [(held - len(stuck),)]
