"""The security counters on ``/metrics`` (defined in ``docs/metrics.md``).

Two sources, both already kept for ``/stats`` and the security page:

- the app's in-memory request counters (``app.state.counters``): failed logins, requests
  refused for a missing or bad credential (401) or a role or scope (403), logins refused
  while locked out and the lockouts started, and boundary refusals (422 bodies, 413
  sizes, import content types); read at collect time (no I/O);
- the gateway registry's ``security_events`` (never pruned): messages from gateways
  refused, held for confirmation, or applied but flagged, by reason and kind; and the
  messages held now. Read from the store before each scrape, on a worker thread.
"""

from __future__ import annotations

import asyncio
import threading
from collections import Counter
from collections.abc import Iterator

from fastapi import FastAPI
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from coordinator.gateways import store as gateway_store

# app.state.counters key -> kind label of breakwater_auth_failures_total
AUTH_KINDS = {
    "auth_login_failed": "login_failed",
    "auth_unauthenticated": "unauthenticated",
    "auth_forbidden": "forbidden",
    "auth_login_locked": "login_locked",
}
# app.state.counters key -> by label of breakwater_login_lockouts_total
LOCKOUTS = {"auth_lockouts_user": "user", "auth_lockouts_address": "address"}
# app.state.counters key -> reason label of breakwater_requests_refused_total
REFUSAL_REASONS = {
    "requests_invalid": "invalid",
    "requests_body_too_large": "body_too_large",
    "imports_refused_content_type": "import_content_type",
}


class SecurityCollector(Collector):
    def __init__(self, counters: Counter[str], lock: threading.Lock) -> None:
        self._counters = counters
        self._lock = lock
        self.gateway: list[tuple[str, str, str, int]] = []
        self.held = 0

    def describe(self) -> Iterator[Metric]:
        return iter(())  # the label sets vary with the data: described at collect

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            counts = dict(self._counters)
        auth = CounterMetricFamily(
            "breakwater_auth_failures",
            "Requests refused by authentication or authorisation, by kind.", labels=["kind"])
        for key, kind in AUTH_KINDS.items():
            auth.add_metric([kind], counts.get(key, 0))
        yield auth
        lockouts = CounterMetricFamily(
            "breakwater_login_lockouts",
            "Login lockouts started (too many failures), by username or source address.",
            labels=["by"])
        for key, by in LOCKOUTS.items():
            lockouts.add_metric([by], counts.get(key, 0))
        yield lockouts
        refused = CounterMetricFamily(
            "breakwater_requests_refused",
            "Requests refused at the boundary before anything was written, by reason.",
            labels=["reason"])
        for key, reason in REFUSAL_REASONS.items():
            refused.add_metric([reason], counts.get(key, 0))
        yield refused
        gateway = CounterMetricFamily(
            "breakwater_gateway_messages",
            "Gateway messages the coordinator refused, held or applied flagged.",
            labels=["outcome", "reason", "kind"])
        for outcome, reason, kind, n in self.gateway:
            gateway.add_metric([outcome, reason, kind], n)
        yield gateway
        yield GaugeMetricFamily(
            "breakwater_gateway_messages_held",
            "Messages of a new gateway incarnation waiting for an operator's confirmation.",
            value=self.held)


def install(app: FastAPI) -> None:
    """Register the collector on the app's registry and its store refresher (lifespan)."""
    collector = SecurityCollector(app.state.counters, app.state.counters_lock)
    app.state.metrics.registry.register(collector)

    def read() -> tuple[list[tuple[str, str, str, int]], int]:
        return gateway_store.security_counts(app.state.connections.get())

    async def refresh() -> None:
        collector.gateway, collector.held = await asyncio.to_thread(read)

    app.state.metrics.add_refresher(refresh)
