"""The order stream's shape, determinism, and posting to a real HTTP server on loopback."""

from __future__ import annotations

import json
import statistics
import threading
from collections import Counter
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

import pytest

from protocols.geo import great_circle_km
from protocols.orders import Channel, MeituanOrder, normalise
from simulators.orders import (
    GeneratedOrder,
    OrderPostError,
    order_stream,
    post_orders,
    targeted_orders,
    write_jsonl,
)
from simulators.region import builtin_region

REGION = builtin_region()
START = datetime(2026, 1, 15, tzinfo=timezone(timedelta(hours=8)))


@pytest.fixture(scope="module")
def day() -> list[GeneratedOrder]:
    return order_stream(REGION, 14_000, seed=11, start=START)


def test_a_day_has_the_seed_shape(day: list[GeneratedOrder]) -> None:
    assert len(day) == 14_000
    mix = Counter(o.channel for o in day)
    assert 0.40 < mix[Channel.WECHAT_MINI] / 14_000 < 0.50
    assert 0.30 < mix[Channel.MEITUAN] / 14_000 < 0.40
    assert 0.15 < mix[Channel.DOUYIN] / 14_000 < 0.25
    near = sum(o.distance_km <= 5.0 for o in day) / len(day)
    assert 0.8 < near < 0.95
    assert max(o.distance_km for o in day) < 16
    # all within one day of the start, with lunch busier than 04:00
    assert all(START <= o.submitted_at < START + timedelta(days=1) for o in day)
    hours = Counter(o.submitted_at.hour for o in day)
    assert hours[12] > 5 * hours[4]


def test_meituan_enters_late_and_clients_skew(day: list[GeneratedOrder]) -> None:
    delay = {
        channel: statistics.median(
            (o.enter_at - o.submitted_at).total_seconds() for o in day if o.channel is channel
        )
        for channel in (Channel.WECHAT_MINI, Channel.MEITUAN, Channel.DOUYIN)
    }
    assert delay[Channel.MEITUAN] > 20
    assert delay[Channel.WECHAT_MINI] < 2 and delay[Channel.DOUYIN] < 2
    skews = [abs(o.skew_s) for o in day]
    assert statistics.median(skews) < 1.0
    big = sum(s > 3.0 for s in skews) / len(skews)
    assert 0.01 < big < 0.08
    assert [o.enter_at for o in day] == sorted(o.enter_at for o in day)


def test_payloads_normalise_and_carry_the_client_time(day: list[GeneratedOrder]) -> None:
    for order in day[:300]:
        normal = normalise(order.payload)
        assert normal.channel is order.channel
        assert normal.store_id == order.store_id
        assert normal.client_submitted_at is not None
        slack = 1.0 if isinstance(order.payload, MeituanOrder) else 0.001  # ctime is whole seconds
        assert abs((normal.client_submitted_at - order.client_at).total_seconds()) <= slack
        assert {line.sku_id for line in normal.lines} <= {s.id for s in REGION.skus}


def test_same_seed_same_orders() -> None:
    first = order_stream(REGION, 300, seed=5, start=START)
    assert [o.body() for o in first] == [
        o.body() for o in order_stream(REGION, 300, seed=5, start=START)
    ]
    assert [o.body() for o in first] != [
        o.body() for o in order_stream(REGION, 300, seed=6, start=START)
    ]
    ids = [o.channel_order_id for o in first]
    assert len(set(ids)) == len(ids)


def test_targeted_orders_sit_next_to_a_cold_chain_warehouse() -> None:
    orders = targeted_orders(REGION, "WH-02", 287, seed=1, start=START)
    warehouse = REGION.warehouse("WH-02")
    assert warehouse is not None
    assert len(orders) == 287
    assert all(o.cold_chain for o in orders)
    assert all(great_circle_km(o.lat, o.lon, warehouse.lat, warehouse.lon) <= 1.51 for o in orders)
    assert len({o.channel_order_id for o in orders}) == 287
    with pytest.raises(ValueError, match="not in the region"):
        targeted_orders(REGION, "nope", 1, seed=1, start=START)


def test_jsonl_has_one_payload_per_line(tmp_path: Path) -> None:
    orders = order_stream(REGION, 50, seed=2, start=START)
    path = tmp_path / "orders.jsonl"
    assert write_jsonl(orders, path) == 50
    lines = path.read_text().splitlines()
    assert [json.loads(line) for line in lines] == [o.body() for o in orders]


class _Recorder(BaseHTTPRequestHandler):
    bodies: ClassVar[list[tuple[str, object]]] = []
    fail_every: ClassVar[int] = 0

    def do_POST(self) -> None:
        length = int(self.headers["Content-Length"])
        body = json.loads(self.rfile.read(length))
        type(self).bodies.append((self.path, body))
        bad = type(self).fail_every and len(type(self).bodies) % type(self).fail_every == 0
        status = 422 if bad else 201
        reply = b'{"detail": [{"loc": ["body", 0, "lat"]}]}' if bad else b"[]"
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def receiver() -> Iterator[tuple[str, type[_Recorder]]]:
    handler = type("Recorder", (_Recorder,), {"bodies": [], "fail_every": 0})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", handler
    finally:
        server.shutdown()
        server.server_close()


async def test_posts_batches_as_json_lists(receiver: tuple[str, type[_Recorder]]) -> None:
    url, handler = receiver
    orders = order_stream(REGION, 250, seed=3, start=START)
    stats = await post_orders(orders, url, batch=100)
    assert stats.sent == 250 and stats.batches == 3 and stats.accepted == 3
    paths = {path for path, _ in handler.bodies}
    assert paths == {"/orders"}
    sent = [item for _, body in handler.bodies for item in body]  # type: ignore[attr-defined]
    assert sent == [o.body() for o in orders]


async def test_single_posts_and_counted_rejections(receiver: tuple[str, type[_Recorder]]) -> None:
    url, handler = receiver
    handler.fail_every = 4
    orders = order_stream(REGION, 8, seed=3, start=START)
    stats = await post_orders(orders, url + "/", batch=1)
    assert stats.batches == 8
    assert stats.status_counts == {201: 6, 422: 2}
    assert stats.errors and "lat" in stats.errors[0]
    assert isinstance(handler.bodies[0][1], dict)


async def test_unreachable_coordinator_is_a_clear_error() -> None:
    orders = order_stream(REGION, 1, seed=3, start=START)
    with pytest.raises(OrderPostError, match="cannot POST"):
        await post_orders(orders, "http://127.0.0.1:9", batch=1)


def test_targeted_orders_at_a_dry_warehouse_need_no_cold_chain() -> None:
    orders = targeted_orders(REGION, "WH-03", 60, seed=1, start=START)
    assert not any(o.cold_chain for o in orders)
    assert Channel.MEITUAN not in {o.channel for o in orders}  # Meituan is forced cold chain


def test_targeted_orders_ask_only_for_deep_stock_when_the_region_has_inventory() -> None:
    from simulators.region import Stock

    deep = {s.id for s in REGION.skus[:30]}
    inventory = [
        Stock(warehouse_id="WH-02", sku_id=s.id, on_hand=500 if s.id in deep else 20)
        for s in REGION.skus
    ]
    region = REGION.model_copy(update={"inventory": inventory})
    orders = targeted_orders(region, "WH-02", 100, seed=4, start=START)
    asked = {line.sku_id for o in orders for line in normalise(o.payload).lines}
    assert asked <= deep
