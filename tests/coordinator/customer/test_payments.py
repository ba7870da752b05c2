"""Unpaid orders: one reminder (WeCom to the store, SMS with a coupon to the customer) at
2 h, cancellation releasing stock later; deadlines are data, fed the time, fire once and
survive a coordinator restart. A payment stops them; bad payment events write nothing."""

from __future__ import annotations

from pathlib import Path

import pytest

from coordinator.errors import ConfigError
from protocols.clock import ManualClock
from simulators.receiver import Receiver
from tests.coordinator.ops.helpers import wait_for

from .harness import NOW, customer_app, rows, running, wechat_order


def _reserved(db: str, warehouse: str, sku: str) -> int:
    return int(rows(db, "SELECT reserved FROM inventory WHERE warehouse_id = ? AND "
                    "sku_id = ?", [warehouse, sku])[0][0])


async def test_unpaid_order_is_reminded_once_at_2h_and_cancelled_later_across_a_restart(
        customer_db: str, tmp_path: Path, receiver: Receiver) -> None:
    clock = ManualClock(NOW)
    sku = "SKU-0002"
    async with running(customer_app(customer_db, tmp_path, receiver, clock)) as http:
        placed = (await http.post("/orders", json=wechat_order(
            "WX-UNPAID", sku=sku, trade_state="NOTPAY"))).json()
        oid, warehouse = placed["order_id"], placed["warehouse_id"]
        # the default: an unpaid order reserves its stock
        held = _reserved(customer_db, warehouse, sku)
        assert held >= 2
        customer = (await http.get(f"/orders/{oid}/customer")).json()
        assert customer["paid"] is False
        clock.advance(2 * 3600 - 1)
        await wait_for(lambda: receiver.accepted("/wechat") != [], what="allocated message")
        assert receiver.accepted("/sms") == []
        clock.advance(2)  # 2 h have passed
        await wait_for(lambda: len(receiver.accepted("/sms")) == 1, what="the SMS reminder")
        await wait_for(lambda: len(receiver.accepted("/wecom")) == 1, what="the store reminder")
        sms = receiver.accepted("/sms")[0].body
        assert sms["phone_numbers"] == ["13812345678"]
        assert sms["text"].startswith("【茶饮】您的订单WX-UNPAID还未支付，送您5元券PAY-")
        store_text = receiver.accepted("/wecom")[0].body["text"]["content"]
        assert "订单WX-UNPAID已下单120分钟仍未支付" in store_text
    # a restart: the deadlines are in the database, the reminder is not sent again
    clock.advance(60)
    async with running(customer_app(customer_db, tmp_path, receiver, clock)) as http:
        await wait_for(lambda: rows(customer_db, "SELECT count(*) FROM customer_payments WHERE "
                                    "reminded_at IS NOT NULL")[0][0] == 1, what="state")
        clock.advance(2 * 3600)  # 4 h: the cancellation deadline
        await wait_for(lambda: rows(customer_db, "SELECT status FROM orders WHERE id = ?",
                                    [oid])[0][0] == "cancelled", what="the cancellation")
        assert _reserved(customer_db, warehouse, sku) == held - 2
        timeline = (await http.get(f"/orders/{oid}")).json()["timeline"]
        assert timeline[-1]["kind"] == "cancelled"
        assert timeline[-1]["detail"] == {"reason": "unpaid", "by": "system"}
        late = await http.post("/payments", json={"channel": "wechat_mini",
                                                  "channel_order_id": "WX-UNPAID"})
        assert late.status_code == 409
        clock.advance(3600)
        await wait_for(lambda: app_idle(customer_db), what="quiet")
    assert len(receiver.accepted("/sms")) == 1 and len(receiver.accepted("/wecom")) == 1


def app_idle(db: str) -> bool:
    return rows(db, "SELECT count(*) FROM ops_notifications WHERE status = 'pending'"
                ) == [(0,)]


async def test_a_payment_stops_the_deadlines_and_bad_events_write_nothing(
        customer_db: str, tmp_path: Path, receiver: Receiver) -> None:
    clock = ManualClock(NOW)
    async with running(customer_app(customer_db, tmp_path, receiver, clock)) as http:
        oid = (await http.post("/orders", json=wechat_order(
            "WX-PAYS", trade_state="NOTPAY"))).json()["order_id"]
        unknown = await http.post("/payments", json={"channel": "wechat_mini",
                                                     "channel_order_id": "WX-NOPE"})
        assert unknown.status_code == 404 and unknown.json()["field"] == "channel_order_id"
        junk = await http.post("/payments", json={"channel": "fax", "channel_order_id": "1"})
        assert junk.status_code == 422 and junk.json()["field"] == "body.channel"
        assert rows(customer_db, "SELECT paid_at FROM customer_payments") == [(None,)]
        paid = await http.post("/payments", json={"channel": "wechat_mini",
                                                  "channel_order_id": "WX-PAYS",
                                                  "payment_ref": "4200001"})
        assert paid.json() == {"order_id": oid, "paid": True, "changed": True,
                               "paid_at": "2026-11-24T02:17:00.000Z", "status": "allocated"}
        again = await http.post("/payments", json={"channel": "wechat_mini",
                                                   "channel_order_id": "WX-PAYS"})
        assert again.json()["changed"] is False
        clock.advance(5 * 3600)
        await wait_for(lambda: app_idle(customer_db) and receiver.accepted("/wechat") != [],
                       what="quiet")
        assert (await http.get(f"/orders/{oid}")).json()["status"] == "allocated"
    assert receiver.accepted("/sms") == [] and receiver.accepted("/wecom") == []


async def test_unpaid_orders_hold_no_stock_when_the_setting_says_so(
        customer_db: str, tmp_path: Path, receiver: Receiver) -> None:
    clock = ManualClock(NOW)
    sku = "SKU-0003"
    before = rows(customer_db, "SELECT sum(reserved) FROM inventory WHERE sku_id = ?", [sku])[0][0]
    app = customer_app(customer_db, tmp_path, receiver, clock,
                       payment={"unpaid_reserves_stock": False})
    async with running(app) as http:
        waiting = (await http.post("/orders", json=wechat_order(
            "WX-HOLD", sku=sku, trade_state="NOTPAY"))).json()
        assert waiting["status"] == "awaiting_payment" and waiting["warehouse_id"] is None
        oid = waiting["order_id"]
        assert rows(customer_db, "SELECT sum(reserved) FROM inventory WHERE sku_id = ?",
                    [sku])[0][0] == before
        # a retry set off by anything else leaves it alone: it is not paid
        await http.post("/orders/retry", json={})
        assert (await http.get(f"/orders/{oid}")).json()["status"] == "awaiting_payment"
        paid = (await http.post("/payments", json={"channel": "wechat_mini",
                                                   "channel_order_id": "WX-HOLD"})).json()
        assert paid["status"] == "allocated"
        order = (await http.get(f"/orders/{oid}")).json()
        assert order["status"] == "allocated" and order["warehouse_id"] is not None
        assert [e["kind"] for e in order["timeline"]] == [
            "received", "awaiting_payment", "paid", "allocated"]
        assert rows(customer_db, "SELECT sum(reserved) FROM inventory WHERE sku_id = ?",
                    [sku])[0][0] == before + 2
        # another one never paid: cancelled at the deadline, nothing to release
        other = (await http.post("/orders", json=wechat_order(
            "WX-HOLD2", sku=sku, trade_state="NOTPAY"))).json()["order_id"]
        clock.advance(4 * 3600)
        await wait_for(lambda: rows(customer_db, "SELECT status FROM orders WHERE id = ?",
                                    [other])[0][0] == "cancelled", what="cancellation")
    assert rows(customer_db, "SELECT sum(reserved) FROM inventory WHERE sku_id = ?",
                [sku])[0][0] == before + 2


@pytest.mark.parametrize(("templates", "named"), [
    ({"shipped": {"default": "已发出 {tracking}"}}, "customer.templates.shipped.default"),
    ({"unpaid_reminder": {"default": "还未支付" * 40}}, "customer.templates.unpaid_reminder"),
    ({"shipped": {"wechat": "x"}}, "customer.templates.shipped.wechat"),
    ({"shiped": {"default": "x"}}, "customer.templates.shiped"),
    ({"delivered": {"default": "送达 {time"}}, "customer.templates.delivered.default"),
])
async def test_template_errors_stop_the_start_naming_the_template(
        customer_sqlite: str, tmp_path: Path, receiver: Receiver, templates: dict[str, object],
        named: str) -> None:
    app = customer_app(customer_sqlite, tmp_path, receiver, ManualClock(NOW), templates=templates)
    # the app's own start (its lifespan) refuses, before it serves anything
    with pytest.raises(ConfigError, match=named.replace(".", r"\.")):
        async with app.router.lifespan_context(app):
            pass
