"""Status-node messages through the real API, the real dispatcher and a loopback receiver:
each node once, with the rendered text, in local time; a repeat event sends nothing."""

from __future__ import annotations

from pathlib import Path

from coordinator.customer.templates import STATUS_NODES
from coordinator.db import open_database, write_transaction
from protocols.clock import ManualClock
from simulators.receiver import Receiver
from tests.coordinator.ops.helpers import wait_for

from .harness import NOW, customer_app, meituan_order, rows, running, wechat_order


async def test_each_node_is_messaged_once_with_its_text_and_repeats_send_nothing(
        customer_db: str, tmp_path: Path, receiver: Receiver) -> None:
    clock = ManualClock(NOW)
    app = customer_app(customer_db, tmp_path, receiver, clock)
    async with running(app) as http:
        placed = (await http.post("/orders", json=meituan_order("MT-1001"))).json()
        oid, warehouse = placed["order_id"], placed["warehouse_id"]
        name = rows(customer_db, "SELECT name FROM warehouses WHERE id = ?", [warehouse])[0][0]
        await wait_for(lambda: len(receiver.accepted("/meituan")) == 1, what="allocated")
        first = receiver.accepted("/meituan")[0].body
        # the ETA in the text is Hangzhou's wall clock, the payload keeps UTC too
        eta = rows(customer_db, "SELECT eta FROM orders WHERE id = ?", [oid])[0][0]
        assert first["script"] == "allocated" and first["order_no"] == "MT-1001"
        assert first["text"].startswith(f"您的订单MT-1001已分仓，由{name}为您备货，预计11-24 ")
        assert eta.startswith("2026-11-24T0")
        assert "138" not in str(first)  # no personal data leaves in a channel webhook
        for kind in ("shipped", "in_transit", "in_transit", "delivered"):
            answer = await http.post(f"/orders/{oid}/events", json={"kind": kind})
            assert answer.status_code == 200, answer.text
        await wait_for(lambda: len(receiver.accepted("/meituan")) == 4, what="four nodes")
        # delivered concurrently, so in any order: one text per node
        texts = {r.body["script"]: r.body["text"] for r in receiver.accepted("/meituan")}
        assert texts["shipped"] == "您的包裹已发出，点击查看实时物流：https://track.example.cn/o/MT-1001"
        assert texts["in_transit"].startswith("您的订单MT-1001正在配送途中")
        assert texts["delivered"].startswith("您的订单MT-1001已于11-24 10:17送达")
        # the same order posted again, more ticks: nothing new
        await http.post("/orders", json=meituan_order("MT-1001"))
        clock.advance(60)
        await wait_for(lambda: app.state.customer.last is not None
                       and app.state.customer.last.messages == 0, what="an idle tick")
    assert len(receiver.accepted("/meituan")) == 4
    nodes = rows(customer_db, "SELECT node FROM customer_messages WHERE order_id = ? ORDER BY node",
                 [oid])
    assert [n[0] for n in nodes] == sorted(["allocated", "shipped", "in_transit", "delivered"])
    keys = {r.headers["Idempotency-Key"] for r in receiver.accepted("/meituan")}
    assert keys == {f"customer:{oid}:{n}" for n in ("allocated", "shipped", "in_transit",
                                                  "delivered")}
    assert set(STATUS_NODES) >= {n[0] for n in nodes}


async def test_wechat_subscribe_message_and_sms_shapes(
        customer_db: str, tmp_path: Path, receiver: Receiver) -> None:
    clock = ManualClock(NOW)
    app = customer_app(customer_db, tmp_path, receiver, clock)
    douyin = {"channel": "douyin", "shop_order_id": "DY-1", "shop_id": "HZ-S002",
              "sku_order_list": [{"out_sku_id": "SKU-0001", "item_num": 1}],
              "post_addr": {"lat": 30.36, "lng": 120.19}, "mask_post_tel": "13900001111"}
    async with running(app) as http:
        assert (await http.post("/orders", json=wechat_order("WX-1"))).status_code == 201
        assert (await http.post("/orders", json=douyin)).status_code == 201
        await wait_for(lambda: len(receiver.accepted("/wechat")) == 1, what="subscribe message")
        body = receiver.accepted("/wechat")[0].body
        assert body["touser"] == "oUser-WX-1" and body["template_id"] == "TPL-1"
        assert body["data"]["character_string1"]["value"] == "WX-1"
        assert body["data"]["phrase2"]["value"] == "已分仓"
        assert body["data"]["time3"]["value"] == "11-24 10:17"
        assert len(body["data"]["thing4"]["value"]) <= 20
        # Douyin masks its numbers: the SMS route cannot reach them, and says so
        await wait_for(lambda: rows(customer_db, "SELECT count(*) FROM ops_notifications WHERE "
                                    "kind = 'customer' AND last_error LIKE '%masked%'")[0][0] >= 1,
                       what="masked number refused")
    assert receiver.accepted("/sms") == []


async def test_delayed_orders_get_one_message_when_the_eta_has_passed(
        customer_db: str, tmp_path: Path, receiver: Receiver) -> None:
    clock = ManualClock(NOW)
    app = customer_app(customer_db, tmp_path, receiver, clock)
    async with running(app) as http:
        oid = (await http.post("/orders", json=meituan_order("MT-LATE"))).json()["order_id"]
        await wait_for(lambda: len(receiver.accepted("/meituan")) == 1, what="allocated")
        clock.advance(6 * 3600)  # far past the standard tier's ETA
        await wait_for(lambda: len(receiver.accepted("/meituan")) == 2, what="delayed")
        clock.advance(3600)
        await wait_for(lambda: app.state.customer.last is not None
                       and app.state.customer.last.delayed == 0, what="an idle tick")
    assert [r.body["script"] for r in receiver.accepted("/meituan")] == ["allocated", "delayed"]
    assert rows(customer_db, "SELECT count(*) FROM customer_messages WHERE order_id = ? AND "
                "node = 'delayed'", [oid])[0][0] == 1


async def test_an_event_time_no_order_can_have_is_refused_naming_the_field(
        customer_sqlite: str, tmp_path: Path, receiver: Receiver) -> None:
    app = customer_app(customer_sqlite, tmp_path, receiver, ManualClock(NOW))
    async with running(app) as http:
        oid = (await http.post("/orders", json=meituan_order("MT-ODD"))).json()["order_id"]
        for at in ("0003-03-01T20:59:57Z", "1970-01-01T00:00:00Z", "5639-12-22T19:56:59Z"):
            answer = await http.post(f"/orders/{oid}/events",
                                     json={"kind": "shipped", "at": at})
            assert answer.status_code == 422, answer.text
            assert answer.json()["field"] == "body.at"
            assert "between 2000-01-01 and 2099-12-31" in answer.json()["detail"]
            paid = await http.post("/payments", json={
                "channel": "meituan", "channel_order_id": "MT-ODD", "paid_at": at})
            assert (paid.status_code, paid.json()["field"]) == (422, "body.paid_at")
    assert rows(customer_sqlite, "SELECT kind FROM order_events WHERE order_id = ? "
                "AND kind IN ('shipped', 'paid')", [oid]) == []


async def test_an_unreadable_stored_event_time_does_not_stop_later_messages(
        customer_sqlite: str, tmp_path: Path, receiver: Receiver) -> None:
    clock = ManualClock(NOW)
    app = customer_app(customer_sqlite, tmp_path, receiver, clock)
    async with running(app) as http:
        first = (await http.post("/orders", json=meituan_order("MT-OLD"))).json()["order_id"]
        await wait_for(lambda: len(receiver.accepted("/meituan")) == 1, what="allocated")
        # a row as the code before padded years wrote it ("3-03-01T..."): unreadable
        db = open_database(customer_sqlite)
        with write_transaction(db):
            db.execute("INSERT INTO order_events (order_id, kind, at, detail) "
                       "VALUES (?, 'shipped', '3-03-01T20:59:57.000Z', '{}')", [first])
        db.conn.close()
        await http.post("/orders", json=meituan_order("MT-NEW"))
        clock.advance(60)
        await wait_for(lambda: {r.body["order_no"] for r in receiver.accepted("/meituan")}
                       == {"MT-OLD", "MT-NEW"}, what="the later order's message")
        await wait_for(lambda: app.state.customer.last is not None, what="a tick")
    assert rows(customer_sqlite, "SELECT count(*) FROM customer_messages WHERE "
                "order_id = ? AND node = 'shipped'", [first])[0][0] == 0
