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
from datetime import datetime
from typing import Any

from coordinator.customer import store as customer_store
from coordinator.db import Database
from coordinator.intel import heal_store
from coordinator.ops import tracker_store
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
    row = db.execute(
        "SELECT sum(io.outcome = 'moved'), sum(io.outcome = 'stuck'), "
        "sum(io.outcome = 'stuck' AND coalesce((SELECT json_extract(e.detail, '$.trigger') "
        "  FROM order_events e WHERE e.order_id = io.order_id AND e.kind = 'allocated' "
        "  AND e.at >= i.started_at "
        "  AND json_extract(e.detail, '$.previous_status') = 'needs_attention' "
        "  ORDER BY e.id LIMIT 1), 'operator') != 'operator') "
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
        "SELECT count(*), sum(available = 0 OR paused = 1) FROM warehouses").fetchone()
    open_incidents = db.execute(
        "SELECT count(*) FROM ops_incidents WHERE closed_at IS NULL").fetchone()[0]
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
    }


def _line(out: list[str], name: str, kind: str, help_text: str,
          samples: list[tuple[str, float]]) -> None:
    out.append(f"# HELP {name} {help_text}")
    out.append(f"# TYPE {name} {kind}")
    for labels, value in samples:
        out.append(f"{name}{labels} {value:g}")


def prometheus(data: dict[str, Any]) -> str:
    """Prometheus text exposition format 0.0.4 of :func:`summary`."""
    out: list[str] = []
    fr = data["first_response"]
    _line(out, "breakwater_first_response_seconds", "gauge",
          "Customer inquiry (channel timestamp) to the status reply acknowledged by the "
          "channel, over recent inquiries.",
          [(f'{{quantile="{q}"}}', float(fr[k] or 0.0))
           for q, k in (("0.5", "p50_s"), ("0.95", "p95_s"), ("1", "max_s"))])
    of = data["order_to_first_status"]
    _line(out, "breakwater_order_to_first_status_seconds", "gauge",
          "Order received to its first status entry, over recent orders.",
          [(f'{{quantile="{q}"}}', float(of[k] or 0.0))
           for q, k in (("0.5", "p50_s"), ("0.95", "p95_s"), ("1", "max_s"))])
    st = data["status_transparency"]
    _line(out, "breakwater_status_transparency_ratio", "gauge",
          "Share of shipped orders with allocated, shipped and in-transit timestamps.",
          [("", float(st["rate"] if st["rate"] is not None else 1.0))])
    sh = data["self_healing"]
    _line(out, "breakwater_self_healing_ratio", "gauge",
          "Exceptions resolved automatically / all exceptions.",
          [("", float(sh["rate"] if sh["rate"] is not None else 1.0))])
    _line(out, "breakwater_exceptions_total", "counter", "Orders caught at a failed warehouse.",
          [('{outcome="moved"}', sh["resolved_automatically"]),
           ('{outcome="needs_attention"}', sh["needs_attention"])])
    _line(out, "breakwater_warehouses_unavailable", "gauge",
          "Warehouses not taking orders (breaker, hold or pause).",
          [("", data["warehouses"]["unavailable"])])
    _line(out, "breakwater_open_incidents", "gauge", "Unavailability incidents still open.",
          [("", data["open_incidents"])])
    _line(out, "breakwater_ops_events_total", "counter",
          "Ops inputs by kind (events processed, duplicates dropped, bad payloads ...).",
          [(f'{{kind="{name}"}}', value) for name, value in data["counters"].items()])
    samples = [(f'{{kind="{kind}",status="{status}"}}', n)
               for kind, by_status in data["notifications"].items()
               for status, n in by_status.items()]
    _line(out, "breakwater_notifications", "gauge", "Notifications in the outbox by status.",
          samples)
    return "\n".join(out) + "\n"
