"""The coordinator's check on every breaker event and agent status, before the
availability tracker sees it (called by the ops core on its own connection).

A trusted message costs two reads and no write. Anything else is written down in one
transaction: the registry learns (first or pending incarnation), the security event is
kept as a dead letter with its reason, counted (``security_refused``, ``security_held``,
``security_flagged`` in the ops counters) and raised to operations.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from coordinator.db import Database, write_transaction
from coordinator.gateways import store
from coordinator.gateways.alerts import security_notices
from coordinator.gateways.policy import GatewayMessage, Outcome, Verdict, judge
from coordinator.ops import tracker_store
from coordinator.ops.config import NotifyConfig
from coordinator.ops.notify import outbox
from coordinator.ops.notify.escape import log_safe

log = logging.getLogger(__name__)

COUNTERS = {Outcome.REFUSE: "security_refused", Outcome.HOLD: "security_held",
            Outcome.APPLY_FLAGGED: "security_flagged"}


def screen(db: Database, message: GatewayMessage, now: datetime, *, max_skew: timedelta,
           notify: NotifyConfig) -> Verdict:
    verdict = judge(message, store.get_gateway(db, message.agent_id),
                    warehouse_known=store.warehouse_exists(db, message.warehouse_id),
                    now=now, max_skew=max_skew)
    if verdict.outcome is Outcome.APPLY and verdict.adopt_incarnation is None:
        return verdict
    with write_transaction(db):
        store.note_verdict(db, verdict, now)
        if verdict.outcome is not Outcome.APPLY:
            store.record_security_event(db, verdict, now)
            tracker_store.bump(db, COUNTERS[verdict.outcome])
            outbox.queue(db, security_notices(verdict, now, notify), now)
        if verdict.outcome is Outcome.HOLD:
            store.hold(db, verdict, now)
    if verdict.outcome is not Outcome.APPLY:
        log.warning("security: %s %s from agent %s for warehouse %s: %s",
                    verdict.outcome.value, verdict.reason, log_safe(message.agent_id),
                    log_safe(message.warehouse_id), log_safe(verdict.detail))
    return verdict
