"""The intel stores on both backends (SQLite and the private PostgreSQL): history import
and report, return classification with corrections and retraining, address checks, and
the intel round: stuck parcels handed to the backup carrier (a real HTTP receiver) and
scheduled retraining."""

from __future__ import annotations

import csv
import io
from datetime import UTC, date, datetime, timedelta
from typing import Any

import httpx

from coordinator.customer import store as customer_store
from coordinator.customer.config import PaymentConfig
from coordinator.db import Database, write_transaction
from coordinator.imports import ImportFormat
from coordinator.intake import submit_orders
from coordinator.intel import addresses, heal_store, history, report, returns, returns_store
from coordinator.intel.config import IntelConfig, ParcelsConfig, ReportConfig
from coordinator.intel.geocode import Gazetteer
from coordinator.intel.parcels import WebhookCarrier
from coordinator.intel.service import IntelService
from coordinator.ops import tracker_store
from coordinator.ops.couriers import Shipment, ShipmentRecorded
from coordinator.queries import get_order, recent_alerts
from coordinator.settings import AllocationConfig
from protocols.clock import ManualClock
from protocols.orders import CustomerContact, OrderIn, OrderLine
from simulators import history as export
from simulators.receiver import Receiver

NOW = datetime(2026, 11, 24, 2, 17, tzinfo=UTC)


def _csv() -> bytes:
    rows = export.rows(start=date(2026, 10, 1), days=5, per_day=20,
                       stores=[(30.26, 120.16)], bad_rows=3)
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(export.HEADERS)
    writer.writerows(rows)
    return out.getvalue().encode()


def _order(db: Database, ref: str) -> str:
    order = OrderIn(channel="wechat_mini", channel_order_id=ref, store_id="HZ-S001",
                    lines=[OrderLine(sku_id="SKU-0001", qty=1)], lat=30.26, lon=120.16)
    return submit_orders(db, [order], now=NOW, config=AllocationConfig())[0].order_id


def test_history_import_and_report(store_db: Database) -> None:
    _, result = history.import_history(store_db, _csv(), fmt=ImportFormat.CSV)
    assert result.rows_rejected == 3 and result.rows_written == 125
    built = report.build(store_db, ReportConfig())
    assert built.orders == 100
    assert built.channel_shares["meituan"] == 0.4


def test_returns_classified_corrected_and_retrained(store_db: Database) -> None:
    order = _order(store_db, "BACKEND-RET")
    made = returns.classify(store_db, order_id=order, kind="return", text="少发了一袋",
                            sku_id=None, carrier="ZTO", now=NOW)
    assert made["reason"] == "missing_item" and made["model_version"] == 1
    fixed = returns.correct(store_db, made["id"], reason="wrong_item", actor="user:li",
                            now=NOW)
    assert fixed["corrections"][0]["actor"] == "user:li"
    trained = returns.retrain(store_db, NOW, trigger="test")
    assert trained.version == 2 and trained.corrections == 1
    assert returns_store.pending_corrections(store_db) == 0
    assert returns_store.last_trained_at(store_db) == NOW
    returns.classify(store_db, order_id=order, kind="exchange", text="快递盒压扁了，饼干全碎",
                     sku_id=None, carrier="ZTO", now=NOW)
    assert returns_store.root_causes(store_db, "carrier") == [
        {"carrier": "ZTO", "returns": 2, "top_reason": "damaged_in_transit",
         "reasons": {"damaged_in_transit": 1, "wrong_item": 1}}]
    assert [r["kind"] for r in returns_store.recent(store_db, 10)] == ["exchange", "return"]


def test_address_checks_and_heal_events(store_db: Database) -> None:
    order = _order(store_db, "BACKEND-ADDR")
    out = addresses.check_address(store_db, [Gazetteer("杭州市")], order_id=order,
                                  address="西湖文三路1号", city="杭州市", now=NOW)
    assert out["outcome"] == "corrected" and out["id"] >= 1
    assert addresses.current_address(store_db, order)["deliver_to"] == "浙江省杭州市西湖区文三路1号"
    assert heal_store.heal_counts(store_db) == {
        "address": {"exceptions": 1, "resolved_automatically": 1}}
    with write_transaction(store_db):
        heal_store.erase_addresses(store_db, [order])  # the customer side's retention
    erased = addresses.current_address(store_db, order)
    assert erased["original"] == "" and erased["corrected"] is None
    assert erased["outcome"] == "corrected"


def test_new_delivery_addresses_are_checked_by_the_intel_round_and_erased_with_contacts(
        store_db: Database) -> None:
    order = OrderIn(channel="wechat_mini", channel_order_id="BACKEND-AUTO", store_id="HZ-S001",
                    lines=[OrderLine(sku_id="SKU-0001", qty=1)], lat=30.26, lon=120.16,
                    contact=CustomerContact(name="张三", address="滨江江南大道588号"))
    order_id = submit_orders(
        store_db, [order], now=NOW, config=AllocationConfig(),
        on_stored=lambda db, created, now: customer_store.record_intake(
            db, created, now, PaymentConfig()))[0].order_id
    service = IntelService(IntelConfig(), ManualClock(NOW), lambda: store_db,
                           [Gazetteer("杭州市")])
    first, again = service.tick(), service.tick()
    assert first["addresses"] == [{"order_id": order_id, "outcome": "corrected"}]
    assert again["addresses"] == []  # checked once
    assert addresses.current_address(store_db, order_id)["deliver_to"] == (
        "浙江省杭州市滨江区江南大道588号")
    customer_store.schedule_erasure(store_db, order_id, NOW, timedelta(0))
    assert customer_store.erase_due(store_db, NOW + timedelta(seconds=1)) == [order_id]
    erased = addresses.current_address(store_db, order_id)
    assert erased["original"] == "" and erased["corrected"] is None
    assert erased["outcome"] == "corrected"  # the self-healing figures keep the outcome


PARCELS = ParcelsConfig(stuck_after_h=24, feed_alive_within_h=2, backup_carrier="jd-express")


def _shipments(db: Database, *shipments: tuple[str, str | None, str, float]) -> None:
    """(shipment, order, status, hours after NOW of its last update), all with carrier zto,
    written by the ops watcher's own writer."""
    actions = [ShipmentRecorded(Shipment(ident, "zto", "WH-01", order, status, True, NOW,
                                         NOW + timedelta(hours=last_h)))
               for ident, order, status, last_h in shipments]
    with write_transaction(db):
        tracker_store.persist(db, actions, NOW)


def _round(db: Database, carrier_url: str, client: httpx.Client,
           at: datetime) -> dict[str, Any]:
    service = IntelService(IntelConfig(parcels=PARCELS), ManualClock(at), lambda: db,
                           carrier=WebhookCarrier(carrier_url, client=client))
    return service.tick()


def test_the_intel_round_hands_a_stuck_parcel_over_once_and_retrains_on_schedule(
        store_db: Database) -> None:
    stuck, moving = _order(store_db, "BACKEND-STUCK"), _order(store_db, "BACKEND-MOVING")
    _shipments(store_db, ("ZTO-STUCK", stuck, "picked_up", 0),
               ("ZTO-MOVING", moving, "in_transit", 24.8))  # the carrier's feed is alive
    made = returns.classify(store_db, order_id=stuck, kind="return", text="包裹一直不动",
                            sku_id=None, carrier="zto", now=NOW)
    returns.correct(store_db, made["id"], reason="late_delivery", actor="user:li", now=NOW)
    later = NOW + timedelta(hours=25)
    with Receiver() as backup, httpx.Client(timeout=5) as client:
        first = _round(store_db, backup.url + "/handover", client, later)
        again = _round(store_db, backup.url + "/handover", client, later)
    assert [(h["shipment_id"], h["outcome"]) for h in first["handovers"]] == [
        ("ZTO-STUCK", "handed_over")]
    assert again["handovers"] == []  # once
    assert first["retrained"] == 2 and again["retrained"] is None  # one pending correction
    sent = backup.accepted("/handover")
    assert len(sent) == 1 and sent[0].body["order_id"] == stuck
    assert sent[0].body["to_carrier"] == "jd-express" and sent[0].body["from_carrier"] == "zto"
    handed = heal_store.recent_handovers(store_db, 10)
    assert [(h["shipment_id"], h["outcome"]) for h in handed] == [("ZTO-STUCK", "handed_over")]
    assert [e["kind"] for e in get_order(store_db, stuck)["timeline"]
            if e["kind"].startswith("parcel")] == ["parcel_handed_over"]
    assert heal_store.heal_counts(store_db)["parcel"] == {"exceptions": 1,
                                                          "resolved_automatically": 1}


def test_a_failed_hand_over_is_an_alert_for_a_person_on_both_backends(
        store_db: Database) -> None:
    stuck = _order(store_db, "BACKEND-FAIL")
    _shipments(store_db, ("ZTO-FAIL", stuck, "picked_up", 0), ("ZTO-ALIVE", None,
                                                               "in_transit", 29))
    with Receiver(fail_first=5) as backup, httpx.Client(timeout=5) as client:
        out = _round(store_db, backup.url + "/handover", client, NOW + timedelta(hours=30))
    handover = out["handovers"][0]
    assert handover["outcome"] == "failed" and "HTTP 500" in handover["error"]
    alerts = recent_alerts(store_db, limit=10, open_only=False)
    assert [(a["kind"], a["order_id"]) for a in alerts] == [("parcel_stuck", stuck)]
    assert heal_store.heal_counts(store_db)["parcel"] == {"exceptions": 1,
                                                          "resolved_automatically": 0}
    assert [e["kind"] for e in get_order(store_db, stuck)["timeline"]
            if e["kind"].startswith("parcel")] == ["parcel_stuck"]
