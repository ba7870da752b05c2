"""Uploads and bodies that once answered 500 or killed the coordinator (found by fuzzing
the HTTP API on a real uvicorn): each is now a 422 naming the field, writes nothing, and
the server keeps serving."""

from __future__ import annotations

import io
import zipfile
from collections.abc import Iterator

import httpx
import pytest

from tests.auth import ADMIN

XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
_NS = "http://schemas.openxmlformats.org/"


def _two_far_cells_xlsx() -> bytes:
    """A 1.5 kB workbook with a header at A1 and one cell at XFD1048576: calamine made a
    dense grid of 17 billion cells from it and aborted the process."""
    def cell(ref: str, text: str) -> str:
        return f'<c r="{ref}" t="inlineStr"><is><t>{text}</t></is></c>'

    sheet = (f'<worksheet xmlns="{_NS}spreadsheetml/2006/main"><sheetData>'
             f'<row r="1">{cell("A1", "warehouse_id")}{cell("B1", "name")}</row>'
             f'<row r="1048576">{cell("XFD1048576", "x")}</row></sheetData></worksheet>')
    rel = f"{_NS}officeDocument/2006/relationships"
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as book:
        book.writestr("[Content_Types].xml", (
            f'<Types xmlns="{_NS}package/2006/content-types">'
            '<Default Extension="rels" ContentType="application/vnd.openxmlformats-package'
            '.relationships+xml"/><Default Extension="xml" ContentType="application/xml"/>'
            '<Override PartName="/xl/workbook.xml" ContentType="application/vnd.'
            'openxmlformats-officedocument.spreadsheetml.sheet.main+xml"/>'
            '<Override PartName="/xl/worksheets/sheet1.xml" ContentType="application/vnd.'
            'openxmlformats-officedocument.spreadsheetml.worksheet+xml"/></Types>'))
        book.writestr("_rels/.rels", (
            f'<Relationships xmlns="{_NS}package/2006/relationships"><Relationship Id="rId1"'
            f' Type="{rel}/officeDocument" Target="xl/workbook.xml"/></Relationships>'))
        book.writestr("xl/workbook.xml", (
            f'<workbook xmlns="{_NS}spreadsheetml/2006/main" xmlns:r="{rel}"><sheets>'
            '<sheet name="S" sheetId="1" r:id="rId1"/></sheets></workbook>'))
        book.writestr("xl/_rels/workbook.xml.rels", (
            f'<Relationships xmlns="{_NS}package/2006/relationships"><Relationship Id="rId1"'
            f' Type="{rel}/worksheet" Target="worksheets/sheet1.xml"/></Relationships>'))
        book.writestr("xl/worksheets/sheet1.xml", sheet)
    return out.getvalue()


@pytest.fixture(scope="module")
def http(live: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=live, headers=ADMIN, timeout=30) as client:
        yield client


def _warehouses(http: httpx.Client) -> int:
    return len(http.get("/warehouses", params={"limit": 1000}).json())


def test_a_workbook_with_two_cells_a_sheet_apart_is_refused_and_the_server_lives(
        http: httpx.Client) -> None:
    before = _warehouses(http)
    body = _two_far_cells_xlsx()
    assert len(body) < 4096
    for path in ("/import/warehouses", "/import/skus"):
        raw = http.post(path, content=body, headers={"Content-Type": XLSX})
        upload = http.post(path, files={"file": ("w.xlsx", body, XLSX)})
        for answer in (raw, upload):
            assert answer.status_code == 422, answer.text
            assert answer.json()["field"] == "file"
            assert "XFD" not in answer.text and "17179869184 cells" in answer.text
    assert http.get("/healthz").status_code == 200
    assert _warehouses(http) == before


def test_a_json_import_with_an_integer_of_5000_digits_is_a_422_naming_the_file(
        http: httpx.Client) -> None:
    before = _warehouses(http)
    huge = b'[{"warehouse_id": "WH-HUGE", "name": "n", "capacity": ' + b"9" * 5000 + b"}]"
    line = b'{"warehouse_id": "WH-HUGE", "capacity": ' + b"9" * 5000 + b"}\n"
    for path in ("/import/warehouses", "/import/inventory"):
        answer = http.post(path, content=huge, headers={"Content-Type": "application/json"})
        assert answer.status_code == 422, answer.text
        assert answer.json()["field"] == "file"
        answer = http.post(path, content=line,
                           headers={"Content-Type": "application/x-ndjson"})
        assert answer.status_code == 422, answer.text
        assert answer.json()["field"] == "row 1"
    assert _warehouses(http) == before


def test_retrying_an_order_id_with_a_lone_surrogate_is_a_422_naming_it(
        http: httpx.Client) -> None:
    for text in ('"\\ud800"', '"a\\udc80b"'):
        answer = http.post("/orders/retry", content=f'{{"order_ids": [{text}]}}',
                           headers={"Content-Type": "application/json"})
        assert answer.status_code == 422, answer.text
        assert answer.json()["field"].startswith("body.order_ids")
    assert http.post("/orders/retry", json={"order_ids": ["o_none"]}).status_code == 200
