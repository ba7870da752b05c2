"""The streaming import reader: formats, header mapping, row/column errors, chunked writes."""

from __future__ import annotations

import io
import json
import sqlite3
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from openpyxl import Workbook
from pydantic import BaseModel, Field
from sqlite_utils import Database

from coordinator.db import open_database
from coordinator.errors import ImportFileError
from coordinator.imports import (
    ImportFormat,
    ImportReport,
    detect_format,
    import_rows,
    load_all,
    read_chunks,
    spool,
)


class Line(BaseModel):
    order_no: str = Field(min_length=1)
    qty: int = Field(ge=1)
    note: str = ""


MAPPING = {"订单号": "order_no", "数量": "qty"}


def _csv(rows: list[str]) -> bytes:
    return ("\n".join(rows) + "\n").encode()


def test_csv_with_bad_rows_keeps_good_rows_and_names_row_and_export_column() -> None:
    data = _csv(["订单号,数量", "A1,2", "A2,zero", "A3,3", ",4"])
    chunks = list(read_chunks(data, Line, fmt=ImportFormat.CSV, mapping=MAPPING, chunk_size=2))
    good = [m.order_no for c in chunks for m in c.models]
    errors = [(e.row, e.column) for c in chunks for e in c.errors]
    assert good == ["A1", "A3"]
    assert errors == [(3, "数量"), (5, "订单号")]


def test_gbk_csv_from_excel_on_chinese_windows_is_read() -> None:
    data = "订单号,数量,note\nA1,2,猫不吃\n".encode("gbk")
    rows = load_all(data, Line, fmt=ImportFormat.CSV, mapping=MAPPING)
    assert rows[0].note == "猫不吃"


def test_missing_required_column_is_refused_before_any_row() -> None:
    with pytest.raises(ImportFileError) as err:
        list(read_chunks(_csv(["订单号,备注", "A1,x"]), Line, fmt=ImportFormat.CSV,
                         mapping=MAPPING))
    assert err.value.field == "column 数量"


def test_json_lines_and_array_give_the_same_rows() -> None:
    items = [{"order_no": "A1", "qty": 1}, {"order_no": "A2", "qty": 2}]
    lines = "\n".join(json.dumps(i) for i in items).encode()
    array = json.dumps({"rows": items}).encode()
    assert load_all(lines, Line, fmt=ImportFormat.JSONL) == load_all(
        array, Line, fmt=ImportFormat.JSON)


def test_broken_json_line_names_its_line() -> None:
    with pytest.raises(ImportFileError) as err:
        load_all(b'{"order_no": "A1", "qty": 1}\n{oops\n', Line, fmt=ImportFormat.JSONL)
    assert err.value.field == "row 2"


def test_xlsx_numbers_come_back_as_integers_and_rows_as_excel_numbers(tmp_path: Path) -> None:
    book = Workbook()
    sheet = book.active
    assert sheet is not None
    sheet.append(["订单号", "数量"])
    sheet.append(["A1", 3])
    sheet.append([None, None])  # a blank row is skipped, numbering stays Excel's
    sheet.append(["A2", -1])
    path = tmp_path / "x.xlsx"
    book.save(path)
    chunk, = read_chunks(path, Line, fmt=ImportFormat.XLSX, mapping=MAPPING)
    assert chunk.models == [Line(order_no="A1", qty=3)]
    assert [(e.row, e.column) for e in chunk.errors] == [(4, "数量")]


def test_a_csv_named_xlsx_is_refused_as_not_a_workbook(tmp_path: Path) -> None:
    path = tmp_path / "orders.xlsx"
    path.write_text("订单号,数量\nA1,1\n")
    with pytest.raises(ImportFileError) as err:
        load_all(path, Line, fmt=ImportFormat.XLSX)
    assert err.value.field == "file"


@pytest.mark.parametrize("name", ["orders.xls", "orders.pdf", "orders"])
def test_unsupported_file_types_are_named(name: str) -> None:
    with pytest.raises(ImportFileError, match="unsupported file type"):
        detect_format(name=name)


def test_content_types_pick_formats() -> None:
    assert detect_format(content_type="text/csv; charset=utf-8") is ImportFormat.CSV
    assert detect_format(content_type="application/x-ndjson") is ImportFormat.JSONL
    assert detect_format(content_type="application/vnd.openxmlformats-officedocument."
                         "spreadsheetml.sheet") is ImportFormat.XLSX
    with pytest.raises(ImportFileError) as err:
        detect_format(content_type="image/png")
    assert err.value.field == "content-type"


def test_each_chunk_is_its_own_transaction_and_bad_rows_are_counted(tmp_path: Path) -> None:
    db = Database(str(tmp_path / "t.sqlite"))
    db.execute("CREATE TABLE lines (order_no TEXT PRIMARY KEY, qty INTEGER)")
    commits: list[int] = []

    def write(target: Database, rows: list[Line]) -> int:
        assert target.conn.in_transaction  # the reader opened the chunk's transaction
        target.conn.executemany("INSERT INTO lines VALUES (?, ?)",
                                [(r.order_no, r.qty) for r in rows])
        commits.append(len(rows))
        return len(rows)

    data = _csv(["订单号,数量"] + [f"A{i},{i % 7}" for i in range(1, 51)])
    report = import_rows(db, data, Line, write, fmt=ImportFormat.CSV, mapping=MAPPING,
                         chunk_size=10)
    assert report.rows_read == 50
    assert report.rows_rejected == 7  # every 7th quantity is 0
    assert report.rows_written == 43 == sum(commits)
    assert report.chunks == 5 and len(commits) == 5
    assert not db.conn.in_transaction
    assert db.execute("SELECT count(*) FROM lines").fetchone()[0] == 43


async def test_spooled_body_over_the_limit_is_refused_naming_body() -> None:
    async def body() -> object:
        for _ in range(4):
            yield b"x" * 1000

    with pytest.raises(ImportFileError) as err:
        await spool(body(), limit=2500)  # type: ignore[arg-type]
    assert err.value.field == "body"
    spooled = await spool(body(), limit=10_000)  # type: ignore[arg-type]
    with spooled:
        assert len(spooled.read()) == 4000


@settings(max_examples=60, deadline=None)
@given(st.binary(max_size=300), st.sampled_from(list(ImportFormat)))
def test_junk_never_escapes_as_anything_but_an_import_error(junk: bytes,
                                                             fmt: ImportFormat) -> None:
    try:
        for chunk in read_chunks(io.BytesIO(junk), Line, fmt=fmt):
            for error in chunk.errors:
                assert error.row >= 1 and error.column
    except ImportFileError as exc:
        assert exc.field


def test_between_chunks_another_writer_gets_the_lock_at_once(tmp_path: Path) -> None:
    """Order intake is never blocked for more than one chunk: between chunks the import
    holds no lock, so a second connection writes without waiting."""
    path = tmp_path / "t.sqlite"
    db = open_database(path)
    db.execute("CREATE TABLE lines (order_no TEXT PRIMARY KEY, qty INTEGER)")
    db.execute("CREATE TABLE intake (n INTEGER)")
    other = sqlite3.connect(path, timeout=0, isolation_level=None)  # no waiting at all
    intake_writes: list[int] = []

    def write(target: Database, rows: list[Line]) -> int:
        target.conn.executemany("INSERT INTO lines VALUES (?, ?)",
                                [(r.order_no, r.qty) for r in rows])
        return len(rows)

    def between(report: ImportReport) -> None:
        other.execute("BEGIN IMMEDIATE")
        other.execute("INSERT INTO intake VALUES (?)", (report.chunks,))
        other.execute("COMMIT")
        intake_writes.append(report.chunks)

    data = _csv(["订单号,数量"] + [f"A{i},1" for i in range(30)])
    import_rows(db, data, Line, write, fmt=ImportFormat.CSV, mapping=MAPPING, chunk_size=10,
                on_chunk=between)
    other.close()
    assert intake_writes == [1, 2, 3]


def test_title_rows_above_the_header_are_skipped_and_rows_keep_their_numbers() -> None:
    data = _csv(["订单导出,,", "2026-10-01 至 2026-10-31,,", ",,", "订单号,数量,note",
                 "A1,2,x", "A2,0,y"])
    chunk, = read_chunks(data, Line, fmt=ImportFormat.CSV, mapping=MAPPING)
    assert chunk.models == [Line(order_no="A1", qty=2, note="x")]
    assert [(e.row, e.column) for e in chunk.errors] == [(6, "数量")]


def test_a_file_without_a_header_row_names_the_missing_column() -> None:
    with pytest.raises(ImportFileError) as err:
        list(read_chunks(_csv(["订单号,备注"] + [f"A{i},x" for i in range(20)]), Line,
                         fmt=ImportFormat.CSV, mapping=MAPPING))
    assert err.value.field == "column 数量"
    with pytest.raises(ImportFileError) as short:
        list(read_chunks(_csv(["订单号,备注", "A1,x"]), Line, fmt=ImportFormat.CSV,
                         mapping=MAPPING))
    assert short.value.field == "column 数量"


def test_a_nul_in_a_cell_names_its_row_and_column_and_the_rest_is_kept() -> None:
    # PostgreSQL cannot store U+0000 (the catalog import answered 500 there)
    data = _csv(["订单号,数量,note", "A1,2,ok", "A\x002,3,", "A3,4,x\x00y"])
    chunks = list(read_chunks(data, Line, fmt=ImportFormat.CSV, mapping=MAPPING))
    assert [m.order_no for c in chunks for m in c.models] == ["A1"]
    errors = [(e.row, e.column, e.message) for c in chunks for e in c.errors]
    assert [(row, column) for row, column, _ in errors] == [(3, "订单号"), (4, "note")]
    assert all("NUL" in message for _, _, message in errors)
