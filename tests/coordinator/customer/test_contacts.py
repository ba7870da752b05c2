"""GET /orders/{id}/contacts: on-duty staff of active warehouses within 3 km of the
delivery address, nearest first, phones masked for a viewer; the order's own warehouse
when none is near. GET /orders/{id}/customer masks the contact the same way."""

from __future__ import annotations

from pathlib import Path

from coordinator.auth import Role
from protocols.clock import ManualClock
from simulators.receiver import Receiver
from tests.auth import headers_for

from .harness import NOW, customer_app, running, wechat_order


async def test_contacts_are_the_on_duty_staff_within_3_km_masked_for_a_viewer(
        customer_db: str, tmp_path: Path, receiver: Receiver) -> None:
    clock = ManualClock(NOW)
    async with running(customer_app(customer_db, tmp_path, receiver, clock)) as http:
        # delivered near WH-06 (0.7 km); WH-01 is 4 km away, outside the radius
        oid = (await http.post("/orders", json=wechat_order("WX-C1"))).json()["order_id"]
        viewer = (await http.get(f"/orders/{oid}/contacts",
                                 headers=headers_for(customer_db, Role.VIEWER))).json()
        assert viewer["radius_km"] == 3.0 and viewer["fallback"] is False
        assert [w["warehouse_id"] for w in viewer["warehouses"]] == ["WH-06"]
        assert viewer["warehouses"][0]["distance_km"] < 1.0
        day = viewer["warehouses"][0]["staff"]
        assert [(s["id"], s["phone"]) for s in day] == [("ST-061", "139****0601")]
        service = (await http.get(f"/orders/{oid}/contacts",
                                  headers=headers_for(customer_db, Role.CUSTOMER_SERVICE))).json()
        assert service["warehouses"][0]["staff"][0]["phone"] == "13900000601"
        # 22:17 in Hangzhou: the night shift answers
        clock.advance(12 * 3600)
        night = (await http.get(f"/orders/{oid}/contacts")).json()
        assert [s["id"] for s in night["warehouses"][0]["staff"]] == ["ST-062"]
        # the customer's own data: whole for customer service, masked for a viewer
        masked = (await http.get(f"/orders/{oid}/customer",
                                 headers=headers_for(customer_db, Role.VIEWER))).json()["contact"]
        assert masked["phone"] == "138****5678" and masked["name"] == "李*"
        assert masked["address"] == "浙江省杭州市***" and masked["consent"] is True
        service_desk = headers_for(customer_db, Role.CUSTOMER_SERVICE)
        whole = (await http.get(f"/orders/{oid}/customer",
                                headers=service_desk)).json()["contact"]
        assert whole["phone"] == "13812345678"
        assert whole["address"] == "浙江省杭州市拱墅区莫干山路1号"


async def test_no_active_warehouse_near_falls_back_to_the_orders_own(
        customer_db: str, tmp_path: Path, receiver: Receiver) -> None:
    clock = ManualClock(NOW)
    async with running(customer_app(customer_db, tmp_path, receiver, clock)) as http:
        answer = await http.post("/orders", json=wechat_order("WX-C2"))
        oid = answer.json()["order_id"]
        paused = await http.post("/warehouses/WH-06/pause", json={"reason": "inspection"})
        assert paused.status_code == 200, paused.text
        moved_to = (await http.get(f"/orders/{oid}")).json()["warehouse_id"]
        assert moved_to != "WH-06"
        contacts = (await http.get(f"/orders/{oid}/contacts",
                                   headers=headers_for(customer_db, Role.VIEWER))).json()
        assert contacts["fallback"] is True
        assert [w["warehouse_id"] for w in contacts["warehouses"]] == [moved_to]
        assert contacts["warehouses"][0]["staff"][0]["phone"].count("*") == 4
        missing = await http.get("/orders/o_nope/contacts")
        assert missing.status_code == 404
