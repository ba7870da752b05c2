"""The intel stores on both backends (SQLite and the private PostgreSQL): history import
and report, return classification with corrections and retraining, address checks."""

from __future__ import annotations

import csv
import io
from datetime import UTC, date, datetime, timedelta

from coordinator.customer import store as customer_store
from coordinator.customer.config import PaymentConfig
from coordinator.db import Database
from coordinator.imports import ImportFormat
from coordinator.intake import submit_orders
from coordinator.intel import addresses, heal_store, history, report, returns
from coordinator.intel.config import IntelConfig, ReportConfig
from coordinator.intel.geocode import Gazetteer
from coordinator.intel.service import IntelService
from coordinator.settings import AllocationConfig
from protocols.clock import ManualClock
from protocols.orders import CustomerContact, OrderIn, OrderLine
from simulators import history as export

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


def test_address_checks_and_heal_events(store_db: Database) -> None:
    order = _order(store_db, "BACKEND-ADDR")
    out = addresses.check_address(store_db, [Gazetteer("杭州市")], order_id=order,
                                  address="西湖文三路1号", city="杭州市", now=NOW)
    assert out["outcome"] == "corrected" and out["id"] >= 1
    assert addresses.current_address(store_db, order)["deliver_to"] == "浙江省杭州市西湖区文三路1号"
    assert heal_store.heal_counts(store_db) == {
        "address": {"exceptions": 1, "resolved_automatically": 1}}


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
