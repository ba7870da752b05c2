"""Snapshots for the engine, read inside the caller's write transaction.

One entry point, :func:`snapshot_for`, picks how to read: a complete snapshot (every
warehouse, the stock of the SKUs asked about: reroute, retry) or, at intake, a partial
one that loads the stock of the likely warehouses and grows when the engine asks for
more (:class:`engine.IncompleteSnapshot`). Two caches sit behind it, both checked on
every use so they can never serve stale data:

- warehouses, their spatial index and the SKU flags, rebuilt when a trigger bumped the
  ``meta`` versions;
- in a small region (a few warehouses) the stock this connection committed with its last
  intake batch, reused while SQLite's ``data_version`` and the connection's
  ``total_changes`` show nobody wrote since; and the same way, in any region, the
  warehouse-wide stock totals (only read under ``reservation_scope = "warehouse"``).
"""

from __future__ import annotations

import weakref
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from coordinator import engine
from coordinator.db import Database, dialect
from coordinator.engine import (
    Decision,
    IncompleteSnapshot,
    OrderRequest,
    Snapshot,
    StockState,
    WarehouseState,
)
from coordinator.postgres import PgConnection
from coordinator.settings import AllocationConfig
from protocols.geo import SpatialIndex
from protocols.timestamps import utc_day

# up to this many warehouses, intake loads every warehouse's stock of a batch's SKUs
_INITIAL_LOAD = 8


@dataclass(slots=True)
class _Cache:
    version: tuple[int, int]
    warehouses: dict[str, WarehouseState]
    index: SpatialIndex
    cold_skus: frozenset[str]
    skus: frozenset[str]
    # PostgreSQL: (write transaction, rows this connection had changed) when the versions
    # were last checked: while both are the same, no other writer (they wait for the
    # lock) nor this connection changed them, and the check is not repeated
    checked_in: tuple[int, int] | None = None


_caches: weakref.WeakKeyDictionary[Database, _Cache] = weakref.WeakKeyDictionary()


def _versions(db: Database) -> tuple[int, int]:
    rows = dict(db.execute("SELECT key, value FROM meta").fetchall())
    return int(rows.get("warehouses_version", 0)), int(rows.get("skus_version", 0))


def _write_transaction_no(db: Database) -> tuple[int, int] | None:
    """On PostgreSQL inside a write transaction, its number on this connection and the
    rows the connection has changed so far; else None."""
    conn = db.conn
    if not isinstance(conn, PgConnection) or conn.write_lock_held is None:
        return None
    return conn.write_lock_held, conn.total_changes


def _cache(db: Database) -> _Cache:
    """Warehouses, spatial index and SKU flags, rebuilt only when a trigger bumped a version."""
    cached = _caches.get(db)
    transaction = _write_transaction_no(db)
    if cached is not None and transaction is not None and cached.checked_in == transaction:
        return cached
    version = _versions(db)
    if cached is not None and cached.version == version:
        cached.checked_in = transaction
        return cached
    warehouses = {
        row[0]: WarehouseState(
            id=row[0], name=row[1], lat=row[2], lon=row[3], cold_chain=bool(row[4]),
            daily_capacity=row[5], capacity_override=bool(row[6]), available=bool(row[7]),
            unavailable_reason=row[8], paused=bool(row[9]),
        )
        for row in db.execute(
            "SELECT id, name, lat, lon, cold_chain, daily_capacity, capacity_override, "
            "available, unavailable_reason, paused FROM warehouses"
        ).fetchall()
    }
    index = SpatialIndex((w.id, w.lat, w.lon) for w in warehouses.values())
    skus = db.execute("SELECT id, cold_chain FROM skus").fetchall()
    cached = _Cache(
        version, warehouses, index,
        frozenset(s[0] for s in skus if s[1]), frozenset(s[0] for s in skus), transaction,
    )
    _caches[db] = cached
    return cached


@dataclass(slots=True)
class _StockMemo:
    """A small region's stock as this connection last committed it (see submit_orders)."""

    token: tuple[int, int, tuple[int, int], str]
    stock: dict[str, dict[str, StockState]]
    skus: set[str]


# Per connection; taken out while a batch runs, so a failed batch leaves none behind.
_stock_memos: weakref.WeakKeyDictionary[Database, _StockMemo] = weakref.WeakKeyDictionary()


@dataclass(slots=True)
class _TotalsMemo:
    """Warehouse-wide stock totals as this connection last committed them (any region size:
    a batch meets hundreds of warehouses in a large one, each an aggregate to read)."""

    token: tuple[int, int, tuple[int, int], str] | None
    totals: dict[str, list[int]]


_totals_memos: weakref.WeakKeyDictionary[Database, _TotalsMemo] = weakref.WeakKeyDictionary()


@dataclass(slots=True)
class SnapshotLoader:
    """A snapshot for one transaction; a partial one grows on demand (stock per
    (warehouse, sku) pair). Built only by :func:`snapshot_for`."""

    db: Database
    snapshot: Snapshot
    day: str
    handled_loaded: set[str] = field(default_factory=set)
    memo: _StockMemo | None = None  # the small-region stock kept for the next batch
    sqlite: bool = True
    # load warehouse-wide stock totals (reservation_scope = warehouse) beside the stock
    totals: bool = False
    totals_memo: _TotalsMemo | None = None  # the totals kept for the next batch

    def load(self, warehouse_ids: Sequence[str], sku_ids: Iterable[str]) -> None:
        """Make sure the stock of every (warehouse, sku) pair is in the snapshot."""
        skus = sorted(set(sku_ids))
        self.load_pairs([(w, s) for w in warehouse_ids for s in skus])

    def load_all_warehouses(self, sku_ids: Iterable[str]) -> None:
        """Every warehouse's stock of ``sku_ids``; the snapshot is then complete for them."""
        _read_stock(self.db, sorted(set(sku_ids)), self.snapshot.stock)
        warehouses = self.snapshot.warehouses
        for wh in warehouses.values():
            wh.handled_today = 0
        for wid, handled in self.db.execute(
            "SELECT warehouse_id, handled FROM warehouse_load WHERE day = ?", [self.day]
        ).fetchall():
            if wid in warehouses:
                warehouses[wid].handled_today = handled
        if self.totals:
            _load_totals(self.db, self._totals(), list(warehouses))
        self.snapshot.loaded = None

    def load_pairs(self, pairs: Iterable[tuple[str, str]]) -> None:
        loaded = self.snapshot.loaded
        assert loaded is not None
        missing = sorted({p for p in pairs if p not in loaded})
        if not missing:
            return
        stock = self.snapshot.stock
        queries: list[tuple[str, list[Any]]]
        if self.sqlite:
            # a join looks each pair up by primary key (CROSS JOIN keeps this order);
            # "(warehouse_id, sku_id) IN (VALUES ...)" would scan the table
            queries = [(
                f"WITH p(w, s) AS (VALUES {','.join(['(?, ?)'] * len(chunk))}) "
                "SELECT i.warehouse_id, i.sku_id, i.on_hand, i.reserved, i.safety_stock "
                "FROM p CROSS JOIN inventory i ON i.warehouse_id = p.w AND i.sku_id = p.s",
                [x for pair in chunk for x in pair],
            ) for chunk in (missing[i:i + 4000] for i in range(0, len(missing), 4000))]
        else:  # the pairs as two arrays: one statement text whatever the count, prepared
            queries = [(
                "SELECT i.warehouse_id, i.sku_id, i.on_hand, i.reserved, i.safety_stock "
                "FROM unnest(?::text[], ?::text[]) AS p(w, s) JOIN inventory i "
                "ON i.warehouse_id = p.w AND i.sku_id = p.s",
                [[w for w, _ in missing], [s for _, s in missing]])]
        for sql, params in queries:
            for wid, sid, on_hand, reserved, safety in self.db.execute(sql, params).fetchall():
                stock.setdefault(wid, {})[sid] = StockState(on_hand, reserved, safety)
        loaded.update(missing)
        fresh = sorted({w for w, _ in missing} - self.handled_loaded)
        if fresh:
            warehouses = self.snapshot.warehouses
            for w in fresh:
                warehouses[w].handled_today = 0
            marks = ",".join("?" * len(fresh))
            for wid, handled in self.db.execute(
                f"SELECT warehouse_id, handled FROM warehouse_load "
                f"WHERE day = ? AND warehouse_id IN ({marks})",
                [self.day, *fresh],
            ).fetchall():
                warehouses[wid].handled_today = handled
            self.handled_loaded.update(fresh)
            if self.totals:
                # only warehouses met for the first time: a batch's own reservations
                # are applied to the totals in memory (engine.apply), not re-read
                _load_totals(self.db, self._totals(), fresh)

    def _totals(self) -> dict[str, list[int]]:
        totals = self.snapshot.totals
        if totals is None:
            totals = self.snapshot.totals = {}
        return totals

    def _candidates(self, order: OrderRequest, config: AllocationConfig,
                    exclude: frozenset[str], want: int) -> tuple[list[str], int]:
        """The ``want`` nearest warehouses the geofence could pass (available, cold chain
        if needed): the engine decides; this only guesses what it will read."""
        index = self.snapshot.index
        assert index is not None
        need_cold = engine.needs_cold_chain(order, self.snapshot, config)
        warehouses = self.snapshot.warehouses
        nearest: list[str] = []
        seen = 0
        for _, wid in index.nearest(order.lat, order.lon):
            seen += 1
            wh = warehouses[wid]
            if (wid in exclude or wh.paused or not wh.available
                    or (need_cold and not wh.cold_chain)):
                continue
            nearest.append(wid)
            if len(nearest) >= want:
                break
        return nearest, seen

    def preload(self, orders: Iterable[OrderRequest], config: AllocationConfig,
                exclude: frozenset[str] = frozenset()) -> None:
        """One query for the likely stock of a whole batch instead of one per order."""
        if self.snapshot.loaded is None:
            return
        want = config.nearest + 1
        pairs: list[tuple[str, str]] = []
        for order in orders:
            nearest, _ = self._candidates(order, config, exclude, want)
            pairs.extend((w, line.sku_id) for w in nearest for line in order.lines)
        self.load_pairs(pairs)

    def allocate(self, order: OrderRequest, config: AllocationConfig,
                 exclude: frozenset[str] = frozenset()) -> Decision:
        if self.snapshot.loaded is None:
            return engine.allocate(order, self.snapshot, config, exclude=exclude)
        index = self.snapshot.index
        assert index is not None
        skus = [line.sku_id for line in order.lines]
        want = config.nearest + 1
        try:
            return engine.allocate(order, self.snapshot, config, exclude=exclude)
        except IncompleteSnapshot:
            pass
        while True:
            nearest, seen = self._candidates(order, config, exclude, want)
            self.load(nearest, skus)
            try:
                return engine.allocate(order, self.snapshot, config, exclude=exclude)
            except IncompleteSnapshot:
                if seen >= len(index):
                    raise
                want *= 4

    def written(self) -> None:
        """Every reservation of the batch is written (and applied to this snapshot)."""
        if self.memo is not None:
            self.memo.token = _memo_token(self.db, self.day)
        if self.totals_memo is not None:
            self.totals_memo.token = _memo_token(self.db, self.day)

    def committed(self) -> None:
        """The batch committed: the kept stock is the database's stock now."""
        if self.memo is not None:
            _stock_memos[self.db] = self.memo
        if self.totals_memo is not None:
            _totals_memos[self.db] = self.totals_memo


def _memo_token(db: Database, day: str) -> tuple[int, int, tuple[int, int], str]:
    """What must be unchanged for a memo to still be the database's stock: no other
    connection committed (``data_version``), this connection wrote nothing else
    (``total_changes``), same warehouses/SKUs (meta versions) and the same day. Read inside
    the write transaction, where no other connection can commit."""
    data_version = db.conn.execute("PRAGMA data_version").fetchone()[0]
    return int(data_version), db.conn.total_changes, _versions(db), day


def snapshot_for(
    db: Database,
    orders: Sequence[OrderRequest],
    *,
    now: datetime,
    config: AllocationConfig,
    complete: bool = False,
    reuse_stock: bool = False,
) -> SnapshotLoader:
    """The snapshot to allocate ``orders`` from, read in the caller's write transaction.

    ``complete``: every warehouse's stock of the orders' SKUs (the warehouse objects are
    fresh copies, callers may mutate them). Otherwise a partial snapshot preloaded with
    the likely warehouses' stock; ``reuse_stock`` lets a small region start from the
    stock this connection committed last (only for a batch that owns its transaction:
    a nested one could still be rolled back by its caller). After writing, call
    :meth:`SnapshotLoader.written`; after the commit, :meth:`SnapshotLoader.committed`.
    """
    day = utc_day(now)
    cache = _cache(db)
    skus = {line.sku_id for order in orders for line in order.lines}
    totals = config.reservation_scope == "warehouse"
    if complete:
        snapshot = _complete(db, cache, day, skus)
        if totals:
            snapshot.totals = {}
            _load_totals(db, snapshot.totals, sorted(snapshot.stock))
        return SnapshotLoader(db, snapshot, day, sqlite=dialect(db) == "sqlite")
    memo = _stock_memos.pop(db, None)  # taken out: a failed batch leaves none behind
    snapshot = Snapshot(cache.warehouses, {}, cache.cold_skus, loaded=set(), index=cache.index)
    sqlite = dialect(db) == "sqlite"
    loader = SnapshotLoader(db, snapshot, day, sqlite=sqlite, totals=totals)
    # the memo's token reads SQLite's data_version; on PostgreSQL every batch reads afresh
    reuse_stock = reuse_stock and sqlite
    if totals:
        kept = _totals_memos.pop(db, None)  # taken out, as the stock memo
        if not reuse_stock or kept is None or kept.token != _memo_token(db, day):
            kept = _TotalsMemo(None, {})
        snapshot.totals = kept.totals
        loader.totals_memo = kept if reuse_stock else None
    if orders and len(cache.index) <= _INITIAL_LOAD:
        # a small region: one query loads every warehouse's stock of the whole batch,
        # after which the snapshot is complete for every SKU the batch asks about
        if reuse_stock:
            if memo is None or memo.token != _memo_token(db, day):
                memo = _StockMemo(_memo_token(db, day), {}, set())
            snapshot.stock = memo.stock
            loader.load_all_warehouses(skus - memo.skus)
            memo.skus |= skus
            loader.memo = memo
        else:
            loader.load_all_warehouses(skus)
    else:
        loader.preload(orders, config)
    return loader


def _read_stock(db: Database, skus: list[str], stock: dict[str, dict[str, StockState]]) -> None:
    """Every warehouse's stock of ``skus`` into ``stock``."""
    chunks: list[tuple[str, list[Any]]]
    if dialect(db) == "postgresql":  # one statement text whatever the count: prepared
        chunks = [("SELECT warehouse_id, sku_id, on_hand, reserved, safety_stock "
                   "FROM inventory WHERE sku_id = ANY(?)", [skus])] if skus else []
    else:
        chunks = [("SELECT warehouse_id, sku_id, on_hand, reserved, safety_stock FROM inventory "
                   f"WHERE sku_id IN ({','.join('?' * len(chunk))})", chunk)
                  for chunk in (skus[i:i + 900] for i in range(0, len(skus), 900))]
    for sql, params in chunks:
        for wid, sid, on_hand, reserved, safety in db.execute(sql, params).fetchall():
            per = stock.get(wid)
            if per is None:
                per = stock[wid] = {}
            per[sid] = StockState(on_hand, reserved, safety)


def _load_totals(db: Database, into: dict[str, list[int]], warehouse_ids: Sequence[str]) -> None:
    """Warehouse-wide [on hand, reserved] over every SKU (the ``warehouse`` reservation
    scope) of the warehouses ``into`` lacks. An aggregate over those warehouses' inventory
    rows (the primary key starts with the warehouse): read only in that scope, never on
    the default path."""
    warehouse_ids = [w for w in warehouse_ids if w not in into]
    for start in range(0, len(warehouse_ids), 900):
        chunk = warehouse_ids[start:start + 900]
        for wid, on_hand, reserved in db.execute(
            "SELECT warehouse_id, SUM(on_hand), SUM(reserved) FROM inventory "
            f"WHERE warehouse_id IN ({','.join('?' * len(chunk))}) GROUP BY warehouse_id",
            list(chunk),
        ).fetchall():
            into[wid] = [int(on_hand), int(reserved)]
        for wid in chunk:  # no inventory rows: nothing held, nothing reserved
            into.setdefault(wid, [0, 0])


def known_skus(db: Database) -> frozenset[str]:
    """Every SKU id (cached with the warehouses)."""
    return _cache(db).skus


def _complete(db: Database, cache: _Cache, day: str, sku_ids: Iterable[str]) -> Snapshot:
    warehouses = {
        w.id: WarehouseState(
            id=w.id, lat=w.lat, lon=w.lon, cold_chain=w.cold_chain, available=w.available,
            unavailable_reason=w.unavailable_reason, paused=w.paused,
            daily_capacity=w.daily_capacity, capacity_override=w.capacity_override, name=w.name,
        )
        for w in cache.warehouses.values()
    }
    for wid, handled in db.execute(
        "SELECT warehouse_id, handled FROM warehouse_load WHERE day = ?", [day]
    ).fetchall():
        if wid in warehouses:
            warehouses[wid].handled_today = handled
    stock: dict[str, dict[str, StockState]] = {}
    _read_stock(db, sorted(set(sku_ids)), stock)
    return Snapshot(warehouses, stock, cache.cold_skus, index=cache.index)
