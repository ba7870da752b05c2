"""Live updates across coordinator instances on PostgreSQL: ``LISTEN``/``NOTIFY``.

Every instance runs a :class:`PgHub`: its own pages are told at once, as by
:class:`~coordinator.live.LocalHub`, and the topic goes out as ``NOTIFY breakwater_live,
'<topic>'``; one connection per instance ``LISTEN``\\ s and fans what the *other*
instances announced out to its pages (its own notifications are recognised by the
backend pid and skipped: they were delivered already). So a change the ops leader makes
reaches a page served by any instance.

Publishers call from any thread and must never wait on the database: ``publish`` only
queues the topic (pending topics coalesce, like a subscription's), a sender thread
notifies. The listener reconnects after a lost connection and then marks every topic
changed: whatever was announced while it was away is re-read.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from contextlib import AbstractAsyncContextManager

import psycopg

from coordinator.live import TOPICS, LocalHub, Subscription
from coordinator.reconnect import OutageLog

log = logging.getLogger(__name__)

CHANNEL = "breakwater_live"
RECONNECT_S = (0.5, 1.0, 2.0, 5.0)  # back-off between attempts, the last one repeated
POLL_S = 0.5  # how often the listener looks up from its socket to see whether to stop


class PgHub:
    """A :class:`~coordinator.live.Hub` whose changes travel through PostgreSQL."""

    def __init__(self, url: str, loop: asyncio.AbstractEventLoop) -> None:
        self._url = url
        self._local = LocalHub(loop)
        self._stop = threading.Event()
        self._pending: set[str] = set()
        self._wake = threading.Condition()
        self._sender_pid: int | None = None
        self.published = 0  # announced by this instance
        self.received = 0  # heard from other instances
        self.reconnects = 0
        self.refused = 0  # notifications on the channel naming no topic (junk, or a newer
        # version's topic): counted and logged, never passed to the pages
        self.send_failures = 0
        self._listening = threading.Event()
        self._threads = [
            threading.Thread(target=self._send_loop, name="live-notify", daemon=True),
            threading.Thread(target=self._listen_loop, name="live-listen", daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    # -- the Hub surface -----------------------------------------------------------------
    def publish(self, topic: str) -> None:
        if topic not in TOPICS:
            raise ValueError(f"topic: {topic!r} is not one of {sorted(TOPICS)}")
        self.published += 1
        self._local.publish(topic)
        with self._wake:
            self._pending.add(topic)
            self._wake.notify()

    def subscribe(self) -> AbstractAsyncContextManager[Subscription]:
        return self._local.subscribe()

    @property
    def subscribers(self) -> int:
        return self._local.subscribers

    def wait_listening(self, timeout: float) -> bool:
        """True once the listener is connected (tests; a page needs no such wait)."""
        return self._listening.wait(timeout)

    def close(self) -> None:
        self._stop.set()
        with self._wake:
            self._wake.notify()
        for thread in self._threads:
            thread.join(timeout=POLL_S * 4)
        self._local.close()

    # -- threads -------------------------------------------------------------------------
    def _send_loop(self) -> None:
        conn: psycopg.Connection[tuple[object, ...]] | None = None
        outage = OutageLog("live NOTIFY")
        attempt = 0
        try:
            while not self._stop.is_set():
                with self._wake:
                    while not self._pending and not self._stop.is_set():
                        self._wake.wait()
                    topics, self._pending = self._pending, set()
                if self._stop.is_set():
                    return
                try:
                    if conn is None or conn.closed:
                        conn = psycopg.connect(self._url, autocommit=True)
                        self._sender_pid = conn.info.backend_pid
                    for topic in sorted(topics):
                        conn.execute("SELECT pg_notify(%s, %s)", (CHANNEL, topic))
                    attempt = 0
                    outage.succeeded()
                except Exception as exc:  # a thread that ends would tell no one again
                    # the local pages were told; the other instances' re-read on their
                    # listener's reconnect, or at the next change
                    self.send_failures += 1
                    if isinstance(exc, psycopg.Error):
                        outage.failed(exc)  # once per outage, not once per change
                    else:
                        log.exception("live NOTIFY failed; retrying")
                    with self._wake:
                        self._pending |= topics
                    if conn is not None:
                        conn.close()
                    conn = None
                    self._stop.wait(RECONNECT_S[min(attempt, len(RECONNECT_S) - 1)])
                    attempt += 1
        finally:
            if conn is not None:
                conn.close()

    def _listen_loop(self) -> None:
        outage = OutageLog("live LISTEN")
        attempt = 0
        first = True
        while not self._stop.is_set():
            try:
                with psycopg.connect(self._url, autocommit=True) as conn:
                    conn.execute(f"LISTEN {CHANNEL}")
                    self._listening.set()
                    if not first:
                        self.reconnects += 1
                        for topic in sorted(TOPICS):  # missed while away: re-read all
                            self._local.publish(topic)
                    first = False
                    attempt = 0
                    outage.succeeded()
                    while not self._stop.is_set():
                        for note in conn.notifies(timeout=POLL_S):
                            if note.pid == self._sender_pid:
                                continue
                            if note.payload not in TOPICS:
                                self.refused += 1
                                log.warning("live: refused a notification naming no topic "
                                            "(%d characters)", len(note.payload))
                                continue
                            self.received += 1
                            self._local.publish(note.payload)
            except Exception as exc:  # a thread that ends would hear no one again
                self._listening.clear()
                if isinstance(exc, psycopg.Error):
                    outage.failed(exc)  # once per outage, not once per reconnect attempt
                else:
                    log.exception("live LISTEN failed; reconnecting")
                self._stop.wait(RECONNECT_S[min(attempt, len(RECONNECT_S) - 1)])
                attempt += 1
