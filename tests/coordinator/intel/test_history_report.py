"""Order-history import (CLI and HTTP, csv and xlsx) and the health report it feeds,
down to the page in a real browser."""

from __future__ import annotations

import csv
import re
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlite_utils import Database

from coordinator.__main__ import main
from coordinator.app import create_app
from coordinator.catalog import import_file
from coordinator.db import open_database
from coordinator.intel import api as intel_api
from coordinator.intel import history, report
from coordinator.intel.config import ReportConfig
from coordinator.region import SAMPLE_DIR, SAMPLE_FILES
from coordinator.serving import serve_in_thread
from coordinator.settings import Settings
from protocols.clock import ManualClock
from simulators import history as export
from tests.auth import ADMIN, add_login
from tests.browser import Browser

START = date(2026, 10, 1)
DAYS, PER_DAY, BAD = 30, 20, 6  # 600 orders: every rule of the generator divides it
NOW = datetime(2026, 11, 24, 2, 17, tzinfo=UTC)


def _stores() -> list[tuple[float, float]]:
    with (SAMPLE_DIR / "stores.csv").open(encoding="utf-8") as f:
        return [(float(r["lat"]), float(r["lon"])) for r in csv.DictReader(f)]


def _rows() -> Iterator[list[object]]:
    return export.rows(start=START, days=DAYS, per_day=PER_DAY, stores=_stores(),
                       bad_rows=BAD)


def _expected_late_and_on_time() -> tuple[float, float]:
    """Late against the 24 h promise: signed after it, or unsigned once it passed (the
    report's end is just after the last order); on time: signed by it, of those signed."""
    orders: dict[str, tuple[datetime, str]] = {}
    for row in export.rows(start=START, days=DAYS, per_day=PER_DAY, stores=_stores()):
        orders[str(row[0])] = (datetime.fromisoformat(str(row[1])), str(row[11]))
    end = max(at for at, _ in orders.values())
    late = signed_in_time = signed = 0
    for ordered, signed_at in orders.values():
        promise = ordered + timedelta(hours=24)
        if signed_at:
            signed += 1
            in_time = datetime.fromisoformat(signed_at) <= promise
            signed_in_time += in_time
            late += not in_time
        elif promise < end:
            late += 1
    return late / len(orders), signed_in_time / signed


def _check_figures(built: report.HealthReport) -> None:
    assert built.orders == DAYS * PER_DAY
    assert built.channel_shares == pytest.approx({"meituan": 0.4, "wechat_mini": 0.4,
                                                  "douyin": 0.2})
    assert built.radar["exception"] == pytest.approx(0.05)
    late, on_time = _expected_late_and_on_time()
    assert built.radar["timeout"] == pytest.approx(late)
    assert built.radar["on_time"] == pytest.approx(on_time)
    assert 0.1 < late < 0.13 and 0.88 < on_time < 0.91
    assert built.near_store["share"] == pytest.approx(0.72)
    delays = {ch: d["p50"] for ch, d in built.entry_delay_min.items()}
    assert delays == {"meituan": 17.0, "wechat_mini": 1.0, "douyin": 5.0}
    assert {c.store for c in built.cycles} == {f"CYC-{k:02d}" for k in range(1, 13)}
    assert {(c.period_days, c.spread_days) for c in built.cycles} == {(3.0, 0.0)}
    assert built.heat_map is not None
    assert sum(map(sum, built.heat_map.counts)) == DAYS * PER_DAY


@pytest.fixture
def region_db(tmp_path: Path) -> Path:
    path = tmp_path / "coordinator.sqlite"
    db = open_database(path)
    for name in SAMPLE_FILES:
        import_file(db, SAMPLE_DIR / f"{name}.csv", NOW)
    db.conn.close()
    return path


def _live_counts(db: Database) -> tuple[int, int]:
    return (db.execute("SELECT count(*) FROM orders").fetchone()[0],
            db.execute("SELECT coalesce(sum(reserved), 0) FROM inventory").fetchone()[0])


def test_cli_imports_a_csv_export_keeps_good_rows_and_reports_the_bad_ones(
        region_db: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = export.write_csv(tmp_path / "orders.csv", _rows())
    before = _live_counts(open_database(region_db))
    code = main(["orders", "import", str(path), "--db", str(region_db)])
    out, err = capsys.readouterr()
    assert code == 1  # some rows were rejected
    assert f"{BAD} rejected" in out
    assert "column 数量" in err and "column 下单时间" in err and "column 经纬度" in err
    db = open_database(region_db)
    assert _live_counts(db) == before  # history never reserves stock nor creates orders
    _check_figures(report.build(db, ReportConfig()))
    html_path = tmp_path / "health.html"
    assert main(["report", "health", "--db", str(region_db), "--out", str(html_path)]) == 0
    html = html_path.read_text(encoding="utf-8")
    assert "<svg" in html and "http://" not in html.replace("http://www.w3.org", "")


def test_reimporting_the_same_export_replaces_rows_instead_of_doubling(
        region_db: Path, tmp_path: Path) -> None:
    path = export.write_csv(tmp_path / "orders.csv", _rows())
    db = open_database(region_db)
    for _ in range(2):
        history.import_history(db, path, fmt=history.ImportFormat.CSV)
    assert report.build(db, ReportConfig()).orders == DAYS * PER_DAY


def test_mapping_file_renames_other_headers(region_db: Path, tmp_path: Path) -> None:
    path = tmp_path / "erp.csv"
    path.write_text("单号,时间,来源,货号,件数\nE1,2026-11-01 10:00:00,美团,SKU-0001,2\n",
                    encoding="utf-8")
    mapping = tmp_path / "map.json"
    mapping.write_text('{"单号": "order_no", "时间": "ordered_at", "来源": "channel", '
                       '"货号": "sku", "件数": "qty"}', encoding="utf-8")
    assert main(["orders", "import", str(path), "--mapping", str(mapping),
                 "--db", str(region_db)]) == 0
    db = open_database(region_db)
    assert db.execute("SELECT order_no, channel, qty FROM history_orders").fetchall() == [
        ("E1", "meituan", 2)]


def test_mapping_to_an_unknown_field_is_refused_naming_the_header(
        region_db: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    mapping = tmp_path / "map.json"
    mapping.write_text('{"单号": "order_number"}', encoding="utf-8")
    assert main(["orders", "import", "x.csv", "--mapping", str(mapping),
                 "--db", str(region_db)]) == 2
    assert "mapping.单号" in capsys.readouterr().err


@pytest.fixture
def served(region_db: Path) -> Iterator[tuple[str, Path]]:
    app = create_app(Settings(db_path=str(region_db)), clock=ManualClock(NOW),
                     extra_routers=[intel_api.router])
    with serve_in_thread(app) as url:
        yield url, region_db


XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"


def test_xlsx_posted_to_the_api_gives_the_figures_and_the_page_renders_in_a_browser(
        served: tuple[str, Path], tmp_path: Path) -> None:
    url, path = served
    book = export.write_xlsx(tmp_path / "orders.xlsx", _rows())
    with httpx.Client(base_url=url, headers=ADMIN, timeout=30) as http:
        r = http.post("/import/orders", content=book.read_bytes(),
                      headers={"content-type": XLSX})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["rows_rejected"] == BAD
        assert {e["column"] for e in body["errors"]} == {"数量", "下单时间", "经纬度"}
        figures = http.get("/report/health").json()
    assert figures["radar"]["exception"] == pytest.approx(0.05)
    _check_figures(report.build(open_database(path), ReportConfig()))

    password = add_login(path, "report-reader")
    with Browser(tmp_path) as browser:  # the page is behind a login like every other
        browser.login(url, "report-reader", password)
        browser.goto(f"{url}/dashboard/health")
        dom = browser.settled_dom()
    axes = dict(re.findall(r'data-axis="(\w+)" data-value="([^"]+)"', dom))
    assert set(axes) == {"timeout", "exception", "channel_mix", "on_time", "transparency",
                         "self_healing"}
    assert axes["exception"] == "5.0%"
    assert 'id="radar-shape"' in dom
    cells = [int(n) for n in re.findall(r'class="cell" data-count="(\d+)"', dom)]
    assert sum(cells) == DAYS * PER_DAY
    assert re.search(r'id="near-share">72.0%<', dom)


@pytest.mark.parametrize(("ctype", "body", "status", "field"), [
    ("image/png", b"\x89PNG....", 415, "content-type"),
    (XLSX, "订单号,数量\nA,1\n".encode(), 422, "file"),
    ("text/csv", "订单号,渠道,SKU,数量\nA1,美团,S,1\n".encode(), 422, "column 下单时间"),
])
def test_bad_files_are_refused_naming_what_is_wrong_and_nothing_is_written(
        served: tuple[str, Path], ctype: str, body: bytes, status: int, field: str) -> None:
    url, path = served
    with httpx.Client(base_url=url, headers=ADMIN, timeout=30) as http:
        r = http.post("/import/orders", content=body, headers={"content-type": ctype})
    assert r.status_code == status, r.text
    assert r.json()["field"] == field
    assert open_database(path).execute("SELECT count(*) FROM history_orders").fetchone()[0] == 0


def test_a_browser_upload_is_read_by_its_file_name(served: tuple[str, Path],
                                                   tmp_path: Path) -> None:
    url, _ = served
    book = export.write_xlsx(tmp_path / "十月订单.xlsx", _rows())
    with httpx.Client(base_url=url, headers=ADMIN, timeout=30) as http:
        r = http.post("/import/orders", files={"file": (book.name, book.read_bytes())})
        pdf = http.post("/import/orders", files={"file": ("orders.pdf", b"%PDF-1.4")})
        none = http.post("/import/orders", files={"other": ("x.csv", b"a")})
    assert r.status_code == 200, r.text
    assert r.json()["rows_written"] > 0 and r.json()["rows_rejected"] == BAD
    assert pdf.status_code == 422 and pdf.json()["field"] == "file"
    assert none.status_code == 422 and none.json()["field"] == "body.file"


def test_import_route_for_catalogue_kinds_still_works_beside_orders(
        served: tuple[str, Path]) -> None:
    url, _ = served
    with httpx.Client(base_url=url, headers=ADMIN, timeout=30) as http:
        r = http.post("/import/skus", content="id,name\nSKU-NEW,新品\n",
                      headers={"content-type": "text/csv"})
    assert r.status_code == 200, r.text


# -- junk ---------------------------------------------------------------------------------
JUNK_TYPES = ["text/csv", "application/json", "application/x-ndjson", XLSX, "text/plain"]


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=st.binary(max_size=400) | st.text(max_size=200).map(str.encode),
       ctype=st.sampled_from(JUNK_TYPES))
def test_junk_bodies_get_a_named_refusal_or_a_row_report_never_a_crash(
        served: tuple[str, Path], body: bytes, ctype: str) -> None:
    url, _ = served
    with httpx.Client(base_url=url, headers=ADMIN, timeout=30) as http:
        r = http.post("/import/orders", content=body, headers={"content-type": ctype})
        assert r.status_code in (200, 422), r.text
        answer = r.json()
        if r.status_code == 422:
            assert answer["field"]
        else:
            assert answer["rows_written"] + answer["rows_rejected"] == answer["rows_read"]
        assert http.get("/healthz").status_code == 200


@settings(max_examples=60, deadline=None)
@given(st.dictionaries(st.sampled_from(list(history.CHINESE_HEADERS)),
                       st.none() | st.text(max_size=30) | st.integers() | st.floats(),
                       max_size=12))
def test_junk_rows_are_a_model_answer_or_a_validation_error(row: dict[str, object]) -> None:
    from pydantic import ValidationError

    mapped = {history.CHINESE_HEADERS[k]: v for k, v in row.items()}
    try:
        parsed = history.HistoryRow.model_validate(mapped)
    except ValidationError as exc:
        assert exc.errors()[0]["loc"] or exc.errors()[0]["msg"]
    else:
        assert parsed.qty >= 1 and parsed.order_no


def test_a_body_over_the_import_limit_is_refused_naming_body(region_db: Path) -> None:
    settings = Settings(db_path=str(region_db),
                        sections={"intel": {"import_max_bytes": 1024}})
    app = create_app(settings, clock=ManualClock(NOW), extra_routers=[intel_api.router])
    with serve_in_thread(app) as url, httpx.Client(base_url=url, headers=ADMIN,
                                                   timeout=30) as http:
        r = http.post("/import/orders", content=b"x" * 5000,
                      headers={"content-type": "text/csv"})
        bad_mapping = http.post("/import/orders", params={"mapping": "{oops"},
                                content=b"a\n", headers={"content-type": "text/csv"})
    assert r.status_code == 413 and r.json()["field"] == "body"
    assert bad_mapping.status_code == 422 and bad_mapping.json()["field"] == "mapping"
