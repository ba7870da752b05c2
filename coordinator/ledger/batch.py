"""The :class:`Ledger`: the order-side rows of one transaction, written by one flush in
an order that keeps stock honest (see :mod:`coordinator.ledger`)."""

from __future__ import annotations

import threading
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from coordinator.allocation_model import Decision
from coordinator.db import Cursor, Database, dialect, pipelined
from coordinator.errors import StoreError
from coordinator.ledger import statements as sql
from coordinator.ledger.encoding import to_json, trace_json
from coordinator.pg_sql import MULTI_ROW_MIN
from protocols.timestamps import stamp, utc_day


@dataclass(slots=True)
class Ledger:
    """Order-side rows of one transaction, all stamped ``at``; see the module doc.

    Build one per transaction (``Ledger(now)``), record with its methods, then
    :meth:`flush` once inside the write transaction.
    """

    now: datetime
    at: str = ""
    day: str = ""
    orders: list[tuple[Any, ...]] = field(default_factory=list)
    lines: list[tuple[Any, ...]] = field(default_factory=list)
    events: list[tuple[Any, ...]] = field(default_factory=list)
    decisions: list[tuple[Any, ...]] = field(default_factory=list)
    alerts: list[tuple[Any, ...]] = field(default_factory=list)
    reservations: list[tuple[Any, ...]] = field(default_factory=list)
    reserve: dict[tuple[str, str], int] = field(default_factory=lambda: defaultdict(int))
    release: dict[tuple[str, str], int] = field(default_factory=lambda: defaultdict(int))
    load: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    reservation_moves: list[tuple[Any, ...]] = field(default_factory=list)
    reservation_releases: list[tuple[Any, ...]] = field(default_factory=list)
    line_moves: list[tuple[Any, ...]] = field(default_factory=list)
    placements: list[tuple[Any, ...]] = field(default_factory=list)
    stuck: list[tuple[Any, ...]] = field(default_factory=list)
    incidents: list[tuple[Any, ...]] = field(default_factory=list)
    incident_orders: list[tuple[Any, ...]] = field(default_factory=list)
    incident_moves: list[tuple[str, str, str, int, list[str] | None]] = field(
        default_factory=list)
    # guarded writes whose row counts are checked when the pipeline is synced (flush)
    _guards: list[tuple[Cursor, int, str]] | None = None

    def __post_init__(self) -> None:
        self.at = stamp(self.now)
        self.day = utc_day(self.now)

    # -- placing ---------------------------------------------------------------------
    def add_order(self, row: tuple[Any, ...]) -> None:
        """A new order row, columns as in :data:`ORDER_COLUMNS`."""
        self.orders.append(row)

    def add_line(self, order_id: str, line_no: int, sku_id: str, qty: int,
                 warehouse_id: str | None) -> None:
        self.lines.append((order_id, line_no, sku_id, qty, warehouse_id))

    def hold(self, order_id: str, line_no: int, sku_id: str, warehouse_id: str,
             qty: int) -> None:
        """A new held reservation of ``qty`` units of a line at ``warehouse_id``."""
        self.reservations.append((order_id, line_no, sku_id, warehouse_id, qty, self.at,
                                  self.at))
        self.reserve[(warehouse_id, sku_id)] += qty

    def count_load(self, warehouse_id: str, orders: int = 1) -> None:
        """``orders`` more orders handled today at ``warehouse_id`` (daily capacity)."""
        self.load[warehouse_id] += orders

    def place_line(self, order_id: str, line_no: int, warehouse_id: str) -> None:
        """An existing line now ships from ``warehouse_id``."""
        self.line_moves.append((warehouse_id, order_id, line_no))

    def place_waiting(self, order_id: str, warehouse_id: str, distance_km: float, eta: str,
                      tier: int) -> None:
        """A waiting order (unallocated / needs attention) is allocated now; guarded on
        its status at flush."""
        self.placements.append((warehouse_id, distance_km, eta, tier, self.at, self.at,
                                order_id))

    # -- moving and releasing -------------------------------------------------------
    def take_stock(self, warehouse_id: str, sku_id: str, qty: int) -> None:
        """``qty`` more units of ``sku_id`` are held at ``warehouse_id`` (guarded), by a
        reservation that :meth:`move_incident_orders` moves there."""
        self.reserve[(warehouse_id, sku_id)] += qty

    def move_reservation(self, reservation_id: int, order_id: str, line_no: int,
                         sku_id: str, qty: int, to_warehouse: str) -> None:
        """A held reservation (and its line) moves to ``to_warehouse``; the stock there
        is taken (guarded). Release the old warehouse's units with :meth:`release_stock`.
        Written after :meth:`move_incident_orders` (it corrects a split's lines)."""
        self.reservation_moves.append((to_warehouse, self.at, reservation_id))
        self.line_moves.append((to_warehouse, order_id, line_no))
        self.reserve[(to_warehouse, sku_id)] += qty

    def release_stock(self, warehouse_id: str, sku_id: str, qty: int) -> None:
        """``qty`` reserved units of ``sku_id`` at ``warehouse_id`` are given back."""
        self.release[(warehouse_id, sku_id)] += qty

    def release_reservation(self, reservation_id: int) -> None:
        self.reservation_releases.append((self.at, reservation_id))

    def mark_stuck(self, order_id: str, reason: str) -> None:
        """Nobody can take the order: ``needs_attention``, no warehouse."""
        self.stuck.append((reason, self.at, order_id))

    # -- incidents (a reroute) -------------------------------------------------------
    def open_incident(self, incident_id: str, warehouse_id: str, reason: str,
                      rule_set_version: str, moved: int, stuck: int) -> None:
        self.incidents.append((incident_id, warehouse_id, reason, self.at, rule_set_version,
                               moved, stuck))

    def incident_order(self, row: tuple[Any, ...]) -> None:
        """``(incident_id, order_id, outcome, old_warehouse_id, new_warehouse_id,
        distance_km, eta, tier, reason)``"""
        self.incident_orders.append(row)

    def move_incident_orders(self, incident_id: str, from_warehouse: str, reason: str,
                             held_lines: int, share: list[str] | None = None) -> None:
        """Every ``moved`` order of the incident gets its new warehouse, distance and ETA
        and a ``rerouted`` timeline entry, and its ``held_lines`` held reservations at
        ``from_warehouse`` and their order lines move to the new warehouse, in four
        set-based statements (a different count rolls everything back). The stock they
        take is recorded with :meth:`take_stock`; lines of a split that go elsewhere with
        :meth:`move_reservation`. ``share``: only these orders of the incident (a reroute
        written in shares, see :meth:`start_moves`); ``held_lines`` then counts theirs."""
        self.incident_moves.append((incident_id, from_warehouse, reason, held_lines, share))

    # -- timeline, decisions, alerts -------------------------------------------------
    def event(self, order_id: str, kind: str, detail: dict[str, Any]) -> None:
        self.events.append((order_id, kind, self.at, to_json(detail)))

    def decision(self, order_id: str, kind: str, decision: Decision, outcome: str, *,
                 incident_id: str | None = None, warehouse_ids: str | None = None) -> None:
        """The allocation decision with its candidate trace; ``warehouse_ids``: the parts'
        ids as JSON text when the caller has it already."""
        wids = warehouse_ids if warehouse_ids is not None else to_json(
            [p.warehouse_id for p in decision.parts])
        self.decisions.append((
            order_id, self.at, kind, incident_id, decision.rule_set_version, outcome, wids,
            decision.reason, decision.tier, int(decision.need_cold_chain), trace_json(decision),
        ))

    def alert(self, kind: str, message: str, *, order_id: str | None = None,
              warehouse_id: str | None = None, incident_id: str | None = None) -> None:
        self.alerts.append((self.at, kind, order_id, warehouse_id, incident_id, message))

    # -- writing ---------------------------------------------------------------------
    def flush(self, db: Database) -> None:
        """Write everything collected (see the module doc for the order).

        A small ledger (an intake batch) on PostgreSQL goes in one round trip instead of
        one per statement: the writer holds the write lock meanwhile, and on a shared
        machine each round trip waits for the server and then for this process to be
        scheduled again (measured: 0.3-0.8 ms each, seven of them per batch). The
        guarded statements' counts are checked after it, before anything commits."""
        if not self._pipelinable(db):
            self.write_before_moves(db)
            self.write_moves(db)
            self.write_after_moves(db)
            return
        self._guards = []
        try:
            with pipelined(db):
                self.write_before_moves(db)
                self.write_after_moves(db)
            guards = self._guards
        finally:
            self._guards = None
        for cur, expected, message in guards:
            _check(cur, expected, message)

    def _pipelinable(self, db: Database) -> bool:
        """PostgreSQL inside a transaction (a refused guard must undo the statements
        sent after it), no moves (their counts decide what follows), and few enough rows
        per statement that one statement per row costs less than COPY or multi-row
        statements, each a round trip of its own."""
        if dialect(db) != "postgresql" or self.incident_moves or not db.conn.in_transaction:
            return False
        return all(len(rows) < _PIPELINE_MAX for rows in (
            self.incidents, self.orders, self.lines, self.release, self.reserve,
            self.incident_orders, self.load, self.reservations, self.reservation_moves,
            self.reservation_releases, self.line_moves, self.placements, self.stuck,
            self.events, self.decisions, self.alerts))

    def _guard(self, cur: Cursor, expected: int, message: str) -> None:
        """Raise :class:`StoreError` (rolling back) unless ``cur`` changed ``expected``
        rows; in a pipeline, once it has been synced."""
        if self._guards is None:
            _check(cur, expected, message)
        else:
            self._guards.append((cur, expected, message))

    def start_moves(self, db: Database) -> MovesInFlight:
        """Write the rows the moves need now, then the moves themselves on a writer
        thread; :meth:`MovesInFlight.finish` waits for them and writes the rest.

        Why: each move is one long statement that the database runs with the GIL
        released (SQLite in this process, PostgreSQL in its own), while deciding and
        encoding the next share of a reroute is pure Python: side by side instead of one
        after the other. Until ``finish`` nothing else may use ``db`` (the writer thread
        has the connection; still this transaction). Nothing row by row runs on that
        thread: a statement per row would wait for the GIL after each row."""
        self.write_before_moves(db)
        return MovesInFlight(self, db)

    def hand_stock_to(self, other: Ledger) -> None:
        """Leave the stock taken and released, and the daily load, to ``other``: written
        once by its flush however many shares a reroute is written in."""
        for key, qty in self.release.items():
            other.release[key] += qty
        for key, qty in self.reserve.items():
            other.reserve[key] += qty
        for wid, n in self.load.items():
            other.load[wid] += n
        self.release.clear()
        self.reserve.clear()
        self.load.clear()

    def write_before_moves(self, db: Database) -> None:
        conn = db.conn
        at = self.at
        if self.incidents:
            conn.executemany(
                "INSERT INTO incidents (id, warehouse_id, reason, started_at, "
                "rule_set_version, moved, stuck) VALUES (?, ?, ?, ?, ?, ?, ?)", self.incidents)
        if self.orders:
            conn.executemany(sql.INSERT_ORDER, self.orders)
        if self.lines:
            conn.executemany(
                "INSERT INTO order_lines (order_id, line_no, sku_id, qty, warehouse_id) "
                "VALUES (?, ?, ?, ?, ?)", self.lines)
        if self.release:
            conn.executemany(
                "UPDATE inventory SET reserved = reserved - ?, updated_at = ? "
                "WHERE warehouse_id = ? AND sku_id = ?",
                [(qty, at, wid, sku) for (wid, sku), qty in sorted(self.release.items())])
        self._reserve_stock(db)
        if self.incident_orders:
            conn.executemany(
                "INSERT INTO incident_orders (incident_id, order_id, outcome, "
                "old_warehouse_id, new_warehouse_id, distance_km, eta, tier, reason) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", self.incident_orders)

    def write_moves(self, db: Database) -> None:
        conn = db.conn
        at = self.at
        name = dialect(db)
        for incident_id, from_warehouse, reason, held_lines, share in self.incident_moves:
            lines_sql, held_sql, orders_sql, events_sql = sql.MOVED[(name, share is not None)]
            params: dict[str, Any] = {"incident": incident_id, "at": at,
                                      "from_wh": from_warehouse, "reason": reason}
            if share is not None:
                params["share"] = to_json(share) if name == "sqlite" else share
            lines = conn.execute(lines_sql, params).rowcount
            held = conn.execute(held_sql, params).rowcount
            if lines != held_lines or held != held_lines:
                message = (f"reroute of {from_warehouse}: {held} held reservations and "
                           f"{lines} lines moved, {held_lines} expected: rolled back")
                raise StoreError(message)
            conn.execute(orders_sql, params)
            conn.execute(events_sql, params)

    def write_after_moves(self, db: Database) -> None:
        conn = db.conn
        if self.load:
            conn.executemany(
                "INSERT INTO warehouse_load (warehouse_id, day, handled) VALUES (?, ?, ?) "
                "ON CONFLICT (warehouse_id, day) "
                "DO UPDATE SET handled = warehouse_load.handled + excluded.handled",
                [(wid, self.day, n) for wid, n in self.load.items()])
        if self.reservations:
            conn.executemany(
                "INSERT INTO reservations (order_id, line_no, sku_id, warehouse_id, qty, "
                "status, created_at, updated_at) VALUES (?, ?, ?, ?, ?, 'held', ?, ?)",
                self.reservations)
        if self.reservation_moves:
            conn.executemany(
                "UPDATE reservations SET warehouse_id = ?, updated_at = ? WHERE id = ?",
                self.reservation_moves)
        if self.reservation_releases:
            conn.executemany(
                "UPDATE reservations SET status = 'released', updated_at = ? WHERE id = ?",
                self.reservation_releases)
        if self.line_moves:
            conn.executemany(
                "UPDATE order_lines SET warehouse_id = ? WHERE order_id = ? AND line_no = ?",
                self.line_moves)
        if self.placements:
            cur = conn.executemany(
                "UPDATE orders SET status = 'allocated', status_reason = NULL, "
                "warehouse_id = ?, distance_km = ?, eta = ?, tier = ?, allocated_at = ?, "
                "updated_at = ? WHERE id = ? AND status IN ('unallocated', 'needs_attention')",
                self.placements)
            self._guard(cur, len(self.placements),
                        "a waiting order changed status during its retry: rolled back")
        if self.stuck:
            conn.executemany(
                "UPDATE orders SET status = 'needs_attention', status_reason = ?, "
                "warehouse_id = NULL, distance_km = NULL, eta = NULL, updated_at = ? "
                "WHERE id = ?", self.stuck)
        if self.events:
            conn.executemany(sql.INSERT_EVENT, self.events)
        if self.decisions:
            conn.executemany(sql.INSERT_DECISION, self.decisions)
        if self.alerts:
            conn.executemany(sql.INSERT_ALERT, self.alerts)

    def _reserve_stock(self, db: Database) -> None:
        """Add to ``reserved``, refusing (and so rolling back) anything beyond sellable."""
        # rows in (warehouse, SKU) order: two writers never wait on each other's rows crosswise
        rows = [(qty, self.at, wid, sid, qty) for (wid, sid), qty in sorted(self.reserve.items())]
        if not rows:
            return
        cur = db.conn.executemany(
            "UPDATE inventory SET reserved = reserved + ?, updated_at = ? "
            "WHERE warehouse_id = ? AND sku_id = ? "
            "AND on_hand - reserved - safety_stock >= ?",
            rows,
        )
        self._guard(cur, len(rows), "stock changed under the allocation: refusing to oversell")


# fewer rows than this in every statement: a ledger flushes in one pipeline (see flush);
# more go as COPY or multi-row statements, fewer statements than rows
_PIPELINE_MAX = MULTI_ROW_MIN


def _check(cur: Cursor, expected: int, message: str) -> None:
    if cur.rowcount != expected:
        raise StoreError(message)


class MovesInFlight:
    """A ledger's moves being written on a writer thread (:meth:`Ledger.start_moves`)."""

    def __init__(self, ledger: Ledger, db: Database) -> None:
        self._ledger = ledger
        self._db = db
        self._failed: list[BaseException] = []
        self._thread = threading.Thread(target=self._write, name="ledger-moves", daemon=True)
        self._thread.start()

    def _write(self) -> None:
        try:
            self._ledger.write_moves(self._db)
        except BaseException as exc:  # raised in the caller's thread by finish()
            self._failed.append(exc)

    def wait(self) -> None:
        """Wait for the moves (also when the caller is failing: the connection must be
        free again before its transaction rolls back)."""
        self._thread.join()

    def finish(self) -> None:
        """Wait for the moves, raise what they raised, then write the rest."""
        self.wait()
        if self._failed:
            raise self._failed[0]
        self._ledger.write_after_moves(self._db)
