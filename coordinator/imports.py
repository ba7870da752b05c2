"""The one streaming import reader: CSV, JSON, JSON lines and xlsx, in chunks.

Every importer (order history, catalogue exports) reads through here, so every file gets
the same rules:

- the format comes from the file name or content type (:func:`detect_format`); a file
  that is none of them is refused naming ``file``;
- rows are read lazily and validated with a pydantic model in chunks
  (:func:`read_chunks`); a header ``mapping`` renames export headers (``订单号``) to the
  model's fields; the header is the first row holding every required column (title rows
  above it are skipped); a required field without a column is refused before anything
  is written, naming the column;
- a bad row is reported by row and column (the export's own header, so a person finds it
  in Excel) and skipped; good rows are kept (:func:`import_rows`), or, for all-or-nothing
  importers, the first bad row raises (:func:`load_all`);
- :func:`import_rows` hands each chunk to a writer inside its own short
  :func:`~coordinator.db.write_transaction`, so a 400,000-row file never holds the
  write lock for more than one chunk and order intake goes on between chunks.

Row numbers are what a person sees: in CSV and xlsx the header is row 1 and the first
data row is row 2; in JSON lines the line number; in a JSON array the item's position
(from 1).
"""

from __future__ import annotations

import tempfile
from collections.abc import AsyncIterable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import IO, Any, Generic, TypeVar

from pydantic import BaseModel, ValidationError
from starlette.datastructures import FormData, UploadFile

from coordinator.db import Database, write_transaction
from coordinator.errors import ImportFileError
from coordinator.import_formats import ImportFormat, Source, detect_format, raw_records
from protocols.text import MESSAGE, NUL, nul_path

# what importers use, the format side (coordinator.import_formats) included
__all__ = [
    "DEFAULT_CHUNK", "Chunk", "ImportFormat", "ImportReport", "RowError", "Source",
    "detect_format", "form_file", "import_rows", "load_all", "media_type", "raw_records",
    "read_chunks", "spool",
]

DEFAULT_CHUNK = 2000
# errors listed in a report; all are counted
MAX_LISTED_ERRORS = 200
# a request body is kept in memory up to this size, then spooled to a temporary file
SPOOL_MEMORY = 8 * 1024 * 1024
M = TypeVar("M", bound=BaseModel)


@dataclass(frozen=True, slots=True)
class RowError:
    row: int
    column: str
    message: str

    def as_dict(self) -> dict[str, Any]:
        return {"row": self.row, "column": self.column, "message": self.message}


@dataclass(slots=True)
class Chunk(Generic[M]):
    """Validated rows (with their row numbers) and the bad rows of one chunk."""

    rows: list[tuple[int, M]] = field(default_factory=list)
    errors: list[RowError] = field(default_factory=list)

    @property
    def models(self) -> list[M]:
        return [model for _, model in self.rows]


@dataclass(slots=True)
class ImportReport:
    rows_read: int = 0
    rows_written: int = 0
    rows_rejected: int = 0
    chunks: int = 0
    errors: list[RowError] = field(default_factory=list)

    def add_errors(self, errors: Sequence[RowError]) -> None:
        self.rows_rejected += len({e.row for e in errors})
        room = MAX_LISTED_ERRORS - len(self.errors)
        if room > 0:
            self.errors.extend(errors[:room])

    def as_dict(self) -> dict[str, Any]:
        return {"rows_read": self.rows_read, "rows_written": self.rows_written,
                "rows_rejected": self.rows_rejected, "chunks": self.chunks,
                "errors": [e.as_dict() for e in self.errors],
                "errors_listed": len(self.errors)}


# -- validation -------------------------------------------------------------------------
def _blank_none(value: Any) -> Any:
    if isinstance(value, str):
        text = value.strip()
        return text if text else None
    return value


class _Columns:
    """Export header -> model field, and back for messages."""

    def __init__(self, model: type[BaseModel], mapping: Mapping[str, str] | None) -> None:
        self.model = model
        self.mapping = {k.strip(): v for k, v in (mapping or {}).items()}
        self.back = {v: k for k, v in self.mapping.items()}

    def field_of(self, header: str) -> str:
        return self.mapping.get(header, header)

    def column_of(self, name: str) -> str:
        return self.back.get(name, name)

    def has_required(self, header: Sequence[str]) -> bool:
        present = {self.field_of(h) for h in header}
        return all(not info.is_required() or (info.alias or name) in present
                   for name, info in self.model.model_fields.items())

    def check_header(self, header: Sequence[str]) -> None:
        present = {self.field_of(h) for h in header}
        for name, info in self.model.model_fields.items():
            key = info.alias or name
            if info.is_required() and key not in present:
                wanted = self.column_of(key)
                raise ImportFileError(f"column {wanted}", "required column missing from the "
                                      f"header (found: {', '.join(h for h in header if h)})")


def _validate(columns: _Columns, model: type[M], number: int, raw: Any
              ) -> tuple[M | None, list[RowError]]:
    if not isinstance(raw, dict):
        return None, [RowError(number, "row", "expected an object")]
    cleaned: dict[str, Any] = {}
    for key, value in raw.items():
        where = nul_path(value)
        if where is not None or NUL in str(key):
            # PostgreSQL cannot store it (a 500 there); refused on both backends alike
            column = str(key).replace(NUL, "?") + (f".{where}" if where else "")
            return None, [RowError(number, column, MESSAGE)]
        blank = _blank_none(value)
        if blank is not None:
            cleaned[columns.field_of(str(key).strip())] = blank
    try:
        return model.model_validate(cleaned), []
    except ValidationError as exc:
        errors = []
        for err in exc.errors():
            loc = [str(p) for p in err["loc"]]
            column = columns.column_of(loc[0]) if loc else "row"
            if len(loc) > 1:
                column += "." + ".".join(loc[1:])
            errors.append(RowError(number, column, err["msg"]))
        return None, errors


def read_chunks(
    source: Source, model: type[M], *, fmt: ImportFormat,
    mapping: Mapping[str, str] | None = None, chunk_size: int = DEFAULT_CHUNK,
) -> Iterator[Chunk[M]]:
    """Validated rows in chunks of ``chunk_size`` read rows (good and bad)."""
    columns = _Columns(model, mapping)
    chunk: Chunk[M] = Chunk()
    seen = 0
    for number, raw in raw_records(source, fmt, is_header=columns.has_required):
        if number == 0:
            columns.check_header(raw["__header__"])
            continue
        parsed, errors = _validate(columns, model, number, raw)
        if parsed is not None:
            chunk.rows.append((number, parsed))
        chunk.errors.extend(errors)
        seen += 1
        if seen == chunk_size:
            yield chunk
            chunk, seen = Chunk(), 0
    if seen:
        yield chunk


def load_all(source: Source, model: type[M], *, fmt: ImportFormat,
                           mapping: Mapping[str, str] | None = None) -> list[M]:
    """Every row or none: the first bad row raises :class:`ImportFileError` naming
    ``row N.column`` (for importers whose file is one consistent set, e.g. a catalogue)."""
    out: list[M] = []
    for chunk in read_chunks(source, model, fmt=fmt, mapping=mapping):
        if chunk.errors:
            first = chunk.errors[0]
            raise ImportFileError(f"row {first.row}.{first.column}", first.message)
        out.extend(chunk.models)
    return out


def import_rows(
    db: Database, source: Source, model: type[M], write: Callable[[Database, list[M]], int],
    *, fmt: ImportFormat, mapping: Mapping[str, str] | None = None,
    chunk_size: int = DEFAULT_CHUNK,
    on_chunk: Callable[[ImportReport], None] | None = None,
) -> ImportReport:
    """Read, validate and write chunk by chunk, each chunk in its own transaction; bad rows
    are reported and skipped. A file-level error (type, header, broken CSV) raises
    :class:`ImportFileError`; chunks written before it stay written (each is complete)."""
    report = ImportReport()
    for chunk in read_chunks(source, model, fmt=fmt, mapping=mapping, chunk_size=chunk_size):
        report.rows_read += len(chunk.rows) + len({e.row for e in chunk.errors})
        report.add_errors(chunk.errors)
        if chunk.rows:
            with write_transaction(db):
                report.rows_written += write(db, chunk.models)
        report.chunks += 1
        if on_chunk is not None:
            on_chunk(report)
    return report


def media_type(content_type: str | None) -> str:
    """A ``Content-Type`` header's media type, lower case, without its parameters
    (``text/csv; charset=gbk`` -> ``text/csv``): what every import endpoint decides on."""
    return (content_type or "").split(";")[0].strip().lower()


def form_file(form: FormData) -> UploadFile:
    """The file of a browser upload (``multipart/form-data``, field ``file``), or
    :class:`ImportFileError` naming ``body.file``."""
    upload = form.get("file")
    if upload is None or isinstance(upload, str):
        raise ImportFileError("body.file", "a multipart import needs a file field 'file'")
    return upload


async def spool(body: AsyncIterable[bytes], *, limit: int) -> IO[bytes]:
    """A request body in a temporary file (in memory up to 8 MiB), refused past ``limit``
    bytes naming ``body``: the reader then streams it like a file."""
    out: IO[bytes] = tempfile.SpooledTemporaryFile(max_size=SPOOL_MEMORY)  # noqa: SIM115
    size = 0
    async for part in body:
        size += len(part)
        if size > limit:
            out.close()
            raise ImportFileError("body", f"larger than the {limit} byte import limit")
        out.write(part)
    out.seek(0)
    return out
