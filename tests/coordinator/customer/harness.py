"""The customer side under test: the real app (ops + customer hooks) on real uvicorn with
real credentials (the session's admin token; other roles' tokens from tests.auth), a
loopback HTTP receiver standing for the channels, the SMS gateway and the WeCom robot,
and a manual clock (time is an input: the ticks run at whatever time the test sets)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from fastapi import FastAPI

from coordinator.catalog import import_file
from coordinator.db import open_database
from coordinator.ops.app import create_app_with_ops
from coordinator.region import SAMPLE_DIR, SAMPLE_FILES
from coordinator.roster_store import import_staff_file
from coordinator.settings import Settings
from protocols.clock import ManualClock
from simulators.receiver import Receiver
from tests.auth import ADMIN
from tests.coordinator.ops.app_server import serving
from tests.coordinator.ops.helpers import ops_config

NOW = datetime(2026, 11, 24, 2, 17, tzinfo=UTC)  # 10:17 in Hangzhou: the day shift


def seed(target: str | Path) -> None:
    """The sample region and roster in a database (a SQLite path or a PostgreSQL URL)."""
    db = open_database(target)
    try:
        for name in SAMPLE_FILES:
            import_file(db, SAMPLE_DIR / f"{name}.csv", NOW)
        import_staff_file(db, SAMPLE_DIR / "staff.csv", NOW)
    finally:
        db.conn.close()


def rows(target: str, sql: str, args: list[Any] | None = None) -> list[tuple[Any, ...]]:
    """What a query returns, committed, on either backend (its own connection)."""
    db = open_database(target, migrate=False)
    try:
        return [tuple(r) for r in db.execute(sql, args or []).fetchall()]
    finally:
        db.conn.close()


def customer_section(receiver: Receiver, **overrides: Any) -> dict[str, Any]:
    section: dict[str, Any] = {
        "channels": {
            "meituan": {"route": "webhook", "url": receiver.url + "/meituan"},
            "wechat_mini": {"route": "wechat_subscribe", "url": receiver.url + "/wechat",
                            "template_id": "TPL-1"},
            "douyin": {"route": "sms"},
        },
        "sms": {"url": receiver.url + "/sms", "signature": "茶饮"},
    }
    section.update(overrides)
    return section


def customer_app(target: str | Path, tmp_path: Path, receiver: Receiver, clock: ManualClock,
                 **overrides: Any) -> FastAPI:
    settings = Settings(db_path=str(target),
                        sections={"customer": customer_section(receiver, **overrides)})
    config = ops_config(tmp_path, wecom_url=receiver.url + "/wecom").model_copy(
        update={"subscribe_mqtt": False})
    app = create_app_with_ops(settings, clock=clock, config=config)
    return app


@asynccontextmanager
async def running(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with serving(app) as url, httpx.AsyncClient(base_url=url, timeout=10,
                                                      headers=ADMIN) as client:
        yield client


def meituan_order(number: str, sku: str = "SKU-0001", **extra: Any) -> dict[str, Any]:
    return {"channel": "meituan", "wm_order_id_view": number, "app_poi_code": "HZ-S002",
            "recipient_phone": "138****5678", "recipient_name": "张*",
            "recipient_address": "杭州市拱墅区莫干山路1号",
            "detail": [{"app_food_code": sku, "quantity": 1}],
            "latitude": 30.36, "longitude": 120.19, **extra}


def wechat_order(number: str, phone: str = "13812345678", sku: str = "SKU-0001",
                 **extra: Any) -> dict[str, Any]:
    return {"channel": "wechat_mini", "out_trade_no": number, "openid": "oUser-" + number,
            "store_code": "HZ-S002", "goods": [{"sku_id": sku, "num": 2}],
            "address": {"latitude": 30.36, "longitude": 120.19, "userName": "李四",
                        "telNumber": phone, "provinceName": "浙江省", "cityName": "杭州市",
                        "countyName": "拱墅区", "detailInfo": "莫干山路1号"},
            "privacy_consent": True, **extra}
