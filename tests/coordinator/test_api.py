"""The HTTP API: through a real uvicorn on 127.0.0.1 with httpx, and in-process over ASGI."""

from __future__ import annotations

import gc
import json
import sys
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlite_utils import Database

from coordinator.app import create_app
from coordinator.db import open_database
from coordinator.settings import Settings
from protocols.clock import ManualClock
from tests.auth import ADMIN

from .conftest import NOW


def _wechat(trade_no: str, sku: str = "SKU-0001", num: Any = 1, **extra: Any) -> dict[str, Any]:
    body = {"channel": "wechat_mini", "out_trade_no": trade_no, "store_code": "HZ-S001",
            "goods": [{"sku_id": sku, "num": num}],
            "address": {"latitude": 30.27, "longitude": 120.15}}
    body.update(extra)
    return body


@pytest.fixture
async def client(settings: Settings, sample_db: Database) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(settings, clock=ManualClock(NOW))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://coordinator",
                                     headers=ADMIN) as c:
            yield c




@pytest.fixture(scope="module")
def live_http(live: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=live, headers=ADMIN, timeout=10) as http:
        yield http


# -- through real uvicorn -------------------------------------------------------------
def test_order_lifecycle_through_real_uvicorn(live: str) -> None:
    with httpx.Client(base_url=live, headers=ADMIN, timeout=10) as http:
        created = http.post("/orders", json=_wechat("LIVE-1", num=2))
        assert created.status_code == 201, created.text
        order_id = created.json()["order_id"]
        assert created.json()["status"] == "allocated"
        again = http.post("/orders", json=_wechat("LIVE-1", num=2))
        assert again.status_code == 200 and again.json()["order_id"] == order_id
        assert not again.json()["created"]
        for kind in ("shipped", "in_transit", "delivered"):
            step = http.post(f"/orders/{order_id}/events", json={"kind": kind})
            assert step.status_code == 200, step.text
        timeline = http.get(f"/orders/{order_id}").json()["timeline"]
        assert [e["label"] for e in timeline] == ["已接单", "已分仓", "已出库", "在途", "已送达"]
        assert all(e["at"] for e in timeline)
        late = http.post(f"/orders/{order_id}/events", json={"kind": "shipped"})
        assert late.status_code == 409


def test_parallel_http_clients_never_oversell(live: str) -> None:
    with httpx.Client(base_url=live, headers=ADMIN, timeout=10) as http:
        http.post("/skus", json={"id": "SCARCE-1", "name": "last units"})
        wh = http.get("/warehouses").json()
        http.post("/inventory", json=[{"warehouse_id": w["id"], "sku_id": "SCARCE-1",
                                       "on_hand": 3} for w in wh])

    def buy(n: int) -> int:
        with httpx.Client(base_url=live, headers=ADMIN, timeout=20) as http:
            body = _wechat(f"SCARCE-{n}", sku="SCARCE-1", num=1)
            return http.post("/orders", json=body).status_code

    with ThreadPoolExecutor(max_workers=8) as pool:
        codes = list(pool.map(buy, range(60)))
    assert set(codes) == {201}
    with httpx.Client(base_url=live, headers=ADMIN, timeout=10) as http:
        stock = http.get("/inventory", params={"sku_id": "SCARCE-1"}).json()
        orders = http.get("/orders", params={"limit": 1000}).json()
    assert all(row["reserved"] <= row["on_hand"] for row in stock)
    allocated = [o for o in orders if o["channel_order_id"].startswith("SCARCE-")
                 and o["status"] == "allocated"]
    assert len(allocated) == sum(row["reserved"] for row in stock) <= 3 * len(wh)


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8)
    | st.floats(allow_nan=False, allow_infinity=False),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                               max_size=4),
    max_leaves=12,
)
FIELDS = st.fixed_dictionaries({}, optional={
    "channel": st.sampled_from(["wechat_mini", "meituan", "douyin", "manual", "x"]),
    "out_trade_no": JSON_VALUES, "goods": JSON_VALUES, "address": JSON_VALUES,
    "channel_order_id": JSON_VALUES, "lines": JSON_VALUES, "lat": JSON_VALUES,
})


def test_waiting_order_is_placed_when_stock_is_put_back(live_http: httpx.Client) -> None:
    sku = "SKU-0200"  # used by no other test of this module's shared server
    emptied = live_http.put("/inventory", json=[
        {"warehouse_id": f"WH-0{i}", "sku_id": sku, "on_hand": 0} for i in range(1, 9)])
    assert emptied.status_code == 200, emptied.text
    waiting = live_http.post("/orders", json=_wechat("LIVE-RETRY", sku=sku))
    assert waiting.status_code == 201 and waiting.json()["status"] == "unallocated"
    order_id = waiting.json()["order_id"]

    restocked = live_http.put("/inventory",
                              json={"warehouse_id": "WH-03", "sku_id": sku, "on_hand": 4})

    assert restocked.status_code == 200, restocked.text
    assert restocked.json()["retried"]["placed"] >= 1
    order = live_http.get(f"/orders/{order_id}").json()
    assert order["status"] == "allocated" and order["warehouse_id"] == "WH-03"
    assert [e["kind"] for e in order["timeline"]] == ["received", "unallocated", "allocated"]
    decisions = live_http.get(f"/orders/{order_id}/decision").json()["decisions"]
    assert [d["kind"] for d in decisions] == ["allocate", "retry"]
    again = live_http.post("/orders/retry", json={"order_ids": [order_id]})
    assert again.status_code == 200 and again.json()["placed"] == 0
    # its "unallocated" alert is kept, and no longer open
    mine = [a for a in live_http.get("/alerts", params={"limit": 1000}).json()
            if a["order_id"] == order_id]
    assert [(a["kind"], a["open"]) for a in mine] == [("unallocated", False)]
    still_open = live_http.get("/alerts", params={"open": "true", "limit": 1000}).json()
    assert order_id not in {a["order_id"] for a in still_open}
    assert all(a["open"] is True for a in still_open)


def test_cancelling_an_order_frees_its_stock_for_a_waiting_one(live_http: httpx.Client) -> None:
    sku = "SKU-0201"  # used by no other test of this module's shared server
    only_one = [{"warehouse_id": f"WH-0{i}", "sku_id": sku, "on_hand": 1 if i == 1 else 0}
                for i in range(1, 9)]
    assert live_http.put("/inventory", json=only_one).status_code == 200
    first = live_http.post("/orders", json=_wechat("LIVE-SCARCE-1", sku=sku)).json()
    second = live_http.post("/orders", json=_wechat("LIVE-SCARCE-2", sku=sku)).json()
    assert (first["status"], second["status"]) == ("allocated", "unallocated")

    cancelled = live_http.post(f"/orders/{first['order_id']}/events", json={"kind": "cancelled"})

    assert cancelled.status_code == 200 and cancelled.json()["retried"]["placed"] == 1
    now = live_http.get(f"/orders/{second['order_id']}").json()
    assert (now["status"], now["warehouse_id"]) == ("allocated", "WH-01")


@pytest.mark.parametrize(("params", "field"), [
    ({"open": "perhaps"}, "query.open"),
    ({"limit": 0}, "query.limit"),
    ({"limit": "many"}, "query.limit"),
])
def test_junk_alert_queries_name_the_field(live_http: httpx.Client, params: dict[str, str],
                                           field: str) -> None:
    answer = live_http.get("/alerts", params=params)
    assert answer.status_code == 422 and answer.json()["field"] == field


@pytest.mark.parametrize(("body", "field"), [
    ({"limit": 0}, "body.limit"),
    ({"order_ids": "o_1"}, "body.order_ids"),
    ({"order_ids": [1]}, "body.order_ids.0"),
    ({"surprise": True}, "body.surprise"),
])
def test_junk_retry_bodies_name_the_field(live_http: httpx.Client, body: dict[str, Any],
                                          field: str) -> None:
    answer = live_http.post("/orders/retry", json=body)
    assert answer.status_code == 422 and answer.json()["field"] == field


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                 HealthCheck.function_scoped_fixture])
@given(body=JSON_VALUES | FIELDS | st.lists(FIELDS, max_size=3))
def test_junk_bodies_get_422_with_a_field_path_never_500(live_http: httpx.Client,
                                                         body: Any) -> None:
    response = live_http.post("/orders", json=body)
    assert response.status_code in (200, 201, 422), response.text
    if response.status_code == 422:
        problem = response.json()
        assert problem["field"] and problem["detail"]


def test_malformed_json_is_rejected_with_a_clear_error(live: str) -> None:
    with httpx.Client(base_url=live, headers=ADMIN, timeout=10) as http:
        malformed = http.post("/orders", content=b'{"channel": "meituan",',
                              headers={"content-type": "application/json"})
        not_utf8 = http.post("/orders", content=b"\xff{",
                             headers={"content-type": "application/json"})
    assert malformed.status_code == 422 and malformed.json()["field"].startswith("body")
    assert not_utf8.status_code == 400 and not_utf8.json()["detail"]


# -- in-process (ASGI) --------------------------------------------------------------
async def test_bad_field_is_named_with_its_path(client: httpx.AsyncClient) -> None:
    response = await client.post("/orders", json=[_wechat("P1"), _wechat("P2", num="many")])
    assert response.status_code == 422
    assert response.json()["field"] == "body.1.goods.0.num"
    assert (await client.get("/orders")).json() == []  # nothing half-written


async def test_unknown_sku_and_store_are_named(client: httpx.AsyncClient) -> None:
    response = await client.post("/orders", json=[_wechat("Q1"), _wechat("Q2", sku="SKU-NOPE")])
    assert response.status_code == 422
    assert response.json()["value"] == "SKU-NOPE" and "sku" in response.json()["detail"]
    assert (await client.get("/orders")).json() == []
    body = _wechat("Q3")
    body["store_code"] = "HZ-NOPE"
    response = await client.post("/orders", json=body)
    assert response.status_code == 422 and "HZ-NOPE" in response.json()["detail"]
    missing = await client.get("/orders/o_missing")
    assert missing.status_code == 404 and "o_missing" in missing.json()["detail"]


async def test_batch_of_mixed_channels_is_normalised(client: httpx.AsyncClient) -> None:
    batch = [
        _wechat("B1"),
        {"channel": "meituan", "wm_order_id_view": "B2", "app_poi_code": "HZ-S002",
         "detail": [{"app_food_code": "SKU-0002", "quantity": 1}],
         "latitude": 30.29, "longitude": 120.16},
        {"channel": "douyin", "shop_order_id": "B3", "shop_id": "HZ-S003",
         "sku_order_list": [{"out_sku_id": "SKU-0003", "item_num": 2}],
         "post_addr": {"lat": 30.25, "lng": 120.12}},
        {"channel": "manual", "channel_order_id": "B4", "customer_id": "walk-in",
         "lines": [{"sku_id": "SKU-0004", "qty": 1}], "lat": 30.26, "lon": 120.13},
    ]
    response = await client.post("/orders", json=batch)
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert [r["channel"] for r in results] == ["wechat_mini", "meituan", "douyin", "manual"]
    meituan = results[1]
    assert meituan["tier"] == 1
    wh = (await client.get(f"/warehouses/{meituan['warehouse_id']}")).json()
    assert wh["cold_chain"]


async def test_client_skew_is_flagged_and_counted(client: httpx.AsyncClient) -> None:
    ms = int((NOW - timedelta(seconds=5)).timestamp() * 1000)
    fresh = int((NOW - timedelta(seconds=1)).timestamp() * 1000)
    late = await client.post("/orders", json=_wechat("S1", submit_time_ms=ms))
    ok = await client.post("/orders", json=_wechat("S2", submit_time_ms=fresh))
    assert late.json()["skewed"] and not ok.json()["skewed"]
    stats = (await client.get("/stats")).json()
    assert stats["orders_skewed_total"] == 1 and stats["counters"]["orders_skewed"] == 1


async def test_an_order_from_a_phone_whose_clock_is_decades_off_is_taken_and_flagged(
        client: httpx.AsyncClient) -> None:
    # a customer's wrong clock must not cost the order: the server's time counts
    epoch = await client.post("/orders", json=_wechat("S-1970", submit_time_ms=1))
    assert epoch.status_code == 201 and epoch.json()["skewed"]
    far = await client.post("/orders", json={
        "channel": "manual", "channel_order_id": "M-9999", "store_id": "HZ-S001",
        "client_submitted_at": "9999-12-31T23:59:59Z",
        "lines": [{"sku_id": "SKU-0004", "qty": 1}], "lat": 30.26, "lon": 120.13})
    assert far.status_code == 201 and far.json()["skewed"]
    order = (await client.get(f"/orders/{far.json()['order_id']}")).json()
    assert order["received_at"].startswith(str(NOW.year))


async def test_decision_explains_choice_and_why_not(client: httpx.AsyncClient) -> None:
    order = (await client.post("/orders", json=_wechat("W1"))).json()
    response = await client.get(f"/orders/{order['order_id']}/decision",
                                params={"why_not": "WH-02"})
    assert response.status_code == 200
    body = response.json()
    (decision,) = body["decisions"]
    assert decision["rule_set_version"].startswith("breakwater-rules-1+")
    assert any("CHOSEN" in line for line in decision["explanation"])
    chosen = [c for c in decision["candidates"] if c["chosen"]]
    assert chosen[0]["warehouse_id"] == order["warehouse_id"]
    assert body["why_not"]["warehouse_id"] == "WH-02" and body["why_not"]["answer"]
    unknown = await client.get(f"/orders/{order['order_id']}/decision",
                               params={"why_not": "WH-404"})
    assert unknown.status_code == 404


async def test_catalog_import_takes_json_lines_and_a_gbk_csv_from_excel(
        client: httpx.AsyncClient) -> None:
    lines = b'{"id": "SKU-L1", "name": "a"}\n{"id": "SKU-L2", "name": "b", "cold_chain": 1}\n'
    imported = await client.post("/import/skus", content=lines,
                                 headers={"content-type": "application/x-ndjson"})
    assert imported.status_code == 200 and imported.json()["written"] == 2
    gbk = "id,name,cold_chain\nSKU-L3,冻品,是\n".encode("gbk")
    imported = await client.post("/import/skus", content=gbk,
                                 headers={"content-type": "text/csv"})
    assert imported.status_code == 200 and imported.json()["written"] == 1
    assert (await client.get("/skus/SKU-L3")).json()["name"] == "冻品"
    bad = await client.post("/import/skus", content=b'{"id": "SKU-L4"}\n{"name": "x"}\n',
                            headers={"content-type": "application/x-ndjson"})
    assert bad.status_code == 422 and bad.json()["field"] == "row 2.id"
    assert (await client.get("/skus/SKU-L4")).status_code == 404  # nothing half-written


async def test_decision_names_warehouses_and_skus_beside_their_ids(
        client: httpx.AsyncClient) -> None:
    """The nearest warehouse (WH-04) has none of the SKU: the explanation and the answer to
    "why not WH-04" say it was a stock shortfall, with the warehouse's and the SKU's names."""
    emptied = await client.put("/inventory", json={"warehouse_id": "WH-04",
                                                   "sku_id": "SKU-0001", "on_hand": 0})
    assert emptied.status_code == 200
    order = (await client.post("/orders", json=_wechat("N1"))).json()
    assert order["warehouse_id"] not in (None, "WH-04")
    body = (await client.get(f"/orders/{order['order_id']}/decision",
                             params={"why_not": "WH-04"})).json()
    (decision,) = body["decisions"]
    [line] = [x for x in decision["explanation"] if x.startswith("WH-04 ")]
    assert line.startswith("WH-04 杭州滨江仓 (")
    assert line.endswith("dropped by stock: short of SKU-0001 (酸奶1): 0 sellable < 1 ordered")
    [wh04] = [c for c in decision["candidates"] if c["warehouse_id"] == "WH-04"]
    assert wh04["dropped_by"] == "stock" and wh04["name"] == "杭州滨江仓"
    answer = body["why_not"]["answer"]
    assert answer.startswith("WH-04 杭州滨江仓 (") and "dropped by stock" in answer
    assert "short of SKU-0001 (酸奶1)" in answer
    assert [h["answer"] for h in body["why_not"]["history"]] == [answer]


async def test_catalog_crud_and_bulk_import(client: httpx.AsyncClient, tmp_path: Path) -> None:
    created = await client.put("/warehouses", json={"id": "WH-09", "name": "新仓", "lat": 30.3,
                                                    "lon": 120.2, "cold_chain": True})
    assert created.status_code == 200
    assert (await client.get("/warehouses/WH-09")).json()["cold_chain"] is True
    csv_body = "id,name,cold_chain\nSKU-N1,新品,是\nSKU-N2,新品2,0\n"
    imported = await client.post("/import/skus", content=csv_body.encode(),
                                 headers={"content-type": "text/csv"})
    assert imported.json() == {"kind": "skus", "written": 2,
                               "retried": {"placed": 0, "still_waiting": 0,
                                           "seconds": imported.json()["retried"]["seconds"]}}
    bad_csv = "warehouse_id,sku_id,on_hand\nWH-09,SKU-N1,5\nWH-09,SKU-N2,-1\n"
    rejected = await client.post("/import/inventory", content=bad_csv.encode(),
                                 headers={"content-type": "text/csv"})
    # the row as the export shows it: the header is row 1
    assert rejected.status_code == 422 and rejected.json()["field"] == "row 3.on_hand"
    assert (await client.get("/inventory", params={"warehouse_id": "WH-09"})).json() == []
    unknown = await client.post("/import/inventory", content=json.dumps(
        [{"warehouse_id": "WH-404", "sku_id": "SKU-N1", "on_hand": 1}]).encode(),
        headers={"content-type": "application/json"})
    assert unknown.status_code == 422 and "WH-404" in unknown.json()["detail"]
    bad = await client.post("/stores", json={"id": "S1", "name": "x", "lat": 95, "lon": 1})
    assert bad.status_code == 422 and bad.json()["field"] == "body.lat"


async def test_openapi_documents_the_order_payloads(client: httpx.AsyncClient) -> None:
    spec = (await client.get("/openapi.json")).json()
    assert "/orders" in spec["paths"] and "/orders/{order_id}/decision" in spec["paths"]
    names = set(spec["components"]["schemas"])
    assert {"WechatMiniOrder", "MeituanOrder", "DouyinOrder", "OrderIn"} <= names
    # every status POST /orders answers with is documented
    assert {"200", "201", "422", "503"} <= set(spec["paths"]["/orders"]["post"]["responses"])


async def test_running_app_leaves_process_wide_settings_alone(settings: Settings,
                                                              sample_db: Database) -> None:
    interval, frozen, collecting = sys.getswitchinterval(), gc.get_freeze_count(), gc.isenabled()
    app = create_app(settings, clock=ManualClock(NOW))
    async with app.router.lifespan_context(app):
        assert sys.getswitchinterval() == interval
        assert gc.get_freeze_count() == frozen and gc.isenabled() == collecting
    assert sys.getswitchinterval() == interval and gc.get_freeze_count() == frozen


async def test_a_failed_retry_after_a_cancel_still_answers_the_cancel(
    client: httpx.AsyncClient, settings: Settings
) -> None:
    sku = "SKU-0202"
    only_one = [{"warehouse_id": f"WH-0{i}", "sku_id": sku, "on_hand": 1 if i == 1 else 0}
                for i in range(1, 9)]
    assert (await client.put("/inventory", json=only_one)).status_code == 200
    first = (await client.post("/orders", json=_wechat("SCARCE-A", sku=sku))).json()
    second = (await client.post("/orders", json=_wechat("SCARCE-B", sku=sku))).json()
    assert second["status"] == "unallocated"
    db = open_database(settings.db_path, migrate=False)
    try:  # the database refuses the retry's decision rows
        db.execute("CREATE TRIGGER refuse_retry BEFORE INSERT ON allocation_decisions "
                   "WHEN NEW.kind = 'retry' BEGIN SELECT RAISE(ABORT, 'disk says no'); END")
    finally:
        db.conn.close()

    cancelled = await client.post(f"/orders/{first['order_id']}/events",
                                  json={"kind": "cancelled"})

    assert cancelled.status_code == 200, cancelled.text
    assert cancelled.json()["status"] == "cancelled"
    assert "disk says no" in cancelled.json()["retried"]["error"]
    assert (await client.get(f"/orders/{second['order_id']}")).json()["status"] == "unallocated"
    stats = (await client.get("/stats")).json()
    assert stats["counters"]["retry_failures"] == 1
    assert stats["wal_checkpointer"]["alive"] is True
