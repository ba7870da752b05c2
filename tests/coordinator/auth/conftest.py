"""A real coordinator (ops side included, so every route exists) under uvicorn, on a
database with the sample region, one order and a person's login."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from coordinator.auth.roles import Role, Scope
from coordinator.auth.store import add_user
from coordinator.catalog import import_file
from coordinator.db import open_database
from coordinator.region import SAMPLE_DIR, SAMPLE_FILES
from coordinator.serving import serve_in_thread
from protocols import Topics
from protocols.clock import ManualClock
from simulators.brokers import Broker
from tests.auth import ADMIN, NOW
from tests.coordinator.ops.app_server import ops_app
from tests.coordinator.ops.helpers import ops_config, settings_for

PASSWORD = "correct horse battery staple"


@dataclass
class Site:
    url: str
    db_path: Path
    order_id: str  # placed for store ORDER_STORE
    order_store: str
    order_warehouse: str


ORDER_STORE = "HZ-S001"


@pytest.fixture(scope="module")
def site(mqtt_broker: Broker, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    if not mqtt_broker.running:
        mqtt_broker.start()
    workdir = tmp_path_factory.mktemp("auth")
    db_path = workdir / "coordinator.sqlite"
    db = open_database(db_path)
    for name in SAMPLE_FILES:
        import_file(db, SAMPLE_DIR / f"{name}.csv", NOW)
    add_user(db, username="alice", password=PASSWORD, role=Role.OPERATOR, scope=Scope(),
             now=NOW)
    add_user(db, username="franchisee-1", password=PASSWORD, role=Role.VIEWER,
             scope=Scope.of(stores=[ORDER_STORE]), now=NOW)
    db.conn.close()
    app = ops_app(settings_for(db_path, mqtt_broker.url, Topics("bwtest-auth")),
                  ops_config(workdir), ManualClock(NOW))
    with serve_in_thread(app) as url, httpx.Client(base_url=url, headers=ADMIN) as http:
        placed = http.post("/orders", json={
            "channel": "douyin", "channel_order_id": "AUTH-1", "store_id": ORDER_STORE,
            "lines": [{"sku_id": "SKU-0003", "qty": 1}], "lat": 30.25, "lon": 120.12})
        assert placed.status_code == 201, placed.text
        order = placed.json()
        yield Site(url, db_path, order["order_id"], ORDER_STORE, order["warehouse_id"])
