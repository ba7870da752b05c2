"""A dispatcher's claim on the batch it is delivering (PostgreSQL).

:func:`coordinator.ops.notify.outbox.claim` takes a batch for ``claim_lease_s`` by moving
its ``next_attempt_at`` past the lease. While the batch is out, the dispatcher renews
the claim every quarter lease (:func:`keep`), on a new connection if the server ended
the last one, so a slow receiver never lets another instance take a batch in hand, and
the lease can be short: a killed dispatcher's batch is delivered by another instance
within one lease. A dispatcher that cannot renew (stopped, frozen, or the database away)
makes no further attempt once less than a quarter lease is left
(:meth:`BatchClaim.holds`, on its own clock): a frozen process that resumes after the
lease does not send what the next claimant sends. Only an attempt already under way as
the claim runs out may arrive twice, and the sinks drop a repeat (the file sink by key,
HTTP receivers by ``Idempotency-Key``).

Time is an input: ``holds`` and ``renew`` take ``now``; :func:`keep` reads the
dispatcher's clock.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from coordinator.db import Database
from coordinator.errors import StoreError
from coordinator.ops.notify import outbox
from protocols.clock import Clock
from protocols.timestamps import stamp

log = logging.getLogger(__name__)


@dataclass(slots=True)
class BatchClaim:
    """The notices of one claimed batch still held, until ``until`` (as written in the
    rows)."""

    held: set[int]
    until: datetime
    lease: timedelta
    renewals: int = 0
    failed_renewals: int = 0

    @classmethod
    def taken(cls, ids: Sequence[int], now: datetime, lease: timedelta) -> BatchClaim:
        """The claim :func:`outbox.claim` took at ``now`` (it holds the rows to
        ``now + lease``)."""
        return cls(set(ids), now + lease, lease)

    @property
    def held_until(self) -> str:
        """``next_attempt_at`` of the rows while this claim holds them."""
        return stamp(self.until)

    @property
    def margin(self) -> timedelta:
        """How often it is renewed, and how much must be left for a new attempt."""
        return self.lease / 4

    def holds(self, notification_id: int, now: datetime) -> bool:
        """Whether an attempt on the notice may start at ``now``: it is still this
        claim's, with enough left that no other instance takes it before the attempt
        ends."""
        return notification_id in self.held and now < self.until - self.margin

    def renew(self, db: Database, now: datetime) -> None:
        """Hold the batch to ``now + lease`` (PostgreSQL). A notice another instance
        took after the claim ran out stays theirs: it is held no more."""
        until = now + self.lease
        if until <= self.until or not self.held:
            return  # the clock has not moved (a manual clock): nothing to extend
        self.held = outbox.extend_claim(db, sorted(self.held), self.held_until, until)
        self.until = until
        self.renewals += 1


async def keep(claim: BatchClaim, db: Callable[[], Database], clock: Clock) -> None:
    """Renew ``claim`` every quarter lease until cancelled. A renewal that fails (the
    database away, a lock wait given up) is tried again at the next one; the attempts
    stop by themselves if the claim runs low meanwhile (:meth:`BatchClaim.holds`)."""
    while True:
        await asyncio.sleep(claim.margin.total_seconds())
        try:
            claim.renew(db(), clock.now())
        except StoreError as exc:
            claim.failed_renewals += 1
            log.warning("renewing the claim on %d notices failed: %s", len(claim.held), exc)
        except Exception:  # a lock wait given up, a cancelled statement: tried again too
            # (ending here, the error was raised again at the end of the batch, and what
            # the batch had delivered was never marked: all of it sent again)
            claim.failed_renewals += 1
            log.exception("renewing the claim on %d notices failed", len(claim.held))
