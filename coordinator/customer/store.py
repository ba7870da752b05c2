"""SQL of the customer side (tables in :mod:`coordinator.customer.schema`).

Portable SQL with named parameters. Personal data is read here and nowhere else; callers
mask it for roles that do not need it (:mod:`coordinator.personal`).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from coordinator.customer.config import PaymentConfig
from coordinator.db import Database
from coordinator.intel import heal_store
from coordinator.personal import is_phone, normalise_phone
from protocols.orders import OrderIn
from protocols.timestamps import stamp

ENDED_STATUSES = ("delivered", "cancelled")


# -- at intake (inside the order's own transaction) --------------------------------------
def record_intake(db: Database, created: Sequence[tuple[str, OrderIn]], now: datetime,
                  payment: PaymentConfig) -> None:
    """The contact and, for an unpaid order, its payment deadlines, of new orders."""
    at_now = stamp(now)
    contacts: list[tuple[object, ...]] = []
    unpaid: list[tuple[object, ...]] = []
    for order_id, order in created:
        contact = order.contact
        if contact is not None:
            phone = contact.phone
            # a masked or virtual number cannot find the customer's other orders
            key = (normalise_phone(phone) if phone is not None and not contact.masked
                   and is_phone(phone) else None)
            contacts.append((
                order_id, order.channel.value, phone, key, contact.name, contact.address,
                None if contact.consent is None else int(contact.consent),
                int(contact.masked), at_now))
        if not order.paid:
            unpaid.append((order_id, order.store_id, at_now, stamp(now + payment.remind_after),
                           stamp(now + payment.cancel_after)))
    # positional rows: both backends take them, and PostgreSQL writes a big batch as one
    # multi-row statement
    if contacts:
        db.conn.executemany(
            "INSERT INTO customer_contacts (order_id, channel, phone, phone_key, name, address, "
            "consent, masked, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (order_id) DO NOTHING", contacts)
    if unpaid:
        db.conn.executemany(
            "INSERT INTO customer_payments (order_id, store_id, received_at, remind_at, "
            "cancel_at) VALUES (?, ?, ?, ?, ?) ON CONFLICT (order_id) DO NOTHING", unpaid)


# -- contacts and retention --------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Contact:
    order_id: str
    phone: str | None
    name: str | None
    address: str | None
    consent: bool | None
    masked: bool
    erased: bool


def contact_of(db: Database, order_id: str) -> Contact | None:
    row = db.conn.execute(
        "SELECT phone, name, address, consent, masked, erased_at FROM customer_contacts "
        "WHERE order_id = :o", {"o": order_id}).fetchone()
    if row is None:
        return None
    return Contact(order_id, row[0], row[1], row[2],
                   None if row[3] is None else bool(row[3]), bool(row[4]), row[5] is not None)


def schedule_erasure(db: Database, order_id: str, ended_at: datetime,
                     retention: timedelta) -> None:
    """The order ended (delivered or cancelled): its personal data goes after retention."""
    db.conn.execute(
        "UPDATE customer_contacts SET erase_after = :at WHERE order_id = :o "
        "AND erased_at IS NULL", {"at": stamp(ended_at + retention), "o": order_id})


def erase_due(db: Database, now: datetime, limit: int = 500) -> list[str]:
    """Blank the personal data whose retention ended (and the copies in customer notices'
    payloads); audited per order. Returns the orders erased."""
    at_now = stamp(now)
    ids = [r[0] for r in db.conn.execute(
        "SELECT order_id FROM customer_contacts WHERE erase_after <= :now AND erased_at IS NULL "
        "ORDER BY erase_after LIMIT :limit", {"now": at_now, "limit": limit}).fetchall()]
    for order_id in ids:
        db.conn.execute(
            "UPDATE customer_contacts SET phone = NULL, phone_key = NULL, name = NULL, "
            "address = NULL, erased_at = :now WHERE order_id = :o", {"now": at_now, "o": order_id})
        db.conn.execute(
            "INSERT INTO customer_pii_audit (at, action, order_id, reason) "
            "VALUES (:now, 'erased', :o, 'retention period ended')", {"now": at_now, "o": order_id})
    heal_store.erase_addresses(db, ids)  # the copies the address check kept
    return ids


def erase_old_inquiries(db: Database, before: datetime) -> int:
    """Blank the phone and the free text of inquiries received before ``before`` (the
    question may hold anything a customer typed); the reply and the times stay."""
    cur = db.conn.execute(
        "UPDATE customer_inquiries SET phone_key = NULL, question = '' "
        "WHERE received_at <= :before AND (phone_key IS NOT NULL OR question != '')",
        {"before": stamp(before)})
    return cur.rowcount


def inquiries_to_erase(db: Database, before: datetime) -> bool:
    return db.conn.execute(
        "SELECT 1 FROM customer_inquiries WHERE received_at <= :before AND "
        "(phone_key IS NOT NULL OR question != '') LIMIT 1",
        {"before": stamp(before)}).fetchone() is not None


def pii_audit(db: Database, limit: int = 100) -> list[dict[str, Any]]:
    cur = db.conn.execute("SELECT id, at, action, order_id, reason FROM customer_pii_audit "
                          "ORDER BY id DESC LIMIT :limit", {"limit": limit})
    names = [c[0] for c in cur.description]
    return [dict(zip(names, r, strict=True)) for r in cur.fetchall()]


# -- orders as the customer sees them --------------------------------------------------
@dataclass(frozen=True, slots=True)
class OrderFacts:
    order_id: str
    channel: str
    channel_order_id: str
    customer_id: str | None
    store_id: str | None
    store_name: str | None
    status: str
    warehouse_id: str | None
    warehouse_name: str | None
    eta: str | None
    received_at: str
    lat: float
    lon: float


_FACTS = ("SELECT o.id, o.channel, o.channel_order_id, o.customer_id, o.store_id, s.name, "
          "o.status, o.warehouse_id, w.name, o.eta, o.received_at, o.lat, o.lon FROM orders o "
          "LEFT JOIN warehouses w ON w.id = o.warehouse_id LEFT JOIN stores s ON s.id = o.store_id")


def facts_of(db: Database, order_id: str) -> OrderFacts | None:
    row = db.conn.execute(_FACTS + " WHERE o.id = :o", {"o": order_id}).fetchone()
    return None if row is None else OrderFacts(*row)


def order_by_channel_number(db: Database, channel: str, number: str) -> OrderFacts | None:
    row = db.conn.execute(_FACTS + " WHERE o.channel = :c AND o.channel_order_id = :n",
                          {"c": channel, "n": number}).fetchone()
    return None if row is None else OrderFacts(*row)


def orders_by_phone(db: Database, phone_key: str, limit: int) -> list[OrderFacts]:
    """The most recent orders of a phone number (unmasked numbers only)."""
    rows = db.conn.execute(
        _FACTS + " JOIN customer_contacts c ON c.order_id = o.id WHERE c.phone_key = :p "
        "ORDER BY o.received_at DESC, o.id LIMIT :limit", {"p": phone_key, "limit": limit})
    return [OrderFacts(*r) for r in rows.fetchall()]


def nodes_of(db: Database, order_ids: Sequence[str]) -> dict[str, list[tuple[str, str]]]:
    """(kind, at) of each order's timeline, oldest first: one query for a few orders."""
    marks = ", ".join(f":o{i}" for i in range(len(order_ids)))
    found: dict[str, list[tuple[str, str]]] = {o: [] for o in order_ids}
    for order_id, kind, at in db.conn.execute(
            f"SELECT order_id, kind, at FROM order_events WHERE order_id IN ({marks}) "
            "ORDER BY order_id, id", {f"o{i}": o for i, o in enumerate(order_ids)}):
        found[order_id].append((kind, at))
    return found


# -- the node sweep --------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class TimelineEvent:
    id: int
    order_id: str
    kind: str
    at: str
    detail: dict[str, Any]


def cursor(db: Database, name: str) -> int:
    row = db.conn.execute("SELECT value FROM customer_cursors WHERE name = :n",
                          {"n": name}).fetchone()
    return 0 if row is None else int(row[0])


def start_cursor(db: Database, name: str) -> None:
    """A cursor that does not exist yet starts at the newest order event."""
    db.conn.execute(
        # WHERE true: SQLite's upsert after a SELECT needs it to parse ON CONFLICT
        "INSERT INTO customer_cursors (name, value) SELECT :n, coalesce(max(id), 0) "
        "FROM order_events WHERE true ON CONFLICT (name) DO NOTHING", {"n": name})


def set_cursor(db: Database, name: str, value: int) -> None:
    db.conn.execute("INSERT INTO customer_cursors (name, value) VALUES (:n, :v) "
                    "ON CONFLICT (name) DO UPDATE SET value = excluded.value",
                    {"n": name, "v": value})


def events_after(db: Database, after: int, limit: int) -> list[TimelineEvent]:
    rows = db.conn.execute(
        "SELECT id, order_id, kind, at, detail FROM order_events WHERE id > :after "
        "ORDER BY id LIMIT :limit", {"after": after, "limit": limit}).fetchall()
    return [TimelineEvent(r[0], r[1], r[2], r[3], json.loads(r[4])) for r in rows]


def mark_message(db: Database, order_id: str, node: str, at: datetime, route: str,
                 dedupe_key: str) -> bool:
    """Claim (order, node): True the first time only (once per node per order)."""
    cur = db.conn.execute(
        "INSERT INTO customer_messages (order_id, node, at, route, dedupe_key) "
        "VALUES (:o, :n, :at, :r, :k) ON CONFLICT (order_id, node) DO NOTHING",
        {"o": order_id, "n": node, "at": stamp(at), "r": route, "k": dedupe_key})
    return cur.rowcount == 1


def late_orders(db: Database, now: datetime, after: timedelta, limit: int = 500) -> list[str]:
    """Orders past their ETA by ``after``, not delivered, not yet told they are late."""
    return [r[0] for r in db.conn.execute(
        "SELECT o.id FROM orders o WHERE o.status IN ('allocated', 'shipped', 'in_transit') "
        "AND o.eta IS NOT NULL AND o.eta <= :due AND NOT EXISTS (SELECT 1 FROM "
        "customer_messages m WHERE m.order_id = o.id AND m.node = 'delayed') "
        "ORDER BY o.eta LIMIT :limit", {"due": stamp(now - after), "limit": limit}).fetchall()]


# -- inquiries ---------------------------------------------------------------------------
def inquiry_exists(db: Database, inquiry_id: str) -> bool:
    return db.conn.execute("SELECT 1 FROM customer_inquiries WHERE id = :i",
                           {"i": inquiry_id}).fetchone() is not None


def newest_event_id(db: Database) -> int:
    return int(db.conn.execute("SELECT coalesce(max(id), 0) FROM order_events").fetchone()[0])


def erasure_due(db: Database, now: datetime) -> bool:
    return db.conn.execute(
        "SELECT 1 FROM customer_contacts WHERE erase_after <= :now AND erased_at IS NULL "
        "LIMIT 1", {"now": stamp(now)}).fetchone() is not None


def record_inquiry(db: Database, row: dict[str, Any]) -> None:
    db.conn.execute(
        "INSERT INTO customer_inquiries (id, channel, channel_order_id, phone_key, question, "
        "asked_at, received_at, order_ids, reply, dedupe_key) VALUES (:id, :channel, "
        ":channel_order_id, :phone_key, :question, :asked_at, :received_at, :order_ids, "
        ":reply, :dedupe_key)", row)


def first_response_samples(db: Database, recent: int = 10_000) -> tuple[int, list[float]]:
    """(inquiries, seconds from each inquiry's own timestamp at the channel to the
    receiver's acknowledgement of its reply), over the most recent inquiries."""
    rows = db.conn.execute(
        "SELECT i.asked_at, n.sent_at FROM (SELECT asked_at, dedupe_key FROM customer_inquiries "
        "ORDER BY received_at DESC LIMIT :recent) i LEFT JOIN ops_notifications n "
        "ON n.dedupe_key = i.dedupe_key", {"recent": recent}).fetchall()
    seconds = sorted(
        max(0.0, (datetime.fromisoformat(sent) - datetime.fromisoformat(asked)).total_seconds())
        for asked, sent in rows if sent is not None)
    return len(rows), seconds


# -- payments ------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class UnpaidOrder:
    order_id: str
    store_id: str | None
    received_at: str
    remind_at: str
    cancel_at: str
    reminded_at: str | None


def unpaid_due(db: Database, now: datetime, limit: int = 500) -> list[UnpaidOrder]:
    """Unpaid orders with a deadline that has come and not fired."""
    rows = db.conn.execute(
        "SELECT order_id, store_id, received_at, remind_at, cancel_at, reminded_at "
        "FROM customer_payments WHERE paid_at IS NULL AND cancelled_at IS NULL AND "
        "((reminded_at IS NULL AND remind_at <= :now) OR cancel_at <= :now) "
        "ORDER BY remind_at LIMIT :limit", {"now": stamp(now), "limit": limit}).fetchall()
    return [UnpaidOrder(*r) for r in rows]


def mark_reminded(db: Database, order_id: str, at: datetime) -> bool:
    cur = db.conn.execute("UPDATE customer_payments SET reminded_at = :at WHERE order_id = :o "
                          "AND reminded_at IS NULL", {"at": stamp(at), "o": order_id})
    return cur.rowcount == 1


def mark_cancelled(db: Database, order_id: str, at: datetime) -> bool:
    cur = db.conn.execute("UPDATE customer_payments SET cancelled_at = :at WHERE order_id = :o "
                          "AND cancelled_at IS NULL AND paid_at IS NULL",
                          {"at": stamp(at), "o": order_id})
    return cur.rowcount == 1


def payment_of(db: Database, order_id: str) -> dict[str, Any] | None:
    cur = db.conn.execute(
        "SELECT order_id, received_at, remind_at, cancel_at, paid_at, reminded_at, "
        "cancelled_at, payment_ref FROM customer_payments WHERE order_id = :o", {"o": order_id})
    row = cur.fetchone()
    if row is None:
        return None
    return dict(zip([c[0] for c in cur.description], row, strict=True))


def mark_paid(db: Database, order_id: str, at: datetime, ref: str | None) -> bool:
    cur = db.conn.execute(
        "UPDATE customer_payments SET paid_at = :at, payment_ref = :ref WHERE order_id = :o "
        "AND paid_at IS NULL AND cancelled_at IS NULL",
        {"at": stamp(at), "ref": ref, "o": order_id})
    return cur.rowcount == 1


# -- the nearest warehouses --------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class WarehousePoint:
    id: str
    name: str
    lat: float
    lon: float
    active: bool  # available and not paused


def warehouse_points(db: Database) -> list[WarehousePoint]:
    return [WarehousePoint(r[0], r[1], r[2], r[3], bool(r[4])) for r in db.conn.execute(
        "SELECT id, name, lat, lon, available = 1 AND paused = 0 FROM warehouses ORDER BY id"
    ).fetchall()]
