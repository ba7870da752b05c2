"""Reading rows from an import file, whatever its format: CSV (UTF-8 or GBK), JSON, JSON
lines and xlsx, lazily, with the header found among the first rows
(:func:`raw_records`), and the format told from a name, a content type or a choice
(:func:`detect_format`). Validation and chunked writing are in :mod:`coordinator.imports`,
the one import path every importer goes through."""

from __future__ import annotations

import codecs
import csv
import io
import json
import re
import zipfile
import zlib
from collections.abc import Callable, Iterator
from datetime import date, datetime, time
from enum import StrEnum
from pathlib import Path
from typing import IO, Any

from coordinator.errors import ImportFileError

# rows searched for the header row (a title, a date range or a note may sit above it)
HEADER_SEARCH = 10
# how much of a CSV is looked at to tell UTF-8 from GB18030 (Excel's "CSV" on a Chinese
# Windows writes the ANSI code page, GBK; "CSV UTF-8" writes UTF-8 with a BOM)
_SNIFF = 64 * 1024

Source = Path | bytes | IO[bytes]


class ImportFormat(StrEnum):
    CSV = "csv"
    JSON = "json"
    JSONL = "jsonl"
    XLSX = "xlsx"


_SUFFIXES = {".csv": ImportFormat.CSV, ".txt": ImportFormat.CSV, ".json": ImportFormat.JSON,
             ".jsonl": ImportFormat.JSONL, ".ndjson": ImportFormat.JSONL,
             ".xlsx": ImportFormat.XLSX}
_CONTENT_TYPES = (("spreadsheetml", ImportFormat.XLSX), ("ndjson", ImportFormat.JSONL),
                  ("jsonl", ImportFormat.JSONL), ("json", ImportFormat.JSON),
                  ("csv", ImportFormat.CSV), ("text/plain", ImportFormat.CSV))
_ZIP_MAGIC = b"PK\x03\x04"


def detect_format(*, name: str | None = None, content_type: str | None = None,
                  explicit: str | None = None) -> ImportFormat:
    """The format from an explicit choice, else the file suffix, else the content type."""
    if explicit:
        try:
            return ImportFormat(explicit.lower().lstrip("."))
        except ValueError as exc:
            raise ImportFileError("format", _unsupported(explicit)) from exc
    if name:
        suffix = Path(name).suffix.lower()
        if suffix in _SUFFIXES:
            return _SUFFIXES[suffix]
        raise ImportFileError("file", _unsupported(suffix or name))
    ctype = (content_type or "").lower()
    for marker, fmt in _CONTENT_TYPES:
        if marker in ctype:
            return fmt
    raise ImportFileError("content-type", _unsupported(ctype or "(none)"))


def _unsupported(what: str) -> str:
    return (f"unsupported file type {what!r}: use .csv, .json, .jsonl or .xlsx "
            "(an old .xls must be saved as .xlsx)")


def _binary(source: Source) -> IO[bytes]:
    if isinstance(source, Path):
        try:
            return source.open("rb")
        except OSError as exc:
            raise ImportFileError("file", str(exc)) from exc
    if isinstance(source, bytes):
        return io.BytesIO(source)
    return source


def _text_encoding(stream: IO[bytes]) -> str:
    """UTF-8 (with or without BOM) unless the head does not decode as UTF-8: then GB18030,
    a superset of GBK that every byte sequence of a Chinese Excel export decodes in."""
    start = stream.tell()
    head = stream.read(_SNIFF)
    stream.seek(start)
    if head.startswith(codecs.BOM_UTF8):
        return "utf-8-sig"
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as exc:
        # a multi-byte character cut by the sniff window is still UTF-8
        if exc.start < len(head) - 4:
            return "gb18030"
    return "utf-8"


def _csv_rows(stream: IO[bytes]) -> Iterator[tuple[int, list[str] | dict[str, Any]]]:
    text = io.TextIOWrapper(stream, encoding=_text_encoding(stream), newline="")
    reader = csv.reader(text)
    try:
        for values in reader:
            yield reader.line_num, values
    except csv.Error as exc:
        raise ImportFileError(f"row {reader.line_num}", f"invalid CSV: {exc}") from exc
    except UnicodeDecodeError as exc:
        raise ImportFileError(f"row {reader.line_num + 1}",
                              "the file mixes text encodings (not UTF-8 or GBK)") from exc
    finally:
        text.detach()  # the caller owns the binary stream and closes it


def _jsonl_rows(stream: IO[bytes]) -> Iterator[tuple[int, list[str] | dict[str, Any]]]:
    for number, line in enumerate(stream, start=1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        # ValueError: JSONDecodeError, and an integer of more than 4300 digits
        except (ValueError, RecursionError) as exc:
            raise ImportFileError(f"row {number}", f"invalid JSON line: {exc}") from exc
        yield number, item


def _json_rows(stream: IO[bytes]) -> Iterator[tuple[int, list[str] | dict[str, Any]]]:
    # a JSON array is parsed whole (the standard decoder cannot stream); exports too big
    # for memory should use JSON lines, which stream line by line
    try:
        data = json.load(stream)
    # ValueError: JSONDecodeError, UnicodeDecodeError, an integer of over 4300 digits
    except ValueError as exc:
        raise ImportFileError("file", f"invalid JSON: {exc}") from exc
    except RecursionError as exc:
        raise ImportFileError("file", "invalid JSON: nested too deeply") from exc
    if isinstance(data, dict):
        data = data.get("rows")
    if not isinstance(data, list):
        raise ImportFileError("file", 'expected a JSON list of objects (or {"rows": [...]})')
    yield from enumerate(data, start=1)


def _cell(value: Any) -> Any:
    # calamine gives floats for every number: 3.0 for a quantity typed as 3
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, (date, time)):
        return value.isoformat()
    return value


# calamine turns a sheet into one dense grid spanning its first to its last cell: two
# cells at A1 and XFD1048576 in a 1.5 kB upload asked for terabytes and aborted the whole
# process (found by fuzzing the imports). A sheet's grid may hold this many cells more
# than its real ones (blank columns and rows between them), no more.
XLSX_SPARSE_FACTOR = 64
XLSX_SPARSE_SLACK = 1_000_000
_XLSX_CHUNK = 1 << 20
_XLSX_REF = re.compile(rb'<(c|row)\b[^>]*?\sr="([A-Za-z]{0,3})([0-9]{1,9})"')
_XLSX_CELL = re.compile(rb"<c[\s/>]")


def _column_number(letters: bytes) -> int:
    number = 0
    for letter in letters.upper():
        number = number * 26 + letter - 64
    return number


def check_xlsx_extent(stream: IO[bytes]) -> None:
    """Refuse a workbook whose sheet grid would be far larger than the cells it holds,
    before calamine allocates that grid (ImportFileError naming ``file``). Reads the
    worksheets' XML once, streamed; leaves the stream at its start."""
    start = stream.tell()
    try:
        with zipfile.ZipFile(stream) as book:
            for info in book.infolist():
                if info.filename.startswith("xl/worksheets/") and \
                        info.filename.endswith(".xml"):
                    with book.open(info) as sheet:
                        _check_sheet(sheet, info.filename)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError, OSError, EOFError,
            NotImplementedError, RuntimeError, zlib.error) as exc:
        raise ImportFileError("file", f"not a readable xlsx workbook: {exc}") from exc
    finally:
        stream.seek(start)


def _check_sheet(sheet: IO[bytes], name: str) -> None:
    rows = [0, 0]  # lowest, highest row number seen
    cols = [0, 0]
    cells = 0
    carry = b""
    while True:
        chunk = sheet.read(_XLSX_CHUNK)
        data = carry + chunk
        cut = data.rfind(b">") + 1 if chunk else len(data)
        part, carry = data[:cut], data[cut:]
        if len(carry) > _XLSX_CHUNK:  # one tag longer than a chunk: nothing real
            raise ImportFileError("file", f"not a readable xlsx workbook: {name} has a "
                                  "tag longer than 1 MiB")
        cells += len(_XLSX_CELL.findall(part))
        for match in _XLSX_REF.finditer(part):
            number = int(match.group(3))
            rows[0] = number if not rows[0] else min(rows[0], number)
            rows[1] = max(rows[1], number)
            if match.group(1) == b"c" and match.group(2):
                col = _column_number(match.group(2))
                cols[0] = col if not cols[0] else min(cols[0], col)
                cols[1] = max(cols[1], col)
        if not chunk:
            break
    grid = (rows[1] - rows[0] + 1) * (cols[1] - cols[0] + 1) if rows[0] and cols[0] else 0
    if grid > cells * XLSX_SPARSE_FACTOR + XLSX_SPARSE_SLACK:
        raise ImportFileError(
            "file", f"the sheet spans rows {rows[0]}-{rows[1]} and columns {cols[0]}-"
                    f"{cols[1]} ({grid} cells) but holds only {cells}: remove the stray "
                    "cells far from the data")


def _xlsx_rows(stream: IO[bytes]) -> Iterator[tuple[int, list[str] | dict[str, Any]]]:
    from python_calamine import CalamineError, CalamineWorkbook

    check_xlsx_extent(stream)
    try:
        book = CalamineWorkbook.from_filelike(stream)
        sheet = book.get_sheet_by_index(0)
        for number, values in enumerate(sheet.iter_rows(), start=1):
            yield number, [_cell(v) for v in values]
    except CalamineError as exc:
        raise ImportFileError("file", f"not a readable xlsx workbook: {exc}") from exc
    except (ValueError, OSError) as exc:  # zip or XML damage surfaces as these too
        raise ImportFileError("file", f"not a readable xlsx workbook: {exc}") from exc


_READERS: dict[ImportFormat, Callable[[IO[bytes]], Iterator[tuple[int, Any]]]] = {
    ImportFormat.CSV: _csv_rows,
    ImportFormat.JSONL: _jsonl_rows,
    ImportFormat.JSON: _json_rows,
    ImportFormat.XLSX: _xlsx_rows,
}


def _header(values: list[Any]) -> list[str]:
    return [str(v).strip().lstrip("\ufeff") if v is not None else "" for v in values]


def raw_records(source: Source, fmt: ImportFormat, *,
                is_header: Callable[[list[str]], bool] | None = None,
                ) -> Iterator[tuple[int, dict[str, Any]]]:
    """``(row number, {header: value})`` for every data row, lazily; blank rows are
    skipped. Tabular formats first yield ``(0, {"__header__": [...]})``: the first of the
    first :data:`HEADER_SEARCH` non-empty rows that ``is_header`` accepts (exports often
    put a title or a date range above the header), else the first non-empty row."""
    stream = _binary(source)
    try:
        if fmt is ImportFormat.XLSX:
            head = stream.read(4)
            stream.seek(0)
            if head != _ZIP_MAGIC:
                raise ImportFileError("file", "not an xlsx workbook (xlsx files are zip archives)")
        rows = _READERS[fmt](stream)
        if fmt in (ImportFormat.JSON, ImportFormat.JSONL):
            for number, item in rows:
                yield number, item
            return
        header: list[str] | None = None
        leading: list[tuple[int, list[Any]]] = []  # non-empty rows before the header
        for number, values in rows:
            assert isinstance(values, list)
            if all(v is None or (isinstance(v, str) and not v.strip()) for v in values):
                continue
            if header is None:
                candidate = _header(values)
                if is_header is None or is_header(candidate):
                    header = candidate
                    yield 0, {"__header__": header}
                    continue
                leading.append((number, values))
                if len(leading) < HEADER_SEARCH:
                    continue
                # no row looks like the header: the first one is, and the caller's check
                # names what it lacks; the others are data
                header = _header(leading[0][1])
                yield 0, {"__header__": header}
                for early, data in leading[1:]:
                    yield early, {h: v for h, v in zip(header, data, strict=False) if h}
                continue
            yield number, {h: v for h, v in zip(header, values, strict=False) if h}
        if header is None and leading:  # a short file whose header was never accepted
            header = _header(leading[0][1])
            yield 0, {"__header__": header}
            for early, data in leading[1:]:
                yield early, {h: v for h, v in zip(header, data, strict=False) if h}
    finally:
        if isinstance(source, Path):
            stream.close()
