"""The customer side's tick: status-node messages, late orders, unpaid deadlines, retention.

:func:`customer_tick` is fed the time (``now``) and does what is due, each part in its
own transaction and each thing once:

- **nodes**: a sweep over ``order_events`` past a cursor; every allocated, rerouted,
  shipped, in-transit or delivered entry queues that node's message for the order,
  claimed in ``customer_messages`` (order, node) so a repeat event (a second in-transit
  scan, a replayed update) sends nothing. A delivered or cancelled order's contact is
  scheduled for erasure (retention).
- **delayed**: orders past their ETA by ``delayed_after_min``, not delivered: one message.
- **unpaid**: deadlines stored with the order (``customer_payments``): at ``remind_at``
  one WeCom message to the store and one SMS with a coupon to the customer; at
  ``cancel_at`` the order is cancelled (its reservation released) and waiting orders of
  its SKUs are retried. ``reminded_at`` / ``cancelled_at`` are written in the same
  transaction as the notices, so a restart neither repeats nor loses one.
- **retention**: contacts past ``erase_after`` are blanked and audited; inquiries older
  than the retention period lose their phone and free text.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from zoneinfo import ZoneInfo

from coordinator import ledger, queries
from coordinator.customer import store
from coordinator.customer.config import CustomerConfig
from coordinator.customer.messages import customer_notice, store_reminder
from coordinator.db import Database, write_transaction
from coordinator.errors import Conflict
from coordinator.ops.notify import outbox
from coordinator.ops.notify.outbox import OutgoingNotice
from coordinator.retry import retry_waiting
from coordinator.settings import Settings
from protocols.timestamps import parse_stamp

log = logging.getLogger(__name__)
NODE_CURSOR = "status_nodes"
SWEEP_BATCH = 2000


@dataclass
class TickResult:
    messages: int = 0
    delayed: int = 0
    reminded: int = 0
    cancelled: int = 0
    erased: int = 0
    unreadable: int = 0  # order events whose stored time could not be read
    notices: list[str] = field(default_factory=list)

    @property
    def queued(self) -> bool:
        return bool(self.messages or self.delayed or self.reminded or self.cancelled)


def node_message(db: Database, order_id: str, node: str, at: datetime, config: CustomerConfig,
                 templates: Mapping[str, Mapping[str, str]], tz: ZoneInfo,
                 now: datetime) -> bool:
    """Queue ``node``'s message for the order once; True when queued now."""
    facts = store.facts_of(db, order_id)
    if facts is None:
        return False
    key = f"customer:{order_id}:{node}"
    notice = customer_notice(node, facts, config, templates, tz, at=at, dedupe_key=key)
    if notice is None:
        return False
    if not store.mark_message(db, order_id, node, now, notice.payload["route"], key):
        return False
    outbox.queue(db, [notice], now)
    return True


def sweep_nodes(db: Database, now: datetime, config: CustomerConfig,
                templates: Mapping[str, Mapping[str, str]], tz: ZoneInfo,
                result: TickResult) -> None:
    # look before taking the write lock: most ticks find nothing new
    if store.newest_event_id(db) <= store.cursor(db, NODE_CURSOR):
        return
    with write_transaction(db):
        events = store.events_after(db, store.cursor(db, NODE_CURSOR), SWEEP_BATCH)
        for event in events:
            try:
                at = parse_stamp(event.at)
            except ValueError:
                # one unreadable row (written before stamps padded years < 1000) must not
                # stop every later order's messages: skipped, counted and logged
                result.unreadable += 1
                log.warning("customer: order event %d of %s has an unreadable time %r; "
                            "skipped", event.id, event.order_id, event.at)
                continue
            if event.kind in config.message_nodes and node_message(
                    db, event.order_id, event.kind, at, config, templates, tz, now):
                result.messages += 1
            if event.kind in store.ENDED_STATUSES:
                store.schedule_erasure(db, event.order_id, at, config.retention)
        if events:
            store.set_cursor(db, NODE_CURSOR, events[-1].id)


def message_late_orders(db: Database, now: datetime, config: CustomerConfig,
                        templates: Mapping[str, Mapping[str, str]], tz: ZoneInfo,
                        result: TickResult) -> None:
    if "delayed" not in config.message_nodes or not store.late_orders(
            db, now, config.delayed_after, limit=1):
        return
    with write_transaction(db):
        for order_id in store.late_orders(db, now, config.delayed_after):
            if node_message(db, order_id, "delayed", now, config, templates, tz, now):
                result.delayed += 1
            else:
                # no route for its channel: claim it anyway so it is not looked at again
                store.mark_message(db, order_id, "delayed", now, "none", "")


def unpaid_deadlines(db: Database, now: datetime, settings: Settings, config: CustomerConfig,
                     templates: Mapping[str, Mapping[str, str]], tz: ZoneInfo,
                     result: TickResult) -> None:
    payment = config.payment
    for due in store.unpaid_due(db, now):
        freed: set[str] = set()
        with write_transaction(db):
            facts = store.facts_of(db, due.order_id)
            if facts is None:
                continue
            if (due.reminded_at is None and now >= datetime.fromisoformat(due.remind_at)
                    and store.mark_reminded(db, due.order_id, now)):
                received = datetime.fromisoformat(due.received_at)
                minutes = int((now - received).total_seconds() // 60)
                code = f"{payment.coupon_prefix}-{due.order_id[-8:].upper()}"
                notices: list[OutgoingNotice | None] = [
                    store_reminder(facts, config, templates, tz, at=now, minutes=minutes),
                    customer_notice(
                        "unpaid_reminder", facts, config, templates, tz, at=now,
                        dedupe_key=f"unpaid:{due.order_id}:reminder", route="sms",
                        extra={"coupon_code": code,
                               "coupon_value": f"{payment.coupon_value_yuan:g}"})]
                outbox.queue(db, [n for n in notices if n is not None], now)
                result.reminded += 1
            if (now >= datetime.fromisoformat(due.cancel_at)
                    and store.mark_cancelled(db, due.order_id, now)):
                try:
                    ledger.record_status_event(db, due.order_id, "cancelled", now,
                                                   {"reason": "unpaid", "by": "system"})
                except Conflict as exc:
                    # shipped in the meantime: nothing to cancel, the deadline is spent
                    log.warning("unpaid order %s not cancelled: %s", due.order_id, exc)
                    continue
                notice = customer_notice(
                    "unpaid_cancelled", facts, config, templates, tz, at=now,
                    dedupe_key=f"unpaid:{due.order_id}:cancelled")
                outbox.queue(db, [notice] if notice is not None else [], now)
                freed = {line["sku_id"] for line in queries.get_order(db, due.order_id)
                         ["lines"]}
                result.cancelled += 1
        if freed and settings.intake.retry_on_change:
            # its stock is free again: waiting orders of those SKUs may fit now
            retry_waiting(db, now=now, config=settings.allocation, sku_ids=freed,
                          trigger="unpaid_cancel_freed_stock", limit=settings.intake.retry_limit)


def customer_tick(db: Database, now: datetime, settings: Settings, config: CustomerConfig,
                  templates: Mapping[str, Mapping[str, str]], tz: ZoneInfo) -> TickResult:
    result = TickResult()
    sweep_nodes(db, now, config, templates, tz, result)
    message_late_orders(db, now, config, templates, tz, result)
    unpaid_deadlines(db, now, settings, config, templates, tz, result)
    if store.erasure_due(db, now):
        with write_transaction(db):
            result.erased = len(store.erase_due(db, now))
    if store.inquiries_to_erase(db, now - config.retention):
        with write_transaction(db):
            store.erase_old_inquiries(db, now - config.retention)
    return result
