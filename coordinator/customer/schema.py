"""Schema of the customer side (named migration set ``coordinator_customer``).

- ``customer_contacts``: the buyer's phone, name and delivery address text per order, as
  the channel sent them (``masked``), the consent it reported, ``phone_key`` (digits, for
  answering inquiries by phone; NULL for masked numbers) and ``erase_after`` (retention:
  delivery or cancellation + ``customer.retention_days``). Erasure blanks the personal
  columns and stamps ``erased_at``; ``customer_pii_audit`` records every erasure.
- ``customer_messages``: one row per (order, node) sent to the customer: the status-node
  messages are sent once per node per order, whatever repeats.
- ``customer_inquiries``: each inquiry (channel, order number or phone, text, the
  channel's own timestamp), the reply and the outbox notification that carried it; its
  ``sent_at`` there is when the channel's receiver acknowledged the reply.
- ``customer_payments``: unpaid orders and their deadlines (remind_at, cancel_at) as data;
  ``reminded_at`` / ``cancelled_at`` / ``paid_at`` say what fired, so each fires once,
  across restarts.
- ``customer_cursors``: how far the node sweep read ``order_events`` (started by the
  customer service at the events that exist then, so upgrading never messages history;
  no seed row, so a copy to another database starts from empty tables).

The notification outbox (``ops_notifications``) gains the kind ``customer`` (messages to
customers: channel webhook, WeChat subscribe message, SMS).
"""

from __future__ import annotations

from sqlite_utils import Database, Migrations

migrations = Migrations("coordinator_customer")


@migrations()
def m001_customer(db: Database) -> None:
    conn = db.conn
    # SQLite cannot change a CHECK: the outbox is rebuilt with the new kind, rows kept
    conn.execute("ALTER TABLE ops_notifications RENAME TO ops_notifications_old")
    conn.execute(
        """
        CREATE TABLE ops_notifications (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            kind TEXT NOT NULL
                CHECK (kind IN ('franchisee', 'wecom', 'sms', 'webhook', 'customer')),
            dedupe_key TEXT NOT NULL UNIQUE,
            incident_id TEXT,
            payload TEXT NOT NULL,
            status TEXT NOT NULL CHECK (status IN ('pending', 'sent', 'failed')),
            attempts INTEGER NOT NULL DEFAULT 0,
            next_attempt_at TEXT NOT NULL,
            last_error TEXT,
            created_at TEXT NOT NULL,
            sent_at TEXT
        )
        """
    )
    conn.execute("INSERT INTO ops_notifications SELECT * FROM ops_notifications_old")
    conn.execute("DROP TABLE ops_notifications_old")
    conn.execute("DROP INDEX IF EXISTS ops_notifications_due")
    conn.execute(
        "CREATE INDEX ops_notifications_due ON ops_notifications (status, next_attempt_at)")
    conn.execute(
        """
        CREATE TABLE customer_contacts (
            order_id TEXT PRIMARY KEY,
            channel TEXT NOT NULL,
            phone TEXT,
            phone_key TEXT,
            name TEXT,
            address TEXT,
            consent INTEGER,
            masked INTEGER NOT NULL DEFAULT 0,
            created_at TEXT NOT NULL,
            erase_after TEXT,
            erased_at TEXT
        )
        """
    )
    conn.execute("CREATE INDEX customer_contacts_phone ON customer_contacts (phone_key)")
    conn.execute("CREATE INDEX customer_contacts_erase ON customer_contacts (erase_after)")
    conn.execute(
        """
        CREATE TABLE customer_pii_audit (
            id INTEGER PRIMARY KEY,
            at TEXT NOT NULL,
            action TEXT NOT NULL,
            order_id TEXT NOT NULL,
            reason TEXT NOT NULL
        )
        """
    )
    conn.execute(
        """
        CREATE TABLE customer_messages (
            order_id TEXT NOT NULL,
            node TEXT NOT NULL,
            at TEXT NOT NULL,
            route TEXT NOT NULL,
            dedupe_key TEXT NOT NULL,
            PRIMARY KEY (order_id, node)
        )
        """
    )
    conn.execute(
        """
        CREATE TABLE customer_inquiries (
            id TEXT PRIMARY KEY,
            channel TEXT NOT NULL,
            channel_order_id TEXT,
            phone_key TEXT,
            question TEXT NOT NULL,
            asked_at TEXT NOT NULL,
            received_at TEXT NOT NULL,
            order_ids TEXT NOT NULL,
            reply TEXT NOT NULL,
            dedupe_key TEXT
        )
        """
    )
    conn.execute("CREATE INDEX customer_inquiries_received ON customer_inquiries (received_at)")
    conn.execute(
        """
        CREATE TABLE customer_payments (
            order_id TEXT PRIMARY KEY,
            store_id TEXT,
            received_at TEXT NOT NULL,
            remind_at TEXT NOT NULL,
            cancel_at TEXT NOT NULL,
            paid_at TEXT,
            reminded_at TEXT,
            cancelled_at TEXT,
            payment_ref TEXT
        )
        """
    )
    conn.execute("CREATE INDEX customer_payments_due ON customer_payments (paid_at, remind_at)")
    conn.execute(
        """
        CREATE TABLE customer_cursors (
            name TEXT PRIMARY KEY,
            value INTEGER NOT NULL
        )
        """
    )
