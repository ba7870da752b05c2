"""Input that once made a 500 (found by fuzzing the API against its own OpenAPI spec) is a
422 naming the field, writes nothing, and every 422 matches the schema the spec documents."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlite_utils import Database

from coordinator.api_models import SQLITE_INT_MAX
from coordinator.app import create_app
from coordinator.settings import Settings
from protocols.clock import ManualClock
from tests.auth import ADMIN

from .conftest import NOW

PROPERTY = settings(max_examples=60, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow,
                                           HealthCheck.function_scoped_fixture])
# the largest Unix time in ms a datetime holds (9999-12-31T23:59:59.999Z)
MAX_EPOCH_MS = 253_402_300_799_999




@pytest.fixture(scope="module")
def http(live: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=live, headers=ADMIN, timeout=10) as client:
        yield client


def _count(http: httpx.Client, path: str) -> int:
    return len(http.get(path, params={"limit": 1000}).json())


def assert_invalid(response: httpx.Response, field: str | None = None) -> dict[str, Any]:
    """A 422 shaped as documented (``InvalidRequest``), naming ``field`` when given."""
    assert response.status_code == 422, response.text
    problem: dict[str, Any] = response.json()
    assert isinstance(problem["detail"], str) and problem["detail"]
    assert isinstance(problem["field"], str) and problem["field"]
    if field is not None:
        assert problem["field"] == field, problem
    return problem


def _channel_order(channel: str, number: str, *, store: bool = True,
                   **extra: Any) -> dict[str, Any]:
    body: dict[str, Any]
    if channel == "wechat_mini":
        body = {"channel": channel, "out_trade_no": number,
                "goods": [{"sku_id": "SKU-0001", "num": 1}],
                "address": {"latitude": 30.27, "longitude": 120.15}}
        if store:
            body["store_code"] = "HZ-S001"
    elif channel == "meituan":
        body = {"channel": channel, "wm_order_id_view": number,
                "detail": [{"app_food_code": "SKU-0001", "quantity": 1}],
                "latitude": 30.27, "longitude": 120.15}
        if store:
            body["app_poi_code"] = "HZ-S001"
    else:
        body = {"channel": channel, "shop_order_id": number,
                "sku_order_list": [{"out_sku_id": "SKU-0001", "item_num": 1}],
                "post_addr": {"lat": 30.27, "lng": 120.15}}
        if store:
            body["shop_id"] = "HZ-S001"
    body.update(extra)
    return body


# -- orders -----------------------------------------------------------------------------
@pytest.mark.parametrize("channel", ["wechat_mini", "meituan", "douyin"])
def test_channel_order_without_store_or_customer_is_a_422_for_that_order(
        http: httpx.Client, channel: str) -> None:
    before = _count(http, "/orders")
    batch = [_channel_order(channel, f"NOSTORE-OK-{channel}"),
             _channel_order(channel, f"NOSTORE-{channel}", store=False)]
    problem = assert_invalid(http.post("/orders", json=batch), "body.1")
    assert "store_id or customer_id" in problem["detail"]
    single = _channel_order(channel, f"NOSTORE-1-{channel}", store=False)
    assert_invalid(http.post("/orders", json=single), "body")
    assert _count(http, "/orders") == before  # the good order of the batch is not kept


@pytest.mark.parametrize(("channel", "field", "value"), [
    ("wechat_mini", "submit_time_ms", 10**20),  # OSError in fromtimestamp
    ("wechat_mini", "submit_time_ms", MAX_EPOCH_MS + 1),
    ("meituan", "ctime", 10**14),  # ValueError: year out of range
    ("douyin", "create_time", 10**13),
    ("douyin", "submit_ms", 10**30),  # OverflowError
])
def test_timestamp_past_year_9999_is_a_422_naming_it(http: httpx.Client, channel: str,
                                                    field: str, value: int) -> None:
    before = _count(http, "/orders")
    body = _channel_order(channel, f"FAR-{channel}-{field}-{value}", **{field: value})
    assert_invalid(http.post("/orders", json=body), f"body.{field}")
    assert_invalid(http.post("/orders", json=[body]), f"body.0.{field}")
    assert _count(http, "/orders") == before


def test_last_millisecond_of_year_9999_is_still_a_time(http: httpx.Client) -> None:
    body = _channel_order("wechat_mini", "LAST-MS", submit_time_ms=MAX_EPOCH_MS)
    answer = http.post("/orders", json=body)
    assert answer.status_code == 201, answer.text
    assert answer.json()["skewed"]


@PROPERTY
@given(channel=st.sampled_from(["wechat_mini", "meituan", "douyin"]),
       store=st.booleans(),
       stamps=st.dictionaries(
           st.sampled_from(["submit_time_ms", "ctime", "create_time", "submit_ms"]),
           st.integers(min_value=0, max_value=10**40), max_size=2),
       number=st.integers(min_value=0, max_value=10**9))
def test_any_channel_order_is_placed_or_a_422_never_a_500(
        http: httpx.Client, channel: str, store: bool, stamps: dict[str, int],
        number: int) -> None:
    body = _channel_order(channel, f"PROP-{channel}-{number}", store=store, **stamps)
    answer = http.post("/orders", json=body)
    assert answer.status_code in (200, 201, 422), answer.text
    if answer.status_code == 422:
        assert assert_invalid(answer)["field"].startswith("body")


# -- order events ---------------------------------------------------------------------
@pytest.mark.parametrize("at", ["0001-01-01T00:00:00+05:00", "9999-12-31T23:59:59-01:00"])
def test_event_time_without_a_utc_form_is_a_422(http: httpx.Client, at: str) -> None:
    order = http.post("/orders", json=_channel_order("wechat_mini", f"EV-{at}")).json()
    answer = http.post(f"/orders/{order['order_id']}/events", json={"kind": "shipped", "at": at})
    assert_invalid(answer, "body.at")
    assert http.get(f"/orders/{order['order_id']}").json()["status"] == "allocated"


# any time with any offset, often within a day of the calendar's ends (where a UTC form
# is missing)
AWARE = st.builds(
    lambda moment, minutes: moment.replace(tzinfo=timezone(timedelta(minutes=minutes))),
    st.datetimes() | st.datetimes(max_value=datetime(1, 1, 2))
    | st.datetimes(min_value=datetime(9999, 12, 31)),
    st.integers(min_value=-23 * 60 - 59, max_value=23 * 60 + 59))


@PROPERTY
@given(at=AWARE, kind=st.sampled_from(["shipped", "in_transit", "delivered", "cancelled"]))
def test_any_event_time_is_recorded_refused_or_a_422_never_a_500(
        http: httpx.Client, at: datetime, kind: str) -> None:
    placed = http.post("/orders", json=_channel_order("wechat_mini", f"EVP-{uuid.uuid4()}"))
    order = placed.json()["order_id"]
    answer = http.post(f"/orders/{order}/events", json={"kind": kind, "at": at.isoformat()})
    assert answer.status_code in (200, 409, 422), answer.text
    if answer.status_code == 422:
        assert_invalid(answer, "body.at")


# -- catalog ----------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["warehouses", "skus", "stores", "inventory"])
def test_offset_past_sqlite_integers_is_a_422(http: httpx.Client, kind: str) -> None:
    assert_invalid(http.get(f"/{kind}", params={"offset": SQLITE_INT_MAX + 1}), "query.offset")
    last = http.get(f"/{kind}", params={"offset": SQLITE_INT_MAX, "limit": 10_000})
    assert last.status_code == 200 and last.json() == []


@PROPERTY
@given(kind=st.sampled_from(["warehouses", "skus", "stores", "inventory"]),
       offset=st.integers(min_value=-(2**70), max_value=2**70)
       | st.integers(min_value=2**62, max_value=2**70),
       limit=st.integers(min_value=1, max_value=10_000)
       | st.integers(min_value=-(2**70), max_value=2**70))
def test_any_page_of_a_catalog_is_rows_or_a_422(http: httpx.Client, kind: str, offset: int,
                                                limit: int) -> None:
    answer = http.get(f"/{kind}", params={"offset": offset, "limit": limit})
    assert answer.status_code in (200, 422), answer.text
    if answer.status_code == 422:
        assert assert_invalid(answer)["field"] in ("query.offset", "query.limit")


def test_unknown_warehouse_in_an_inventory_upsert_names_the_field(http: httpx.Client) -> None:
    row = {"warehouse_id": "WH-404", "sku_id": "SKU-0001", "on_hand": 1}
    for method in ("POST", "PUT"):
        problem = assert_invalid(http.request(method, "/inventory", json=row), "warehouse")
        assert problem["value"] == "WH-404"
    imported = http.post("/import/inventory", json=[row])
    assert assert_invalid(imported, "warehouse")["value"] == "WH-404"
    assert http.get("/inventory", params={"warehouse_id": "WH-404"}).json() == []


def test_json_import_nested_too_deep_is_a_422(http: httpx.Client) -> None:
    deep = "[" * 100_000 + "]" * 100_000
    answer = http.post("/import/skus", content=deep.encode(),
                       headers={"content-type": "application/json"})
    assert "nested too deeply" in assert_invalid(answer, "file")["detail"]


def test_csv_field_over_the_csv_limit_is_a_422_and_writes_nothing(http: httpx.Client) -> None:
    before = _count(http, "/skus")
    text = "id,name\nHUGE-OK,fine\nHUGE-1," + "x" * 200_000 + "\n"
    answer = http.post("/import/skus", content=text.encode(),
                       headers={"content-type": "text/csv"})
    assert "field larger than field limit" in assert_invalid(answer)["detail"]
    assert _count(http, "/skus") == before


def test_an_upload_without_its_file_field_names_it_and_a_charset_is_no_other_type(
        http: httpx.Client) -> None:
    answer = http.post("/import/skus", files={"other": ("skus.csv", b"id,name\n")})
    assert "field 'file'" in assert_invalid(answer, "body.file")["detail"]
    taken = http.post("/import/skus", content="id,name\nCHARSET-1,有参数\n".encode(),
                      headers={"content-type": "Text/CSV; charset=utf-8"})
    assert taken.status_code == 200, taken.text


@PROPERTY
@given(text=st.text(max_size=300) | st.builds(
    lambda depth: "[" * depth + "]" * depth, st.integers(min_value=1, max_value=50_000)),
    kind=st.sampled_from(["warehouses", "skus", "stores", "inventory"]),
    ctype=st.sampled_from(["text/csv", "application/json"]))
def test_any_import_file_is_written_whole_or_a_422(http: httpx.Client, text: str, kind: str,
                                                   ctype: str) -> None:
    answer = http.post(f"/import/{kind}", content=text.encode("utf-8", "surrogatepass"),
                       headers={"content-type": ctype})
    assert answer.status_code in (200, 409, 422), answer.text
    if answer.status_code == 422:
        assert_invalid(answer)


# -- the spec ---------------------------------------------------------------------------
def test_spec_documents_the_422_that_is_sent(http: httpx.Client) -> None:
    spec = http.get("/openapi.json").json()
    schemas = spec["components"]["schemas"]
    assert "HTTPValidationError" not in schemas
    assert schemas["InvalidRequest"]["required"] == ["detail", "field"]
    ref = "#/components/schemas/InvalidRequest"
    for path in ("/orders", "/import/{kind}", "/skus", "/orders/{order_id}/events"):
        answer = spec["paths"][path]["post"]["responses"]["422"]
        assert answer["content"]["application/json"]["schema"] == {"$ref": ref}
    assert "HTTPValidationError" not in json.dumps(spec)


async def test_in_process_app_documents_and_sends_the_same_422(settings: Settings,
                                                               sample_db: Database) -> None:
    app = create_app(settings, clock=ManualClock(NOW))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://coordinator",
                                     headers=ADMIN) as c:
            bad = await c.get("/alerts", params={"limit": 0})
            spec = (await c.get("/openapi.json")).json()
    assert bad.status_code == 422 and bad.json()["field"] == "query.limit"
    required = set(spec["components"]["schemas"]["InvalidRequest"]["required"])
    assert required <= set(bad.json())


# -- NUL characters (PostgreSQL text cannot hold U+0000: once a 500 there) -------------
def test_a_nul_in_a_body_path_or_query_is_a_422_naming_where_and_writes_nothing(
        http: httpx.Client) -> None:
    skus = len(http.get("/skus", params={"limit": 1000}).json())
    answer = http.post("/skus", json=[{"id": "NUL-OK"}, {"id": "NUL-1", "name": "酸奶\u0000"}])
    assert_invalid(answer, "body.1.name")
    assert "NUL" in answer.json()["detail"]
    assert len(http.get("/skus", params={"limit": 1000}).json()) == skus
    assert_invalid(http.post("/auth/login", json={"username": "a\u0000", "password": "x"}),
                   "body.username")
    assert_invalid(http.get("/orders/o_%00"), "path")
    assert_invalid(http.get("/orders", params={"warehouse_id": "WH-01\u0000"}),
                   "query.warehouse_id")
    # the six characters \u0000 as text are no NUL: taken as they are
    text = http.post("/skus", json=[{"id": "NUL-2", "name": "a\\u0000b"}])
    assert text.status_code == 200, text.text
    assert {s["id"]: s["name"] for s in http.get(
        "/skus", params={"limit": 1000}).json()}["NUL-2"] == "a\\u0000b"


NUL_TEXT = st.text(max_size=6).map(lambda t: t[:3] + "\u0000" + t[3:])


@PROPERTY
@given(path=st.sampled_from(["/skus", "/stores", "/warehouses", "/orders", "/auth/login",
                             "/inventory"]),
       body=st.recursive(NUL_TEXT, lambda inner: st.lists(inner, min_size=1, max_size=3)
                         | st.dictionaries(st.sampled_from(["id", "name", "username",
                                                            "store_code", "sku_id"]),
                                           inner, min_size=1, max_size=3), max_leaves=6))
def test_any_body_holding_a_nul_is_a_422_never_a_500(
        http: httpx.Client, path: str, body: Any) -> None:
    answer = http.post(path, json=body)
    assert_invalid(answer)
    assert answer.json()["field"].startswith("body")


def test_a_large_catalogue_import_is_streamed_and_a_bad_last_row_writes_nothing(
        http: httpx.Client) -> None:
    # written chunk by chunk (2,000 rows each) once every row has been validated: a bad
    # row at the very end still rejects the whole file, and nothing of it is written
    csv = {"content-type": "text/csv"}
    rows = "".join(f"SKU-BULK-{i:05d},bulk {i},0\n" for i in range(5_000))
    bad = http.post("/import/skus", headers=csv,
                    content=f"id,name,cold_chain\n{rows}SKU-BULK-X,,maybe\n".encode())
    assert bad.status_code == 422 and bad.json()["field"].startswith("row 5002.")
    assert http.get("/skus/SKU-BULK-00000").status_code == 404
    good = http.post("/import/skus", headers=csv,
                     content=f"id,name,cold_chain\n{rows}".encode())
    assert good.status_code == 200 and good.json()["written"] == 5_000
    assert http.get("/skus/SKU-BULK-04999").json()["name"] == "bulk 4999"
    # stock for SKUs of the last chunk, one of them unknown: refused, nothing written
    stock = "".join(f"WH-01,SKU-BULK-{i:05d},3\n" for i in range(4_500))
    unknown = http.post("/import/inventory", headers=csv,
                        content=("warehouse_id,sku_id,on_hand\n" + stock
                                 + "WH-01,SKU-NOWHERE,1\n").encode())
    assert unknown.status_code == 422 and "SKU-NOWHERE" in unknown.json()["detail"]
    assert http.get("/inventory", params={"sku_id": "SKU-BULK-00000"}).json() == []
