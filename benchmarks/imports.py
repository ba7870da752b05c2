"""Importing a 30-day past-orders export: 14,000 orders a day, 420,000 rows.

The export is generated first (not timed) as CSV and as xlsx. Timed: the whole import of
each (read, validate every row, write chunk by chunk into the history table of a fresh
SQLite file) through :mod:`coordinator.imports`, which reads xlsx with python-calamine.
Baseline, measured in the same run: reading the same xlsx's rows with openpyxl in its
read-only mode (reading only: no validation or writing), against calamine reading only.
Also timed: building the health report over the imported month. Target: the CSV
import under 30 s.
"""

from __future__ import annotations

import csv
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, date, datetime
from pathlib import Path

from benchmarks.runner import Result
from coordinator.catalog import import_file
from coordinator.db import open_database
from coordinator.imports import ImportFormat, raw_records
from coordinator.intel import report as health_report
from coordinator.intel.config import ReportConfig
from coordinator.intel.history import import_history
from coordinator.region import SAMPLE_DIR
from simulators import history as export

ROWS = 420_000
QUICK_ROWS = 1_000
DAYS = 30


def _stores() -> list[tuple[float, float]]:
    with (SAMPLE_DIR / "stores.csv").open(encoding="utf-8") as f:
        return [(float(r["lat"]), float(r["lon"])) for r in csv.DictReader(f)]


def _import(path: Path, fmt: ImportFormat, db_path: Path) -> tuple[float, int]:
    db = open_database(db_path)
    started = time.perf_counter()
    _, report = import_history(db, path, fmt=fmt, chunk_size=5000)
    elapsed = time.perf_counter() - started
    db.conn.close()
    return elapsed, report.rows_written


def _report(db_path: Path) -> tuple[float, int]:
    """The health report over the imported month, against the sample region's stores."""
    db = open_database(db_path)
    import_file(db, SAMPLE_DIR / "stores.csv", datetime.now(UTC))
    started = time.perf_counter()
    built = health_report.build(db, ReportConfig())
    elapsed = time.perf_counter() - started
    db.conn.close()
    return elapsed, built.orders


def _openpyxl_read(path: Path) -> float:
    from openpyxl import load_workbook

    started = time.perf_counter()
    book = load_workbook(path, read_only=True, data_only=True)
    rows = sum(1 for _ in book.worksheets[0].iter_rows(values_only=True))
    book.close()
    assert rows > 1
    return time.perf_counter() - started


def _calamine_read(path: Path) -> float:
    started = time.perf_counter()
    rows = sum(1 for _ in raw_records(path, ImportFormat.XLSX))
    assert rows > 1
    return time.perf_counter() - started


def run(quick: bool) -> Result:
    rows = QUICK_ROWS if quick else ROWS
    # 1.25 rows an order in the generated export (every fourth order has two lines)
    per_day = round(rows / 1.25 / DAYS)
    result = Result("import")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        stores = _stores()

        def rows_() -> Iterator[list[object]]:
            return export.rows(start=date(2026, 10, 1), days=DAYS, per_day=per_day,
                               stores=stores)

        csv_path = export.write_csv(root / "orders.csv", rows_())
        xlsx_path = export.write_xlsx(root / "orders.xlsx", rows_())
        csv_s, written = _import(csv_path, ImportFormat.CSV, root / "csv.sqlite")
        report_s, orders = _report(root / "csv.sqlite")
        xlsx_s, written_x = _import(xlsx_path, ImportFormat.XLSX, root / "xlsx.sqlite")
        calamine_s = _calamine_read(xlsx_path)
        openpyxl_s = _openpyxl_read(xlsx_path)
    assert written == written_x
    result.add("rows", float(written), "rows", f"{DAYS} days, {per_day:,} orders a day")
    result.add("csv_s", csv_s, "s", "read + validate + write", "< 30 s" if not quick else "")
    result.add("csv_rows_per_s", written / csv_s, "rows/s")
    result.add("report_s", report_s, "s", f"health report over the {orders:,} imported orders")
    result.add("xlsx_calamine_s", xlsx_s, "s", "read + validate + write (python-calamine)")
    result.add("xlsx_read_calamine_s", calamine_s, "s", "reading the rows only")
    result.add("xlsx_openpyxl_s", openpyxl_s, "s", "baseline: openpyxl read-only, reading only")
    result.add("calamine_to_openpyxl", openpyxl_s / calamine_s, "x",
               "how many times faster calamine reads")
    return result
