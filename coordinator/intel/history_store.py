"""The store of ``history_orders``: imported past orders, one row per order line.

Apart from the live ``orders`` on purpose: history never reserves stock nor enters
allocation. (order_no, sku) is the key, so a re-import of the same export replaces.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING

from coordinator.db import Database
from protocols.timestamps import parse_stamp, parse_stamp_or_none, stamp, stamp_or_none

if TYPE_CHECKING:
    from coordinator.intel.history import HistoryRow


_COLUMNS = ("order_no", "sku", "qty", "ordered_at", "paid_at", "entered_at", "promised_at",
            "delivered_at", "channel", "address", "lat", "lon", "store", "carrier",
            "exception", "import_id")
# positional parameters: a many-row batch becomes one statement on PostgreSQL
_UPSERT = (
    f"INSERT INTO history_orders ({', '.join(_COLUMNS)}) "
    f"VALUES ({', '.join('?' * len(_COLUMNS))}) ON CONFLICT (order_no, sku) DO UPDATE SET "
    + ", ".join(f"{c} = excluded.{c}" for c in _COLUMNS[2:]))


def writer(import_id: str) -> Callable[[Database, list[HistoryRow]], int]:
    def write(db: Database, rows: list[HistoryRow]) -> int:
        db.conn.executemany(_UPSERT, [
            (r.order_no, r.sku, r.qty, stamp(r.ordered_at), stamp_or_none(r.paid_at),
             stamp_or_none(r.entered_at), stamp_or_none(r.promised_at),
             stamp_or_none(r.delivered_at), r.channel, r.address, r.lat, r.lon, r.store,
             r.carrier, r.exception, import_id) for r in rows])
        return len(rows)

    return write


@dataclass(slots=True)
class PastOrder:
    """One imported order (its lines folded together)."""

    order_no: str
    ordered_at: datetime
    channel: str
    paid_at: datetime | None = None
    entered_at: datetime | None = None
    promised_at: datetime | None = None
    delivered_at: datetime | None = None
    lat: float | None = None
    lon: float | None = None
    store: str = ""
    carrier: str = ""
    exception: str = ""
    skus: dict[str, int] = field(default_factory=dict)


def past_orders(db: Database, since: datetime, until: datetime) -> Iterator[PastOrder]:
    """Orders placed in ``[since, until)``, lines folded, in order-number order."""
    cursor = db.conn.execute(
        "SELECT order_no, sku, qty, ordered_at, paid_at, entered_at, promised_at, "
        "delivered_at, channel, lat, lon, store, carrier, exception FROM history_orders "
        "WHERE ordered_at >= :since AND ordered_at < :until ORDER BY order_no",
        {"since": stamp(since), "until": stamp(until)})
    current: PastOrder | None = None
    for (order_no, sku, qty, ordered, paid, entered, promised, delivered, channel, lat, lon,
         store, carrier, exception) in cursor:
        if current is None or current.order_no != order_no:
            if current is not None:
                yield current
            current = PastOrder(
                order_no, parse_stamp(ordered), channel, parse_stamp_or_none(paid),
                parse_stamp_or_none(entered), parse_stamp_or_none(promised),
                parse_stamp_or_none(delivered), lat, lon, store, carrier, exception)
        current.skus[sku] = current.skus.get(sku, 0) + qty
    if current is not None:
        yield current


def latest_order_time(db: Database) -> datetime | None:
    row = db.execute("SELECT max(ordered_at) FROM history_orders").fetchone()
    return parse_stamp_or_none(row[0])
