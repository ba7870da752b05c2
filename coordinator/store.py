"""The store: snapshots for the engine, and decisions committed in one transaction.

Every write that depends on what was read (allocation, reroute, shipping) runs inside
:func:`write_transaction`: ``BEGIN IMMEDIATE`` takes SQLite's single write lock before the
snapshot is read, so two connections can never both promise the same last unit. Within it
the work runs in ``db.atomic()`` (a savepoint), so a caller that already holds a
transaction (e.g. to queue notifications with a reroute) gets all-or-nothing too.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import uuid
import weakref
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlite_utils import Database

from coordinator import engine
from coordinator.engine import (
    CandidateTrace,
    Decision,
    IncompleteSnapshot,
    Line,
    OrderRequest,
    Snapshot,
    StockState,
    WarehouseIndex,
    WarehouseState,
)
from coordinator.errors import Conflict, NotFound, StoreError
from coordinator.settings import AllocationConfig
from protocols.orders import OrderIn

# Orders a warehouse still has to ship (its reservations are held there).
UNSHIPPED_STATUSES = ("allocated",)
TIMELINE_LABELS = {
    "received": "已接单",
    "allocated": "已分仓",
    "rerouted": "已改派",
    "shipped": "已出库",
    "in_transit": "在途",
    "delivered": "已送达",
    "unallocated": "待分仓",
    "needs_attention": "需人工处理",
    "cancelled": "已取消",
}
# order status -> events that may follow it (warehouse and courier updates)
TRANSITIONS: dict[str, tuple[str, ...]] = {
    "allocated": ("shipped", "cancelled"),
    "shipped": ("in_transit", "delivered"),
    "in_transit": ("in_transit", "delivered"),
    "unallocated": ("cancelled",),
    "needs_attention": ("cancelled",),
    "delivered": (),
    "cancelled": (),
}
_INITIAL_LOAD = 8


# one encoder built once: json.dumps with options builds a new encoder on every call
to_json = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


def iso(moment: datetime) -> str:
    """UTC ISO-8601 with milliseconds: sortable as text."""
    return moment.astimezone(UTC).isoformat(timespec="milliseconds")


def parse_time(text: str | None) -> datetime | None:
    return None if text is None else datetime.fromisoformat(text)


def _day(moment: datetime) -> str:
    return moment.astimezone(UTC).date().isoformat()


# -- transactions ---------------------------------------------------------------------
@contextmanager
def write_transaction(db: Database) -> Iterator[Database]:
    """All-or-nothing with the write lock held; reentrant (nested calls use savepoints).

    The outermost call issues ``BEGIN IMMEDIATE`` so what is read inside cannot be changed
    by another connection before this one commits.
    """
    conn = db.conn
    if conn.in_transaction:
        with db.atomic():
            yield db
        return
    # Threads of this process queue on a lock instead of SQLite's busy handler, which
    # sleeps in steps of milliseconds; other processes still wait on the file lock.
    with _process_lock(db):
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            message = f"cannot take the database write lock: {exc}"
            raise StoreError(message) from exc
        try:
            with db.atomic():
                yield db
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")


_file_locks: dict[str, threading.Lock] = {}
_file_locks_guard = threading.Lock()
_lock_of: weakref.WeakKeyDictionary[Database, threading.Lock] = weakref.WeakKeyDictionary()


def _process_lock(db: Database) -> threading.Lock:
    lock = _lock_of.get(db)
    if lock is None:
        row = db.conn.execute("PRAGMA database_list").fetchone()
        name = row[2] if row and row[2] else f"memory:{id(db)}"
        with _file_locks_guard:
            lock = _file_locks.setdefault(name, threading.Lock())
        _lock_of[db] = lock
    return lock


# -- snapshots ------------------------------------------------------------------------
@dataclass(slots=True)
class _Cache:
    version: tuple[int, int]
    warehouses: dict[str, WarehouseState]
    index: WarehouseIndex
    cold_skus: frozenset[str]
    skus: frozenset[str]


_caches: weakref.WeakKeyDictionary[Database, _Cache] = weakref.WeakKeyDictionary()


def _versions(db: Database) -> tuple[int, int]:
    rows = dict(db.execute("SELECT key, value FROM meta").fetchall())
    return int(rows.get("warehouses_version", 0)), int(rows.get("skus_version", 0))


def _cache(db: Database) -> _Cache:
    """Warehouses, spatial index and SKU flags, rebuilt only when a trigger bumped a version."""
    version = _versions(db)
    cached = _caches.get(db)
    if cached is not None and cached.version == version:
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
    index = WarehouseIndex((w.id, w.lat, w.lon) for w in warehouses.values())
    skus = db.execute("SELECT id, cold_chain FROM skus").fetchall()
    cached = _Cache(
        version, warehouses, index,
        frozenset(s[0] for s in skus if s[1]), frozenset(s[0] for s in skus),
    )
    _caches[db] = cached
    return cached


@dataclass(slots=True)
class _Loader:
    """A partial snapshot that grows on demand (stock per (warehouse, sku) pair)."""

    db: Database
    snapshot: Snapshot
    day: str
    handled_loaded: set[str] = field(default_factory=set)

    def load(self, warehouse_ids: Sequence[str], sku_ids: Iterable[str]) -> None:
        """Make sure the stock of every (warehouse, sku) pair is in the snapshot."""
        skus = sorted(set(sku_ids))
        self.load_pairs([(w, s) for w in warehouse_ids for s in skus])

    def load_all_warehouses(self, sku_ids: Iterable[str]) -> None:
        """Every warehouse's stock of ``sku_ids``; the snapshot is then complete for them."""
        skus = sorted(set(sku_ids))
        stock = self.snapshot.stock
        for start in range(0, len(skus), 900):
            chunk = skus[start:start + 900]
            for wid, sid, on_hand, reserved, safety in self.db.execute(
                "SELECT warehouse_id, sku_id, on_hand, reserved, safety_stock FROM inventory "
                f"WHERE sku_id IN ({','.join('?' * len(chunk))})", chunk,
            ).fetchall():
                stock.setdefault(wid, {})[sid] = StockState(on_hand, reserved, safety)
        warehouses = self.snapshot.warehouses
        for wh in warehouses.values():
            wh.handled_today = 0
        for wid, handled in self.db.execute(
            "SELECT warehouse_id, handled FROM warehouse_load WHERE day = ?", [self.day]
        ).fetchall():
            if wid in warehouses:
                warehouses[wid].handled_today = handled
        self.snapshot.loaded = None

    def load_pairs(self, pairs: Iterable[tuple[str, str]]) -> None:
        loaded = self.snapshot.loaded
        assert loaded is not None
        missing = sorted({p for p in pairs if p not in loaded})
        if not missing:
            return
        stock = self.snapshot.stock
        for start in range(0, len(missing), 4000):
            chunk = missing[start:start + 4000]
            marks = ",".join(["(?, ?)"] * len(chunk))
            # a join (CROSS JOIN keeps this order) looks each pair up by primary key;
            # "(warehouse_id, sku_id) IN (VALUES ...)" would scan the table
            rows = self.db.execute(
                f"WITH p(w, s) AS (VALUES {marks}) SELECT i.warehouse_id, i.sku_id, i.on_hand, "
                "i.reserved, i.safety_stock FROM p CROSS JOIN inventory i "
                "ON i.warehouse_id = p.w AND i.sku_id = p.s",
                [x for pair in chunk for x in pair],
            ).fetchall()
            for wid, sid, on_hand, reserved, safety in rows:
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


@dataclass(slots=True)
class _StockMemo:
    """A small region's stock as this connection last committed it (see submit_orders)."""

    token: tuple[int, int, tuple[int, int], str]
    stock: dict[str, dict[str, StockState]]
    skus: set[str]


# Per connection; taken out while a batch runs, so a failed batch leaves none behind.
_stock_memos: weakref.WeakKeyDictionary[Database, _StockMemo] = weakref.WeakKeyDictionary()


def _memo_token(db: Database, day: str) -> tuple[int, int, tuple[int, int], str]:
    """What must be unchanged for a memo to still be the database's stock: no other
    connection committed (``data_version``), this connection wrote nothing else
    (``total_changes``), same warehouses/SKUs (meta versions) and the same day. Read inside
    the write transaction, where no other connection can commit."""
    data_version = db.conn.execute("PRAGMA data_version").fetchone()[0]
    return int(data_version), db.conn.total_changes, _versions(db), day


def _partial_snapshot(db: Database, now: datetime) -> _Loader:
    cache = _cache(db)
    snapshot = Snapshot(cache.warehouses, {}, cache.cold_skus, loaded=set(), index=cache.index)
    return _Loader(db, snapshot, _day(now))


def load_snapshot(db: Database, *, now: datetime, sku_ids: Iterable[str] | None = None) -> Snapshot:
    """A complete snapshot (every warehouse; stock of ``sku_ids`` or of every SKU).

    The warehouse objects are fresh copies, so callers may mutate them freely.
    """
    cache = _cache(db)
    warehouses = {
        w.id: WarehouseState(
            id=w.id, lat=w.lat, lon=w.lon, cold_chain=w.cold_chain, available=w.available,
            unavailable_reason=w.unavailable_reason, paused=w.paused,
            daily_capacity=w.daily_capacity, capacity_override=w.capacity_override, name=w.name,
        )
        for w in cache.warehouses.values()
    }
    for wid, handled in db.execute(
        "SELECT warehouse_id, handled FROM warehouse_load WHERE day = ?", [_day(now)]
    ).fetchall():
        if wid in warehouses:
            warehouses[wid].handled_today = handled
    stock: dict[str, dict[str, StockState]] = {}
    query = "SELECT warehouse_id, sku_id, on_hand, reserved, safety_stock FROM inventory"
    params: list[str] = []
    if sku_ids is not None:
        params = sorted(set(sku_ids))
        if not params:
            return Snapshot(warehouses, stock, cache.cold_skus, index=cache.index)
        query += f" WHERE sku_id IN ({','.join('?' * len(params))})"
    for wid, sid, on_hand, reserved, safety in db.execute(query, params).fetchall():
        stock.setdefault(wid, {})[sid] = StockState(on_hand, reserved, safety)
    return Snapshot(warehouses, stock, cache.cold_skus, index=cache.index)


# -- writing decisions ----------------------------------------------------------------
TRACE_COLUMNS = CandidateTrace._fields


# the column names are the same in every trace: encoded once, not once per decision
_TRACE_HEAD = '{"columns":' + to_json(TRACE_COLUMNS) + ',"rows":'


def trace_json(decision: Decision) -> str:
    """The candidate trace as stored: one JSON row per candidate, columns in TRACE_COLUMNS.

    ``{"columns", "rows", "examined", "farthest_examined_km", "omitted"}``, the same text
    ``to_json`` gives for that dict, built without re-encoding the constant column names.
    """
    return (f"{_TRACE_HEAD}{to_json(decision.candidates)},\"examined\":{decision.examined:d},"
            f"\"farthest_examined_km\":{to_json(decision.farthest_examined_km)},"
            f"\"omitted\":{decision.omitted:d}}}")


def trace_candidates(trace: dict[str, Any]) -> list[dict[str, Any]]:
    """Stored trace rows back to one dict per candidate."""
    columns = trace.get("columns", TRACE_COLUMNS)
    return [dict(zip(columns, row, strict=True)) for row in trace.get("rows", [])]


@dataclass(slots=True)
class _Writes:
    """Rows collected during a batch and written with one executemany per statement."""

    orders: list[tuple[Any, ...]] = field(default_factory=list)
    lines: list[tuple[Any, ...]] = field(default_factory=list)
    events: list[tuple[Any, ...]] = field(default_factory=list)
    decisions: list[tuple[Any, ...]] = field(default_factory=list)
    reservations: list[tuple[Any, ...]] = field(default_factory=list)
    reserve: dict[tuple[str, str], int] = field(default_factory=lambda: defaultdict(int))
    load: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    alerts: list[tuple[Any, ...]] = field(default_factory=list)

    def hold_reservations(self, db: Database) -> None:
        """Insert ``reservations`` rows ``(order_id, line_no, sku_id, warehouse_id, qty, at)``
        as held."""
        db.conn.executemany(
            "INSERT INTO reservations (order_id, line_no, sku_id, warehouse_id, qty, status, "
            "created_at, updated_at) VALUES (?, ?, ?, ?, ?, 'held', ?, ?)",
            [(*r, r[-1]) for r in self.reservations],
        )

    def reserve_stock(self, db: Database, at: str) -> None:
        """Add to ``reserved``, refusing (and so rolling back) anything beyond sellable."""
        rows = [(qty, at, wid, sid, qty) for (wid, sid), qty in self.reserve.items()]
        if not rows:
            return
        cur = db.conn.executemany(
            "UPDATE inventory SET reserved = reserved + ?, updated_at = ? "
            "WHERE warehouse_id = ? AND sku_id = ? "
            "AND on_hand - reserved - safety_stock >= ?",
            rows,
        )
        if cur.rowcount != len(rows):
            message = "stock changed under the allocation: refusing to oversell"
            raise StoreError(message)

    def add_load(self, db: Database, day: str) -> None:
        if self.load:
            db.conn.executemany(
                "INSERT INTO warehouse_load (warehouse_id, day, handled) VALUES (?, ?, ?) "
                "ON CONFLICT (warehouse_id, day) "
                "DO UPDATE SET handled = handled + excluded.handled",
                [(wid, day, n) for wid, n in self.load.items()],
            )


@dataclass(frozen=True, slots=True)
class OrderOutcome:
    """What ``POST /orders`` answers per order."""

    order_id: str
    channel: str
    channel_order_id: str
    created: bool  # False: the same (channel, channel_order_id) was already stored
    status: str
    warehouse_id: str | None
    tier: int
    eta: str | None
    reason: str | None
    skewed: bool


def _skew_ms(order: OrderIn, received_at: datetime) -> int | None:
    if order.client_submitted_at is None:
        return None
    return round((received_at - order.client_submitted_at).total_seconds() * 1000)


def check_references(db: Database, orders: Sequence[OrderIn]) -> None:
    """Raise :class:`NotFound` naming the first unknown SKU or store."""
    known = _cache(db).skus
    stores: set[str] = set()
    for order in orders:
        for line in order.lines:
            if line.sku_id not in known:
                raise NotFound("sku", line.sku_id)
        if order.store_id is not None:
            stores.add(order.store_id)
    if stores:
        wanted = sorted(stores)
        found = {
            r[0] for r in db.execute(
                f"SELECT id FROM stores WHERE id IN ({','.join('?' * len(wanted))})", wanted
            ).fetchall()
        }
        for store_id in wanted:
            if store_id not in found:
                raise NotFound("store", store_id)


# (database, [(order id, order as received)] of the new orders, now) -> None
StoredHook = Callable[[Database, Sequence[tuple[str, OrderIn]], datetime], None]


def submit_orders(
    db: Database,
    orders: Sequence[OrderIn],
    *,
    now: datetime,
    config: AllocationConfig,
    skew_threshold_s: float = 3.0,
    on_stored: StoredHook | None = None,
) -> list[OrderOutcome]:
    """Store and allocate ``orders`` in one transaction; idempotent per (channel, id).

    Unknown SKUs or stores reject the whole batch (:class:`NotFound`) before anything is
    written. Returns one outcome per input order, in input order. ``on_stored`` writes
    what other modules keep about the new orders (the customer's contact, payment
    deadlines) inside the same transaction: all of it or none.
    """
    received = iso(now)
    day = _day(now)
    outcomes: dict[int, OrderOutcome] = {}
    # A batch that owns its transaction may reuse the stock its previous batch committed
    # (a nested one could still be rolled back by its caller, so it never does).
    owns_transaction = not db.conn.in_transaction
    memo = _stock_memos.pop(db, None)
    kept: _StockMemo | None = None
    with write_transaction(db):
        check_references(db, orders)
        requests: list[tuple[int, OrderIn, OrderRequest, int | None, bool]] = []
        seen: dict[tuple[str, str], int] = {}
        repeats: list[tuple[int, int]] = []  # (position, position of its first copy)
        stored = _stored_orders(db, orders)
        for pos, order in enumerate(orders):
            key = (order.channel.value, order.channel_order_id)
            row = stored.get(key)
            if row is not None:
                outcomes[pos] = OrderOutcome(row[0], key[0], key[1], False, row[1], row[2],
                                             row[3], row[4], row[5], bool(row[6]))
                continue
            if key in seen:
                repeats.append((pos, seen[key]))
                continue
            seen[key] = pos
            skew = _skew_ms(order, now)
            skewed = skew is not None and abs(skew) > skew_threshold_s * 1000
            request = OrderRequest(
                order_id=f"o_{uuid.uuid4().hex[:20]}", channel=key[0],
                lines=tuple(Line(li.sku_id, li.qty) for li in order.lines),
                lat=order.lat, lon=order.lon, received_at=now,
            )
            requests.append((pos, order, request, skew, skewed))
        loader = _partial_snapshot(db, now)
        index = loader.snapshot.index
        if requests and index is not None and len(index) <= _INITIAL_LOAD:
            # a small region: one query loads every warehouse's stock of the whole batch,
            # after which the snapshot is complete for every SKU the batch asks about;
            # stock this connection committed last time and nobody changed since is reused
            skus = {li.sku_id for r in requests for li in r[2].lines}
            if owns_transaction:
                if memo is None or memo.token != _memo_token(db, day):
                    memo = _StockMemo(_memo_token(db, day), {}, set())
                loader.snapshot.stock = memo.stock
                loader.load_all_warehouses(skus - memo.skus)
                memo.skus |= skus
                kept = memo
            else:
                loader.load_all_warehouses(skus)
        else:
            loader.preload([r[2] for r in requests], config)
        writes = _Writes()
        by_id = {r[2].order_id: r for r in requests}
        for request in engine.batch_order([r[2] for r in requests], config):
            decision = loader.allocate(request, config)
            if decision.allocated:
                engine.apply(decision, loader.snapshot)
            pos, order, _, skew, skewed = by_id[request.order_id]
            outcomes[pos] = _stage_new_order(writes, order, request, decision, skew, skewed,
                                             received)
        _flush_new_orders(db, writes, received, day)
        if on_stored is not None and requests:
            on_stored(db, [(outcomes[r[0]].order_id, r[1]) for r in requests], now)
        if kept is not None:
            # the snapshot had every reservation of this batch applied, as the SQL did
            kept.token = _memo_token(db, day)
        for pos, first_pos in repeats:
            first = outcomes[first_pos]
            outcomes[pos] = OrderOutcome(
                first.order_id, first.channel, first.channel_order_id, False, first.status,
                first.warehouse_id, first.tier, first.eta, first.reason, first.skewed,
            )
    if kept is not None:
        _stock_memos[db] = kept  # committed: the memo is the database's stock now
    return [outcomes[i] for i in range(len(orders))]


def _stored_orders(
    db: Database, orders: Sequence[OrderIn]
) -> dict[tuple[str, str], tuple[Any, ...]]:
    """Already stored orders among ``orders`` (idempotency), one query per channel and chunk."""
    by_channel: dict[str, list[str]] = defaultdict(list)
    for order in orders:
        by_channel[order.channel.value].append(order.channel_order_id)
    found: dict[tuple[str, str], tuple[Any, ...]] = {}
    for channel, ids in by_channel.items():
        for start in range(0, len(ids), 500):
            chunk = ids[start:start + 500]
            for row in db.execute(
                "SELECT channel_order_id, id, status, warehouse_id, tier, eta, status_reason, "
                f"skewed FROM orders WHERE channel = ? AND channel_order_id IN "
                f"({','.join('?' * len(chunk))})", [channel, *chunk],
            ).fetchall():
                found[(channel, row[0])] = tuple(row[1:])
    return found


def line_warehouses(decision: Decision, lines: Sequence[Line]) -> list[str | None]:
    """The warehouse each of ``lines`` is taken from (None: not allocated). A split puts
    each line where its part says; parts hold the very ``Line`` objects of the request."""
    if len(decision.parts) == 1:
        return [decision.parts[0].warehouse_id] * len(lines)
    placed: list[str | None] = [None] * len(lines)
    for part in decision.parts:
        for line in part.lines:
            for no, own in enumerate(lines):
                if own is line and placed[no] is None:
                    placed[no] = part.warehouse_id
                    break
    return placed


def _stage_new_order(
    writes: _Writes, order: OrderIn, request: OrderRequest, decision: Decision,
    skew: int | None, skewed: bool, received: str,
) -> OrderOutcome:
    oid = request.order_id
    status = "allocated" if decision.allocated else "unallocated"
    eta = iso(decision.eta) if decision.eta is not None else None
    wid = decision.warehouse_id
    items = to_json([{"sku_id": li.sku_id, "qty": li.qty} for li in request.lines])
    submitted = iso(order.client_submitted_at) if order.client_submitted_at else None
    writes.orders.append((
        oid, request.channel, order.channel_order_id, order.store_id, order.customer_id, items,
        order.lat, order.lon, submitted, received, skew, int(skewed), decision.tier, status,
        decision.reason, wid, decision.distance_km, eta, received if decision.allocated else None,
        received,
    ))
    line_wh = line_warehouses(decision, request.lines)
    for no, line in enumerate(request.lines):
        at_wh = line_wh[no]
        writes.lines.append((oid, no, line.sku_id, line.qty, at_wh))
        if at_wh is not None:
            writes.reservations.append((oid, no, line.sku_id, at_wh, line.qty, received))
            writes.reserve[(at_wh, line.sku_id)] += line.qty
    for part in decision.parts:
        writes.load[part.warehouse_id] += 1
    writes.events.append((oid, "received", received, to_json(
        {"skew_ms": skew, "skewed": skewed, "client_submitted_at": submitted})))
    if decision.allocated:
        detail = {"warehouse_id": wid, "distance_km": decision.distance_km, "eta": eta,
                  "tier": decision.tier,
                  "parts": [p.warehouse_id for p in decision.parts]}
        writes.events.append((oid, "allocated", received, to_json(detail)))
    else:
        writes.events.append((oid, "unallocated", received,
                              to_json({"reason": decision.reason})))
        writes.alerts.append((received, "unallocated", oid, None, None,
                              f"order {oid} unallocated: {decision.reason}"))
    writes.decisions.append((
        oid, received, "allocate", None, decision.rule_set_version,
        "allocated" if decision.allocated else "unallocated",
        to_json([p.warehouse_id for p in decision.parts]), decision.reason, decision.tier,
        int(decision.need_cold_chain), trace_json(decision),
    ))
    return OrderOutcome(oid, request.channel, order.channel_order_id, True, status, wid,
                        decision.tier, eta, decision.reason, skewed)


_INSERT_DECISION = (
    "INSERT INTO allocation_decisions (order_id, decided_at, kind, incident_id, "
    "rule_set_version, outcome, warehouse_ids, reason, tier, need_cold_chain, trace) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_INSERT_EVENT = "INSERT INTO order_events (order_id, kind, at, detail) VALUES (?, ?, ?, ?)"
_INSERT_ALERT = (
    "INSERT INTO alerts (at, kind, order_id, warehouse_id, incident_id, message) "
    "VALUES (?, ?, ?, ?, ?, ?)"
)


def _flush_new_orders(db: Database, writes: _Writes, at: str, day: str) -> None:
    conn = db.conn
    conn.executemany(
        "INSERT INTO orders (id, channel, channel_order_id, store_id, customer_id, items, lat, "
        "lon, client_submitted_at, received_at, skew_ms, skewed, tier, status, status_reason, "
        "warehouse_id, distance_km, eta, allocated_at, updated_at) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        writes.orders,
    )
    conn.executemany(
        "INSERT INTO order_lines (order_id, line_no, sku_id, qty, warehouse_id) "
        "VALUES (?, ?, ?, ?, ?)", writes.lines,
    )
    writes.hold_reservations(db)
    writes.reserve_stock(db, at)
    writes.add_load(db, day)
    conn.executemany(_INSERT_EVENT, writes.events)
    conn.executemany(_INSERT_DECISION, writes.decisions)
    if writes.alerts:
        conn.executemany(_INSERT_ALERT, writes.alerts)


# -- reading --------------------------------------------------------------------------
def get_order(db: Database, order_id: str) -> dict[str, Any]:
    """The order row (items decoded) plus its ``lines`` and ``timeline`` (events in order)."""
    db.conn.row_factory = sqlite3.Row
    try:
        row = db.conn.execute("SELECT * FROM orders WHERE id = ?", [order_id]).fetchone()
        if row is None:
            raise NotFound("order", order_id)
        order = dict(row)
        order["items"] = json.loads(order["items"])
        order["skewed"] = bool(order["skewed"])
        order["lines"] = [
            dict(r) for r in db.conn.execute(
                "SELECT line_no, sku_id, qty, warehouse_id FROM order_lines WHERE order_id = ? "
                "ORDER BY line_no", [order_id],
            ).fetchall()
        ]
        order["timeline"] = [
            {"kind": r["kind"], "label": TIMELINE_LABELS.get(r["kind"], r["kind"]),
             "at": r["at"], "detail": json.loads(r["detail"])}
            for r in db.conn.execute(
                "SELECT kind, at, detail FROM order_events WHERE order_id = ? ORDER BY id",
                [order_id],
            ).fetchall()
        ]
    finally:
        db.conn.row_factory = None
    return order


def get_warehouse(db: Database, warehouse_id: str) -> dict[str, Any]:
    db.conn.row_factory = sqlite3.Row
    try:
        row = db.conn.execute("SELECT * FROM warehouses WHERE id = ?", [warehouse_id]).fetchone()
    finally:
        db.conn.row_factory = None
    if row is None:
        raise NotFound("warehouse", warehouse_id)
    out = dict(row)
    for flag in ("cold_chain", "capacity_override", "available", "paused"):
        out[flag] = bool(out[flag])
    return out


def decisions_of(db: Database, order_id: str) -> list[dict[str, Any]]:
    """Every allocation decision of an order, oldest first, trace decoded."""
    db.conn.row_factory = sqlite3.Row
    try:
        rows = db.conn.execute(
            "SELECT * FROM allocation_decisions WHERE order_id = ? ORDER BY id", [order_id]
        ).fetchall()
    finally:
        db.conn.row_factory = None
    out = []
    for row in rows:
        item = dict(row)
        item["trace"] = json.loads(item["trace"])
        item["warehouse_ids"] = json.loads(item["warehouse_ids"])
        item["need_cold_chain"] = bool(item["need_cold_chain"])
        out.append(item)
    return out


@dataclass(frozen=True, slots=True)
class UnshippedOrder:
    order_id: str
    channel: str
    channel_order_id: str
    store_id: str | None
    customer_id: str | None
    tier: int
    received_at: str
    status: str
    warehouse_id: str | None


def unshipped_orders(db: Database, warehouse_id: str) -> list[UnshippedOrder]:
    """Orders with stock still held at ``warehouse_id`` (not yet shipped), tier then age."""
    rows = db.execute(
        "SELECT DISTINCT o.id, o.channel, o.channel_order_id, o.store_id, o.customer_id, "
        "o.tier, o.received_at, o.status, o.warehouse_id FROM reservations r "
        "JOIN orders o ON o.id = r.order_id "
        "WHERE r.warehouse_id = ? AND r.status = 'held' AND o.status = 'allocated' "
        "ORDER BY o.tier, o.received_at, o.id",
        [warehouse_id],
    ).fetchall()
    return [UnshippedOrder(*row) for row in rows]


# -- warehouse state and events -----------------------------------------------------
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
            "WHERE id = ? AND (available != ? OR unavailable_reason IS NOT ?)",
            [int(available), None if available else reason, iso(now), warehouse_id,
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
            db.execute(
                "UPDATE warehouses SET paused = ?, unavailable_reason = "
                "CASE WHEN ? THEN ? ELSE unavailable_reason END, updated_at = ? WHERE id = ?",
                [int(paused), int(paused), reason, iso(now), warehouse_id],
            )
    return changed


def append_order_event(
    db: Database, order_id: str, kind: str, at: datetime, detail: dict[str, Any] | None = None
) -> int:
    """Append one event to an order's timeline (no status change); returns the event id."""
    with write_transaction(db):
        if db.execute("SELECT 1 FROM orders WHERE id = ?", [order_id]).fetchone() is None:
            raise NotFound("order", order_id)
        cur = db.conn.execute(
            _INSERT_EVENT,
            [order_id, kind, iso(at), json.dumps(detail or {}, ensure_ascii=False, default=str)],
        )
    return int(cur.lastrowid or 0)


def record_status_event(
    db: Database, order_id: str, kind: str, at: datetime, detail: dict[str, Any] | None = None
) -> str:
    """A warehouse or courier update moving the order's status; returns the new status.

    Impossible transitions raise :class:`Conflict`. ``shipped`` consumes the held stock
    (on hand and reserved both drop); ``cancelled`` releases it.
    """
    if kind not in TIMELINE_LABELS or kind in ("received", "allocated", "rerouted",
                                                "unallocated", "needs_attention"):
        message = f"unknown event kind {kind!r}: expected shipped, in_transit, delivered, cancelled"
        raise Conflict(message)
    stamp = iso(at)
    with write_transaction(db):
        row = db.execute("SELECT status FROM orders WHERE id = ?", [order_id]).fetchone()
        if row is None:
            raise NotFound("order", order_id)
        status = row[0]
        if kind not in TRANSITIONS.get(status, ()):
            message = f"order {order_id} is {status}: cannot become {kind}"
            raise Conflict(message)
        held = db.execute(
            "SELECT id, warehouse_id, sku_id, qty FROM reservations "
            "WHERE order_id = ? AND status = 'held'", [order_id],
        ).fetchall()
        if kind == "shipped":
            db.conn.executemany(
                "UPDATE inventory SET on_hand = on_hand - ?, reserved = reserved - ?, "
                "updated_at = ? WHERE warehouse_id = ? AND sku_id = ?",
                [(q, q, stamp, w, s) for _, w, s, q in held],
            )
            db.conn.executemany(
                "UPDATE reservations SET status = 'shipped', updated_at = ? WHERE id = ?",
                [(stamp, r[0]) for r in held],
            )
        elif kind == "cancelled":
            db.conn.executemany(
                "UPDATE inventory SET reserved = reserved - ?, updated_at = ? "
                "WHERE warehouse_id = ? AND sku_id = ?",
                [(q, stamp, w, s) for _, w, s, q in held],
            )
            db.conn.executemany(
                "UPDATE reservations SET status = 'released', updated_at = ? WHERE id = ?",
                [(stamp, r[0]) for r in held],
            )
        db.execute("UPDATE orders SET status = ?, updated_at = ? WHERE id = ?",
                   [kind, stamp, order_id])
        db.conn.execute(_INSERT_EVENT, [order_id, kind, stamp,
                                        json.dumps(detail or {}, ensure_ascii=False, default=str)])
    return kind


def skew_count(db: Database) -> int:
    return int(db.execute("SELECT count(*) FROM orders WHERE skewed = 1").fetchone()[0])


def add_alert(
    db: Database, kind: str, message: str, at: datetime, *, order_id: str | None = None,
    warehouse_id: str | None = None, incident_id: str | None = None,
) -> None:
    db.conn.execute(_INSERT_ALERT, [iso(at), kind, order_id, warehouse_id, incident_id, message])
