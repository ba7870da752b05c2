"""Reference data: warehouses, SKUs, stores and inventory (models, upserts, import).

Operators export these from Excel; files are read by the one import reader,
:mod:`coordinator.imports` (CSV with a header row, UTF-8 or GBK; JSON, a list of objects
or ``{"rows": [...]}``; JSON lines; xlsx), booleans as 1/0/true/false/yes/no/是/否. A
whole file is validated first: a bad row rejects the file naming its row and column
(``row 3.lat``: the header is row 1), and nothing is written. Large files are then
written in chunks of their own transaction (:func:`upsert`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import IO, Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from coordinator.db import Database, write_transaction
from coordinator.errors import Conflict, ImportFileError, NotFound
from coordinator.imports import ImportFormat, Source, detect_format, load_all, read_chunks
from protocols.timestamps import stamp


def _flag(value: Any) -> Any:
    if isinstance(value, str):
        text = value.strip().lower()
        if text in ("1", "true", "yes", "y", "是", "on"):
            return True
        if text in ("0", "false", "no", "n", "否", "off", ""):
            return False
    return value


Flag = Annotated[bool, BeforeValidator(_flag)]
Ident = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:\-]+$")]
Count = Annotated[int, Field(ge=0, le=1_000_000_000)]


class _Row(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True, allow_inf_nan=False)


class WarehouseIn(_Row):
    id: Ident
    name: str = Field(min_length=1, max_length=200)
    address: str = Field(default="", max_length=500)
    lat: float = Field(ge=-90, le=90)
    lon: float = Field(ge=-180, le=180)
    cold_chain: Flag = False
    daily_capacity: Count = Field(default=0, description="orders a day; 0 = unlimited")
    capacity_override: Flag = Field(default=False, description="operator lets it exceed capacity")


class SkuIn(_Row):
    id: Ident
    name: str = Field(default="", max_length=200)
    cold_chain: Flag = False


class StoreIn(_Row):
    id: Ident
    name: str = Field(min_length=1, max_length=200)
    franchisee: str = Field(default="", max_length=200)
    address: str = Field(default="", max_length=500)
    lat: float = Field(ge=-90, le=90)
    lon: float = Field(ge=-180, le=180)
    contact: str = Field(default="", max_length=200)


class InventoryIn(_Row):
    warehouse_id: Ident
    sku_id: Ident
    on_hand: Count
    safety_stock: Count = 0


class Kind(StrEnum):
    WAREHOUSES = "warehouses"
    SKUS = "skus"
    STORES = "stores"
    INVENTORY = "inventory"


MODELS: dict[Kind, type[_Row]] = {
    Kind.WAREHOUSES: WarehouseIn,
    Kind.SKUS: SkuIn,
    Kind.STORES: StoreIn,
    Kind.INVENTORY: InventoryIn,
}


def upsert_warehouses(db: Database, rows: Sequence[WarehouseIn], now: datetime) -> int:
    with write_transaction(db):
        db.conn.executemany(
            "INSERT INTO warehouses (id, name, address, lat, lon, cold_chain, daily_capacity, "
            "capacity_override, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (id) DO UPDATE SET name = excluded.name, address = excluded.address, "
            "lat = excluded.lat, lon = excluded.lon, cold_chain = excluded.cold_chain, "
            "daily_capacity = excluded.daily_capacity, "
            "capacity_override = excluded.capacity_override, updated_at = excluded.updated_at",
            [(r.id, r.name, r.address, r.lat, r.lon, int(r.cold_chain), r.daily_capacity,
              int(r.capacity_override), stamp(now)) for r in rows],
        )
    return len(rows)


def upsert_skus(db: Database, rows: Sequence[SkuIn], now: datetime) -> int:
    with write_transaction(db):
        db.conn.executemany(
            "INSERT INTO skus (id, name, cold_chain) VALUES (?, ?, ?) ON CONFLICT (id) DO UPDATE "
            "SET name = excluded.name, cold_chain = excluded.cold_chain",
            [(r.id, r.name, int(r.cold_chain)) for r in rows],
        )
    return len(rows)


def upsert_stores(db: Database, rows: Sequence[StoreIn], now: datetime) -> int:
    with write_transaction(db):
        db.conn.executemany(
            "INSERT INTO stores (id, name, franchisee, address, lat, lon, contact) "
            "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO UPDATE SET name = excluded.name, "
            "franchisee = excluded.franchisee, address = excluded.address, lat = excluded.lat, "
            "lon = excluded.lon, contact = excluded.contact",
            [(r.id, r.name, r.franchisee, r.address, r.lat, r.lon, r.contact) for r in rows],
        )
    return len(rows)


def upsert_inventory(db: Database, rows: Sequence[InventoryIn], now: datetime) -> int:
    """Set on-hand and safety stock (reservations are untouched; on hand may not drop below
    what is reserved)."""
    with write_transaction(db):
        _check_stock_references(db, rows)
        at = stamp(now)
        for r in rows:
            held = db.execute(
                "SELECT reserved FROM inventory WHERE warehouse_id = ? AND sku_id = ?",
                [r.warehouse_id, r.sku_id],
            ).fetchone()
            if held is not None and held[0] > r.on_hand:
                message = (f"inventory {r.warehouse_id}/{r.sku_id}: on_hand {r.on_hand} is below "
                           f"the {held[0]} already reserved")
                raise Conflict(message)
        db.conn.executemany(
            "INSERT INTO inventory (warehouse_id, sku_id, on_hand, reserved, safety_stock, "
            "updated_at) VALUES (?, ?, ?, 0, ?, ?) ON CONFLICT (warehouse_id, sku_id) DO UPDATE "
            "SET on_hand = excluded.on_hand, safety_stock = excluded.safety_stock, "
            "updated_at = excluded.updated_at",
            [(r.warehouse_id, r.sku_id, r.on_hand, r.safety_stock, at) for r in rows],
        )
    return len(rows)


# rows per transaction of a bulk import: between two chunks the write lock is free, so
# order intake and a reroute wait for one chunk at most, never for a whole large file
IMPORT_CHUNK = 2000


def upsert(db: Database, kind: Kind, rows: Sequence[BaseModel], now: datetime) -> int:
    """Write validated rows; more than :data:`IMPORT_CHUNK` go in chunks of their own
    transaction (unknown warehouses and SKUs are refused before the first one is written;
    a chunk refused by a conflict, e.g. stock below what is reserved, leaves the chunks
    before it written, and importing the same file again completes it)."""
    if len(rows) > IMPORT_CHUNK and not db.conn.in_transaction:
        if kind is Kind.INVENTORY:
            _check_stock_references(db, [InventoryIn.model_validate(r) for r in rows])
        return sum(_upsert_one(db, kind, rows[i:i + IMPORT_CHUNK], now)
                   for i in range(0, len(rows), IMPORT_CHUNK))
    return _upsert_one(db, kind, rows, now)


@dataclass
class StreamedImport:
    written: int = 0
    # the SKUs written or restocked, for the retry of waiting orders; None past
    # ``keep_skus`` (a bulk import concerns nearly every waiting order anyway)
    skus: set[str] | None = field(default_factory=set)


def import_source(db: Database, kind: Kind, source: IO[bytes], fmt: ImportFormat,
                  now: datetime, *, keep_skus: int = 1000) -> StreamedImport:
    """An export streamed from ``source`` (a spooled request body) in two passes, so no
    more than one chunk of rows is ever in memory: first every row is validated (the
    first bad row raises :class:`ImportFileError` naming ``row N.column``; for inventory,
    an unknown warehouse or SKU raises :class:`NotFound`) with nothing written, then the
    rows are written chunk by chunk, each chunk in its own transaction, so order intake
    goes on between chunks (what :func:`upsert` does with a list)."""
    model = MODELS[kind]
    known: tuple[set[str], set[str]] | None = None
    for chunk in read_chunks(source, model, fmt=fmt, chunk_size=IMPORT_CHUNK):
        if chunk.errors:
            first = chunk.errors[0]
            raise ImportFileError(f"row {first.row}.{first.column}", first.message)
        if kind is Kind.INVENTORY:
            known = known or _stock_keys(db)
            _check_stock_references(
                db, [InventoryIn.model_validate(r) for r in chunk.models], known)
    source.seek(0)
    out = StreamedImport()
    for chunk in read_chunks(source, model, fmt=fmt, chunk_size=IMPORT_CHUNK):
        out.written += _upsert_one(db, kind, chunk.models, now)
        if out.skus is not None and kind in (Kind.SKUS, Kind.INVENTORY):
            out.skus.update(r.sku_id if isinstance(r, InventoryIn) else
                            SkuIn.model_validate(r).id for r in chunk.models)
            if len(out.skus) > keep_skus:
                out.skus = None
    return out


def _stock_keys(db: Database) -> tuple[set[str], set[str]]:
    return ({r[0] for r in db.execute("SELECT id FROM warehouses").fetchall()},
            {r[0] for r in db.execute("SELECT id FROM skus").fetchall()})


def _check_stock_references(db: Database, rows: Sequence[InventoryIn],
                            known: tuple[set[str], set[str]] | None = None) -> None:
    """:class:`NotFound` naming the first unknown warehouse or SKU of ``rows``
    (``known``: the ids already read)."""
    warehouses, skus = known or _stock_keys(db)
    for r in rows:
        if r.warehouse_id not in warehouses:
            raise NotFound("warehouse", r.warehouse_id)
        if r.sku_id not in skus:
            raise NotFound("sku", r.sku_id)


def _upsert_one(db: Database, kind: Kind, rows: Sequence[BaseModel], now: datetime) -> int:
    match kind:
        case Kind.WAREHOUSES:
            return upsert_warehouses(db, [WarehouseIn.model_validate(r) for r in rows], now)
        case Kind.SKUS:
            return upsert_skus(db, [SkuIn.model_validate(r) for r in rows], now)
        case Kind.STORES:
            return upsert_stores(db, [StoreIn.model_validate(r) for r in rows], now)
        case Kind.INVENTORY:
            return upsert_inventory(db, [InventoryIn.model_validate(r) for r in rows], now)


def read_rows(source: Source, kind: Kind, fmt: ImportFormat) -> list[BaseModel]:
    """Every row of a catalogue export, validated, through the one import reader
    (:mod:`coordinator.imports`: CSV in UTF-8 or GBK, JSON, JSON lines, xlsx; a title
    above the header is skipped). All or nothing: the first bad row raises
    :class:`ImportFileError` naming ``row N.column`` as a person sees it in the export
    (in CSV and xlsx the header is row 1)."""
    return list(load_all(source, MODELS[kind], fmt=fmt))


def read_file(path: Path, kind: Kind | None = None) -> tuple[Kind, list[BaseModel]]:
    """Read an export; the kind defaults to the file's stem (``warehouses.csv``), the
    format comes from its suffix."""
    if kind is None:
        try:
            kind = Kind(path.stem.lower())
        except ValueError as exc:
            message = (f"cannot tell what {path.name} holds: name it "
                       f"{'/'.join(k.value for k in Kind)}.csv|json|jsonl|xlsx or pass --kind")
            raise ImportFileError("file", message) from exc
    return kind, read_rows(path, kind, detect_format(name=path.name))


def import_file(
    db: Database, path: Path, now: datetime, kind: Kind | None = None
) -> tuple[Kind, int]:
    kind, rows = read_file(path, kind)
    return kind, upsert(db, kind, rows, now)


_TABLES = {Kind.WAREHOUSES: "warehouses", Kind.SKUS: "skus", Kind.STORES: "stores",
           Kind.INVENTORY: "inventory"}
_FLAGS = frozenset({"cold_chain", "capacity_override", "available", "paused"})


def _with_flags(names: Sequence[str], raw: Sequence[Any]) -> dict[str, Any]:
    row = dict(zip(names, raw, strict=True))
    for f in _FLAGS & row.keys():
        row[f] = bool(row[f])
    return row


def list_rows(db: Database, kind: Kind, *, limit: int = 1000, offset: int = 0,
              warehouse_id: str | None = None, sku_id: str | None = None) -> list[dict[str, Any]]:
    where = []
    params: list[Any] = []
    if kind is Kind.INVENTORY:
        if warehouse_id is not None:
            where.append("warehouse_id = ?")
            params.append(warehouse_id)
        if sku_id is not None:
            where.append("sku_id = ?")
            params.append(sku_id)
    order = "warehouse_id, sku_id" if kind is Kind.INVENTORY else "id"
    sql = f"SELECT * FROM {_TABLES[kind]}"
    if where:
        sql += " WHERE " + " AND ".join(where)
    sql += f" ORDER BY {order} LIMIT ? OFFSET ?"
    params += [limit, offset]
    cur = db.conn.execute(sql, params)
    names = [c[0] for c in cur.description]
    return [_with_flags(names, raw) for raw in cur.fetchall()]


def get_row(db: Database, kind: Kind, item_id: str) -> dict[str, Any] | None:
    """One warehouse, SKU or store by id (None if unknown)."""
    if kind is Kind.INVENTORY:
        message = "inventory rows have no single id"
        raise ValueError(message)
    cur = db.conn.execute(f"SELECT * FROM {_TABLES[kind]} WHERE id = ?", [item_id])
    raw = cur.fetchone()
    return None if raw is None else _with_flags([c[0] for c in cur.description], raw)


# -- warehouse flags (availability, operator pause) ------------------------------------
def set_warehouse_availability(
    db: Database, warehouse_id: str, *, available: bool, reason: str | None, now: datetime
) -> bool:
    """Mark a warehouse (un)available; returns whether availability changed.

    Only the flag and its reason change: moving its orders is :func:`reroute_warehouse`.
    """
    with write_transaction(db):
        row = db.execute(
            "SELECT available FROM warehouses WHERE id = ?", [warehouse_id]
        ).fetchone()
        if row is None:
            raise NotFound("warehouse", warehouse_id)
        changed = bool(row[0]) != available
        db.execute(
            "UPDATE warehouses SET available = ?, unavailable_reason = ?, updated_at = ? "
            "WHERE id = ? AND (available != ? OR unavailable_reason IS DISTINCT FROM ?)",
            [int(available), None if available else reason, stamp(now), warehouse_id,
             int(available), None if available else reason],
        )
    return changed


def set_warehouse_paused(
    db: Database, warehouse_id: str, *, paused: bool, reason: str | None, now: datetime
) -> bool:
    """Operator pause/resume (the engine skips a paused warehouse); returns whether it changed."""
    with write_transaction(db):
        row = db.execute("SELECT paused FROM warehouses WHERE id = ?", [warehouse_id]).fetchone()
        if row is None:
            raise NotFound("warehouse", warehouse_id)
        changed = bool(row[0]) != paused
        if changed:
            if paused:
                db.execute(
                    "UPDATE warehouses SET paused = 1, unavailable_reason = ?, updated_at = ? "
                    "WHERE id = ?", [reason, stamp(now), warehouse_id])
            else:
                db.execute("UPDATE warehouses SET paused = 0, updated_at = ? WHERE id = ?",
                           [stamp(now), warehouse_id])
    return changed


# (available, unavailable_reason, paused): the flags the allocation engine reads
WarehouseFlags = tuple[bool, str | None, bool]


def warehouse_flags(db: Database, warehouse_ids: Sequence[str]) -> dict[str, WarehouseFlags]:
    """The flags of those of ``warehouse_ids`` that exist (one statement per 500 ids):
    the ops loop reads them once per applied batch, then writes only what changes."""
    found: dict[str, WarehouseFlags] = {}
    ids = sorted(set(warehouse_ids))
    for start in range(0, len(ids), 500):
        chunk = ids[start:start + 500]
        rows = db.execute(
            "SELECT id, available, unavailable_reason, paused FROM warehouses "
            f"WHERE id IN ({', '.join('?' * len(chunk))})", chunk).fetchall()
        found.update({str(r[0]): (bool(r[1]), r[2], bool(r[3])) for r in rows})
    return found


def set_warehouse_flags(db: Database, warehouse_id: str, flags: WarehouseFlags,
                        now: datetime) -> None:
    """Write all three flags at once (the caller read them and knows they change)."""
    available, reason, paused = flags
    db.execute("UPDATE warehouses SET available = ?, unavailable_reason = ?, paused = ?, "
               "updated_at = ? WHERE id = ?",
               [int(available), reason, int(paused), stamp(now), warehouse_id])


def warehouse_exists(db: Database, warehouse_id: str) -> bool:
    row = db.execute("SELECT 1 FROM warehouses WHERE id = ?", [warehouse_id]).fetchone()
    return row is not None
