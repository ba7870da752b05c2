"""Self-healing through loopback receivers: address correction (AMap's geocoding answers,
the gazetteer) and a stuck parcel handed to the backup carrier (a real webhook
receiver); both count in the self-healing rate, by kind."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from coordinator.app import create_app
from coordinator.catalog import import_file
from coordinator.db import open_database
from coordinator.intel import api as intel_api
from coordinator.intel.addresses import judge
from coordinator.intel.config import ParcelsConfig
from coordinator.intel.geocode import Gazetteer, Place
from coordinator.intel.parcels import find_stuck
from coordinator.intel.service import intel_lifespan
from coordinator.ops.api import router as ops_router
from coordinator.ops.app import ops_lifespan
from coordinator.ops.couriers import Shipment
from coordinator.ops.metrics import self_healing
from coordinator.region import SAMPLE_DIR, SAMPLE_FILES
from coordinator.serving import serve_in_thread
from coordinator.settings import Settings
from protocols import Topics
from protocols.clock import ManualClock
from simulators.brokers import Broker
from simulators.receiver import Received, Receiver
from tests.auth import ADMIN
from tests.coordinator.ops.helpers import ops_config

T0 = datetime(2026, 11, 24, 2, 0, tzinfo=UTC)
FUZZY = "文三路100号华星科技大厦"  # no city, no district
PRECISE = "浙江省杭州市西湖区文三路100号华星科技大厦"
AMAP_PATH = "/v3/geocode/geo"
EVERY_REQUEST = 10**6  # fail_first: a map service that is down


@dataclass
class Amap:
    """AMap's geocoding web service as it documents its answers: ``places`` maps an
    address to its ``geocodes`` entry; others get ``count: 0``; a wrong key is refused."""

    places: dict[str, dict[str, Any]] = field(default_factory=dict)

    def answer(self, request: Received) -> dict[str, Any]:
        if request.query.get("key") != "test-amap-key":
            return {"status": "0", "info": "INVALID_USER_KEY", "infocode": "10001"}
        entry = self.places.get(request.query.get("address", ""))
        return {"status": "1", "info": "OK", "infocode": "10000",
                "count": "1" if entry else "0", "geocodes": [entry] if entry else []}


def amap_entry(formatted: str, district: str, location: str, level: str) -> dict[str, Any]:
    """One ``geocodes`` item as AMap documents it (empty fields come as [])."""
    return {"formatted_address": formatted, "country": "中国", "province": "浙江省",
            "citycode": "0571", "city": "杭州市", "district": district, "township": [],
            "neighborhood": {"name": [], "type": []}, "building": {"name": [], "type": []},
            "adcode": "330106", "street": [], "number": [], "location": location,
            "level": level}


@dataclass
class Site:
    url: str
    db_path: Path
    clock: ManualClock
    amap: Receiver
    carrier: Receiver


@pytest.fixture
def site(broker: Broker, tmp_path: Path) -> Iterator[Site]:
    path = tmp_path / "coordinator.sqlite"
    db = open_database(path)
    for name in SAMPLE_FILES:
        import_file(db, SAMPLE_DIR / f"{name}.csv", T0)
    db.conn.close()
    clock = ManualClock(T0)
    topics = Topics(f"bwtest-intel-{tmp_path.name[-8:]}")
    places = Amap()
    places.places[FUZZY] = amap_entry(PRECISE, "西湖区", "120.118,30.280", "兴趣点")
    places.places[PRECISE] = places.places[FUZZY]
    with Receiver(respond=places.answer) as amap, Receiver() as carrier:
        settings = Settings(db_path=str(path), mqtt_url=broker.url, topic_root=topics.root,
                            sections={"intel": {
                                "geocoder": {"amap_key": "test-amap-key",
                                             "amap_url": amap.url + AMAP_PATH},
                                "parcels": {"backup_carrier": "jd-express",
                                            "backup_webhook_url": carrier.url + "/handover",
                                            "stuck_after_h": 24, "feed_alive_within_h": 2,
                                            "check_every_s": 3600}}})
        app = create_app(settings, clock=clock, extra_routers=[ops_router, intel_api.router],
                         lifespan_hooks=[ops_lifespan(ops_config(tmp_path)), intel_lifespan()])
        with serve_in_thread(app) as url:
            yield Site(url, path, clock, amap, carrier)


def _order(http: httpx.Client, ref: str) -> str:
    r = http.post("/orders", json={"channel": "wechat_mini", "channel_order_id": ref,
                                   "store_id": "HZ-S001", "lat": 30.26, "lon": 120.16,
                                   "lines": [{"sku_id": "SKU-0001", "qty": 1}]})
    assert r.status_code == 201, r.text
    order_id: str = r.json()["order_id"]
    return order_id


def _timeline(http: httpx.Client, order_id: str) -> list[dict[str, Any]]:
    timeline: list[dict[str, Any]] = http.get(f"/orders/{order_id}").json()["timeline"]
    return timeline


@pytest.mark.broker
def test_addresses_are_corrected_through_amap_and_only_failures_reach_a_person(
        site: Site) -> None:
    with httpx.Client(base_url=site.url, headers=ADMIN, timeout=15) as http:
        fuzzy, exact, hopeless = (_order(http, f"ADDR-{k}") for k in range(3))
        r = http.post(f"/orders/{fuzzy}/address", json={"address": FUZZY})
        assert r.status_code == 200, r.text
        assert r.json()["outcome"] == "corrected" and r.json()["source"] == "amap"
        assert http.post(f"/orders/{exact}/address",
                         json={"address": PRECISE}).json()["outcome"] == "as_given"
        failed = http.post(f"/orders/{hopeless}/address", json={"address": "放门口就行"})
        assert failed.json()["outcome"] == "failed"
        events = [e for e in _timeline(http, fuzzy) if e["kind"] == "address_corrected"]
        assert events[0]["detail"]["original"] == FUZZY
        assert events[0]["detail"]["corrected"] == PRECISE
        assert http.get(f"/orders/{fuzzy}/address").json()["deliver_to"] == PRECISE
        assert not [e for e in _timeline(http, exact) if e["kind"].startswith("address")]
        alerts = http.get("/alerts").json()
        assert http.post("/orders/NO-SUCH/address", json={"address": "x"}).status_code == 404
        scraped = http.get("/metrics").text
    assert ('breakwater_self_healing_exceptions_total{kind="address",'
            'outcome="resolved_automatically"} 1.0') in scraped
    assert 'breakwater_intel_events_total{event="address_corrected"} 1.0' in scraped
    assert [a["order_id"] for a in alerts if a["kind"] == "address_unplaced"] == [hopeless]
    assert site.amap.requests and all(
        r.method == "GET" and r.query["key"] == "test-amap-key" for r in site.amap.requests)
    healing = self_healing(open_database(site.db_path, migrate=False))
    assert healing["by_kind"]["address"] == {"exceptions": 2, "resolved_automatically": 1}


@pytest.mark.broker
def test_when_amap_is_down_the_gazetteer_completes_an_address_naming_a_district(
        site: Site) -> None:
    site.amap.fail_first = EVERY_REQUEST
    with httpx.Client(base_url=site.url, headers=ADMIN, timeout=15) as http:
        order = _order(http, "ADDR-OFFLINE")
        r = http.post(f"/orders/{order}/address", json={"address": "滨江江南大道588号"})
    body = r.json()
    assert body["outcome"] == "corrected" and body["source"] == "gazetteer"
    assert body["corrected"] == "浙江省杭州市滨江区江南大道588号"
    assert body["geocoder_failures"] == ["amap: AMap request failed: HTTPStatusError"]
    assert "test-amap-key" not in r.text  # the key never leaks into an answer


def _track(http: httpx.Client, shipment: str, order_id: str, at: datetime,
           status: str = "in_transit") -> None:
    r = http.post("/tracking", json={"v": 1, "shipment_id": shipment, "carrier": "zto",
                                     "warehouse_id": "WH-01", "order_id": order_id,
                                     "status": status, "ts": at.isoformat()})
    assert r.status_code == 202, r.text


@pytest.mark.broker
def test_a_stuck_parcel_is_handed_to_the_backup_carrier_while_its_carrier_is_alive(
        site: Site) -> None:
    with httpx.Client(base_url=site.url, headers=ADMIN, timeout=15) as http:
        stuck, moving = _order(http, "PARCEL-1"), _order(http, "PARCEL-2")
        _track(http, "ZTO-STUCK", stuck, T0, "picked_up")
        _track(http, "ZTO-MOVING", moving, T0, "picked_up")
        site.clock.set(T0 + timedelta(hours=23))
        assert http.post("/parcels/check-stuck").json()["handovers"] == []  # not yet
        site.clock.set(T0 + timedelta(hours=25))
        _track(http, "ZTO-MOVING", moving, T0 + timedelta(hours=24, minutes=50))
        result = http.post("/parcels/check-stuck").json()
        again = http.post("/parcels/check-stuck").json()
        timeline = _timeline(http, stuck)
    assert [h["shipment_id"] for h in result["handovers"]] == ["ZTO-STUCK"]
    assert again["handovers"] == []  # handed over once
    sent = site.carrier.accepted("/handover")
    assert len(sent) == 1 and sent[0].body["from_carrier"] == "zto"
    assert sent[0].body["to_carrier"] == "jd-express" and sent[0].body["order_id"] == stuck
    assert [e["detail"]["to_carrier"] for e in timeline
            if e["kind"] == "parcel_handed_over"] == ["jd-express"]
    healing = self_healing(open_database(site.db_path, migrate=False))
    assert healing["by_kind"]["parcel"] == {"exceptions": 1, "resolved_automatically": 1}
    assert healing["rate"] == 1.0


@pytest.mark.broker
def test_a_failed_hand_over_reaches_a_person_and_counts_against_the_rate(site: Site) -> None:
    site.carrier.fail_first = 10
    with httpx.Client(base_url=site.url, headers=ADMIN, timeout=15) as http:
        stuck, other = _order(http, "PARCEL-3"), _order(http, "PARCEL-4")
        _track(http, "ZTO-STUCK-2", stuck, T0, "picked_up")
        site.clock.set(T0 + timedelta(hours=30))
        _track(http, "ZTO-OTHER", other, T0 + timedelta(hours=29), "picked_up")
        result = http.post("/parcels/check-stuck").json()
        alerts = http.get("/alerts").json()
    assert result["handovers"][0]["outcome"] == "failed"
    assert "HTTP 500" in result["handovers"][0]["error"]
    assert any(a["kind"] == "parcel_stuck" and a["order_id"] == stuck for a in alerts)
    healing = self_healing(open_database(site.db_path, migrate=False))
    assert healing["by_kind"]["parcel"] == {"exceptions": 1, "resolved_automatically": 0}


CONFIG = ParcelsConfig(stuck_after_h=24, feed_alive_within_h=2, backup_carrier="jd")


def _parcel(ident: str, carrier: str, last_h: float) -> Shipment:
    return Shipment(ident, carrier, "WH-01", None, "in_transit", True, T0,
                    T0 + timedelta(hours=last_h))


def test_a_quiet_parcel_of_a_silent_carrier_is_not_stuck_but_courier_silence() -> None:
    now = T0 + timedelta(hours=30)
    parcels = [_parcel("A", "zto", 0), _parcel("B", "yto", 0), _parcel("C", "yto", 1)]
    assert find_stuck(parcels, now, CONFIG, set()) == []  # no carrier alive
    parcels.append(_parcel("D", "zto", 29.5))
    assert [p.shipment_id for p in find_stuck(parcels, now, CONFIG, set())] == ["A"]
    assert find_stuck(parcels, now, CONFIG, {"A"}) == []


def _place(level: str, district: str = "西湖区") -> Place:
    return Place("浙江省杭州市西湖区某路1号", 30.2, 120.1, level, district, "test")


@pytest.mark.parametrize(("address", "place", "outcome"), [
    ("西湖区某路1号", _place("门牌号"), "as_given"),
    ("某路1号", _place("门牌号"), "corrected"),
    ("某路1号", _place("区县"), "corrected"),
    ("西湖区某路1号", _place("区县"), "failed"),
    ("某路1号", None, "failed"),
])
def test_judging_an_address(address: str, place: Place | None, outcome: str) -> None:
    assert judge(address, place) == outcome


def test_the_gazetteer_knows_only_configured_regions() -> None:
    with pytest.raises(ValueError, match="no gazetteer"):
        Gazetteer("火星市")
    assert Gazetteer("杭州市").geocode("火星路1号", "杭州市") is None
