"""Importing operator exports (CSV, JSON, JSON lines, xlsx) and the command line."""

from __future__ import annotations

import io
import json
import tracemalloc
from pathlib import Path

import pytest
from openpyxl import Workbook

from coordinator.__main__ import main
from coordinator.catalog import (
    IMPORT_CHUNK,
    InventoryIn,
    Kind,
    SkuIn,
    WarehouseIn,
    import_file,
    import_source,
    read_rows,
    upsert,
    upsert_skus,
)
from coordinator.db import Database, open_database
from coordinator.errors import ImportFileError, NotFound
from coordinator.imports import ImportFormat
from coordinator.region import SAMPLE_DIR, generate_region

from .conftest import NOW


def test_sample_region_is_what_the_generator_makes(tmp_path: Path) -> None:
    region = generate_region()
    assert len(region.stores) == 127 and len(region.warehouses) == 8
    assert sum(w.cold_chain for w in region.warehouses) == 3
    assert [w.id for w in region.warehouses if w.cold_chain] == ["WH-02", "WH-05", "WH-07"]
    shipped = (SAMPLE_DIR / "warehouses.csv").read_text(encoding="utf-8").splitlines()
    assert len(shipped) == 9 and shipped[2].startswith("WH-02,")


def test_cli_seed_and_import(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db_path = tmp_path / "cli.sqlite"
    assert main(["seed-sample", "--db", str(db_path)]) == 0
    extra = tmp_path / "more.json"
    extra.write_text(json.dumps([{"id": "SKU-X1", "name": "冻品", "cold_chain": True}]),
                     encoding="utf-8")
    assert main(["import", str(extra), "--kind", "skus", "--db", str(db_path)]) == 0
    db = open_database(db_path)
    assert db.execute("SELECT count(*) FROM stores").fetchone()[0] == 127
    assert db.execute("SELECT cold_chain FROM skus WHERE id = 'SKU-X1'").fetchone()[0] == 1
    bad = tmp_path / "warehouses.csv"
    bad.write_text("id,name,lat,lon\nWH-90,ok,30.1,120.1\nWH-91,bad,91,120\n", encoding="utf-8")
    assert main(["import", str(bad), "--db", str(db_path)]) == 2
    assert "row 3.lat" in capsys.readouterr().err  # the header is row 1, as in Excel
    assert db.execute("SELECT count(*) FROM warehouses WHERE id = 'WH-90'").fetchone()[0] == 0


def test_unknown_kind_and_format_are_explained(tmp_path: Path) -> None:
    db = open_database(tmp_path / "x.sqlite")
    odd = tmp_path / "things.csv"
    odd.write_text("id\n1\n", encoding="utf-8")
    with pytest.raises(ImportFileError, match="--kind"):
        import_file(db, odd, NOW)
    xml = tmp_path / "skus.xml"
    xml.write_text("<skus/>", encoding="utf-8")
    with pytest.raises(ImportFileError, match=r"unsupported file type '\.xml'"):
        import_file(db, xml, NOW, Kind.SKUS)


def _stock_rows(db: Database, count: int) -> list[InventoryIn]:
    upsert_skus(db, [SkuIn(id=f"BULK-{i:04d}", name=f"bulk {i}") for i in range(count // 8 + 1)],
                NOW)
    warehouses = [r[0] for r in db.execute("SELECT id FROM warehouses ORDER BY id").fetchall()]
    return [InventoryIn(warehouse_id=warehouses[i % len(warehouses)],
                        sku_id=f"BULK-{i // len(warehouses):04d}", on_hand=7)
            for i in range(count)]


def test_a_large_import_is_written_in_short_transactions_between_which_intake_runs(
        sample_db: Database) -> None:
    rows = _stock_rows(sample_db, IMPORT_CHUNK * 2 + 1)
    begun: list[str] = []
    sample_db.conn.set_trace_callback(
        lambda sql: begun.append(sql) if sql.startswith("BEGIN IMMEDIATE") else None)
    try:
        assert upsert(sample_db, Kind.INVENTORY, rows, NOW) == len(rows)
    finally:
        sample_db.conn.set_trace_callback(None)
    assert len(begun) == 3  # three chunks, three commits: the write lock is free in between
    assert sample_db.execute("SELECT count(*) FROM inventory WHERE sku_id LIKE 'BULK-%'"
                             ).fetchone()[0] == len(rows)


def test_an_unknown_warehouse_at_the_end_of_a_large_import_writes_nothing(
        sample_db: Database) -> None:
    rows = _stock_rows(sample_db, IMPORT_CHUNK * 2)
    rows.append(InventoryIn(warehouse_id="WH-404", sku_id="BULK-0000", on_hand=1))
    with pytest.raises(NotFound, match="WH-404"):
        upsert(sample_db, Kind.INVENTORY, rows, NOW)
    assert sample_db.execute("SELECT count(*) FROM inventory WHERE sku_id LIKE 'BULK-%'"
                             ).fetchone()[0] == 0


def test_a_streamed_import_holds_one_chunk_of_rows_not_the_file_in_memory(
        store_db: Database) -> None:
    # a tester's 20 MB SKU file took the process from 162 to 656 MB: every row was a
    # model in one list; now a chunk at a time (40,000 rows: ~25 MB as a list)
    rows = "".join(f"SKU-MEM-{i:06d},a product called {i},0\n" for i in range(40_000))
    body = io.BytesIO(("id,name,cold_chain\n" + rows).encode())
    tracemalloc.start()
    try:
        done = import_source(store_db, Kind.SKUS, body, ImportFormat.CSV, NOW)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert done.written == 40_000 and done.skus is None  # too many to name: retry all
    assert peak < 10_000_000, f"peak {peak / 1e6:.1f} MB"
    assert store_db.execute("SELECT count(*) FROM skus WHERE id LIKE 'SKU-MEM-%'"
                            ).fetchone()[0] == 40_000


def test_a_catalogue_export_from_excel_is_read_in_any_of_the_import_formats(
        tmp_path: Path) -> None:
    db = open_database(tmp_path / "formats.sqlite")
    book = Workbook()
    sheet = book.active
    assert sheet is not None
    sheet.append(["仓库导出 2026-11"])  # a title above the header, as exports have
    sheet.append(["id", "name", "lat", "lon", "cold_chain", "daily_capacity"])
    sheet.append(["WH-X1", "杭州冷库", 30.1, 120.1, "是", 500])
    book.save(tmp_path / "warehouses.xlsx")
    (tmp_path / "skus.csv").write_bytes("id,name,cold_chain\nSKU-G1,冻饺子,是\n".encode("gbk"))
    (tmp_path / "stores.jsonl").write_text(
        '{"id": "S-J1", "name": "西湖店", "lat": 30.2, "lon": 120.2}\n\n'
        '{"id": "S-J2", "name": "滨江店", "lat": 30.3, "lon": 120.3}\n', encoding="utf-8")
    assert import_file(db, tmp_path / "warehouses.xlsx", NOW) == (Kind.WAREHOUSES, 1)
    assert import_file(db, tmp_path / "skus.csv", NOW) == (Kind.SKUS, 1)
    assert import_file(db, tmp_path / "stores.jsonl", NOW) == (Kind.STORES, 2)
    assert db.execute("SELECT name, cold_chain, daily_capacity FROM warehouses "
                      "WHERE id = 'WH-X1'").fetchone() == ("杭州冷库", 1, 500)
    assert db.execute("SELECT name, cold_chain FROM skus WHERE id = 'SKU-G1'"
                      ).fetchone() == ("冻饺子", 1)


@pytest.mark.parametrize(("fmt", "body", "field"), [
    (ImportFormat.CSV, b"id,name,lat,lon\nWH-1,a,30,120\n\nWH-2,b,30,999\n", "row 4.lon"),
    (ImportFormat.JSONL, b'{"id":"WH-1","name":"a","lat":30,"lon":120}\n'
                         b'{"id":"WH-2","name":"b","lat":30}\n', "row 2.lon"),
    (ImportFormat.JSON, b'{"rows": [{"id":"WH-1","name":"a","lat":30,"lon":120,"x":1}]}',
     "row 1.x"),
    (ImportFormat.CSV, b"name,lat,lon\na,30,120\n", "column id"),
])
def test_a_bad_catalogue_row_is_named_by_row_and_column_and_rejects_the_file(
        fmt: ImportFormat, body: bytes, field: str) -> None:
    with pytest.raises(ImportFileError) as refused:
        read_rows(body, Kind.WAREHOUSES, fmt)
    assert refused.value.field == field


def test_catalogue_rows_read_are_the_models_the_upserts_take() -> None:
    rows = read_rows(b"id,name,lat,lon,capacity_override\nWH-1,a,30,120,yes\n",
                     Kind.WAREHOUSES, ImportFormat.CSV)
    assert rows == [WarehouseIn(id="WH-1", name="a", lat=30, lon=120, capacity_override=True)]


def test_a_stock_file_naming_one_row_twice_keeps_the_last_on_both_backends(
        store_db: Database) -> None:
    """Exports repeat rows; past 32 rows PostgreSQL upserts in one statement, which may not
    touch a row twice: it must end as row by row does (the last one wins), not fail."""
    skus = [f"SKU-{i:04d}" for i in range(1, 41)]
    rows = [InventoryIn(warehouse_id="WH-01", sku_id=s, on_hand=100, safety_stock=0)
            for s in skus]
    rows.append(InventoryIn(warehouse_id="WH-01", sku_id="SKU-0003", on_hand=777, safety_stock=5))
    assert upsert(store_db, Kind.INVENTORY, rows, NOW) == len(rows)
    held = store_db.execute("SELECT on_hand, safety_stock FROM inventory "
                            "WHERE warehouse_id = 'WH-01' AND sku_id = 'SKU-0003'").fetchone()
    assert tuple(held) == (777, 5)
    assert store_db.execute("SELECT on_hand FROM inventory WHERE warehouse_id = 'WH-01' "
                            "AND sku_id = 'SKU-0040'").fetchone()[0] == 100
