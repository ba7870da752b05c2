"""Request body limits through a real uvicorn: 413 naming the limit, before or while the
body arrives, counted, and intake unharmed."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from coordinator.app import create_app
from coordinator.serving import serve_in_thread
from coordinator.settings import LimitsConfig, Settings
from protocols.clock import ManualClock
from tests.auth import ADMIN

from .conftest import NOW

LIMITS = LimitsConfig(max_body_bytes=4096, max_import_bytes=16_384)


def _order(trade_no: str, padding: int = 0) -> dict[str, object]:
    return {"channel": "wechat_mini", "out_trade_no": trade_no, "store_code": "HZ-S001",
            "goods": [{"sku_id": "SKU-0001", "num": 1}], "remark": "x" * padding,
            "address": {"latitude": 30.27, "longitude": 120.15}}


@pytest.fixture(scope="module")
def http(tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    from coordinator.catalog import import_file
    from coordinator.db import open_database
    from coordinator.region import SAMPLE_DIR, SAMPLE_FILES

    path = tmp_path_factory.mktemp("limits") / "limits.sqlite"
    db = open_database(path)
    for name in SAMPLE_FILES:
        import_file(db, SAMPLE_DIR / f"{name}.csv", NOW)
    db.conn.close()
    app = create_app(Settings(db_path=str(path), limits=LIMITS), clock=ManualClock(NOW))
    with serve_in_thread(app) as url, httpx.Client(base_url=url, timeout=10,
                                                   headers=ADMIN) as client:
        yield client


def test_a_declared_body_over_the_limit_gets_413_naming_the_limit(http: httpx.Client) -> None:
    answer = http.post("/orders", json=_order("BIG-1", padding=8000))

    assert answer.status_code == 413
    body = answer.json()
    assert body["field"] == "body" and body["limit_bytes"] == 4096
    assert "limits.max_body_bytes" in body["detail"] and "POST /orders" in body["detail"]
    assert http.get("/stats").json()["counters"]["requests_body_too_large"] >= 1


def test_a_chunked_body_is_cut_off_at_the_limit(http: httpx.Client) -> None:
    raw = json.dumps(_order("BIG-2", padding=5_000)).encode()  # over 4096, under twice

    def chunks() -> Iterator[bytes]:  # no Content-Length: sent chunked
        for start in range(0, len(raw), 500):
            yield raw[start:start + 1000]

    answer = http.post("/orders", content=chunks(),
                       headers={"content-type": "application/json"})

    assert answer.status_code == 413
    assert "at most 4096 bytes" in answer.json()["detail"]
    stored = http.get("/orders", params={"limit": 1000}).json()
    assert "BIG-2" not in {o["channel_order_id"] for o in stored}  # nothing was stored


def test_bodies_within_the_limit_and_imports_up_to_theirs_go_through(
        http: httpx.Client, tmp_path: Path) -> None:
    assert http.post("/orders", json=_order("SMALL-1", padding=100)).status_code == 201
    rows = "id,name,cold_chain\n" + "".join(f"SKU-L{i:05d},limit test {i},0\n"
                                           for i in range(300))
    assert 4096 < len(rows.encode()) < 16_384
    imported = http.post("/import/skus", content=rows.encode(),
                         headers={"content-type": "text/csv"})
    assert imported.status_code == 200, imported.text
    too_big = http.post("/import/skus", content=(rows * 3).encode(),
                        headers={"content-type": "text/csv"})
    assert too_big.status_code == 413
    assert "limits.max_import_bytes" in too_big.json()["detail"]


def test_junk_limits_are_refused_naming_the_field() -> None:
    with pytest.raises(ValueError, match="max_body_bytes"):
        Settings(limits={"max_body_bytes": 0})
