"""The figures the seed system is judged by, computed from the store.

- first response time (the customer's): a customer's question (its own timestamp at the
  channel, ``POST /inquiries``' ``asked_at``) -> the first automatic reply carrying the
  order's status acknowledged by the channel's receiver (the outbox's ``sent_at``), over
  the most recent inquiries; replies not yet acknowledged are counted, not timed;
- order to first status: order received -> its first status entry (allocated,
  unallocated ...), over the most recent orders (an internal timing, named as such);
- status transparency: share of shipped orders whose allocated, shipped and in-transit
  nodes all carry a timestamp;
- self-healing rate: exceptions resolved automatically / all exceptions, with the
  breakdown by kind (``reroute``, and the intel adapters' ``address`` corrections and
  ``parcel`` hand-overs, see :mod:`coordinator.intel.heal_store`). A reroute exception
  is an order caught at a warehouse that became unavailable; it is resolved
  automatically when the reroute moved it, or when it went to ``needs_attention`` and a
  retry the system set off itself (stock back, a warehouse reopening; not an operator's
  ``POST /orders/retry``) placed it later. Orders still waiting, or placed by a person,
  count against the rate.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Iterator
from datetime import datetime
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from coordinator.customer import store as customer_store
from coordinator.db import Database, json_text
from coordinator.intel import heal_store
from coordinator.ops import telemetry, tracker_store
from coordinator.ops.notify import outbox

SHIPPED_STATUSES = ("shipped", "in_transit", "delivered")
RECENT_ORDERS = 10_000


def _quantile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return 0.0
    index = min(len(sorted_values) - 1, max(0, round(q * (len(sorted_values) - 1))))
    return sorted_values[index]


def first_response(db: Database, recent: int = RECENT_ORDERS) -> dict[str, Any]:
    """The customer's first response time (inquiry at the channel -> reply acknowledged)."""
    inquiries, seconds = customer_store.first_response_samples(db, recent)
    return {
        "inquiries": inquiries,
        "answered": len(seconds),
        "mean_s": statistics.fmean(seconds) if seconds else None,
        "p50_s": _quantile(seconds, 0.5) if seconds else None,
        "p95_s": _quantile(seconds, 0.95) if seconds else None,
        "max_s": seconds[-1] if seconds else None,
    }


def order_to_first_status(db: Database, recent: int = RECENT_ORDERS) -> dict[str, Any]:
    """Order received -> its first status entry (what "first response" used to measure)."""
    rows = db.execute(
        "SELECT o.received_at, (SELECT min(e.at) FROM order_events e WHERE e.order_id = o.id "
        "AND e.kind != 'received') FROM (SELECT id, received_at FROM orders "
        "ORDER BY received_at DESC LIMIT ?) o", [recent]).fetchall()
    seconds = sorted(
        max(0.0, (datetime.fromisoformat(first) - datetime.fromisoformat(received))
            .total_seconds())
        for received, first in rows if first is not None
    )
    return {
        "orders": len(rows),
        "answered": len(seconds),
        "mean_s": statistics.fmean(seconds) if seconds else None,
        "p50_s": _quantile(seconds, 0.5) if seconds else None,
        "p95_s": _quantile(seconds, 0.95) if seconds else None,
        "max_s": seconds[-1] if seconds else None,
    }


def status_transparency(db: Database) -> dict[str, Any]:
    marks = ",".join("?" * len(SHIPPED_STATUSES))
    row = db.execute(
        f"SELECT count(*), sum(CASE WHEN "
        "EXISTS (SELECT 1 FROM order_events e WHERE e.order_id = o.id AND e.kind = 'allocated' "
        "AND e.at IS NOT NULL) AND "
        "EXISTS (SELECT 1 FROM order_events e WHERE e.order_id = o.id AND e.kind = 'shipped' "
        "AND e.at IS NOT NULL) AND "
        "EXISTS (SELECT 1 FROM order_events e WHERE e.order_id = o.id AND e.kind = 'in_transit' "
        "AND e.at IS NOT NULL) THEN 1 ELSE 0 END) "
        f"FROM orders o WHERE o.status IN ({marks})", list(SHIPPED_STATUSES)).fetchone()
    shipped, complete = int(row[0] or 0), int(row[1] or 0)
    return {"shipped_orders": shipped, "complete_timelines": complete,
            "rate": complete / shipped if shipped else None}


def self_healing(db: Database) -> dict[str, Any]:
    # a stuck order healed itself when the first placement out of needs_attention after
    # its incident began was set off by the system, not by an operator
    # the same question on both backends: only reading a JSON field is spelled apart
    trigger = json_text(db, "e.detail", "trigger")
    previous = json_text(db, "e.detail", "previous_status")
    row = db.execute(
        "SELECT sum(CASE WHEN io.outcome = 'moved' THEN 1 ELSE 0 END), "
        "sum(CASE WHEN io.outcome = 'stuck' THEN 1 ELSE 0 END), "
        "sum(CASE WHEN io.outcome = 'stuck' AND coalesce((SELECT " + trigger +
        "  FROM order_events e WHERE e.order_id = io.order_id AND e.kind = 'allocated' "
        "  AND e.at >= i.started_at AND " + previous + " = 'needs_attention' "
        "  ORDER BY e.id LIMIT 1), 'operator') != 'operator' THEN 1 ELSE 0 END) "
        "FROM incident_orders io JOIN incidents i ON i.id = io.incident_id").fetchone()
    moved, stuck, placed_later = int(row[0] or 0), int(row[1] or 0), int(row[2] or 0)
    by_kind = {"reroute": {"exceptions": moved + stuck,
                           "resolved_automatically": moved + placed_later}}
    # corrected addresses and parcels handed to a backup carrier count the same way
    by_kind.update(heal_store.heal_counts(db))
    total = sum(k["exceptions"] for k in by_kind.values())
    healed = sum(k["resolved_automatically"] for k in by_kind.values())
    return {"exceptions": total, "resolved_automatically": healed, "moved": moved,
            "placed_later": placed_later, "needs_attention": total - healed,
            "rate": healed / total if total else None, "by_kind": by_kind}


def summary(db: Database) -> dict[str, Any]:
    by = outbox.counts(db)
    notifications: dict[str, dict[str, int]] = {}
    for (kind, status), n in sorted(by.items()):
        notifications.setdefault(kind, {})[status] = n
    warehouses = db.execute(
        # CASE, not sum() of a comparison: PostgreSQL does not add booleans
        "SELECT count(*), sum(CASE WHEN available = 0 OR paused = 1 THEN 1 ELSE 0 END) "
        "FROM warehouses").fetchone()
    open_incidents = db.execute(
        "SELECT count(*) FROM ops_incidents WHERE closed_at IS NULL").fetchone()[0]
    owed = db.execute("SELECT count(*) FROM ops_pending_store_notices").fetchone()[0]
    return {
        "first_response": first_response(db),
        "order_to_first_status": order_to_first_status(db),
        "status_transparency": status_transparency(db),
        "self_healing": self_healing(db),
        "warehouses": {"total": int(warehouses[0] or 0),
                       "unavailable": int(warehouses[1] or 0)},
        "open_incidents": int(open_incidents),
        "counters": tracker_store.counters(db),
        "notifications": notifications,
        "store_notices_owed": int(owed),
        "breakers": [{"warehouse_id": w, "breaker": b, "open": bool(o)} for w, b, o in db.execute(
            "SELECT warehouse_id, breaker, open FROM ops_breaker_states "
            "ORDER BY warehouse_id, breaker").fetchall()],
        "readings": [{"warehouse_id": r.warehouse_id, "zone": r.zone, "metric": r.metric,
                      "last": r.last} for r in telemetry.latest(db)],
    }


class SummaryCollector(Collector):
    """The figures of :func:`summary` as Prometheus metric families. The ops lifespan
    registers it in the app's registry and refreshes :attr:`data` before each scrape (the
    queries run on the ops thread, not inside the synchronous ``collect``)."""

    def __init__(self) -> None:
        self.data: dict[str, Any] | None = None

    def describe(self) -> Iterable[Metric]:
        return []  # names vary with the data (counters by kind): described at collect

    def collect(self) -> Iterator[Metric]:
        data = self.data
        if data is None:
            return
        for name, key, help_text in (
                ("breakwater_first_response_seconds", "first_response",
                 "Customer inquiry (channel timestamp) to the status reply acknowledged by "
                 "the channel, over recent inquiries."),
                ("breakwater_order_to_first_status_seconds", "order_to_first_status",
                 "Order received to its first status entry, over recent orders.")):
            figures = data[key]
            family = GaugeMetricFamily(name, help_text, labels=["quantile"])
            for q, k in (("0.5", "p50_s"), ("0.95", "p95_s"), ("1", "max_s")):
                family.add_metric([q], float(figures[k] or 0.0))
            yield family
        st, sh = data["status_transparency"], data["self_healing"]
        yield GaugeMetricFamily(
            "breakwater_status_transparency_ratio",
            "Share of shipped orders with allocated, shipped and in-transit timestamps.",
            value=float(st["rate"] if st["rate"] is not None else 1.0))
        yield GaugeMetricFamily(
            "breakwater_self_healing_ratio", "Exceptions resolved automatically / all exceptions.",
            value=float(sh["rate"] if sh["rate"] is not None else 1.0))
        reroute = sh["by_kind"]["reroute"]
        exceptions = CounterMetricFamily(
            "breakwater_exceptions", "Orders caught at a failed warehouse.", labels=["outcome"])
        exceptions.add_metric(["moved"], reroute["resolved_automatically"])
        exceptions.add_metric(["needs_attention"],
                              reroute["exceptions"] - reroute["resolved_automatically"])
        yield exceptions
        by_kind = CounterMetricFamily(
            "breakwater_self_healing_exceptions",
            "Exceptions by kind (reroute, address, parcel) and who resolved them.",
            labels=["kind", "outcome"])
        for kind, figures in sorted(sh["by_kind"].items()):
            healed = figures["resolved_automatically"]
            by_kind.add_metric([kind, "resolved_automatically"], healed)
            by_kind.add_metric([kind, "to_person"], figures["exceptions"] - healed)
        yield by_kind
        yield GaugeMetricFamily(
            "breakwater_warehouses_unavailable",
            "Warehouses not taking orders (breaker, hold or pause).",
            value=data["warehouses"]["unavailable"])
        yield GaugeMetricFamily(
            "breakwater_open_incidents", "Unavailability incidents still open.",
            value=data["open_incidents"])
        ops_events = CounterMetricFamily(
            "breakwater_ops_events",
            "Ops inputs by kind (events processed, duplicates dropped, bad payloads ...).",
            labels=["kind"])
        for name, value in data["counters"].items():
            ops_events.add_metric([name], value)
        yield ops_events
        notices = GaugeMetricFamily(
            "breakwater_notifications", "Notifications in the outbox by kind and status.",
            labels=["kind", "status"])
        for kind, by_status in data["notifications"].items():
            for status, n in by_status.items():
                notices.add_metric([kind, status], n)
        yield notices
        yield GaugeMetricFamily(
            "breakwater_store_notices_owed",
            "Incidents whose store notices a committed reroute owes, not yet queued "
            "(composed right after the commit; stays above 0 only if that fails).",
            value=data.get("store_notices_owed", 0))
        breakers = GaugeMetricFamily(
            "breakwater_breaker_open", "1 while an agent's breaker is open (tripped or forced).",
            labels=["warehouse", "breaker"])
        for b in data.get("breakers", []):
            breakers.add_metric([b["warehouse_id"], b["breaker"]], 1.0 if b["open"] else 0.0)
        yield breakers
        readings = GaugeMetricFamily(
            "breakwater_zone_reading",
            "Last value of the newest telemetry summary per warehouse, zone and metric.",
            labels=["warehouse", "zone", "metric"])
        for r in data.get("readings", []):
            readings.add_metric([r["warehouse_id"], r["zone"], r["metric"]], r["last"])
        yield readings
