"""Delivering the outbox: the dispatcher task (its channels: :mod:`.channels`).

The dispatcher runs beside rerouting and never blocks it: it reads due notifications
with its own database connection (on PostgreSQL it claims them, so any instance may
deliver: see :func:`outbox.claim`, and renews the claim while a batch is out:
:mod:`.claims`), delivers them with httpx (or appends to a JSONL file),
marks them sent, or schedules a retry with exponential backoff; after ``max_attempts``
failures a notification is ``failed`` (dead). Delivery is at least once (a crash after
delivering and before marking sends again): the file sink writes each notice exactly
once anyway (it knows the keys in its file, whichever process wrote them), and HTTP
receivers get the notice's key as ``Idempotency-Key`` to drop a repeat. A leader that
lost its lease mid-batch delivers no more of it. WeCom messages pass a token bucket so
the robot's limit (~20 messages/min) is respected; a deferred message is not a failure.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

import httpx

from coordinator.db import Database, dialect, write_transaction
from coordinator.errors import NotificationError, StoreError
from coordinator.ops.config import NotifyConfig
from coordinator.ops.notify import claims, outbox
from coordinator.ops.notify.channels import HttpJsonAdapter, TokenBucket, build_adapters
from coordinator.ops.notify.claims import BatchClaim
from coordinator.ops.notify.outbox import Notification
from coordinator.reconnect import OutageLog, ReconnectingDatabase
from coordinator.redact import URL_LOGGERS, RedactingFilter
from protocols.clock import Clock

log = logging.getLogger(__name__)


@dataclass
class DispatchStats:
    sent: int = 0
    retried: int = 0
    dead: int = 0
    deferred: int = 0
    yielded: int = 0  # picked, then left to the next leader (this one lost its lease)
    # PostgreSQL claims (coordinator.ops.notify.claims): renewed while a batch was out;
    # picked but not attempted because too little of the claim was left
    claim_renewals: int = 0
    claims_run_low: int = 0


_NOT_LEADING = "no longer leading"  # an attempt not made: neither sent nor failed
_CLAIM_LOW = "claim run low"  # neither: another instance may have taken the notice


class Dispatcher:
    """Delivers due notifications. Own DB connection (``open_db``), own HTTP client."""

    def __init__(self, open_db: Callable[[], Database], config: NotifyConfig, clock: Clock,
                 *, client: httpx.AsyncClient | None = None, concurrency: int = 8,
                 allowed: Callable[[], bool] | None = None) -> None:
        self.config = config
        # Several instances: only the lease holder delivers. A leader paused mid-run
        # resumes here and must not send what the new leader sends (each notice once).
        self.allowed = allowed
        self.clock = clock
        # replaced when the server ended it (a restart, a failover): delivery goes on
        self._conn = ReconnectingDatabase(open_db, "notification dispatcher")
        self._outage = OutageLog("notification round")
        self._own_client = client is None
        self.client = client or httpx.AsyncClient(timeout=config.dispatcher.timeout_s)
        self.adapters = build_adapters(config, self.client)
        # httpx logs each request's URL (a WeCom key with it): masked while we run
        self._log_filter = RedactingFilter(
            s for a in self.adapters.values() if isinstance(a, HttpJsonAdapter)
            for s in a.secrets)
        for name in URL_LOGGERS:
            logging.getLogger(name).addFilter(self._log_filter)
        self.wecom_bucket = TokenBucket(config.wecom.per_minute)
        self.stats = DispatchStats()
        self._wake = asyncio.Event()
        self._stopping = False
        self._limit = asyncio.Semaphore(concurrency)

    @property
    def db(self) -> Database:
        """The dispatcher's connection (a new one when the server ended the last)."""
        return self._conn.get()

    def wake(self) -> None:
        """Something was queued: look now rather than at the next poll."""
        self._wake.set()

    async def _attempt(self, n: Notification, claim: BatchClaim | None
                       ) -> tuple[str | None, datetime]:
        """(error or None, when it ended): a notice counts as sent when its receiver
        acknowledged it, not when the whole batch is done (first-response times)."""
        adapter = self.adapters.get(n.kind)
        if adapter is None:
            return f"no {n.kind} channel is configured", self.clock.now()
        async with self._limit:
            # a leader paused mid-batch (SIGSTOP, a VM frozen) resumes here past its lease:
            # what it has not delivered yet is its successor's to send
            if self.allowed is not None and not self.allowed():
                return _NOT_LEADING, self.clock.now()
            # the same for a claim that could not be renewed (coordinator.ops.notify.claims)
            if claim is not None and not claim.holds(n.id, self.clock.now()):
                return _CLAIM_LOW, self.clock.now()
            try:
                await adapter.deliver(n)
            except NotificationError as exc:
                return str(exc), self.clock.now()
        return None, self.clock.now()

    async def run_once(self) -> int:
        """Deliver one batch of due notifications; return how many were attempted."""
        if self.allowed is not None and not self.allowed():
            return 0
        d = self.config.dispatcher
        now = self.clock.now()
        db = self.db
        lease = timedelta(seconds=d.claim_lease_s)
        batch = outbox.claim(db, now, d.batch_size, lease)
        # PostgreSQL: the batch is this dispatcher's while it renews the claim
        claim = (BatchClaim.taken([n.id for n in batch], now, lease)
                 if batch and dialect(db) == "postgresql" else None)
        attempt: list[Notification] = []
        for n in batch:
            if n.kind == "wecom":
                wait = self.wecom_bucket.take(now.timestamp())
                if wait > 0:
                    outbox.defer(db, n.id, now + timedelta(seconds=wait))
                    self.stats.deferred += 1
                    continue
            attempt.append(n)
        outcomes = await self._deliver(attempt, claim)
        # again: a connection lost while the notices were out is replaced, so what was
        # delivered is marked (the claim is in the rows, not in the session)
        db = self.db
        # SQLite: through the process's write lock, like every other writer here: a bare
        # transaction would make a request thread's BEGIN IMMEDIATE wait in SQLite's busy
        # handler, which sleeps in growing steps (hundreds of ms under load). PostgreSQL:
        # these rows are this dispatcher's claim, so a plain transaction; the database-wide
        # write lock would queue the marks behind a long reroute on any instance
        marking = write_transaction(db) if dialect(db) == "sqlite" else db.atomic()
        with marking:
            for n, (error, done) in zip(attempt, outcomes, strict=True):
                if error is _NOT_LEADING or error is _CLAIM_LOW:
                    # due at once again, if still ours: the next need not wait out the claim
                    held_until = n.next_attempt_at if claim is None else claim.held_until
                    outbox.release(db, n.id, held_until, done)
                    if error is _NOT_LEADING:
                        self.stats.yielded += 1
                    else:
                        self.stats.claims_run_low += 1
                    continue
                if error is None:
                    outbox.mark_sent(db, n.id, done)
                    self.stats.sent += 1
                    continue
                status = outbox.mark_failed(
                    db, n, done, error, max_attempts=d.max_attempts,
                    backoff_base_s=d.backoff_base_s, backoff_max_s=d.backoff_max_s)
                if status == "failed":
                    self.stats.dead += 1
                    log.error("notification %s (%s) is dead after %d attempts: %s",
                              n.id, n.kind, n.attempts + 1, error)
                else:
                    self.stats.retried += 1
                    log.warning("notification %s (%s) failed, will retry: %s",
                                n.id, n.kind, error)
        return len(attempt)

    async def _deliver(self, attempt: list[Notification], claim: BatchClaim | None
                       ) -> list[tuple[str | None, datetime]]:
        """Every attempt of the batch, its claim renewed meanwhile."""
        if claim is None or not attempt:
            return list(await asyncio.gather(*(self._attempt(n, claim) for n in attempt)))
        renewing = asyncio.create_task(claims.keep(claim, lambda: self.db, self.clock),
                                       name="notice-claim")
        try:
            return list(await asyncio.gather(*(self._attempt(n, claim) for n in attempt)))
        finally:
            renewing.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await renewing
            self.stats.claim_renewals += claim.renewals
            if claim.renewals or claim.failed_renewals:
                log.debug("claim on %d notices renewed %d times (%d failed)",
                          len(claim.held), claim.renewals, claim.failed_renewals)

    def request_stop(self) -> None:
        """Finish the batch in hand (delivered and marked) and end :meth:`run`.

        Cancelling mid-batch could deliver a notice and lose the record of it, so a
        restart would send it again; a requested stop ends between batches.
        """
        self._stopping = True
        self._wake.set()

    async def run(self) -> None:
        """Loop until :meth:`request_stop` (or cancelled)."""
        while not self._stopping:
            # cleared before the round: a notice queued while it delivers wakes the next
            # round at once instead of waiting for the poll interval
            self._wake.clear()
            try:
                attempted = await self.run_once()
            except StoreError as exc:  # the database away: logged once, retried spaced out
                self._outage.failed(exc)
                attempted = 0
            except Exception:  # a broken round must not end delivery for good
                log.exception("notification round failed")
                attempted = 0
            else:
                self._outage.succeeded()
            if attempted >= self.config.dispatcher.batch_size or self._stopping:
                continue
            wait_s = self._outage.backoff_s(self.config.dispatcher.poll_interval_s)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), wait_s)

    async def aclose(self) -> None:
        for name in URL_LOGGERS:
            logging.getLogger(name).removeFilter(self._log_filter)
        if self._own_client:
            await self.client.aclose()
        self._conn.close()

