"""What the operator dashboard shows, read in one transaction (``GET /dashboard/state``).

Warehouses with availability, open breakers, holds and last seen; recent incidents; order
counts by status; the oldest waiting orders (unallocated, needs attention) with their
reason; notification counts by status and kind. Reads the tables of
``coordinator.schema`` and ``coordinator.ops.schema``; nothing is written.
"""

from __future__ import annotations

from typing import Any

from coordinator.db import Database, begin_read
from coordinator.gateways.store import security_summary
from coordinator.ledger import TIMELINE_LABELS
from coordinator.ops import incident_log, telemetry
from protocols.timestamps import parse_stamp, stamp

# the notification outbox's states, in the order an operator reads them
NOTIFICATION_STATUSES = ("pending", "sent", "failed")
STATE_LABELS = {
    "available": "可用",
    "tripped": "已熔断",
    "paused": "已暂停",
    "unavailable": "不可用",
}


def _rows(db: Database, sql: str, params: list[Any] | None = None) -> list[dict[str, Any]]:
    cur = db.conn.execute(sql, params or [])
    names = [c[0] for c in cur.description]
    return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]


def _latest(*stamps: str | None) -> str | None:
    """The most recent of some ISO-8601 stamps (compared as instants, not as text)."""
    known = [s for s in stamps if s]
    return max(known, key=parse_stamp) if known else None


def warehouses(db: Database) -> list[dict[str, Any]]:
    """Every warehouse with its state (available / tripped / paused / unavailable) and why."""
    breakers: dict[str, list[dict[str, Any]]] = {}
    last_seen: dict[str, str | None] = {}
    for b in _rows(db, "SELECT warehouse_id, breaker, agent_id, state, open, reason, since, "
                       "last_seen FROM ops_breaker_states ORDER BY warehouse_id, breaker"):
        wid = b.pop("warehouse_id")
        last_seen[wid] = _latest(last_seen.get(wid), b["last_seen"])
        if b["open"]:
            b["open"] = True
            breakers.setdefault(wid, []).append(b)
    holds: dict[str, list[dict[str, Any]]] = {}
    for h in _rows(db, "SELECT warehouse_id, hold, reason, since FROM ops_holds "
                       "ORDER BY warehouse_id, since"):
        holds.setdefault(h.pop("warehouse_id"), []).append(h)
    agents: dict[str, list[dict[str, Any]]] = {}
    for a in _rows(db, "SELECT warehouse_id, agent_id, online, offline_since, last_seen "
                       "FROM ops_agent_sessions ORDER BY agent_id"):
        wid = a.pop("warehouse_id")
        a["online"] = bool(a["online"])
        last_seen[wid] = _latest(last_seen.get(wid), a["last_seen"])
        agents.setdefault(wid, []).append(a)
    open_orders = dict(db.conn.execute(
        "SELECT warehouse_id, count(*) FROM orders WHERE status = 'allocated' "
        "AND warehouse_id IS NOT NULL GROUP BY warehouse_id").fetchall())
    readings: dict[str, list[dict[str, Any]]] = {}
    for r in telemetry.latest(db):
        readings.setdefault(r.warehouse_id, []).append(
            {"zone": r.zone, "metric": r.metric, "last": r.last, "max": r.max,
             "at": stamp(r.window_end)})
    out = []
    for w in _rows(db, "SELECT id, name, address, cold_chain, available, paused, "
                       "unavailable_reason, updated_at FROM warehouses ORDER BY id"):
        wid = w["id"]
        open_breakers = breakers.get(wid, [])
        wh_holds = holds.get(wid, [])
        automatic = [h for h in wh_holds if h["hold"] != "manual"]
        manual = [h for h in wh_holds if h["hold"] == "manual"]
        if w["paused"]:
            state = "paused"
        elif open_breakers or automatic:
            state = "tripped"
        elif not w["available"]:
            state = "unavailable"
        else:
            state = "available"
        reasons = [f"breaker {b['breaker']}: {b['reason']}" for b in open_breakers]
        reasons += [f"{h['hold']}: {h['reason']}" for h in automatic]
        reasons += [f"paused: {h['reason']}" for h in manual]
        if not reasons and state != "available" and w["unavailable_reason"]:
            reasons.append(w["unavailable_reason"])
        # the same causes as codes the page translates (the text above stays for the API)
        causes = [{"kind": "breaker", "name": b["breaker"], "code": b["reason"],
                   "since": b["since"]} for b in open_breakers]
        causes += [{"kind": "hold", "name": h["hold"].partition(":")[0],
                    "code": h["hold"].partition(":")[2] or None, "text": h["reason"],
                    "since": h["since"]} for h in automatic]
        causes += [{"kind": "paused", "name": "manual", "code": None, "text": h["reason"],
                    "since": h["since"]} for h in manual]
        out.append({
            "id": wid, "name": w["name"], "address": w["address"],
            "cold_chain": bool(w["cold_chain"]), "available": bool(w["available"]),
            "paused": bool(w["paused"]), "state": state, "state_label": STATE_LABELS[state],
            "reason": "; ".join(reasons) or None, "causes": causes,
            "readings": readings.get(wid, []), "open_breakers": open_breakers,
            "holds": wh_holds, "agents": agents.get(wid, []),
            "last_seen": last_seen.get(wid), "open_orders": int(open_orders.get(wid, 0)),
        })
    return out


def incidents(db: Database, limit: int) -> list[dict[str, Any]]:
    """Recent incidents, newest first: the ops record (cause, closed) joined with the
    reroute record (moved / stuck); either may exist without the other."""
    merged: dict[str, dict[str, Any]] = {}
    for r in _rows(db, "SELECT i.id AS incident_id, i.warehouse_id, i.reason, "
                       "i.started_at AS opened_at, i.moved, i.stuck FROM incidents i "
                       "ORDER BY i.started_at DESC LIMIT ?", [limit]):
        merged[r["incident_id"]] = {**r, "cause": None, "closed_at": None}
    for r in _rows(db, "SELECT incident_id, warehouse_id, cause, reason, opened_at, closed_at, "
                       "moved, stuck FROM ops_incidents ORDER BY opened_at DESC LIMIT ?",
                   [limit]):
        known = merged.get(r["incident_id"])
        if known is None:
            merged[r["incident_id"]] = r
        else:
            # the reroute record counts what moved; the ops record knows cause and closing
            known.update(cause=r["cause"], closed_at=r["closed_at"],
                         reason=r["reason"] or known["reason"])
    names = dict(db.conn.execute("SELECT id, name FROM warehouses").fetchall())
    ordered = sorted(merged.values(), key=lambda r: parse_stamp(r["opened_at"]),
                     reverse=True)[:limit]
    destinations: dict[str, list[dict[str, Any]]] = {}
    if ordered:
        ids = [r["incident_id"] for r in ordered]
        marks = ", ".join(f":i{n}" for n in range(len(ids)))
        for incident_id, target, n in db.conn.execute(
                "SELECT incident_id, new_warehouse_id, count(*) FROM incident_orders "
                f"WHERE outcome = 'moved' AND incident_id IN ({marks}) "
                "GROUP BY incident_id, new_warehouse_id ORDER BY incident_id, count(*) DESC, "
                "new_warehouse_id", {f"i{n}": i for n, i in enumerate(ids)}):
            destinations.setdefault(incident_id, []).append(
                {"warehouse_id": target, "name": names.get(target), "orders": n})
    tripped = incident_log.trip_times(db, [r["incident_id"] for r in ordered])
    for r in ordered:
        r["warehouse_name"] = names.get(r["warehouse_id"])
        r["open"] = r["closed_at"] is None
        # the trip's event time: what the notices and the demo report show (opened_at is
        # when head office heard of it, later after an uplink outage)
        r["tripped_at"] = tripped.get(r["incident_id"])
        # where the moved orders went: "287 moved" names its warehouses
        r["destinations"] = destinations.get(r["incident_id"], [])
    return ordered


def waiting_orders(db: Database, limit: int) -> list[dict[str, Any]]:
    """Orders nobody has taken (unallocated) or a reroute could not place (needs
    attention), oldest first: what an operator must act on, with the reason."""
    return _rows(db, "SELECT id, channel, store_id, status, status_reason, tier, received_at, "
                     "updated_at FROM orders WHERE status IN ('unallocated', 'needs_attention') "
                     "ORDER BY received_at, id LIMIT ?", [limit])


def notifications(db: Database) -> dict[str, Any]:
    by_kind: dict[str, dict[str, int]] = {}
    by_status = dict.fromkeys(NOTIFICATION_STATUSES, 0)
    for kind, status, n in db.conn.execute(
            "SELECT kind, status, count(*) FROM ops_notifications GROUP BY kind, status"):
        by_kind.setdefault(kind, {})[status] = n
        by_status[status] = by_status.get(status, 0) + n
    return {"by_status": by_status, "by_kind": by_kind}


def state(db: Database, *, incident_limit: int = 20, waiting_limit: int = 50) -> dict[str, Any]:
    """Everything the page shows except the metrics and one order: one read transaction,
    so the panels agree with each other."""
    begin_read(db)
    try:
        by_status = dict(db.conn.execute(
            "SELECT status, count(*) FROM orders GROUP BY status ORDER BY status").fetchall())
        return {
            "warehouses": warehouses(db),
            "incidents": incidents(db, incident_limit),
            "orders_by_status": by_status,
            "orders_total": sum(by_status.values()),
            "waiting_orders": waiting_orders(db, waiting_limit),
            "waiting_total": by_status.get("unallocated", 0) + by_status.get("needs_attention", 0),
            "notifications": notifications(db),
            # refused, held and flagged gateway messages: a refused real trip must be loud
            "security": security_summary(db),
            "labels": {**TIMELINE_LABELS, **STATE_LABELS},
        }
    finally:
        db.conn.execute("ROLLBACK")


