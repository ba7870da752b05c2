"""Several instances on one database: the lease loop and the inbox applier of one.

Every instance renews or contests the ops lease every ``renew_interval_s``
(:mod:`coordinator.ops.lease_store`). The one that holds it is the leader: it rebuilds
its machines from the database when it is elected (the previous leader wrote there),
applies the shared inbox in order, and runs the ticks; the others only feed the inbox
from their own MQTT sessions and serve HTTP. Every ops transaction starts with
:meth:`Leadership.guard`, so a leader that was paused or cut off past its lease writes
nothing, even before its own lease loop notices.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

from coordinator.db import Database, write_transaction
from coordinator.errors import StoreError
from coordinator.ops import inbox_store, lease_store
from coordinator.ops.config import ClusterConfig
from coordinator.ops.handler import HandleResult, OpsCore
from coordinator.ops.lease import LeaseKeeper, Take
from coordinator.reconnect import OutageLog
from protocols.clock import Clock

log = logging.getLogger(__name__)
Call = Callable[[Callable[[OpsCore], Any]], Awaitable[Any]]


class Leadership:
    def __init__(self, instance: str, config: ClusterConfig, clock: Clock,
                 call: Call, *, handle_attempts: int = 3) -> None:
        self.instance = instance
        self.config = config
        self.clock = clock
        self.keeper = LeaseKeeper(instance, config.lease_ttl_s)
        self._call = call
        self._wake = asyncio.Event()
        self.elected = asyncio.Event()  # set while this instance leads (as far as it knows)
        self.on_elected: Callable[[], Awaitable[None]] | None = None
        self.on_deposed: Callable[[], Awaitable[None]] | None = None
        self.on_result: Callable[[HandleResult], None] | None = None
        self.terms = 0  # how many times this instance was elected
        self.applied = 0  # inbox rows applied by this instance
        self.dropped = 0  # inbox rows skipped after every attempt failed
        self.lease_errors = 0
        self.handle_attempts = handle_attempts
        self._failures: dict[int, int] = {}

    # -- called on the ops thread, inside transactions ---------------------------------
    def guard(self, db: Database, now: datetime) -> None:
        lease_store.check(db, self.instance, self.keeper.epoch, now)

    def release(self, core: OpsCore) -> None:
        """Give the lease up at shutdown (on the ops thread)."""
        lease_store.release(core.db, self.instance, self.keeper.epoch, self.clock.now())
        self.keeper.step_down()
        self.elected.clear()

    def leading(self) -> bool:
        return self.keeper.leading(self.clock.now())

    def wake(self) -> None:
        """Something was put in the inbox: apply it now rather than at the next poll."""
        self._wake.set()

    def status(self, db: Database) -> dict[str, Any]:
        """For ``/metrics/summary`` (on a read connection): who leads, this one's counts."""
        row = lease_store.read(db)
        return {"instance": self.instance, "leading": self.leading(),
                "epoch": self.keeper.epoch, "holder": None if row is None else row.holder,
                "terms": self.terms, "applied": self.applied, "dropped": self.dropped,
                "lease_errors": self.lease_errors,
                "inbox_backlog": inbox_store.backlog(db)}

    # -- tasks -------------------------------------------------------------------------
    async def run_lease(self) -> None:
        outage = OutageLog("ops lease round")
        while True:
            try:
                await self._lease_round()
            except Exception as exc:  # a database hiccup must not end the loop: next round
                self.lease_errors += 1
                # the database away, or its write lock held by a holder that stopped with
                # it (WriteLockBusy: its lease expires, the next round ends its sessions):
                # one line per run of failures, not one per round
                if isinstance(exc, StoreError):
                    outage.failed(exc)
                else:
                    log.exception("ops lease round failed")
                await self._lost()
            else:
                outage.succeeded()
            await asyncio.sleep(self.config.renew_interval_s)

    async def _lease_round(self) -> None:
        now = self.clock.now()

        def step(core: OpsCore) -> Take | None:
            action = lease_store.step(core.db, self.keeper, now)
            if isinstance(action, Take):
                # a new term: the previous leader's writes are the truth now
                core.reload()
                return action
            return None

        took = await self._call(step)
        if isinstance(took, Take):
            self.terms += 1
            log.warning("%s leads the ops loop (epoch %d)", self.instance, took.epoch)
            self.elected.set()
            self.wake()
            if self.on_elected is not None:
                await self.on_elected()
        elif not self.leading():
            await self._lost()

    async def _lost(self) -> None:
        if not self.elected.is_set():
            return
        self.keeper.step_down()
        self.elected.clear()
        log.warning("%s no longer leads the ops loop", self.instance)
        if self.on_deposed is not None:
            try:
                await self.on_deposed()
            except Exception:  # called from the loops' handlers: it must not end them
                log.exception("stepping down: the deposed hook failed")

    async def run_applier(self) -> None:
        outage = OutageLog("applying the ops inbox")
        while True:
            more = False
            if self.leading():
                try:
                    results, more = await self._call(self._apply_batch)
                    if self.on_result is not None:
                        for result in results:
                            self.on_result(result)
                except lease_store.LeaseLost as exc:
                    log.warning("%s", exc)
                    await self._lost()
                except StoreError as exc:  # the database away: once per outage
                    outage.failed(exc)
                except Exception:
                    log.exception("applying the ops inbox failed; retrying")
                else:
                    outage.succeeded()
            if more:
                continue  # a backlog: no pause between batches
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.config.apply_interval_s)

    def _apply_batch(self, core: OpsCore) -> tuple[list[HandleResult], bool]:
        """Apply pending rows in order in one transaction: the guard first, then the rows
        (:meth:`OpsCore.handle_many`: registry and flags read once, records written
        set-based), then the cursor, so a storm of thousands of events costs a commit and
        a few statements per batch, and the tracker's dedupe runs inside the same
        transaction. The batch ends at ``apply_batch`` rows or after ``apply_budget_s``
        (the write lock is not held longer: intake waits on it). If it raises, nothing
        of it committed and the rows are applied one at a time (:meth:`_apply_rows`) to
        isolate the one that fails. Returns the results and whether rows are left for
        an immediate next batch."""
        rows = inbox_store.pending(core.db, self.config.apply_batch)
        if not rows:
            return [], False
        try:
            messages = [inbox_store.decode_row(row) for row in rows]
            result, done = core.handle_many(
                messages, self.clock.now(), budget_s=self.config.apply_budget_s,
                then=lambda applied: inbox_store.mark_applied(core.db, rows[applied - 1].id))
        except lease_store.LeaseLost:
            raise
        except Exception:
            log.warning("applying %d inbox rows together failed; one at a time now",
                        len(rows), exc_info=True)
            return self._apply_rows(core, rows)
        self.applied += done
        for row in rows[:done]:
            self._failures.pop(row.id, None)
        return [result], done < len(rows) or len(rows) == self.config.apply_batch

    def _apply_rows(self, core: OpsCore,
                    rows: list[inbox_store.InboxRow]) -> tuple[list[HandleResult], bool]:
        """Each row in a savepoint with its effects and the cursor; stops at a row whose
        handling raises: the rows before it commit, it is retried alone."""
        results: list[HandleResult] = []
        failed: int | None = None
        started = time.perf_counter()
        try:
            # reads held back by a transition stay so until this transaction commits
            with core.holding_reads(), write_transaction(core.db):
                self.guard(core.db, self.clock.now())
                for row in rows:
                    if results and time.perf_counter() - started > self.config.apply_budget_s:
                        break
                    try:
                        with core.db.atomic():
                            result = core.handle(inbox_store.decode_row(row),
                                                 self.clock.now())
                            inbox_store.mark_applied(core.db, row.id)
                    except lease_store.LeaseLost:
                        raise
                    except Exception:
                        failed = row.id
                        break
                    results.append(result)
        except BaseException:
            # nothing of the batch committed: the machines must not keep its effects
            core.reload()
            raise
        self.applied += len(results)
        for row in rows[:len(results)]:
            self._failures.pop(row.id, None)
        if failed is not None:
            self._give_up_or_retry(core, failed, self.clock.now())
            return results, False  # the failed row is retried after the apply interval
        return results, len(results) < len(rows) or len(rows) == self.config.apply_batch

    def _give_up_or_retry(self, core: OpsCore, row_id: int, now: datetime) -> None:
        """A row whose handling raises (e.g. the database is locked) is retried in order
        ``handle_attempts`` times, like the watcher does; then it is skipped, counted
        and logged, so one poisoned row cannot stop every breaker event behind it."""
        failures = self._failures.get(row_id, 0) + 1
        self._failures[row_id] = failures
        if failures < self.handle_attempts:
            log.warning("applying inbox row %d failed (attempt %d); retrying", row_id,
                        failures, exc_info=True)
            return
        with write_transaction(core.db):
            self.guard(core.db, now)
            inbox_store.mark_applied(core.db, row_id)
        del self._failures[row_id]
        self.dropped += 1
        log.exception("inbox row %d dropped after %d failed attempts", row_id, failures)
