"""Schema of the coordinator's core tables (warehouses, stock, orders, decisions, incidents).

Written as plain SQL so constraints (composite keys, UNIQUE, CHECK, append-only triggers)
say exactly what the store relies on. Times are ISO-8601 UTC strings; booleans are 0/1.

Reference data (inventory -> warehouses, skus) is guarded by foreign keys. The order-side
tables are not: the store checks every SKU, store and warehouse before it writes
(``NotFound`` names the one missing), and per-row foreign-key checks doubled the cost of
moving reservations in a reroute.

Tables (``coordinator_core`` migration set):

- ``warehouses``: id, name, address, lat, lon, cold_chain, daily_capacity (0 = unlimited),
  capacity_override, available, unavailable_reason, paused, updated_at
- ``skus``: id, name, cold_chain
- ``inventory``: (warehouse_id, sku_id) -> on_hand, reserved, safety_stock, updated_at
- ``stores``: id, name, franchisee, address, lat, lon, contact
- ``orders``: id, channel, channel_order_id (UNIQUE with channel), store_id, customer_id,
  items (JSON list of {sku_id, qty}), lat, lon, client_submitted_at, received_at, skew_ms,
  skewed, tier, status, status_reason, warehouse_id, distance_km, eta, allocated_at,
  updated_at
- ``order_lines``: (order_id, line_no) -> sku_id, qty, warehouse_id
- ``order_events``: append-only timeline (id, order_id, kind, at, detail JSON)
- ``allocation_decisions``: one row per allocation (initial or reroute) with the candidate
  trace (JSON) and the rule-set version that decided
- ``reservations``: per order line and warehouse: qty, status held/shipped/released
- ``warehouse_load``: orders taken per warehouse per UTC day (daily handling capacity)
- ``incidents`` / ``incident_orders``: one reroute and what moved where (or could not)
- ``alerts``: things an operator must see (unallocated orders, stuck reroutes)
- ``meta``: counters, e.g. ``warehouses_version`` (bumped by triggers on every warehouse
  change so snapshot caches know when to rebuild their spatial index) and
  ``skus_version``
"""

from __future__ import annotations

import sqlite3

from sqlite_utils import Database, Migrations

from protocols.timestamps import SQLITE_STAMP

migrations = Migrations("coordinator_core")


def _run_script(db: Database, script: str) -> None:
    """Run statements one by one: ``executescript`` would COMMIT the migration's transaction."""
    pending = ""
    for line in script.splitlines(keepends=True):
        pending += line
        if sqlite3.complete_statement(pending):
            db.conn.execute(pending)
            pending = ""
    if pending.strip():
        message = f"incomplete SQL statement in migration: {pending.strip()[:60]}"
        raise ValueError(message)


@migrations()
def m001_core(db: Database) -> None:
    """Warehouses, SKUs, stock, stores, orders, timeline, decisions, reservations."""
    _run_script(
        db,
        """
        CREATE TABLE meta (
            key TEXT PRIMARY KEY,
            value INTEGER NOT NULL DEFAULT 0
        );
        INSERT INTO meta (key, value) VALUES ('warehouses_version', 0);
        INSERT INTO meta (key, value) VALUES ('skus_version', 0);

        CREATE TABLE warehouses (
            id TEXT PRIMARY KEY,
            name TEXT NOT NULL,
            address TEXT NOT NULL DEFAULT '',
            lat REAL NOT NULL CHECK (lat BETWEEN -90 AND 90),
            lon REAL NOT NULL CHECK (lon BETWEEN -180 AND 180),
            cold_chain INTEGER NOT NULL DEFAULT 0,
            daily_capacity INTEGER NOT NULL DEFAULT 0 CHECK (daily_capacity >= 0),
            capacity_override INTEGER NOT NULL DEFAULT 0,
            available INTEGER NOT NULL DEFAULT 1,
            unavailable_reason TEXT,
            paused INTEGER NOT NULL DEFAULT 0,
            updated_at TEXT
        );
        CREATE TRIGGER warehouses_version_insert AFTER INSERT ON warehouses BEGIN
            UPDATE meta SET value = value + 1 WHERE key = 'warehouses_version';
        END;
        CREATE TRIGGER warehouses_version_update AFTER UPDATE ON warehouses BEGIN
            UPDATE meta SET value = value + 1 WHERE key = 'warehouses_version';
        END;
        CREATE TRIGGER warehouses_version_delete AFTER DELETE ON warehouses BEGIN
            UPDATE meta SET value = value + 1 WHERE key = 'warehouses_version';
        END;

        CREATE TABLE skus (
            id TEXT PRIMARY KEY,
            name TEXT NOT NULL DEFAULT '',
            cold_chain INTEGER NOT NULL DEFAULT 0
        );
        CREATE TRIGGER skus_version_insert AFTER INSERT ON skus BEGIN
            UPDATE meta SET value = value + 1 WHERE key = 'skus_version';
        END;
        CREATE TRIGGER skus_version_update AFTER UPDATE ON skus BEGIN
            UPDATE meta SET value = value + 1 WHERE key = 'skus_version';
        END;

        CREATE TABLE inventory (
            warehouse_id TEXT NOT NULL REFERENCES warehouses(id),
            sku_id TEXT NOT NULL REFERENCES skus(id),
            on_hand INTEGER NOT NULL DEFAULT 0 CHECK (on_hand >= 0),
            reserved INTEGER NOT NULL DEFAULT 0 CHECK (reserved >= 0),
            safety_stock INTEGER NOT NULL DEFAULT 0 CHECK (safety_stock >= 0),
            updated_at TEXT,
            PRIMARY KEY (warehouse_id, sku_id),
            -- never promise what is not there: reserved stock plus safety stock fits on hand
            CHECK (reserved <= on_hand)
        ) WITHOUT ROWID;
        CREATE INDEX inventory_sku ON inventory (sku_id, warehouse_id);

        CREATE TABLE stores (
            id TEXT PRIMARY KEY,
            name TEXT NOT NULL,
            franchisee TEXT NOT NULL DEFAULT '',
            address TEXT NOT NULL DEFAULT '',
            lat REAL NOT NULL CHECK (lat BETWEEN -90 AND 90),
            lon REAL NOT NULL CHECK (lon BETWEEN -180 AND 180),
            contact TEXT NOT NULL DEFAULT ''
        );

        CREATE TABLE orders (
            id TEXT PRIMARY KEY,
            channel TEXT NOT NULL,
            channel_order_id TEXT NOT NULL,
            store_id TEXT,
            customer_id TEXT,
            items TEXT NOT NULL,
            lat REAL NOT NULL,
            lon REAL NOT NULL,
            client_submitted_at TEXT,
            received_at TEXT NOT NULL,
            skew_ms INTEGER,
            skewed INTEGER NOT NULL DEFAULT 0,
            tier INTEGER NOT NULL,
            status TEXT NOT NULL,
            status_reason TEXT,
            warehouse_id TEXT,
            distance_km REAL,
            eta TEXT,
            allocated_at TEXT,
            updated_at TEXT NOT NULL,
            UNIQUE (channel, channel_order_id)
        );
        CREATE INDEX orders_warehouse_status ON orders (warehouse_id, status);
        CREATE INDEX orders_status ON orders (status);

        CREATE TABLE order_lines (
            order_id TEXT NOT NULL,
            line_no INTEGER NOT NULL,
            sku_id TEXT NOT NULL,
            qty INTEGER NOT NULL CHECK (qty > 0),
            warehouse_id TEXT,
            PRIMARY KEY (order_id, line_no)
        ) WITHOUT ROWID;

        CREATE TABLE order_events (
            id INTEGER PRIMARY KEY,
            order_id TEXT NOT NULL,
            kind TEXT NOT NULL,
            at TEXT NOT NULL,
            detail TEXT NOT NULL DEFAULT '{}'
        );
        CREATE INDEX order_events_order ON order_events (order_id, id);
        CREATE TRIGGER order_events_append_only_update BEFORE UPDATE ON order_events BEGIN
            SELECT RAISE(ABORT, 'order_events is append-only');
        END;
        CREATE TRIGGER order_events_append_only_delete BEFORE DELETE ON order_events BEGIN
            SELECT RAISE(ABORT, 'order_events is append-only');
        END;

        CREATE TABLE allocation_decisions (
            id INTEGER PRIMARY KEY,
            order_id TEXT NOT NULL,
            decided_at TEXT NOT NULL,
            kind TEXT NOT NULL,
            incident_id TEXT,
            rule_set_version TEXT NOT NULL,
            outcome TEXT NOT NULL,
            warehouse_ids TEXT NOT NULL DEFAULT '[]',
            reason TEXT,
            tier INTEGER NOT NULL,
            need_cold_chain INTEGER NOT NULL,
            trace TEXT NOT NULL
        );
        CREATE INDEX allocation_decisions_order ON allocation_decisions (order_id, id);

        CREATE TABLE reservations (
            id INTEGER PRIMARY KEY,
            order_id TEXT NOT NULL,
            line_no INTEGER NOT NULL,
            sku_id TEXT NOT NULL,
            warehouse_id TEXT NOT NULL,
            qty INTEGER NOT NULL CHECK (qty > 0),
            status TEXT NOT NULL CHECK (status IN ('held', 'shipped', 'released')),
            created_at TEXT NOT NULL,
            updated_at TEXT NOT NULL
        );
        CREATE INDEX reservations_order ON reservations (order_id, status);
        CREATE INDEX reservations_warehouse ON reservations (warehouse_id, status);

        CREATE TABLE warehouse_load (
            warehouse_id TEXT NOT NULL,
            day TEXT NOT NULL,
            handled INTEGER NOT NULL DEFAULT 0,
            PRIMARY KEY (warehouse_id, day)
        ) WITHOUT ROWID;

        CREATE TABLE incidents (
            id TEXT PRIMARY KEY,
            warehouse_id TEXT NOT NULL,
            reason TEXT NOT NULL,
            started_at TEXT NOT NULL,
            rule_set_version TEXT NOT NULL,
            moved INTEGER NOT NULL,
            stuck INTEGER NOT NULL
        );

        CREATE TABLE incident_orders (
            incident_id TEXT NOT NULL,
            order_id TEXT NOT NULL,
            outcome TEXT NOT NULL CHECK (outcome IN ('moved', 'stuck')),
            old_warehouse_id TEXT NOT NULL,
            new_warehouse_id TEXT,
            distance_km REAL,
            eta TEXT,
            tier INTEGER NOT NULL,
            reason TEXT,
            PRIMARY KEY (incident_id, order_id)
        ) WITHOUT ROWID;

        CREATE TABLE alerts (
            id INTEGER PRIMARY KEY,
            at TEXT NOT NULL,
            kind TEXT NOT NULL,
            order_id TEXT,
            warehouse_id TEXT,
            incident_id TEXT,
            message TEXT NOT NULL
        );
        CREATE INDEX alerts_at ON alerts (at);
        """
    )


# an ISO-8601 time with an explicit offset: what was written before m002 (``+00:00``,
# milliseconds or microseconds); the one format now ends in ``Z``
_OFFSET_TIME = ("[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]T[0-9][0-9]:[0-9][0-9]:[0-9][0-9]"
                "*[+-][0-9][0-9]:[0-9][0-9]")


def restamp(db: Database, tables: list[str]) -> None:
    """Rewrite every stored time in ``tables`` to the one format
    (:mod:`protocols.timestamps`). Only whole values that are an ISO-8601 time with an
    offset change, so ids, reasons and JSON documents stay as they are."""
    for table in tables:
        columns = [r[1] for r in db.conn.execute(f"PRAGMA table_info({table})").fetchall()
                   if r[2].upper() == "TEXT"]
        for column in columns:
            db.conn.execute(
                f"UPDATE {table} SET {column} = strftime(?, {column}) "
                f"WHERE {column} GLOB ?", [SQLITE_STAMP, _OFFSET_TIME],
            )


@migrations()
def m002_one_timestamp_format(db: Database) -> None:
    """Times were written with milliseconds and with microseconds, both ``+00:00``, and
    compared as text (``...56.5+00:00`` sorts after ``...56.123456+00:00``): all become
    ``YYYY-MM-DDTHH:MM:SS.mmmZ``. The timeline is append-only; its guard is lifted for
    this one rewrite and put back."""
    db.conn.execute("DROP TRIGGER order_events_append_only_update")
    restamp(db, ["warehouses", "skus", "inventory", "stores", "orders", "order_lines",
                 "order_events", "allocation_decisions", "reservations", "incidents",
                 "incident_orders", "alerts"])
    _run_script(
        db,
        """
        CREATE TRIGGER order_events_append_only_update BEFORE UPDATE ON order_events BEGIN
            SELECT RAISE(ABORT, 'order_events is append-only');
        END;
        """,
    )
