"""One incident as one story: what the incident page (``/dashboard/incidents/{id}``) shows.

:func:`incident_view` reads, in one transaction, everything the stores know about an
incident and orders it as a timeline: the first reading over the limit, pending, the trip
(event time) and when its event reached head office (late after an uplink outage?), the
warehouse leaving service, the reroute with counts per destination warehouse, notices
sent and failed, acknowledgements, assignments, comments, escalations and breaker
commands (with who), the breaker clearing, the warehouse back, the incident closed. Also
the readings that tripped it (zone, value, limit, how long), a per-zone chart series for
the hours around it with the limit and trip/clear markers, and the incident's orders.

Read-only; the routes are in :mod:`coordinator.ops.incident_api`.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from coordinator.db import Database, begin_read
from coordinator.errors import NotFound
from coordinator.ops import incident_log, telemetry
from protocols.timestamps import stamp

CHART_BEFORE = timedelta(hours=2)
CHART_AFTER = timedelta(hours=1)
ORDERS_SHOWN = 5000
# an event that reached head office this much after it happened came after an outage
LATE_DELIVERY_S = 30.0


def _rows(db: Database, sql: str, params: dict[str, Any]) -> list[dict[str, Any]]:
    cur = db.conn.execute(sql, params)
    names = [c[0] for c in cur.description]
    return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]


def _header(db: Database, incident_id: str) -> dict[str, Any]:
    ops = _rows(db, "SELECT incident_id, warehouse_id, cause, reason, opened_at, closed_at, "
                    "moved, stuck FROM ops_incidents WHERE incident_id = :i", {"i": incident_id})
    reroute = _rows(db, "SELECT id, warehouse_id, reason, started_at, moved, stuck "
                        "FROM incidents WHERE id = :i", {"i": incident_id})
    if not ops and not reroute:
        raise NotFound("incident", incident_id)
    head: dict[str, Any] = {"incident_id": incident_id, "cause": None, "closed_at": None}
    if reroute:
        r = reroute[0]
        head.update(warehouse_id=r["warehouse_id"], reason=r["reason"],
                    opened_at=r["started_at"], moved=r["moved"], stuck=r["stuck"],
                    rerouted_at=r["started_at"])
    if ops:
        o = ops[0]
        head.update(warehouse_id=o["warehouse_id"], cause=o["cause"],
                    reason=o["reason"] or head.get("reason"), opened_at=o["opened_at"],
                    closed_at=o["closed_at"])
        head.setdefault("moved", o["moved"])
        head.setdefault("stuck", o["stuck"])
    head["open"] = head["closed_at"] is None
    wh = _rows(db, "SELECT name, address FROM warehouses WHERE id = :w",
               {"w": head["warehouse_id"]})
    head["warehouse_name"] = wh[0]["name"] if wh else None
    head["warehouse_address"] = wh[0]["address"] if wh else None
    return head


def _trip(events: list[dict[str, Any]], incident_id: str) -> dict[str, Any] | None:
    """The event that opened this incident's breaker: its episode, else the first open."""
    opened = [e for e in events if e["open"]]
    return next((e for e in opened if e["episode_id"] == incident_id),
                opened[0] if opened else None)


def _tripping(trip: dict[str, Any] | None) -> dict[str, Any] | None:
    if trip is None:
        return None
    limit = trip["limit"]
    values = trip["values"]
    over = values
    if limit is not None:
        above = limit["op"] == "above"
        over = [v for v in values if v["metric"] == limit["metric"]
                and (v["value"] > limit["value"] if above else v["value"] < limit["value"])]
    first = min((v["ts"] for v in over), key=datetime.fromisoformat, default=None)
    duration = ((datetime.fromisoformat(trip["event_time"]) - datetime.fromisoformat(first))
                .total_seconds() if first else None)
    extreme = None
    if over:
        pick = max if limit is None or limit["op"] == "above" else min
        extreme = pick(v["value"] for v in over)
    return {"zone": trip["zone"], "rule": trip["rule"], "breaker": trip["breaker"],
            "reason": trip["reason"], "limit": limit, "first_over_at": first,
            "tripped_at": trip["event_time"], "duration_s": duration, "extreme": extreme,
            "readings": values}


def _chart(db: Database, warehouse_id: str, since: datetime, until: datetime
           ) -> dict[str, Any]:
    """Per zone and metric: columns of epoch seconds (window end), mean, min and max, as
    the page's chart library takes them."""
    zones: dict[str, dict[str, dict[str, list[float]]]] = {}
    for w in telemetry.series(db, warehouse_id, since, until):
        series = zones.setdefault(w.zone, {}).setdefault(
            w.metric, {"t": [], "mean": [], "min": [], "max": []})
        series["t"].append(w.window_end.timestamp())
        series["mean"].append(w.mean)
        series["min"].append(w.min)
        series["max"].append(w.max)
    return {"since": stamp(since), "until": stamp(until), "zones": zones}


def _destinations(db: Database, incident_id: str) -> list[dict[str, Any]]:
    return _rows(db, "SELECT io.new_warehouse_id AS warehouse_id, w.name, w.address, "
                     "count(*) AS orders FROM incident_orders io LEFT JOIN warehouses w "
                     "ON w.id = io.new_warehouse_id WHERE io.incident_id = :i "
                     "AND io.outcome = 'moved' GROUP BY io.new_warehouse_id, w.name, w.address "
                     "ORDER BY count(*) DESC, io.new_warehouse_id", {"i": incident_id})


def _orders(db: Database, incident_id: str) -> list[dict[str, Any]]:
    return _rows(db, "SELECT io.order_id, io.outcome, io.new_warehouse_id, io.eta, io.reason, "
                     "io.distance_km, o.channel, o.channel_order_id, o.store_id, o.status "
                     "FROM incident_orders io JOIN orders o ON o.id = io.order_id "
                     "WHERE io.incident_id = :i ORDER BY io.outcome, io.new_warehouse_id, "
                     "o.channel_order_id LIMIT :n", {"i": incident_id, "n": ORDERS_SHOWN})


def _notices(db: Database, incident_id: str) -> list[dict[str, Any]]:
    return _rows(db, "SELECT kind, status, count(*) AS n, min(created_at) AS first_at, "
                     "max(coalesce(sent_at, created_at)) AS last_at, max(last_error) AS error "
                     "FROM ops_notifications WHERE incident_id = :i GROUP BY kind, status "
                     "ORDER BY min(created_at), kind, status", {"i": incident_id})


def _timeline(head: dict[str, Any], events: list[dict[str, Any]],
              tripping: dict[str, Any] | None, audit: list[dict[str, Any]],
              destinations: list[dict[str, Any]], notices: list[dict[str, Any]],
              actions: list[incident_log.ActionRow]) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []

    def add(at: str | None, kind: str, **detail: Any) -> None:
        if at:
            items.append({"at": at, "kind": kind, **detail})

    if tripping and tripping["first_over_at"]:
        add(tripping["first_over_at"], "first_over_limit", zone=tripping["zone"],
            limit=tripping["limit"])
    for e in events:
        if e["state"] == "pending":
            add(e["event_time"], "breaker_pending", zone=e["zone"], breaker=e["breaker"])
        elif e["open"]:
            add(e["event_time"], "tripped", zone=e["zone"], breaker=e["breaker"],
                reason=e["reason"])
        elif e["state"] == "ok":
            add(e["event_time"], "cleared", zone=e["zone"], breaker=e["breaker"],
                reason=e["reason"])
        delay = (datetime.fromisoformat(e["received_at"])
                 - datetime.fromisoformat(e["event_time"])).total_seconds()
        if e["open"] or e["state"] == "ok":
            # a late delivery means the uplink was down when it happened
            add(e["received_at"], "event_delivered", breaker=e["breaker"], state=e["state"],
                delay_s=round(delay, 1),
                late=bool(e["historical"] or delay > LATE_DELIVERY_S))
    for a in audit:
        add(a["at"], a["action"], actor=a["actor"], reason=a["reason"])
    if head.get("rerouted_at"):
        # the reroute record carries event time (the trip); it ran when head office took
        # the warehouse out of service, in the same transaction
        out_of_service = next((a["at"] for a in audit if a["action"] == "unavailable"), None)
        add(out_of_service or head["rerouted_at"], "rerouted", moved=head.get("moved", 0),
            stuck=head.get("stuck", 0), destinations=destinations)
    for n in notices:
        add(n["last_at"] if n["status"] == "sent" else n["first_at"],
            f"notices_{n['status']}", channel=n["kind"], count=n["n"], error=n["error"])
    for act in actions:
        add(act.at, act.action, actor=act.actor, detail=act.detail)
    add(head.get("closed_at"), "closed")
    items.sort(key=lambda i: datetime.fromisoformat(i["at"]))
    return items


def incident_view(db: Database, incident_id: str, now: datetime) -> dict[str, Any]:
    """Everything the incident page shows, in one read transaction.

    Raises :class:`NotFound` for an unknown incident."""
    begin_read(db)
    try:
        head = _header(db, incident_id)
        opened = datetime.fromisoformat(head["opened_at"])
        closed = datetime.fromisoformat(head["closed_at"]) if head["closed_at"] else None
        since = opened - CHART_BEFORE
        until = min(now, (closed or now) + CHART_AFTER)
        wid = head["warehouse_id"]
        events = incident_log.breaker_log(db, wid, stamp(since), stamp(closed or now))
        # the trip before the incident opened and the first clear after it: this story
        trip = _trip(events, incident_id)
        tripping = _tripping(trip)
        audit = _rows(db, "SELECT action, actor, reason, at FROM ops_warehouse_audit "
                          "WHERE incident_id = :i OR (warehouse_id = :w AND at >= :o "
                          "AND at <= :c AND action IN ('pause', 'resume')) ORDER BY id",
                      {"i": incident_id, "w": wid, "o": head["opened_at"],
                       "c": head["closed_at"] or stamp(now)})
        destinations = _destinations(db, incident_id)
        notices = _notices(db, incident_id)
        actions = incident_log.actions(db, incident_id)
        acked = next((a for a in actions if a.action == "acknowledged"), None)
        assigned = [a for a in actions if a.action == "assigned"]
        head["acknowledged_by"] = acked.actor if acked else None
        head["acknowledged_at"] = acked.at if acked else None
        head["assigned_to"] = assigned[-1].detail.get("assignee") if assigned else None
        markers = [{"kind": "trip", "at": e["event_time"], "zone": e["zone"]}
                   for e in events if e["open"]]
        markers += [{"kind": "clear", "at": e["event_time"], "zone": e["zone"]}
                    for e in events if e["state"] == "ok"]
        return {
            "incident": head,
            "tripping": tripping,
            "timeline": _timeline(head, events, tripping, audit, destinations, notices,
                                  actions),
            "chart": {**_chart(db, wid, since, until),
                      "limit": tripping["limit"] if tripping else None,
                      "markers": markers},
            "destinations": destinations,
            "orders": _orders(db, incident_id),
            "notices": notices,
            "actions": [a.as_json() for a in actions],
        }
    finally:
        db.conn.execute("ROLLBACK")
