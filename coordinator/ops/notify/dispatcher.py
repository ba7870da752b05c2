"""Delivering the outbox: adapters per channel and the dispatcher task.

The dispatcher runs beside rerouting and never blocks it: it reads due notifications
with its own database connection (on PostgreSQL it claims them, so any instance may
deliver: see :func:`outbox.claim`), delivers them with httpx (or appends to a JSONL file),
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
import json
import logging
import os
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, BinaryIO, Protocol

import httpx

from coordinator.db import Database, dialect, write_transaction
from coordinator.errors import NotificationError, StoreError
from coordinator.ops.config import NotifyConfig
from coordinator.ops.notify import outbox
from coordinator.ops.notify.outbox import Notification
from coordinator.reconnect import OutageLog, ReconnectingDatabase
from coordinator.redact import (
    URL_LOGGERS,
    RedactingFilter,
    header_secrets,
    redact,
    url_secrets,
)
from protocols.clock import Clock

if sys.platform != "win32":  # POSIX file locks; on Windows one process owns the file
    import fcntl

log = logging.getLogger(__name__)


class TokenBucket:
    """``rate_per_minute`` tokens a minute, bursts up to ``capacity``. Time is an input."""

    def __init__(self, rate_per_minute: float, capacity: float | None = None) -> None:
        self.rate_per_s = rate_per_minute / 60.0
        self.capacity = capacity if capacity is not None else rate_per_minute
        self.tokens = self.capacity
        self.updated: float | None = None

    def take(self, now_s: float) -> float:
        """Take a token; return 0.0, or the seconds to wait when there is none."""
        if self.updated is not None:
            elapsed = max(0.0, now_s - self.updated)
            self.tokens = min(self.capacity, self.tokens + elapsed * self.rate_per_s)
        self.updated = now_s
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return 0.0
        return (1.0 - self.tokens) / self.rate_per_s


class Adapter(Protocol):
    async def deliver(self, notification: Notification) -> None:
        """Deliver or raise :class:`NotificationError` with a message saying why."""
        ...


class JsonlSink:
    """Appends each notice as one JSON line (the demo's franchisee inbox), exactly once.

    The dispatcher marks a notice sent only after its line is written, so a crash in
    between delivers it again after a restart, and a leader paused mid-batch past its
    lease may resume and deliver what its successor already sent. Each line carries its
    notice's key (``notice_key``), and a key already in the file is not written again
    (the delivery still counts as done), whichever process wrote it: every check and
    append holds an exclusive ``flock`` on the file and first reads what other processes
    appended since this one last looked. A line cut short by a crash (no newline, found
    while holding the lock, so no writer is midway) was never delivered: it is cut off
    before the next append. Lines reach the file with one ``write`` each; a crash of the
    process loses none (a power cut can lose what the OS had not flushed yet, as with
    any file).
    """

    def __init__(self, path: Path, *, lock_wait_s: float = 2.0) -> None:
        self.path = path
        # another process holding the file lock (stopped, its VM frozen) fails a delivery
        # after this long (retried later) instead of holding a worker thread indefinitely
        self.lock_wait_s = lock_wait_s
        self._lock = threading.Lock()
        self._written: set[str] = set()
        self._file: tuple[int, int] | None = None  # (device, inode) read up to _offset
        self._head = b""  # the file's first bytes when read from its start
        self._offset = 0
        self.skipped = 0  # deliveries of a key the file already held

    def _catch_up(self, fh: BinaryIO) -> None:
        """Under the file lock: take in the keys of the lines appended since the last
        look (by any process); drop a line a crash cut short."""
        st = os.fstat(fh.fileno())
        if self._file != (st.st_dev, st.st_ino) or st.st_size < self._offset or (
                self._head and os.pread(fh.fileno(), len(self._head), 0) != self._head):
            # a new file (first look; rotated, truncated, or deleted and made again,
            # perhaps under the same inode number): read it whole; keys this process
            # already knows stay known
            self._file, self._offset = (st.st_dev, st.st_ino), 0
        fh.seek(self._offset)
        data = fh.read()
        if self._offset == 0:
            self._head = data[:256]
        end = data.rfind(b"\n") + 1
        if end < len(data):
            fh.truncate(self._offset + end)
            if self._offset == 0:
                self._head = data[:min(256, end)]
        for raw in data[:end].splitlines():
            try:
                key = json.loads(raw).get("notice_key")
            except (ValueError, AttributeError):
                continue  # not one of ours (written by hand): kept as it is
            if isinstance(key, str):
                self._written.add(key)
        self._offset += end

    def _append(self, key: str, line: str) -> None:
        with self._lock:  # deliveries run concurrently: one check-and-append at a time
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("a+b") as fh:
                self._lock_file(fh)  # released when fh closes
                self._catch_up(fh)
                if key in self._written:
                    self.skipped += 1
                    return
                data = (line + "\n").encode("utf-8")
                fh.write(data)
                fh.flush()
                if self._offset == 0 and not self._head:
                    self._head = data[:256]
                self._offset += len(data)
            self._written.add(key)

    def _lock_file(self, fh: BinaryIO) -> None:
        """The exclusive lock on the file, waiting at most ``lock_wait_s``."""
        if sys.platform == "win32":
            return
        deadline = time.monotonic() + self.lock_wait_s
        while True:
            try:
                fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    message = (f"another process has held the file lock for over "
                               f"{self.lock_wait_s:g} s")
                    raise OSError(message) from None
                time.sleep(0.01)

    async def deliver(self, notification: Notification) -> None:
        line = json.dumps({**notification.payload, "notice_key": notification.dedupe_key},
                          ensure_ascii=False, separators=(",", ":"))
        try:
            await asyncio.to_thread(self._append, notification.dedupe_key, line)
        except OSError as exc:
            message = f"cannot append to {self.path}: {exc}"
            raise NotificationError(message) from exc


class HttpJsonAdapter:
    """POSTs the payload as JSON; any 2xx is success. ``check`` may inspect the body."""

    def __init__(self, client: httpx.AsyncClient, url: str, *,
                 headers: dict[str, str] | None = None,
                 check: Callable[[httpx.Response], None] | None = None) -> None:
        self.client = client
        self.url = url
        self.headers = headers or {}
        self.check = check
        # the URL's key and the headers' credentials: an error text (kept in last_error,
        # logged, listed by GET /notifications) must carry none of them
        self.secrets = [*url_secrets(url), *header_secrets(self.headers)]

    async def deliver(self, notification: Notification) -> None:
        try:
            await self._deliver(notification)
        except NotificationError as exc:
            raise NotificationError(redact(str(exc), self.secrets)) from None

    async def _deliver(self, notification: Notification) -> None:
        headers = {"Idempotency-Key": notification.dedupe_key, **self.headers}
        try:
            response = await self.client.post(self.url, json=notification.payload,
                                              headers=headers)
        except httpx.HTTPError as exc:
            message = f"POST {self.url}: {type(exc).__name__}: {exc}"
            raise NotificationError(message) from None
        if not response.is_success:
            message = f"POST {self.url}: HTTP {response.status_code} {response.text[:200]}"
            raise NotificationError(message)
        if self.check is not None:
            self.check(response)


def check_wecom(response: httpx.Response) -> None:
    """The robot answers HTTP 200 with ``{"errcode": 0, "errmsg": "ok"}`` on success."""
    try:
        body: Any = response.json()
    except ValueError as exc:
        message = f"WeCom answered non-JSON: {response.text[:200]}"
        raise NotificationError(message) from exc
    if not isinstance(body, dict) or body.get("errcode") != 0:
        message = f"WeCom refused: {body!r}"[:300]
        raise NotificationError(message)


@dataclass
class DispatchStats:
    sent: int = 0
    retried: int = 0
    dead: int = 0
    deferred: int = 0
    yielded: int = 0  # picked, then left to the next leader (this one lost its lease)


def build_adapters(config: NotifyConfig, client: httpx.AsyncClient) -> dict[str, Adapter]:
    adapters: dict[str, Adapter] = {}
    fc = config.franchisee
    if fc.sink == "jsonl":
        adapters["franchisee"] = JsonlSink(fc.jsonl_path)
    elif fc.webhook_url:
        adapters["franchisee"] = HttpJsonAdapter(client, fc.webhook_url)
    if config.wecom.enabled and config.wecom.url:
        adapters["wecom"] = HttpJsonAdapter(client, config.wecom.url, check=check_wecom)
    if config.sms.enabled and config.sms.url:
        headers = {"Authorization": f"Bearer {config.sms.api_key}"} if config.sms.api_key else {}
        adapters["sms"] = HttpJsonAdapter(client, config.sms.url, headers=headers)
    if config.webhook.enabled and config.webhook.url:
        adapters["webhook"] = HttpJsonAdapter(client, config.webhook.url,
                                              headers=dict(config.webhook.headers))
    return adapters


_NOT_LEADING = "no longer leading"  # an attempt not made: neither sent nor failed


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

    async def _attempt(self, n: Notification) -> tuple[str | None, datetime]:
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
        batch = outbox.claim(db, now, d.batch_size, timedelta(seconds=d.claim_lease_s))
        attempt: list[Notification] = []
        for n in batch:
            if n.kind == "wecom":
                wait = self.wecom_bucket.take(now.timestamp())
                if wait > 0:
                    outbox.defer(db, n.id, now + timedelta(seconds=wait))
                    self.stats.deferred += 1
                    continue
            attempt.append(n)
        outcomes = await asyncio.gather(*(self._attempt(n) for n in attempt))
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
                if error is _NOT_LEADING:
                    # due at once again: the successor need not wait out this claim
                    outbox.release(db, n, done)
                    self.stats.yielded += 1
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

