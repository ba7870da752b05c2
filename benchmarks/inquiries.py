"""Instant answers to "where is my order" (``POST /inquiries``) under a day's load.

A coordinator in its own process (``python -m coordinator serve``, ops and customer side
running, no MQTT) holds 14,000 orders of the day, each with its customer's contact (6,000
phone numbers, so a phone finds one to three orders). Inquiries arrive open loop at a
steady 200/s, half by the channel's order number and half by phone; each answer carries
status, node times and ETA, is recorded, and its reply is queued to the channel's webhook
(simulators.receiver, the loopback fake of the tests, in this process, keeping
connections alive as a channel's gateway does). Status-node messages are switched off
(``customer.message_nodes = []``): 14,000 orders' worth of them would be the dispatcher's
load, not the inquiries'.

- ``inquiry_p50_ms`` / ``inquiry_p99_ms``: HTTP answer time of ``POST /inquiries``.
- baseline in the same run: ``order_get_p50_ms`` / ``order_get_p99_ms``, ``GET
  /orders/{id}`` (status and timeline of one order) at the same rate on the same server;
  ``ratio_p99`` = inquiry p99 / baseline p99.
- ``inquiry_cpu_ms`` / ``order_get_cpu_ms``: the server process's CPU time per request
  (what the machine's other load cannot change: 200/s needs 200 x that per second).
- ``first_response_p50_s`` / ``first_response_p95_s``: the customer-facing figure from
  ``/metrics/summary`` after the run: inquiry -> reply acknowledged by the receiver
  (outbox delivery included; the inquiries carry no channel timestamp here, so it starts
  at arrival).
"""

from __future__ import annotations

import asyncio
import random
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from benchmarks.http_load import coordinator_process, percentiles, request_bytes, steady_load
from benchmarks.runner import Result
from coordinator import intake
from coordinator.auth.roles import Role, Scope
from coordinator.auth.store import issue_token
from coordinator.customer.config import PaymentConfig
from coordinator.customer.store import record_intake
from coordinator.db import open_database
from coordinator.region import generate_region, load_region
from coordinator.settings import AllocationConfig
from protocols.orders import Channel, CustomerContact, OrderIn, OrderLine
from simulators.receiver import Receiver

NOW = datetime.now(UTC)  # "orders of the day": the server's clock is the real one
RATE = 200.0
PHONES = 6_000


def _phone(i: int) -> str:
    return f"138{i:08d}"


def _load(path: Path, count: int) -> list[tuple[str, str, str]]:
    """``count`` orders with contacts; returns (order id, channel order id, phone)."""
    region = generate_region(skus=400)
    db = open_database(path)
    load_region(db, region, NOW)
    rng = random.Random(7)
    ambient = [s.id for s in region.skus if not s.cold_chain]
    payment = PaymentConfig()
    placed: list[tuple[str, str, str]] = []
    for start in range(0, count, 500):
        orders = []
        for i in range(start, min(count, start + 500)):
            shop = region.stores[rng.randrange(len(region.stores))]
            phone = _phone(rng.randrange(PHONES))
            orders.append(OrderIn(
                channel=Channel.WECHAT_MINI, channel_order_id=f"WX-{i}", store_id=shop.id,
                customer_id=f"oUser{i}", lines=[OrderLine(sku_id=rng.choice(ambient), qty=1)],
                lat=shop.lat, lon=shop.lon,
                contact=CustomerContact(phone=phone, name="顾客", address="杭州市", consent=True)))
        outcomes = intake.submit_orders(
            db, orders, now=NOW, config=AllocationConfig(),
            on_stored=lambda d, created, now: record_intake(d, created, now, payment))
        placed += [(o.order_id, o.channel_order_id, order.contact.phone or "")
                   for o, order in zip(outcomes, orders, strict=True) if order.contact]
    db.conn.close()
    return placed


def _config(root: Path, receiver: str) -> Path:
    path = root / "coordinator.toml"
    path.write_text(
        "[ops]\nsubscribe_mqtt = false\n\n[ops.notify.franchisee]\n"
        f'jsonl_path = "{root / "franchisee.jsonl"}"\n\n'
        # the day's status-node messages are not what is measured: only replies go out
        "[customer]\nmessage_nodes = []\n\n[customer.channels.wechat_mini]\n"
        f'route = "webhook"\nurl = "{receiver}/wechat"\n', encoding="utf-8")
    return path


def _first_response(port: int, expected: int, token: str,
                    within: float = 60.0) -> dict[str, Any]:
    """The summary once every reply was acknowledged (or ``within`` seconds passed)."""
    deadline = time.monotonic() + within
    while True:
        data: dict[str, Any] = httpx.get(f"http://127.0.0.1:{port}/metrics/summary",
                                         headers={"Authorization": f"Bearer {token}"},
                                         timeout=30).json()["first_response"]
        if data["answered"] >= expected or time.monotonic() > deadline:
            return data
        time.sleep(0.2)


def run(quick: bool) -> Result:
    result = Result("inquiries")
    count = 1_000 if quick else 14_000
    asked = 100 if quick else 2_000
    with (tempfile.TemporaryDirectory(prefix="bw-inquiries-") as tmp,
          Receiver(keep_alive=True) as receiver):
        root = Path(tmp)
        db_path = root / "inquiries.sqlite"
        placed = _load(db_path, count)
        db = open_database(db_path)  # the channel's integration token, as in production
        _, token = issue_token(db, name="bench", role=Role.INTEGRATION, scope=Scope(),
                               now=datetime.now(UTC), created_by="benchmark")
        db.conn.close()
        rng = random.Random(11)
        host = "127.0.0.1"
        inquiries = []
        for i in range(asked):
            _, number, phone = placed[rng.randrange(len(placed))]
            # no asked_at: requests are built before they are sent, so the channel's
            # timestamp is taken as the arrival (the figure then starts at our door)
            body: dict[str, object] = {"channel": "wechat_mini", "question": "到哪了"}
            body |= {"channel_order_id": number} if i % 2 == 0 else {"phone": phone}
            inquiries.append(request_bytes(host, "POST", "/inquiries", body, token=token))
        gets = [request_bytes(host, "GET", f"/orders/{placed[rng.randrange(len(placed))][0]}",
                              token=token) for _ in range(asked)]
        warm = [request_bytes(host, "GET", f"/orders/{placed[i][0]}", token=token)
                for i in range(8)]
        with coordinator_process(db_path, config=_config(root, receiver.url)) as served:
            port = served.port
            cpu = served.cpu_s()
            baseline = asyncio.run(steady_load(host, port, gets, RATE, warm=warm))
            get_cpu = served.cpu_s() - cpu
            answers = asyncio.run(steady_load(host, port, inquiries, RATE, warm=warm))
            first = _first_response(port, asked, token)
            # the replies' delivery (dispatcher) is part of what an inquiry costs
            inquiry_cpu = served.cpu_s() - cpu - get_cpu
        p50, p99 = percentiles(answers)
        b50, b99 = percentiles(baseline)
        result.add("orders_loaded", float(count), "orders", "of the day, each with a contact")
        result.add("inquiry_p50_ms", p50, "ms", f"{asked} POST /inquiries at {RATE:.0f}/s")
        result.add("inquiry_p99_ms", p99, "ms", "", "< 50")
        result.add("order_get_p50_ms", b50, "ms", f"baseline: GET /orders/{{id}} at {RATE:.0f}/s")
        result.add("order_get_p99_ms", b99, "ms", "")
        result.add("ratio_p99", p99 / b99 if b99 else 0.0, "x", "inquiry p99 / baseline p99")
        result.add("inquiry_cpu_ms", inquiry_cpu / asked * 1000, "ms/inquiry",
                   "server CPU per inquiry, reply delivery included")
        result.add("order_get_cpu_ms", get_cpu / asked * 1000, "ms/request",
                   "server CPU per GET /orders/{id}")
        result.add("first_response_p50_s", float(first["p50_s"] or 0.0), "s",
                   f"inquiry -> reply acknowledged, {first['answered']} of {first['inquiries']}")
        result.add("first_response_p95_s", float(first["p95_s"] or 0.0), "s", "", "<= 90")
    return result

