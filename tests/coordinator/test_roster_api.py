"""The roster over HTTP (real uvicorn): write, import, list masked, who is on duty."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from coordinator.app import create_app
from coordinator.auth import Role
from coordinator.catalog import import_file
from coordinator.db import open_database
from coordinator.region import SAMPLE_DIR, SAMPLE_FILES
from coordinator.roster_api import router
from coordinator.serving import serve_in_thread
from coordinator.settings import Settings
from protocols.clock import ManualClock
from tests.auth import ADMIN, headers_for

from .conftest import NOW


@pytest.fixture
def roster_db(tmp_path: Path) -> Path:
    return tmp_path / "roster.sqlite"


@pytest.fixture
def http(roster_db: Path) -> Iterator[httpx.Client]:
    path = roster_db
    db = open_database(path)
    for name in SAMPLE_FILES:
        import_file(db, SAMPLE_DIR / f"{name}.csv", NOW)
    db.conn.close()
    app = create_app(Settings(db_path=str(path)), clock=ManualClock(NOW), extra_routers=[router])
    with serve_in_thread(app) as url, httpx.Client(base_url=url, timeout=10,
                                                  headers=ADMIN) as client:
        yield client


def test_roster_written_imported_and_listed_with_masked_phones(
        http: httpx.Client, roster_db: Path) -> None:
    one = {"id": "S1", "warehouse_id": "WH-01", "name": "王磊", "role": "仓管",
           "phone": "13900000101", "on_duty": "08:00-20:00"}
    assert http.post("/staff", json=one).json() == {"kind": "staff", "written": 1}
    csv = ("id,warehouse_id,name,role,phone,on_duty,active\n"
           "S2,WH-01,李娜,夜班,13900000102,20:00-08:00,1\n")
    answer = http.post("/staff/import", content=csv.encode(),
                       headers={"content-type": "text/csv"})
    assert answer.json()["written"] == 1
    listed = http.get("/staff", params={"warehouse_id": "WH-01"}).json()
    assert [s["id"] for s in listed] == ["S1", "S2"]
    assert listed[0]["phone"] == "13900000101"  # an admin calls people
    viewer = headers_for(roster_db, Role.VIEWER)
    masked = http.get("/staff", params={"warehouse_id": "WH-01"}, headers=viewer).json()
    assert masked[0]["phone"] == "139****0101"
    # a viewer reads the roster but may not change it
    refused = http.post("/staff", json={**one, "name": "改名"}, headers=viewer)
    assert refused.status_code == 403
    # 02:17 UTC = 10:17 Shanghai: the day shift
    on_duty = http.get("/staff/on-duty", params={"warehouse_id": "WH-01"}).json()
    assert [s["id"] for s in on_duty] == ["S1"]
    night = http.get("/staff/on-duty", params={"warehouse_id": "WH-01",
                                               "at": "2026-11-24T15:00:00Z"}).json()
    assert [s["id"] for s in night] == ["S2"]


@pytest.mark.parametrize(("body", "field"), [
    ({"id": "S", "warehouse_id": "WH-01", "name": "x", "role": "r", "phone": "999"}, "body.phone"),
    ({"id": "S", "warehouse_id": "WH-01", "name": "x", "role": "r", "phone": "13900000000",
      "on_duty": "8-20"}, "body.on_duty"),
    ({"id": "S", "warehouse_id": "WH-99", "name": "x", "role": "r", "phone": "13900000000"},
     "warehouse_id"),
])
def test_bad_rows_are_422_naming_the_field_and_write_nothing(
        http: httpx.Client, body: dict[str, str], field: str) -> None:
    answer = http.post("/staff", json=body)
    assert answer.status_code == 422, answer.text
    assert answer.json()["field"] == field
    assert http.get("/staff").json() == []


def test_bad_import_and_bad_instant(http: httpx.Client) -> None:
    answer = http.post("/staff/import", content=b"id\n1\n",
                       headers={"content-type": "application/xml"})
    assert answer.status_code == 422 and answer.json()["field"] == "content-type"
    answer = http.post("/staff/import", json=[{"id": "S"}])
    assert answer.status_code == 422 and answer.json()["field"] == "row 1.warehouse_id"
    answer = http.get("/staff/on-duty", params={"warehouse_id": "WH-01",
                                                "at": "2026-11-24T15:00:00"})
    assert answer.status_code == 422 and answer.json()["field"] == "at"
    assert http.get("/staff").json() == []
