"""The ledger's SQL: row inserts and the set-based statements of a reroute's moves."""

from __future__ import annotations

# columns of a new order row, in the order :meth:`Ledger.add_order` takes them
ORDER_COLUMNS = (
    "id", "channel", "channel_order_id", "store_id", "customer_id", "items", "lat", "lon",
    "client_submitted_at", "received_at", "skew_ms", "skewed", "tier", "status",
    "status_reason", "warehouse_id", "distance_km", "eta", "allocated_at", "updated_at",
)
INSERT_ORDER = (
    f"INSERT INTO orders ({', '.join(ORDER_COLUMNS)}) "
    f"VALUES ({', '.join('?' * len(ORDER_COLUMNS))})"
)
INSERT_DECISION = (
    "INSERT INTO allocation_decisions (order_id, decided_at, kind, incident_id, "
    "rule_set_version, outcome, warehouse_ids, reason, tier, need_cold_chain, trace) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
INSERT_EVENT = "INSERT INTO order_events (order_id, kind, at, detail) VALUES (?, ?, ?, ?)"
INSERT_ALERT = (
    "INSERT INTO alerts (at, kind, order_id, warehouse_id, incident_id, message) "
    "VALUES (?, ?, ?, ?, ?, ?)"
)
# A reroute's moves, set-based from the incident record just written: the order's
# timeline entry (built inside the database, both functions keep this key order: no
# per-order JSON encoding in Python), then its held reservations at the failed warehouse
# and their lines go where the incident record says, as the order itself does (a
# split's lines are then put where their part says, row by row). Each statement exists
# for the whole incident and for a share of its orders (a JSON array of ids on SQLite,
# an array on PostgreSQL), so a long reroute writes one share while it decides the next.
_SHARE = {"sqlite": " AND order_id IN (SELECT value FROM json_each(:share))",
          "postgresql": " AND order_id = ANY(:share)"}


def moved_statements(dialect_name: str, *, share: bool) -> tuple[str, str, str, str]:
    """(lines, reservations, orders, events) of a reroute's moves; named parameters
    ``incident``, ``share`` (when ``share``), ``at``, ``from_wh``, ``reason``.

    Each starts from the incident's moved orders (of the share) and looks their rows up
    by order: planned the other way round, from the failed
    warehouse's held reservations, each share would walk every row not moved yet. So the
    failed warehouse is compared as ``warehouse_id || '' = ?``: the same test, but no
    index on ``warehouse_id`` can serve it, and both planners take the order's index."""
    rows = ("SELECT order_id, new_warehouse_id, distance_km, eta, incident_id, "
            "old_warehouse_id, tier FROM incident_orders WHERE incident_id = :incident "
            "AND outcome = 'moved'" + (_SHARE[dialect_name] if share else ""))
    if dialect_name == "postgresql":  # a CTE: planned on its own, never flattened into
        io, source = f"WITH io AS MATERIALIZED ({rows}) ", "io"
    else:  # sqlite3 counts rows only of statements that begin with INSERT or UPDATE
        io, source = "", f"({rows}) AS io"
    function, reason, cast = (("json_object", ":reason", "") if dialect_name == "sqlite"
                              else ("json_build_object", ":reason::text", "::text"))
    lines = (io + "UPDATE order_lines SET warehouse_id = io.new_warehouse_id "
             f"FROM {source}, reservations AS r WHERE r.order_id = io.order_id "
             "AND r.status = 'held' AND r.warehouse_id || '' = :from_wh "
             "AND order_lines.order_id = r.order_id AND order_lines.line_no = r.line_no")
    held = (io + "UPDATE reservations SET warehouse_id = io.new_warehouse_id, "
            f"updated_at = :at FROM {source} WHERE reservations.order_id = io.order_id "
            "AND reservations.status = 'held' AND reservations.warehouse_id || '' = :from_wh")
    orders = (io + "UPDATE orders SET warehouse_id = io.new_warehouse_id, "
              f"distance_km = io.distance_km, eta = io.eta, updated_at = :at FROM {source} "
              "WHERE orders.id = io.order_id AND orders.warehouse_id = :from_wh")
    events = (io + "INSERT INTO order_events (order_id, kind, at, detail) "
              f"SELECT io.order_id, 'rerouted', :at, {function}('incident_id', io.incident_id, "
              "'from', io.old_warehouse_id, 'to', io.new_warehouse_id, 'distance_km', "
              f"io.distance_km, 'eta', io.eta, 'tier', io.tier, 'reason', {reason}){cast} "
              f"FROM {source}")
    return lines, held, orders, events


MOVED = {(name, share): moved_statements(name, share=share)
         for name in ("sqlite", "postgresql") for share in (False, True)}
