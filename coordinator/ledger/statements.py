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
# the order's timeline entry, built inside the database from the incident record just
# written (both functions keep this key order): no per-order JSON encoding in Python
MOVED_EVENTS = {
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
MOVED_LINES = (
    "UPDATE order_lines SET warehouse_id = io.new_warehouse_id "
    "FROM incident_orders AS io, reservations AS r "
    "WHERE io.incident_id = ? AND io.outcome = 'moved' AND r.order_id = io.order_id "
    "AND r.warehouse_id = ? AND r.status = 'held' "
    "AND order_lines.order_id = r.order_id AND order_lines.line_no = r.line_no"
)
MOVED_RESERVATIONS = (
    "UPDATE reservations SET warehouse_id = io.new_warehouse_id, updated_at = ? "
    "FROM incident_orders AS io WHERE io.incident_id = ? AND io.outcome = 'moved' "
    "AND reservations.order_id = io.order_id AND reservations.warehouse_id = ? "
    "AND reservations.status = 'held'"
)
MOVED_ORDERS = (
    "UPDATE orders SET warehouse_id = io.new_warehouse_id, distance_km = io.distance_km, "
    "eta = io.eta, updated_at = ? FROM incident_orders AS io "
    "WHERE io.incident_id = ? AND io.outcome = 'moved' AND orders.id = io.order_id "
    "AND orders.warehouse_id = ?"
)
