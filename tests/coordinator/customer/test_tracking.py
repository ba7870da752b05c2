"""Carrier tracking through the real API moves the order to 在途 and 已送达 with the
carrier's times, and the customer hears about each node once (on SQLite only, to keep the
suite quick: what it adds on top of the other customer tests is the ops side's carrier
progress, not customer SQL)."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from protocols.clock import ManualClock
from simulators.receiver import Receiver
from tests.coordinator.ops.helpers import wait_for

from .harness import NOW, customer_app, meituan_order, rows, running


async def test_tracking_updates_complete_the_timeline_with_the_carriers_times(
        customer_sqlite: str, tmp_path: Path, receiver: Receiver) -> None:
    clock = ManualClock(NOW)
    async with running(customer_app(customer_sqlite, tmp_path, receiver, clock)) as http:
        placed = (await http.post("/orders", json=meituan_order("MT-T1"))).json()
        oid, warehouse = placed["order_id"], placed["warehouse_id"]
        clock.advance(3600)
        scanned = NOW + timedelta(minutes=20)  # the carrier's own time, before ours

        def scan(status: str, at: object) -> dict[str, object]:
            return {"shipment_id": "SF-1", "carrier": "sf", "warehouse_id": warehouse,
                    "order_id": oid, "status": status, "ts": str(at)}

        for status, at in (("in_transit", scanned),
                           ("in_transit", scanned + timedelta(minutes=5)),
                           ("delivered", scanned + timedelta(minutes=25))):
            answer = await http.post("/tracking", json=scan(status, at.isoformat()))
            assert answer.status_code in (200, 202), answer.text
        order = (await http.get(f"/orders/{oid}")).json()
        assert order["status"] == "delivered"
        kinds = [(e["kind"], e["at"]) for e in order["timeline"]]
        assert kinds[2:] == [("shipped", "2026-11-24T02:37:00.000Z"),
                             ("in_transit", "2026-11-24T02:37:00.000Z"),
                             ("delivered", "2026-11-24T03:02:00.000Z")]
        assert order["timeline"][-1]["detail"]["carrier"] == "sf"
        await wait_for(lambda: len(receiver.accepted("/meituan")) == 4, what="four nodes")
    assert rows(customer_sqlite, "SELECT value FROM ops_counters WHERE name = ?",
                ["orders_moved_by_tracking"]) == [(2,)]
    # delivered concurrently, so in any order; each once, stamped with the carrier's time
    by_script = {r.body["script"]: r.body for r in receiver.accepted("/meituan")}
    assert set(by_script) == {"allocated", "shipped", "in_transit", "delivered"}
    assert by_script["delivered"]["at_local"] == "11-24 11:02"
    assert by_script["delivered"]["text"].startswith("您的订单MT-T1已于11-24 11:02送达")
