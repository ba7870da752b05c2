"""The coordinator's check on every breaker event and agent status, before the
availability tracker sees it (called by the ops core on its own connection).

A trusted message costs two reads and no write (no read in a batch: :class:`Registry`).
Anything else is written down in one transaction: the registry learns (first or pending
incarnation), the security event is kept as a dead letter with its reason, counted
(``security_refused``, ``security_held``, ``security_flagged`` in the ops counters) and
raised to operations.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from coordinator.db import Database, write_transaction
from coordinator.gateways import store
from coordinator.gateways.alerts import security_notices
from coordinator.gateways.policy import Gateway, GatewayMessage, Outcome, Verdict, judge
from coordinator.ops import tracker_store
from coordinator.ops.config import NotifyConfig
from coordinator.ops.notify import outbox
from coordinator.ops.notify.escape import log_safe

log = logging.getLogger(__name__)

COUNTERS = {Outcome.REFUSE: "security_refused", Outcome.HOLD: "security_held",
            Outcome.APPLY_FLAGGED: "security_flagged"}


@dataclass
class Registry:
    """What screening reads, read once for a batch of messages (inside its transaction,
    so it holds until the batch commits); a miss is read on its own."""

    gateways: dict[str, Gateway | None] = field(default_factory=dict)
    warehouses: dict[str, bool] = field(default_factory=dict)

    def gateway(self, db: Database, agent_id: str) -> Gateway | None:
        if agent_id not in self.gateways:
            self.gateways[agent_id] = store.get_gateway(db, agent_id)
        return self.gateways[agent_id]

    def warehouse_known(self, db: Database, warehouse_id: str) -> bool:
        if warehouse_id not in self.warehouses:
            self.warehouses[warehouse_id] = store.warehouse_exists(db, warehouse_id)
        return self.warehouses[warehouse_id]


def screen(db: Database, message: GatewayMessage, now: datetime, *, max_skew: timedelta,
           notify: NotifyConfig, registry: Registry | None = None) -> Verdict:
    known = registry or Registry()
    verdict = judge(message, known.gateway(db, message.agent_id),
                    warehouse_known=known.warehouse_known(db, message.warehouse_id),
                    now=now, max_skew=max_skew)
    if verdict.outcome is Outcome.APPLY and verdict.adopt_incarnation is None:
        return verdict
    known.gateways.pop(message.agent_id, None)  # the registry learns below: read it again
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
