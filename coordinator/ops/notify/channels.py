"""The channels a notice goes out on: the JSONL file sink (each key written once, across
processes and crashes), JSON over HTTP (WeCom, SMS gateway, webhooks; the notice's key
as ``Idempotency-Key``), the check of WeCom's answer, and the token bucket that keeps
WeCom's rate. :class:`coordinator.ops.notify.dispatcher.Dispatcher` delivers through
the adapters :func:`build_adapters` makes from the configuration.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO, Protocol

import httpx

from coordinator.errors import NotificationError
from coordinator.ops.config import NotifyConfig
from coordinator.ops.notify.outbox import Notification
from coordinator.redact import header_secrets, redact, url_secrets

if sys.platform != "win32":  # POSIX file locks; on Windows one process owns the file
    import fcntl


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
