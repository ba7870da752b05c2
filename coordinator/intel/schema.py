"""Tables of the intel module (``coordinator_intel`` migration set).

- ``history_orders``: imported past orders, one row per order line, (order_no, sku)
  unique so a re-import replaces; apart from the live ``orders`` on purpose: history never
  reserves stock nor enters allocation.
- ``return_requests``: a return or exchange with the customer's text, the predicted
  reason, its confidence and the model version that classified it; ``reason`` is the
  current label (the prediction or the latest correction).
- ``return_corrections``: who changed a label, from what to what, when (append-only).
- ``return_models``: each trained classifier (version, parameters as JSON, training size,
  ``model_id``: random, the cache key of the parsed model).
- ``heal_events``: exceptions the self-healing adapters met (kind ``address`` or
  ``parcel``) and whether the system resolved them alone (``healed``) or handed them to a
  person; the self-healing rate counts them beside the reroute incidents.
- ``address_checks``: each delivery address checked, what it became and the outcome
  (``as_given``, ``corrected`` by a geocoder, ``failed``: handed to a person).
- ``parcel_handovers``: a parcel found stuck with its carrier and handed (or not) to the
  backup carrier; one row per parcel, so it is never handed over twice.
"""

from __future__ import annotations

from sqlite_utils import Database, Migrations

migrations = Migrations("coordinator_intel")

_M001 = (
    """CREATE TABLE history_orders (
        order_no TEXT NOT NULL, sku TEXT NOT NULL, qty INTEGER NOT NULL,
        ordered_at TEXT NOT NULL, paid_at TEXT, entered_at TEXT, promised_at TEXT,
        delivered_at TEXT, channel TEXT NOT NULL, address TEXT NOT NULL DEFAULT '',
        lat REAL, lon REAL, store TEXT NOT NULL DEFAULT '', carrier TEXT NOT NULL DEFAULT '',
        exception TEXT NOT NULL DEFAULT '', import_id TEXT NOT NULL,
        PRIMARY KEY (order_no, sku))""",
    "CREATE INDEX history_orders_ordered ON history_orders (ordered_at)",
    """CREATE TABLE return_requests (
        id INTEGER PRIMARY KEY, order_id TEXT NOT NULL, kind TEXT NOT NULL,
        text TEXT NOT NULL, predicted TEXT NOT NULL, confidence REAL NOT NULL,
        model_version INTEGER NOT NULL, reason TEXT NOT NULL,
        warehouse_id TEXT, sku_id TEXT, carrier TEXT, created_at TEXT NOT NULL)""",
    "CREATE INDEX return_requests_order ON return_requests (order_id)",
    """CREATE TABLE return_corrections (
        id INTEGER PRIMARY KEY, return_id INTEGER NOT NULL REFERENCES return_requests (id),
        old_reason TEXT NOT NULL, new_reason TEXT NOT NULL, actor TEXT NOT NULL,
        at TEXT NOT NULL, used_in_version INTEGER)""",
    """CREATE TABLE return_models (
        version INTEGER PRIMARY KEY, trained_at TEXT NOT NULL, examples INTEGER NOT NULL,
        corrections INTEGER NOT NULL, trigger TEXT NOT NULL, params TEXT NOT NULL)""",
    """CREATE TABLE heal_events (
        id INTEGER PRIMARY KEY, kind TEXT NOT NULL CHECK (kind IN ('address', 'parcel')),
        order_id TEXT NOT NULL, healed INTEGER NOT NULL, at TEXT NOT NULL,
        detail TEXT NOT NULL)""",
    """CREATE TABLE address_checks (
        id INTEGER PRIMARY KEY, order_id TEXT NOT NULL, original TEXT NOT NULL,
        corrected TEXT, lat REAL, lon REAL, level TEXT, source TEXT,
        outcome TEXT NOT NULL CHECK (outcome IN ('as_given', 'corrected', 'failed')),
        at TEXT NOT NULL)""",
    "CREATE INDEX address_checks_order ON address_checks (order_id)",
    """CREATE TABLE parcel_handovers (
        shipment_id TEXT PRIMARY KEY, order_id TEXT, warehouse_id TEXT NOT NULL,
        from_carrier TEXT NOT NULL, to_carrier TEXT NOT NULL, last_update_at TEXT NOT NULL,
        outcome TEXT NOT NULL CHECK (outcome IN ('handed_over', 'failed')),
        new_tracking_no TEXT, error TEXT, at TEXT NOT NULL)""",
)


@migrations()
def m001_intel(db: Database) -> None:
    """History, returns, classifier versions, self-healing events, addresses, parcels."""
    for statement in _M001:
        db.conn.execute(statement)


@migrations()
def m002_model_id(db: Database) -> None:
    """A random id per trained model: parsed models are cached by it, the same in every
    process and on every backend (a version number repeats across databases)."""
    db.conn.execute("ALTER TABLE return_models ADD COLUMN model_id TEXT")
    db.conn.execute("UPDATE return_models SET model_id = 'v' || version")
