"""Personal data is kept only as long as configured: erased by the tick once the
retention after delivery has passed, audited, and never written to a log."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from protocols.clock import ManualClock
from simulators.receiver import Receiver
from tests.auth import ADMIN
from tests.coordinator.ops.helpers import wait_for

from .harness import NOW, customer_app, rows, running, wechat_order


async def test_contact_is_erased_after_retention_audited_and_never_logged(
        customer_db: str, tmp_path: Path, receiver: Receiver,
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    clock = ManualClock(NOW)
    app = customer_app(customer_db, tmp_path, receiver, clock, retention_days=90)
    async with running(app) as http:
        oid = (await http.post("/orders", json=wechat_order("WX-R1"))).json()["order_id"]
        asked = await http.post("/inquiries", json={"channel": "wechat_mini",
                                                    "phone": "13812345678",
                                                    "question": "我是李四，电话13812345678"})
        assert asked.status_code == 200, asked.text
        keep = (await http.post("/orders", json=wechat_order("WX-R2", phone="13912345678"))
                ).json()["order_id"]
        await http.post(f"/orders/{oid}/events", json={"kind": "shipped"})
        await http.post(f"/orders/{oid}/events", json={"kind": "delivered"})
        await wait_for(lambda: rows(customer_db, "SELECT erase_after FROM customer_contacts WHERE "
                                    "order_id = ?", [oid])[0][0] is not None, what="scheduled")
        assert rows(customer_db, "SELECT erase_after FROM customer_contacts WHERE order_id = ?",
                    [oid]) == [("2027-02-22T02:17:00.000Z",)]
        clock.advance(90 * 86400 - 60)
        await wait_for(lambda: app.state.customer.last is not None
                       and app.state.customer.last.erased == 0, what="a tick before")
        assert rows(customer_db, "SELECT erased_at FROM customer_contacts WHERE order_id = ?",
                    [oid]) == [(None,)]
        clock.advance(120)
        await wait_for(lambda: rows(customer_db, "SELECT erased_at FROM customer_contacts WHERE "
                                    "order_id = ?", [oid])[0][0] is not None, what="erasure")
        contact = (await http.get(f"/orders/{oid}/customer",
                                  headers=ADMIN)).json()["contact"]
        assert contact["erased"] is True
        assert contact["phone"] is None and contact["name"] is None and contact["address"] is None
        # found by phone no more; the undelivered order keeps its contact
        gone = await http.post("/inquiries", json={"channel": "wechat_mini",
                                                   "phone": "13812345678"})
        assert gone.status_code == 404
        kept = (await http.get(f"/orders/{keep}/customer",
                               headers=ADMIN)).json()["contact"]
        assert kept["phone"] == "13912345678"
    # the inquiry, older than the retention period, keeps its reply but not who asked
    assert rows(customer_db, "SELECT phone_key, question FROM customer_inquiries") == [(None, "")]
    audit = rows(customer_db, "SELECT action, order_id, reason FROM customer_pii_audit")
    assert audit == [("erased", oid, "retention period ended")]
    logged = "\n".join(r.getMessage() for r in caplog.records)
    for secret in ("13812345678", "13912345678", "李四", "莫干山路"):
        assert secret not in logged
