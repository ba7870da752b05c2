"""The dashboard: its JSON over a real uvicorn, and the page rendered by headless Chromium.

One coordinator (core + ops + dashboard router) serves the sample region on loopback with
a real broker: orders come in over HTTP, one warehouse is paused by an operator (its
orders reroute), another trips a breaker published the way an agent publishes it, and one
order is shipped. Chromium then loads ``/dashboard?order=...`` and the test reads the DOM.
"""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from html import unescape
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import aiomqtt
import httpx
import pytest
from sqlite_utils import Database

from coordinator import dashboard, dashboard_state, order_search
from coordinator.app import create_app
from coordinator.auth.roles import Role, Scope
from coordinator.auth.store import add_user
from coordinator.catalog import import_file
from coordinator.db import open_database
from coordinator.ops.api import router as ops_router
from coordinator.ops.app import ops_lifespan
from coordinator.region import SAMPLE_DIR, SAMPLE_FILES
from coordinator.serving import serve_in_thread
from coordinator.settings import Settings
from protocols import Topics, encode
from simulators.brokers import Broker
from tests.auth import ADMIN
from tests.browser import console_errors, login, screenshot, wait_until, webdriver
from tests.coordinator.ops.factories import breaker_event
from tests.coordinator.ops.helpers import ops_config, register_gateways, settings_for

from .conftest import NOW

VIEWER = "night-shift"
PASSWORD = "dashboard test password"
PAUSE_REASON = "roof leak over cold room 2 冷库漏水"


def _publish_retained(broker: Broker, topic: str, payload: bytes) -> None:
    """As an agent publishes its breaker state: QoS 1, retained."""
    async def publish() -> None:
        async with aiomqtt.Client(broker.host, broker.port) as agent:
            await agent.publish(topic, payload, qos=1, retain=True)

    asyncio.run(publish())


@dataclass(frozen=True)
class Site:
    url: str
    paused: str  # warehouse paused by an operator (its orders rerouted)
    tripped: str  # warehouse whose breaker tripped
    rerouted_order: str
    shipped_order: str
    waiting_order: str  # no warehouse has its SKU: unallocated
    workdir: Path
    topics: Topics


# two destinations far apart, so the orders land at more than one warehouse
DESTINATIONS = ((30.37, 120.22), (30.17, 120.13))


def _wechat(trade_no: str, store: str, sku: str, where: tuple[float, float]) -> dict[str, Any]:
    return {"channel": "wechat_mini", "out_trade_no": trade_no, "store_code": store,
            "goods": [{"sku_id": sku, "num": 1}],
            "address": {"latitude": where[0], "longitude": where[1]}}


def _poll(http: httpx.Client, what: str, check: Any, within: float = 15.0) -> dict[str, Any]:
    deadline = time.monotonic() + within
    while True:
        state: dict[str, Any] = http.get("/dashboard/state").json()
        if check(state):
            return state
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}: {state}")
        time.sleep(0.05)


def _by_id(state: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {w["id"]: w for w in state["warehouses"]}


@pytest.fixture(scope="module")
def site(mqtt_broker: Broker, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    if not mqtt_broker.running:
        mqtt_broker.start()
    workdir = tmp_path_factory.mktemp("dashboard")
    path = workdir / "coordinator.sqlite"
    db = open_database(path)
    for name in SAMPLE_FILES:
        import_file(db, SAMPLE_DIR / f"{name}.csv", datetime.now(UTC))
    add_user(db, username=VIEWER, password=PASSWORD, role=Role.VIEWER, scope=Scope(),
             now=datetime.now(UTC))
    db.conn.close()
    topics = Topics(f"bwtest-dash-{uuid.uuid4().hex[:10]}")
    app = create_app(settings_for(path, mqtt_broker.url, topics),
                     extra_routers=[ops_router, order_search.router, dashboard.router],
                     lifespan_hooks=[ops_lifespan(ops_config(workdir))])
    with serve_in_thread(app) as url, httpx.Client(base_url=url, headers=ADMIN, timeout=15) as http:
        orders = []
        for i in range(6):
            r = http.post("/orders", json=_wechat(f"DASH-{i}", f"HZ-S00{i + 1}",
                                                  f"SKU-000{i % 3 + 1}",
                                                  DESTINATIONS[i % 2]))
            assert r.status_code == 201, r.text
            assert r.json()["status"] == "allocated", r.text
            orders.append(r.json())
        gone = "SKU-0203"
        r = http.put("/inventory", json=[{"warehouse_id": f"WH-0{i}", "sku_id": gone,
                                          "on_hand": 0} for i in range(1, 9)])
        assert r.status_code == 200, r.text
        r = http.post("/orders", json=_wechat("DASH-WAIT", "HZ-S007", gone, DESTINATIONS[0]))
        assert r.json()["status"] == "unallocated", r.text
        waiting = r.json()["order_id"]
        first = orders[0]
        paused = first["warehouse_id"]
        shipped = next(o for o in orders if o["warehouse_id"] != paused)
        for kind in ("shipped", "in_transit"):
            r = http.post(f"/orders/{shipped['order_id']}/events", json={"kind": kind})
            assert r.status_code == 200, r.text
        r = http.post(f"/warehouses/{paused}/pause",
                      json={"reason": PAUSE_REASON})
        assert r.status_code == 200, r.text
        assert r.json()["incidents"][0]["moved"] >= 1, r.text
        tripped = next(w for w in ("WH-05", "WH-07", "WH-02")
                       if w not in (paused, shipped["warehouse_id"]))
        register_gateways(path, {f"gw-{tripped.lower()}": tripped})
        event = breaker_event(seq=1, warehouse=tripped, agent=f"gw-{tripped.lower()}",
                              at=datetime.now(UTC))
        # retained, so the trip is delivered even if the coordinator subscribes after it
        _publish_retained(mqtt_broker, topics.breaker(tripped, "cold_chain"), encode(event))
        _poll(http, "the breaker trip", lambda s: _by_id(s)[tripped]["state"] == "tripped")
        yield Site(url, paused, tripped, first["order_id"], shipped["order_id"], waiting,
                   workdir, topics)
        _publish_retained(mqtt_broker, topics.breaker(tripped, "cold_chain"), b"")


# -- the JSON -------------------------------------------------------------------------
@pytest.mark.broker
def test_state_shows_paused_and_tripped_warehouses_incidents_and_counts(site: Site) -> None:
    with httpx.Client(base_url=site.url, headers=ADMIN, timeout=15) as http:
        state = http.get("/dashboard/state").json()
        assert set(state) == {"warehouses", "incidents", "orders_by_status", "orders_total",
                              "waiting_orders", "waiting_total", "notifications", "security",
                              "labels", "generated_at", "timezone", "down"}
        assert state["timezone"] == "Asia/Shanghai"
        assert sorted(state["down"]) == sorted([site.paused, site.tripped])
        warehouses = _by_id(state)
        assert sorted(warehouses) == [f"WH-0{i}" for i in range(1, 9)]
        paused = warehouses[site.paused]
        assert (paused["state"], paused["state_label"]) == ("paused", "已暂停")
        assert PAUSE_REASON in paused["reason"]
        assert [h["hold"] for h in paused["holds"]] == ["manual"]
        assert paused["open_orders"] == 0  # its orders moved away
        tripped = warehouses[site.tripped]
        assert tripped["state"] == "tripped" and not tripped["available"]
        assert tripped["reason"] == "breaker cold_chain: threshold_exceeded"
        assert [(c["kind"], c["name"], c["code"]) for c in tripped["causes"]] == [
            ("breaker", "cold_chain", "threshold_exceeded")]
        [breaker] = tripped["open_breakers"]
        assert (breaker["breaker"], breaker["state"], breaker["open"]) == (
            "cold_chain", "tripped", True)
        assert tripped["last_seen"] is not None
        others = [w for wid, w in warehouses.items() if wid not in (site.paused, site.tripped)]
        assert {w["state"] for w in others} == {"available"}
        assert all(w["reason"] is None and w["open_breakers"] == [] for w in others)

        by_warehouse = {i["warehouse_id"]: i for i in state["incidents"]}
        pause_incident = by_warehouse[site.paused]
        assert pause_incident["moved"] >= 1 and pause_incident["stuck"] == 0
        assert pause_incident["open"] and pause_incident["closed_at"] is None
        assert pause_incident["warehouse_name"] == paused["name"]
        # where the moved orders went, by warehouse
        assert sum(d["orders"] for d in pause_incident["destinations"]) == pause_incident["moved"]
        assert all(d["warehouse_id"] != site.paused and d["name"]
                   for d in pause_incident["destinations"])
        assert by_warehouse[site.tripped]["open"]

        counts = state["orders_by_status"]
        assert state["orders_total"] == sum(counts.values()) == 7
        assert counts["in_transit"] == 1 and counts["unallocated"] == 1
        [waiting] = state["waiting_orders"]
        assert state["waiting_total"] == 1
        assert (waiting["id"], waiting["status"]) == (site.waiting_order, "unallocated")
        assert "SKU-0203" in waiting["status_reason"]
        assert set(state["notifications"]["by_status"]) >= {"pending", "sent", "failed"}
        assert sum(state["notifications"]["by_kind"]["franchisee"].values()) == \
            pause_incident["moved"]
        assert state["labels"]["allocated"] == "已分仓"

        assert http.get("/dashboard/state", params={"incidents": 1}).json()["incidents"] \
            == [state["incidents"][0]]
        bad = http.get("/dashboard/state", params={"incidents": 0})
        assert bad.status_code == 422 and bad.json()["field"] == "query.incidents"


@pytest.mark.broker
def test_page_is_served_self_contained_at_root_and_dashboard(site: Site) -> None:
    with httpx.Client(base_url=site.url, headers=ADMIN, timeout=15) as http:
        pages = [http.get(p) for p in ("/", "/dashboard")]
    for page in pages:
        assert page.status_code == 200
        assert page.headers["content-type"].startswith("text/html")
        assert page.text == pages[0].text
    html = pages[0].text
    assert "<title>" in html and "/dashboard/events" in html and "EventSource" in html
    # works offline: no script, style or font fetched from anywhere else
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", html)
    assert "@import" not in html


# -- the page in a real browser -----------------------------------------------------------
def _text(fragment: str) -> str:
    """The visible text of an HTML fragment, whitespace collapsed."""
    return " ".join(unescape(re.sub(r"<[^>]+>", " ", fragment)).split())


def _element(dom: str, tag: str, attrs: str) -> str:
    found = re.search(rf"<{tag} {attrs}[^>]*>(.*?)</{tag}>", dom, re.S)
    assert found is not None, f"no <{tag} {attrs}> in the rendered page"
    return found.group(1)


def _loaded(driver: Any) -> bool:
    return bool(driver.execute_script(
        "return document.querySelectorAll('#warehouses tr[data-warehouse]').length > 0"))


def _state_fetches(driver: Any) -> int:
    return int(driver.execute_script(
        "return performance.getEntriesByType('resource')"
        ".filter(e => e.name.includes('/dashboard/state')).length"))


@pytest.mark.broker
def test_browser_renders_warehouses_and_an_orders_timeline_and_decision(site: Site) -> None:
    with httpx.Client(base_url=site.url, headers=ADMIN, timeout=15) as http:
        decision = http.get(f"/orders/{site.rerouted_order}/decision",
                            params={"why_not": site.paused}).json()
    page = f"{site.url}/dashboard?order={site.rerouted_order}&why_not={site.paused}&lang=en"
    with webdriver(site.workdir) as driver:
        login(driver, site.url, VIEWER, PASSWORD)
        driver.get(page)
        wait_until(driver, lambda d: _loaded(d) and d.execute_script(
            "return !!document.getElementById('why-not-answer')"), what="board and order")
        dom = driver.page_source
        assert console_errors(driver) == []

    rows = re.findall(r'<tr data-warehouse="(WH-\d+)" data-state="(\w+)"', dom)
    assert len(rows) == 8
    states = dict(rows)
    assert states[site.paused] == "paused" and states[site.tripped] == "tripped"
    paused_row = _text(_element(dom, "tr", f'data-warehouse="{site.paused}"'))
    assert "paused" in paused_row and PAUSE_REASON in paused_row
    tripped_row = _text(_element(dom, "tr", f'data-warehouse="{site.tripped}"'))
    assert "breaker cold chain: above the limit for the whole delay" in tripped_row
    assert "cold_chain tripped" in tripped_row
    incidents = _text(_element(dom, "table", 'id="incidents"'))
    assert site.paused in incidents and PAUSE_REASON in incidents
    assert re.search(r'data-destination="WH-\d+"', dom)  # where the moved orders went
    counts = _text(_element(dom, "table", 'id="order-counts"'))
    assert "in transit 1" in counts and "total 7" in counts
    waiting = _text(_element(dom, "tr", f'data-order="{site.waiting_order}"'))
    assert "unallocated" in waiting and "SKU-0203" in waiting
    assert f'href="?order={site.waiting_order}"' in dom
    down = _text(_element(dom, "p", 'id="down"'))
    assert down.startswith("down: ") and site.paused in down and site.tripped in down

    # the order looked up from ?order=: the milestones and every event, with local times
    done = re.findall(r'<li class="done" data-step="(\w+)"', dom)
    assert done == ["received", "allocated", "rerouted"]
    allocated = _text(_element(dom, "li", 'class="done" data-step="allocated"'))
    assert re.fullmatch(r"allocated \d{4}-\d\d-\d\d \d\d:\d\d:\d\d", allocated)
    assert "not yet" in _text(_element(dom, "li", 'class="" data-step="shipped"'))
    events = re.findall(r'<tr data-event="(\w+)"', dom)
    assert events == ["received", "allocated", "rerouted"]
    # the button that reaches the on-duty staff near the delivery address
    assert f'id="contacts-button" data-order="{site.rerouted_order}"' in dom
    rerouted = _text(_element(dom, "tr", 'data-event="rerouted"'))
    assert f"from {site.paused} to " in rerouted and PAUSE_REASON in rerouted
    assert re.findall(r'<div class="decision" data-outcome="(\w+)"', dom) == [
        "allocated", "allocated"]
    for d in decision["decisions"]:
        for line in d["explanation"]:
            assert line in unescape(dom)
    answer = _text(_element(dom, "p", 'id="why-not-answer"'))
    assert answer == f"Why not {site.paused}? {decision['why_not']['answer']}"
    # asked across the whole history: allocated there first, then rerouted away
    history = decision["why_not"]["history"]
    assert [h["kind"] for h in history] == ["allocate", "reroute"]
    assert re.findall(r'<li data-kind="(\w+)"', _element(dom, "ol", 'id="why-not-history"')) == [
        "allocate", "reroute"]
    assert all(c["name"] for d in decision["decisions"] for c in d["candidates"])


@pytest.mark.broker
def test_browser_defaults_to_chinese_and_the_switch_changes_every_label(site: Site) -> None:
    from selenium.webdriver.common.by import By

    with webdriver(site.workdir) as driver:
        login(driver, site.url, VIEWER, PASSWORD)
        driver.execute_cdp_cmd("Emulation.setTimezoneOverride", {"timezoneId": "UTC"})
        driver.get(f"{site.url}/dashboard")
        wait_until(driver, _loaded, what="the board")
        labels = driver.execute_script(
            "return [...document.querySelectorAll('[data-i18n]')].map(n => n.textContent)")
        state = _text(_element(driver.page_source, "tr", f'data-warehouse="{site.tripped}"'))
        assert "已熔断" in state and "超过阈值并持续" in state
        assert "threshold_exceeded" not in state
        # times are in the configured zone (Asia/Shanghai), not the browser's (UTC here)
        opened = driver.execute_script(
            "return document.querySelector('#incidents tbody td').textContent")
        with httpx.Client(base_url=site.url, headers=ADMIN, timeout=15) as http:
            first = http.get("/dashboard/state").json()["incidents"][0]["opened_at"]
        local = datetime.fromisoformat(first).astimezone(ZoneInfo("Asia/Shanghai"))
        assert opened == local.strftime("%Y-%m-%d %H:%M:%S")
        driver.find_element(By.ID, "lang").click()
        english = driver.execute_script(
            "return [...document.querySelectorAll('[data-i18n]')].map(n => n.textContent)")
        assert len(english) == len(labels) > 40
        # every label changed language: none is the same text in both
        assert [a for a, b in zip(labels, english, strict=True) if a == b] == []
        assert not re.search(r"[\u4e00-\u9fff]", " ".join(english))
        state = _text(_element(driver.page_source, "tr", f'data-warehouse="{site.tripped}"'))
        assert "tripped" in state and "已熔断" not in state
        assert driver.execute_script("return document.documentElement.lang") == "en"
        assert console_errors(driver) == []


@pytest.mark.broker
def test_browser_shows_a_shipped_order_and_an_unknown_one_clearly(site: Site) -> None:
    with webdriver(site.workdir) as driver:
        login(driver, site.url, VIEWER, PASSWORD)
        driver.get(f"{site.url}/dashboard?order={site.shipped_order}&why_not=WH-NOPE&lang=en")
        wait_until(driver, lambda d: d.execute_script(
            "return !!document.getElementById('why-not-answer')"), what="the order")
        dom = driver.page_source
        assert re.findall(r'<li class="done" data-step="(\w+)"', dom) == [
            "received", "allocated", "shipped", "in_transit"]
        assert 'data-step="rerouted"' not in dom  # never rerouted: no such step
        answer = _text(_element(dom, "p", 'id="why-not-answer"'))
        assert answer.startswith("Why not WH-NOPE? HTTP 404") and "WH-NOPE" in answer[16:]
        assert re.findall(r'<div class="decision" data-outcome="(\w+)"', dom) == ["allocated"]
        driver.get(f"{site.url}/dashboard?order=NO-SUCH-ORDER&lang=en")
        wait_until(driver, lambda d: d.execute_script(
            "return !!document.querySelector('#order p.error')"), what="the error")
        error = _text(_element(driver.page_source, "p", 'class="error"'))
        assert error.startswith("Order NO-SUCH-ORDER: HTTP 404")


@pytest.mark.broker
def test_at_phone_width_the_tripped_warehouse_shows_without_sideways_scrolling(
        site: Site) -> None:
    with webdriver(site.workdir, width=390, height=844) as driver:
        login(driver, site.url, VIEWER, PASSWORD)
        # a desktop window has a minimum width: emulate the phone's screen instead
        driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {
            "width": 390, "height": 844, "deviceScaleFactor": 2, "mobile": True})
        driver.get(f"{site.url}/dashboard")
        wait_until(driver, _loaded, what="the board")
        width = driver.execute_script("return document.documentElement.clientWidth")
        assert width <= 390
        assert driver.execute_script(
            "return document.documentElement.scrollWidth") <= width  # nothing sideways
        card = driver.execute_script(
            "const r = document.querySelector('tr[data-warehouse=\"" + site.tripped +
            "\"]').getBoundingClientRect(); return [r.left, r.right]")
        assert card[0] >= 0 and card[1] <= width
        # the state comes first on the card, and the header names what is down
        first = driver.execute_script(
            "const tr = document.querySelector('tr[data-warehouse=\"" + site.tripped + "\"]');"
            "return [...tr.children].filter(c => c.getClientRects().length)"
            ".sort((a, b) => a.getBoundingClientRect().top - b.getBoundingClientRect().top)"
            "[0].className")
        assert "state-cell" in first
        down = driver.execute_script("return document.getElementById('down').textContent")
        assert site.tripped in down and "已熔断" in down
        screenshot(driver, "dashboard-phone.png")


@pytest.mark.broker
def test_a_trip_through_the_broker_appears_live_without_polling(
        site: Site, mqtt_broker: Broker) -> None:
    with httpx.Client(base_url=site.url, headers=ADMIN, timeout=15) as http:
        state = http.get("/dashboard/state").json()
    topics = site.topics
    calm = next(w["id"] for w in state["warehouses"] if w["state"] == "available")
    register_gateways(site.workdir / "coordinator.sqlite", {f"gw-{calm.lower()}": calm})
    with webdriver(site.workdir) as driver:
        login(driver, site.url, VIEWER, PASSWORD)
        driver.get(f"{site.url}/dashboard")
        wait_until(driver, _loaded, what="the board")
        assert driver.execute_script("return window.breakwaterSource.readyState") == 1
        event = breaker_event(seq=1, warehouse=calm, agent=f"gw-{calm.lower()}",
                              at=datetime.now(UTC))
        started = time.monotonic()
        _publish_retained(mqtt_broker, topics.breaker(calm, "cold_chain"), encode(event))
        wait_until(driver, lambda d: d.execute_script(
            f"return document.querySelector('tr[data-warehouse=\"{calm}\"]')"
            ".dataset.state") == "tripped", within=2.0, what="the trip on the page")
        assert time.monotonic() - started < 2.0
        assert _state_fetches(driver) <= 1  # pushed, not polled
        assert driver.execute_script("return window.breakwaterSource.readyState") == 1
        assert console_errors(driver) == []
        screenshot(driver, "dashboard-live-trip.png")
        cleared = breaker_event(seq=2, open=False, warehouse=calm, agent=f"gw-{calm.lower()}",
                                at=datetime.now(UTC))
        _publish_retained(mqtt_broker, topics.breaker(calm, "cold_chain"), encode(cleared))
        wait_until(driver, lambda d: d.execute_script(
            f"return document.querySelector('tr[data-warehouse=\"{calm}\"]')"
            ".dataset.state") == "available", within=5.0, what="the clear on the page")
    _publish_retained(mqtt_broker, topics.breaker(calm, "cold_chain"), b"")


def test_without_the_ops_side_the_page_works_and_says_metrics_are_unavailable(
        tmp_path: Path) -> None:
    path = tmp_path / "core.sqlite"
    db = open_database(path)
    for name in SAMPLE_FILES:
        import_file(db, SAMPLE_DIR / f"{name}.csv", datetime.now(UTC))
    add_user(db, username=VIEWER, password=PASSWORD, role=Role.VIEWER, scope=Scope(),
             now=datetime.now(UTC))
    db.conn.close()
    app = create_app(Settings(db_path=str(path)), extra_routers=[dashboard.router])
    with serve_in_thread(app) as url:
        state = httpx.get(url + "/dashboard/state", headers=ADMIN, timeout=15).json()
        assert [w["state"] for w in state["warehouses"]] == ["available"] * 8
        assert all(w["last_seen"] is None and w["agents"] == [] for w in state["warehouses"])
        assert (state["incidents"], state["orders_by_status"], state["orders_total"]) == (
            [], {}, 0)
        assert state["notifications"] == {
            "by_status": {"pending": 0, "sent": 0, "failed": 0}, "by_kind": {}}
        with webdriver(tmp_path) as driver:
            login(driver, url, VIEWER, PASSWORD)
            driver.get(url + "/dashboard?lang=en")
            wait_until(driver, lambda d: _loaded(d) and "unavailable" in d.execute_script(
                "return document.getElementById('metrics').textContent"), what="the board")
            dom = driver.page_source
            assert console_errors(driver) == [] or all(
                "metrics/summary" in e for e in console_errors(driver))
    assert re.findall(r'<tr data-warehouse="[^"]+" data-state="(\w+)"', dom) == [
        "available"] * 8
    assert "no incidents" in dom and "no orders yet" in dom
    metrics = _text(_element(dom, "div", 'id="metrics"'))
    assert metrics.startswith("metrics unavailable (HTTP 404")
    assert _text(_element(dom, "p", 'id="down"')) == "all warehouses available"


def test_waiting_panel_lists_the_oldest_and_counts_them_all(sample_db: Database) -> None:
    from coordinator import intake
    from coordinator.catalog import InventoryIn, upsert_inventory
    from coordinator.settings import AllocationConfig
    from protocols.orders import Channel, OrderIn, OrderLine

    gone = "SKU-0204"
    upsert_inventory(sample_db, [InventoryIn(warehouse_id=f"WH-0{i}", sku_id=gone, on_hand=0)
                                 for i in range(1, 9)], NOW)
    for i in range(3):
        intake.submit_orders(sample_db, [OrderIn(
            channel=Channel.DOUYIN, channel_order_id=f"W-{i}", store_id="HZ-S001",
            lines=[OrderLine(sku_id=gone, qty=1)], lat=30.27, lon=120.15)],
            now=NOW + timedelta(minutes=i), config=AllocationConfig())

    shown = dashboard_state.state(sample_db, waiting_limit=2)

    assert shown["waiting_total"] == 3
    assert [o["status"] for o in shown["waiting_orders"]] == ["unallocated"] * 2
    assert shown["waiting_orders"][0]["received_at"] < shown["waiting_orders"][1]["received_at"]


@pytest.mark.broker
def test_staff_find_an_order_by_the_channels_order_number(site: Site) -> None:
    from selenium.webdriver.common.by import By

    with httpx.Client(base_url=site.url, headers=ADMIN, timeout=15) as http:
        found = http.get("/lookup/orders", params={"q": "DASH-1"}).json()
        [order] = found["orders"]
        assert (order["channel"], order["channel_order_id"]) == ("wechat_mini", "DASH-1")
        assert order["store_id"] == "HZ-S002" and order["store_name"]
        assert order["warehouse_name"]  # names beside ids
        by_id = http.get("/lookup/orders", params={"q": order["id"]}).json()
        assert [o["id"] for o in by_id["orders"]] == [order["id"]]
        waiting = http.get("/lookup/orders", params={"status": "unallocated"}).json()
        assert [o["id"] for o in waiting["orders"]] == [site.waiting_order]
        assert http.get("/lookup/orders", params={"q": "nope"}).json()["count"] == 0
        bad = http.get("/lookup/orders", params={"limit": 0})
        assert bad.status_code == 422 and bad.json()["field"] == "query.limit"
    with webdriver(site.workdir) as driver:
        login(driver, site.url, VIEWER, PASSWORD)
        driver.get(f"{site.url}/dashboard?lang=en")
        wait_until(driver, _loaded, what="the board")
        box = driver.find_element(By.ID, "order-id")
        box.send_keys("DASH-1")
        box.submit()
        wait_until(driver, lambda d: order["id"] in d.find_element(By.ID, "order").text,
                   what="the order found by its channel number")
        assert "DASH-1" in driver.find_element(By.ID, "order").text
        assert console_errors(driver) == []


def test_every_translation_exists_in_both_languages() -> None:
    text = (Path(dashboard.__file__).parent / "static" / "common.js").read_text("utf-8")
    zh = text.partition("  zh: {")[2].partition("\n  },")[0]
    en = text.partition("  en: {")[2].partition("\n  },")[0]
    keys = [set(re.findall(r"(?:^\s*|[,{]\s*)(\w+): \"", block, re.M)) for block in (zh, en)]
    assert len(keys[0]) > 150 and keys[0] == keys[1], keys[0] ^ keys[1]
