"""The notices the ops loop owes outside its transitions' commits.

- **The stores' notices of a reroute.** The reroute's transaction commits the orders
  moved and a row saying the stores' notices are owed; the notices themselves (megabytes
  of text for a large reroute) are composed right after that commit, outside any write
  transaction (intake keeps the write lock meanwhile), and queued with their coupons in
  a short transaction of their own. Each tick queues whatever is still owed: after a
  crash between the two commits, a leader deposed in between, or a failed composition.
- **Late placements.** A stuck order a retry has placed since the last tick: its
  franchisee hears where it went.

A failed sweep is counted (:attr:`NoticeSweeps.failures`, on /metrics) and logged, never raised into
the ops loop: what is owed stays owed, in the database, for the next tick.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime

from coordinator import queries
from coordinator.db import Database
from coordinator.gcpause import gc_paused
from coordinator.ops import tracker_store
from coordinator.ops.config import OpsConfig
from coordinator.ops.lease_store import LeaseLost
from coordinator.ops.notify.franchisee import (
    PLACED_SWEEP_SPAN,
    compose_store_notices,
    has_placed_events,
    pending_store_notices,
    placed_notices_cursor,
    queue_placed_notices,
    queue_store_notices,
)
from coordinator.ops.transitions import RerouteTiming

log = logging.getLogger(__name__)

# an ops write transaction at ``now`` (the lease guard first): OpsCore's
Transaction = Callable[[datetime], AbstractContextManager[None]]


@dataclass
class Tally:
    """A count that outlives one core (the service builds a new one on a reconnect), so
    the counter on /metrics never goes back."""

    count: int = 0


class NoticeSweeps:
    """Used on the ops thread only, with the core's connection and transactions."""

    def __init__(self, db: Database, config: OpsConfig, transaction: Transaction,
                 failures: Tally | None = None) -> None:
        self.db = db
        self.config = config
        self._transaction = transaction
        self.tally = failures if failures is not None else Tally()
        self._placed_cursor = placed_notices_cursor(db)

    @property
    def failures(self) -> int:
        return self.tally.count

    def reload(self) -> None:
        """A new leader: the previous one may have notified past our cursor."""
        self._placed_cursor = placed_notices_cursor(self.db)

    def after_reroute(self, rerouted: Sequence[RerouteTiming], now: datetime) -> None:
        """Right after a commit that moved orders: their stores' notices, noted on
        each reroute's timing."""
        if not any(t.moved for t in rerouted):
            return
        try:
            queued = self.owed(now)
        except Exception:  # owed, not lost: the next tick composes them again
            self.tally.count += 1
            log.exception("store notices not queued yet; the next tick tries again")
            return
        done = time.perf_counter()
        for timing in rerouted:
            if timing.incident_id in queued:
                timing.notices_queued = done
                timing.queued += queued[timing.incident_id]

    def on_tick(self, now: datetime) -> int:
        """Both sweeps; return how many notices they queued."""
        queued = 0
        try:
            queued += sum(self.owed(now).values())
        except Exception:  # a notice sweep must never cost the tick its transitions
            self.tally.count += 1
            log.exception("owed store notices not queued; the next tick tries again")
        try:
            queued += self.late_placements(now)
        except Exception:
            self.tally.count += 1
            log.exception("placed-notice sweep failed; the next tick tries again")
        return queued

    def owed(self, now: datetime) -> dict[str, int]:
        """Compose and queue the store notices committed reroutes owe; return how many
        were queued per incident. Each incident's are composed from the committed
        incident on this connection outside any transaction (reads: intake keeps the
        write lock), then queued with their coupons in a short ops transaction (the
        lease guard first: a deposed leader queues nothing). Composing twice is
        harmless (dedupe keys)."""
        queued: dict[str, int] = {}
        notify = self.config.notify
        for pending in pending_store_notices(self.db):
            try:
                with gc_paused():  # tens of thousands of short-lived rows, dicts, strings
                    composed = compose_store_notices(self.db, pending,
                                                     config=notify.franchisee,
                                                     timezone=notify.timezone)
                    with self._transaction(now):
                        new = queue_store_notices(self.db, composed)
                        if new:
                            tracker_store.bump(self.db, "store_notices", new)
            except LeaseLost:
                raise  # deposed: none of them is this instance's to queue any more
            except Exception:  # one incident that fails must not hold up the others
                self.tally.count += 1
                log.exception("store notices of incident %s not queued yet; the next "
                              "tick tries again", pending.incident_id)
                continue
            queued[pending.incident_id] = new
        return queued

    def late_placements(self, now: datetime) -> int:
        """Tell franchisees about stuck orders a retry has placed since the last tick;
        return how many notices were queued.

        Intake writes order events all the time, so the sweep looks before it writes: only
        a range holding a late placement takes the write lock. At most ``PLACED_SWEEP_SPAN``
        events per tick, so a long backlog (ops off for a while) never holds the lock long.
        """
        newest = queries.newest_order_event_id(self.db)
        after = self._placed_cursor
        if newest <= after:
            return 0
        upto = min(newest, after + PLACED_SWEEP_SPAN)
        if not has_placed_events(self.db, after=after, upto=upto):
            self._placed_cursor = upto  # in memory: a restart reads this range once more
            return 0
        with self._transaction(now):
            queued = queue_placed_notices(self.db, after=after, upto=upto, at=now,
                                          config=self.config.notify.franchisee)
            if queued:
                tracker_store.bump(self.db, "placed_notices", queued)
        self._placed_cursor = upto
        return queued
