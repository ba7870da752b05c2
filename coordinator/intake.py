"""Order intake: store and allocate a batch in one transaction.

:func:`submit_orders` checks references, drops repeats (idempotent per channel and
channel order id), allocates with the engine from :func:`snapshots.snapshot_for` and
writes through the :class:`~coordinator.ledger.Ledger`, all in one write transaction.
Request threads reach it through :class:`coordinator.group_commit.GroupCommitter`.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from coordinator import engine, snapshots
from coordinator.db import Database, dialect, write_transaction
from coordinator.engine import Decision, Line, OrderRequest
from coordinator.errors import NotFound
from coordinator.ledger import AWAITING_PAYMENT, Ledger, line_warehouses, to_json
from coordinator.settings import AllocationConfig
from protocols.orders import OrderIn
from protocols.timestamps import stamp


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
    known = snapshots.known_skus(db)
    stores: set[str] = set()
    for order in orders:
        for line in order.lines:
            if line.sku_id not in known:
                raise NotFound("sku", line.sku_id)
        if order.store_id is not None:
            stores.add(order.store_id)
    if stores:
        wanted = sorted(stores)
        if dialect(db) == "postgresql":  # one statement text whatever the count: prepared
            rows = db.execute("SELECT id FROM stores WHERE id = ANY(?)", [wanted]).fetchall()
        else:
            rows = db.execute(
                f"SELECT id FROM stores WHERE id IN ({','.join('?' * len(wanted))})", wanted
            ).fetchall()
        found = {r[0] for r in rows}
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
    hold_unpaid: bool = False,
    joining: Callable[[], Sequence[OrderIn]] | None = None,
) -> list[OrderOutcome]:
    """Store and allocate ``orders`` in one transaction; idempotent per (channel, id).

    Unknown SKUs or stores reject the whole batch (:class:`NotFound`) before anything is
    written. Returns one outcome per input order, in input order. ``on_stored`` writes
    what other modules keep about the new orders (the customer's contact, payment
    deadlines) inside the same transaction: all of it or none. ``hold_unpaid``: an unpaid
    order is stored as ``awaiting_payment`` without allocating or reserving anything (the
    customer side's ``unpaid_reserves_stock = false``); its payment makes it a waiting
    order that the retry places. ``joining``: called once the write lock is held, the
    orders it returns join the batch (outcomes follow ``orders``'s, in its order).
    """
    ledger = Ledger(now)
    outcomes: dict[int, OrderOutcome] = {}
    # A batch that owns its transaction may reuse the stock its previous batch committed
    # (a nested one could still be rolled back by its caller, so it never does).
    owns_transaction = not db.conn.in_transaction
    with write_transaction(db):
        if joining is not None:
            orders = [*orders, *joining()]
        check_references(db, orders)
        requests: list[tuple[int, OrderIn, OrderRequest, int | None, bool]] = []
        held: list[tuple[str, OrderIn]] = []  # unpaid, stored without allocation
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
            if hold_unpaid and not order.paid:
                outcomes[pos] = _stage_awaiting_payment(ledger, order, request, skew, skewed,
                                                        config.tier_for(key[0]))
                held.append((outcomes[pos].order_id, order))
                continue
            requests.append((pos, order, request, skew, skewed))
        loader = snapshots.snapshot_for(db, [r[2] for r in requests], now=now, config=config,
                                        reuse_stock=owns_transaction)
        by_id = {r[2].order_id: r for r in requests}
        for request in engine.batch_order([r[2] for r in requests], config):
            decision = loader.allocate(request, config)
            if decision.allocated:
                engine.apply(decision, loader.snapshot)
            pos, order, _, skew, skewed = by_id[request.order_id]
            outcomes[pos] = _stage_new_order(ledger, order, request, decision, skew, skewed)
        ledger.flush(db)
        if on_stored is not None and (requests or held):
            on_stored(db, [(outcomes[r[0]].order_id, r[1]) for r in requests] + held, now)
        # the snapshot had every reservation of this batch applied, as the SQL did
        loader.written()
        for pos, first_pos in repeats:
            first = outcomes[first_pos]
            outcomes[pos] = OrderOutcome(
                first.order_id, first.channel, first.channel_order_id, False, first.status,
                first.warehouse_id, first.tier, first.eta, first.reason, first.skewed,
            )
    loader.committed()
    return [outcomes[i] for i in range(len(orders))]


# The keys as two arrays, one lookup per key (LATERAL ... LIMIT 1 cannot be turned into a
# join): the statement is prepared, and a plain join's generic plan, made while the table
# was small, hashed the whole orders table on every batch ever after (measured: 2.3 ms
# per batch at 30,000 orders and growing, against 0.1 ms for the key lookups).
STORED_ORDERS_PG = (
    "SELECT o.channel, o.channel_order_id, o.id, o.status, o.warehouse_id, o.tier, o.eta, "
    "o.status_reason, o.skewed FROM unnest(?::text[], ?::text[]) AS k(c, i) "
    "CROSS JOIN LATERAL (SELECT * FROM orders WHERE channel = k.c "
    "AND channel_order_id = k.i LIMIT 1) AS o")


def _stored_orders(
    db: Database, orders: Sequence[OrderIn]
) -> dict[tuple[str, str], tuple[Any, ...]]:
    """Already stored orders among ``orders`` (idempotency), one query per channel and chunk
    (on PostgreSQL one query, the keys as two arrays)."""
    if dialect(db) == "postgresql":
        return {
            (row[0], row[1]): tuple(row[2:]) for row in db.execute(
                STORED_ORDERS_PG,
                [[o.channel.value for o in orders], [o.channel_order_id for o in orders]],
            ).fetchall()
        }
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


def _stage_new_order(
    ledger: Ledger, order: OrderIn, request: OrderRequest, decision: Decision,
    skew: int | None, skewed: bool,
) -> OrderOutcome:
    oid = request.order_id
    received = ledger.at
    status = "allocated" if decision.allocated else "unallocated"
    eta = stamp(decision.eta) if decision.eta is not None else None
    wid = decision.warehouse_id
    items = to_json([{"sku_id": li.sku_id, "qty": li.qty} for li in request.lines])
    submitted = stamp(order.client_submitted_at) if order.client_submitted_at else None
    ledger.add_order((
        oid, request.channel, order.channel_order_id, order.store_id, order.customer_id, items,
        order.lat, order.lon, submitted, received, skew, int(skewed), decision.tier, status,
        decision.reason, wid, decision.distance_km, eta, received if decision.allocated else None,
        received,
    ))
    line_wh = line_warehouses(decision, request.lines)
    for no, line in enumerate(request.lines):
        at_wh = line_wh[no]
        ledger.add_line(oid, no, line.sku_id, line.qty, at_wh)
        if at_wh is not None:
            ledger.hold(oid, no, line.sku_id, at_wh, line.qty)
    for part in decision.parts:
        ledger.count_load(part.warehouse_id)
    ledger.event(oid, "received",
                 {"skew_ms": skew, "skewed": skewed, "client_submitted_at": submitted})
    if decision.allocated:
        ledger.event(oid, "allocated", {
            "warehouse_id": wid, "distance_km": decision.distance_km, "eta": eta,
            "tier": decision.tier, "parts": [p.warehouse_id for p in decision.parts]})
    else:
        ledger.event(oid, "unallocated", {"reason": decision.reason})
        ledger.alert("unallocated", f"order {oid} unallocated: {decision.reason}",
                     order_id=oid)
    ledger.decision(oid, "allocate", decision,
                    "allocated" if decision.allocated else "unallocated")
    return OrderOutcome(oid, request.channel, order.channel_order_id, True, status, wid,
                        decision.tier, eta, decision.reason, skewed)


def _stage_awaiting_payment(ledger: Ledger, order: OrderIn, request: OrderRequest,
                            skew: int | None, skewed: bool, tier: int) -> OrderOutcome:
    """An unpaid order kept without stock: no decision yet, no reservation, no load."""
    oid = request.order_id
    received = ledger.at
    reason = "unpaid: stock is reserved once it is paid"
    items = to_json([{"sku_id": li.sku_id, "qty": li.qty} for li in request.lines])
    submitted = stamp(order.client_submitted_at) if order.client_submitted_at else None
    ledger.add_order((
        oid, request.channel, order.channel_order_id, order.store_id, order.customer_id, items,
        order.lat, order.lon, submitted, received, skew, int(skewed), tier, AWAITING_PAYMENT,
        reason, None, None, None, None, received,
    ))
    for no, line in enumerate(request.lines):
        ledger.add_line(oid, no, line.sku_id, line.qty, None)
    ledger.event(oid, "received",
                 {"skew_ms": skew, "skewed": skewed, "client_submitted_at": submitted})
    ledger.event(oid, AWAITING_PAYMENT, {"reason": reason})
    return OrderOutcome(oid, request.channel, order.channel_order_id, True, AWAITING_PAYMENT,
                        None, tier, None, reason, skewed)
