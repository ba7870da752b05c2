"""The ledger: every order-side write goes through here.

Placing an order (intake, retry), moving it (reroute), marking it stuck, releasing or
shipping its stock, its timeline events, its allocation decisions and the alerts they
raise: callers decide *what* happens (pure engine decisions), a :class:`Ledger` collects
the rows and :meth:`Ledger.flush` writes them with one ``executemany`` per statement (a
reroute's moves as set-based statements from its incident record), in an order that
keeps stock honest:

1. stock given back (``release``) before stock taken (``reserve``), so a reroute may move
   an order's units within one warehouse's sellable stock;
2. stock taken with a guarded ``UPDATE ... WHERE on_hand - reserved - safety_stock >= qty``:
   fewer rows updated than asked means someone else took it, and :class:`StoreError`
   rolls the whole transaction back (no oversell, ever);
3. a placement of a waiting order is guarded on its status the same way.

Callers hold :func:`coordinator.db.write_transaction` around reading the snapshot and
flushing, so nothing changes in between. Single status changes (shipped, cancelled,
courier updates) and timeline notes are functions below.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from coordinator.db import Database, dialect, write_transaction
from coordinator.engine import CandidateTrace, Decision, Line
from coordinator.errors import Conflict, NotFound, StoreError
from protocols.timestamps import stamp, utc_day

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
    "awaiting_payment": "待支付",
    "paid": "已支付",
}
# order status -> events that may follow it (warehouse and courier updates)
TRANSITIONS: dict[str, tuple[str, ...]] = {
    "allocated": ("shipped", "cancelled"),
    "shipped": ("in_transit", "delivered"),
    "in_transit": ("in_transit", "delivered"),
    "unallocated": ("cancelled",),
    "needs_attention": ("cancelled",),
    "awaiting_payment": ("cancelled",),
    "delivered": (),
    "cancelled": (),
}
WAITING_STATUSES = ("unallocated", "needs_attention")
# unpaid and holding no stock (customer.payment.unpaid_reserves_stock = false): no retry
# places it until its payment makes it unallocated
AWAITING_PAYMENT = "awaiting_payment"

# one encoder built once: json.dumps with options builds a new encoder on every call
to_json = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


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


# columns of a new order row, in the order :meth:`Ledger.add_order` takes them
ORDER_COLUMNS = (
    "id", "channel", "channel_order_id", "store_id", "customer_id", "items", "lat", "lon",
    "client_submitted_at", "received_at", "skew_ms", "skewed", "tier", "status",
    "status_reason", "warehouse_id", "distance_km", "eta", "allocated_at", "updated_at",
)
_INSERT_ORDER = (
    f"INSERT INTO orders ({', '.join(ORDER_COLUMNS)}) "
    f"VALUES ({', '.join('?' * len(ORDER_COLUMNS))})"
)
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
# the order's timeline entry, built inside the database from the incident record just
# written (both functions keep this key order): no per-order JSON encoding in Python
_MOVED_EVENTS = {
    dialect_name: (
        "INSERT INTO order_events (order_id, kind, at, detail) "
        f"SELECT order_id, 'rerouted', ?, {function}('incident_id', incident_id, "
        "'from', old_warehouse_id, 'to', new_warehouse_id, 'distance_km', distance_km, "
        f"'eta', eta, 'tier', tier, 'reason', {reason}){cast} "
        "FROM incident_orders WHERE incident_id = ? AND outcome = 'moved'"
    )
    for dialect_name, function, reason, cast in (
        ("sqlite", "json_object", "?", ""),
        ("postgresql", "json_build_object", "?::text", "::text"),
    )
}
# a moved order's held reservations at the failed warehouse, and their lines, go where
# the incident record says: set-based, as the orders are (a split's lines are then put
# where their part says, row by row)
_MOVED_LINES = (
    "UPDATE order_lines SET warehouse_id = io.new_warehouse_id "
    "FROM incident_orders AS io, reservations AS r "
    "WHERE io.incident_id = ? AND io.outcome = 'moved' AND r.order_id = io.order_id "
    "AND r.warehouse_id = ? AND r.status = 'held' "
    "AND order_lines.order_id = r.order_id AND order_lines.line_no = r.line_no"
)
_MOVED_RESERVATIONS = (
    "UPDATE reservations SET warehouse_id = io.new_warehouse_id, updated_at = ? "
    "FROM incident_orders AS io WHERE io.incident_id = ? AND io.outcome = 'moved' "
    "AND reservations.order_id = io.order_id AND reservations.warehouse_id = ? "
    "AND reservations.status = 'held'"
)
_MOVED_ORDERS = (
    "UPDATE orders SET warehouse_id = io.new_warehouse_id, distance_km = io.distance_km, "
    "eta = io.eta, updated_at = ? FROM incident_orders AS io "
    "WHERE io.incident_id = ? AND io.outcome = 'moved' AND orders.id = io.order_id "
    "AND orders.warehouse_id = ?"
)


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
    incident_moves: list[tuple[str, str, str, int]] = field(default_factory=list)

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

    def count_load(self, warehouse_id: str) -> None:
        """One more order handled today at ``warehouse_id`` (daily capacity)."""
        self.load[warehouse_id] += 1

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
                             held_lines: int) -> None:
        """Every ``moved`` order of the incident gets its new warehouse, distance and ETA
        and a ``rerouted`` timeline entry, and its ``held_lines`` held reservations at
        ``from_warehouse`` and their order lines move to the new warehouse, in four
        set-based statements (a different count rolls everything back). The stock they
        take is recorded with :meth:`take_stock`; lines of a split that go elsewhere with
        :meth:`move_reservation`."""
        self.incident_moves.append((incident_id, from_warehouse, reason, held_lines))

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
        """Write everything collected (see the module doc for the order)."""
        conn = db.conn
        at = self.at
        if self.incidents:
            conn.executemany(
                "INSERT INTO incidents (id, warehouse_id, reason, started_at, "
                "rule_set_version, moved, stuck) VALUES (?, ?, ?, ?, ?, ?, ?)", self.incidents)
        if self.orders:
            conn.executemany(_INSERT_ORDER, self.orders)
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
        for incident_id, from_warehouse, reason, held_lines in self.incident_moves:
            lines = conn.execute(_MOVED_LINES, (incident_id, from_warehouse)).rowcount
            held = conn.execute(_MOVED_RESERVATIONS, (at, incident_id, from_warehouse)).rowcount
            if lines != held_lines or held != held_lines:
                message = (f"reroute of {from_warehouse}: {held} held reservations and "
                           f"{lines} lines moved, {held_lines} expected: rolled back")
                raise StoreError(message)
            conn.execute(_MOVED_ORDERS, (at, incident_id, from_warehouse))
            conn.execute(_MOVED_EVENTS[dialect(db)], (at, reason, incident_id))
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
            if cur.rowcount != len(self.placements):
                message = "a waiting order changed status during its retry: rolled back"
                raise StoreError(message)
        if self.stuck:
            conn.executemany(
                "UPDATE orders SET status = 'needs_attention', status_reason = ?, "
                "warehouse_id = NULL, distance_km = NULL, eta = NULL, updated_at = ? "
                "WHERE id = ?", self.stuck)
        if self.events:
            conn.executemany(_INSERT_EVENT, self.events)
        if self.decisions:
            conn.executemany(_INSERT_DECISION, self.decisions)
        if self.alerts:
            conn.executemany(_INSERT_ALERT, self.alerts)

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
        if cur.rowcount != len(rows):
            message = "stock changed under the allocation: refusing to oversell"
            raise StoreError(message)


# -- single changes -------------------------------------------------------------------
def append_order_event(
    db: Database, order_id: str, kind: str, at: datetime, detail: dict[str, Any] | None = None
) -> int:
    """Append one event to an order's timeline (no status change); returns the event id."""
    with write_transaction(db):
        if db.execute("SELECT 1 FROM orders WHERE id = ?", [order_id]).fetchone() is None:
            raise NotFound("order", order_id)
        row = db.conn.execute(
            _INSERT_EVENT + " RETURNING id",
            [order_id, kind, stamp(at), json.dumps(detail or {}, ensure_ascii=False, default=str)],
        ).fetchone()
    return int(row[0])


def record_payment(db: Database, order_id: str, at: datetime,
                   detail: dict[str, Any] | None = None) -> str:
    """The order was paid: a ``paid`` timeline entry; an order that waited for it without
    stock (``awaiting_payment``) becomes ``unallocated`` for the retry to place. Returns
    the order's status before."""
    at_text = stamp(at)
    with write_transaction(db):
        row = db.execute("SELECT status FROM orders WHERE id = ?", [order_id]).fetchone()
        if row is None:
            raise NotFound("order", order_id)
        if row[0] == AWAITING_PAYMENT:
            db.execute("UPDATE orders SET status = 'unallocated', status_reason = ?, "
                       "updated_at = ? WHERE id = ?",
                       ["paid: waiting for a warehouse", at_text, order_id])
        db.conn.execute(_INSERT_EVENT, [order_id, "paid", at_text,
                                        json.dumps(detail or {}, ensure_ascii=False, default=str)])
    return str(row[0])


def record_status_event(
    db: Database, order_id: str, kind: str, at: datetime, detail: dict[str, Any] | None = None
) -> str:
    """A warehouse or courier update moving the order's status; returns the new status.

    Impossible transitions raise :class:`Conflict`. ``shipped`` consumes the held stock
    (on hand and reserved both drop); ``cancelled`` releases it.
    """
    if kind not in TIMELINE_LABELS or kind in ("received", "allocated", "rerouted",
                                                "unallocated", "needs_attention",
                                                AWAITING_PAYMENT, "paid"):
        message = f"unknown event kind {kind!r}: expected shipped, in_transit, delivered, cancelled"
        raise Conflict(message)
    at_text = stamp(at)
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
            "WHERE order_id = ? AND status = 'held' ORDER BY warehouse_id, sku_id", [order_id],
        ).fetchall()
        if kind == "shipped":
            db.conn.executemany(
                "UPDATE inventory SET on_hand = on_hand - ?, reserved = reserved - ?, "
                "updated_at = ? WHERE warehouse_id = ? AND sku_id = ?",
                [(q, q, at_text, w, s) for _, w, s, q in held],
            )
            db.conn.executemany(
                "UPDATE reservations SET status = 'shipped', updated_at = ? WHERE id = ?",
                [(at_text, r[0]) for r in held],
            )
        elif kind == "cancelled":
            db.conn.executemany(
                "UPDATE inventory SET reserved = reserved - ?, updated_at = ? "
                "WHERE warehouse_id = ? AND sku_id = ?",
                [(q, at_text, w, s) for _, w, s, q in held],
            )
            db.conn.executemany(
                "UPDATE reservations SET status = 'released', updated_at = ? WHERE id = ?",
                [(at_text, r[0]) for r in held],
            )
        db.execute("UPDATE orders SET status = ?, updated_at = ? WHERE id = ?",
                   [kind, at_text, order_id])
        db.conn.execute(_INSERT_EVENT, [order_id, kind, at_text,
                                        json.dumps(detail or {}, ensure_ascii=False, default=str)])
    return kind
