"""A lean JSON POST over kept-alive connections, for customer deliveries (worker threads).

Why not the dispatcher's httpx client: an inquiry's reply is one POST to the channel,
and an httpx POST costs about 1.6 ms of CPU in this process against 0.4 ms for the
standard library's :mod:`http.client` (measured on the inquiry benchmark's receiver);
at 200 inquiries a second that difference is a quarter of a core. httpx also runs on
the event loop, so a batch of replies held up the answers to new inquiries; these
POSTs run in worker threads, which wait on their sockets without the GIL.

What it keeps of httpx's behaviour: the timeout applies to connecting and to each read
and write; TLS is verified against the system's CAs (``ssl.create_default_context``,
which honours ``SSL_CERT_FILE``); redirects are not followed (a 3xx is not an
acknowledgement); user info in the URL is sent as Basic credentials. A connection is
kept for the next POST to the same origin only when the receiver keeps it open and has
not closed it while idle; a POST on a kept connection that the receiver had closed is
sent once more on a fresh one (deliveries carry an ``Idempotency-Key``, so a receiver
drops a repeat). Proxies from the environment are not handled here: :func:`proxied`
tells the caller to use httpx for such a URL.
"""

from __future__ import annotations

import base64
import http.client
import select
import ssl
import threading
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

USER_AGENT = "breakwater-customer"
MAX_BODY = 1 << 20  # an acknowledgement is small; a longer answer is cut (and not kept)
_STALE = (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError,
          ConnectionAbortedError)


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    body: bytes

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    def text(self, limit: int = 200) -> str:
        return self.body[:limit].decode("utf-8", "replace")


@dataclass(frozen=True, slots=True)
class _Target:
    scheme: str
    host: str
    port: int
    path: str  # with the query
    basic: str | None  # an Authorization header from the URL's user info

    @property
    def origin(self) -> tuple[str, str, int]:
        return (self.scheme, self.host, self.port)


def _target(url: str) -> _Target:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        message = f"not an http(s) URL: {parts.scheme}://{parts.hostname or ''}"
        raise ValueError(message)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    basic = None
    if parts.username is not None:
        pair = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
        basic = "Basic " + base64.b64encode(pair.encode()).decode("ascii")
    return _Target(parts.scheme, parts.hostname, port, path, basic)


def proxied(url: str, proxies: Mapping[str, str]) -> bool:
    """Whether ``proxies`` (``urllib.request.getproxies()``: ``HTTP(S)_PROXY``,
    ``ALL_PROXY``, less ``NO_PROXY``) route ``url`` through a proxy: such URLs are left
    to httpx, which speaks to proxies."""
    parts = urlsplit(url)
    if not (proxies.get(parts.scheme) or proxies.get("all")):
        return False
    return not urllib.request.proxy_bypass(parts.hostname or "")


class KeepAlivePoster:
    """Thread-safe: each POST takes an idle connection of its origin or opens one."""

    def __init__(self, timeout_s: float, *, max_idle_per_origin: int = 8) -> None:
        self.timeout_s = timeout_s
        self.max_idle = max_idle_per_origin
        self._idle: dict[tuple[str, str, int], list[http.client.HTTPConnection]] = {}
        self._lock = threading.Lock()
        self._tls: ssl.SSLContext | None = None
        self.opened = 0  # connections opened (reuse shows as fewer of them than POSTs)

    def post_json(self, url: str, body: bytes, headers: Mapping[str, str]) -> Answer:
        """POST ``body`` (JSON) to ``url``; the answer whatever its status. Transport
        failures raise :class:`OSError` or :class:`http.client.HTTPException`."""
        target = _target(url)
        sent = {"Content-Type": "application/json", "Accept": "*/*",
                "User-Agent": USER_AGENT}
        if target.basic is not None:
            sent["Authorization"] = target.basic
        sent.update(headers)
        conn, reused = self._take(target)
        try:
            return self._exchange(conn, target, body, sent)
        except _STALE:
            conn.close()
            if not reused:
                raise
            # closed by the receiver while it sat idle: once more on a fresh connection
            fresh = self._open(target)
            try:
                return self._exchange(fresh, target, body, sent)
            except BaseException:
                fresh.close()
                raise
        except BaseException:
            conn.close()
            raise

    def _exchange(self, conn: http.client.HTTPConnection, target: _Target, body: bytes,
                  headers: Mapping[str, str]) -> Answer:
        conn.request("POST", target.path, body=body, headers=dict(headers))
        response = conn.getresponse()
        data = response.read(MAX_BODY + 1)
        if len(data) > MAX_BODY or not response.isclosed() or response.will_close:
            conn.close()  # not read to its end, or the receiver ends the connection
        else:
            self._give_back(target, conn)
        return Answer(response.status, data[:MAX_BODY])

    def _take(self, target: _Target) -> tuple[http.client.HTTPConnection, bool]:
        while True:
            with self._lock:
                idle = self._idle.get(target.origin)
                conn = idle.pop() if idle else None
            if conn is None:
                return self._open(target), False
            if _still_open(conn):
                return conn, True
            conn.close()

    def _open(self, target: _Target) -> http.client.HTTPConnection:
        self.opened += 1
        if target.scheme == "https":
            if self._tls is None:
                self._tls = ssl.create_default_context()
            return http.client.HTTPSConnection(target.host, target.port,
                                               timeout=self.timeout_s, context=self._tls)
        return http.client.HTTPConnection(target.host, target.port, timeout=self.timeout_s)

    def _give_back(self, target: _Target, conn: http.client.HTTPConnection) -> None:
        with self._lock:
            idle = self._idle.setdefault(target.origin, [])
            if len(idle) < self.max_idle:
                idle.append(conn)
                return
        conn.close()

    def close(self) -> None:
        with self._lock:
            conns = [c for idle in self._idle.values() for c in idle]
            self._idle.clear()
        for conn in conns:
            conn.close()


def _still_open(conn: http.client.HTTPConnection) -> bool:
    """An idle connection is usable while its socket has nothing to read: readable
    means the receiver closed it (or sent something unasked), either way not reusable."""
    sock = conn.sock
    if sock is None:
        return False
    poller = select.poll()  # not select.select: it fails on descriptors past 1023
    try:
        poller.register(sock, select.POLLIN)
        return not poller.poll(0)
    except (OSError, ValueError):
        return False
