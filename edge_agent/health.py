"""The agent's health and Prometheus metrics on a local port (prometheus-client).

``GET /metrics``: readings and dead letters per sensor, drops by sensor and cause, outbox
depth and age, uplink and sensor-broker connection, rule and breaker states, commands.
``GET /healthz``: 200 with a JSON summary while the agent's event loop answers, 503 when
it does not (a hung loop is exactly what a watchdog must see).

The HTTP server runs in its own thread (wsgiref), but every figure is read *inside* the
agent's event loop (``run_coroutine_threadsafe``), so a scrape never races the counters;
a loop that does not answer within ``timeout_s`` makes the scrape fail and the health 503.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from socketserver import ThreadingMixIn
from typing import TYPE_CHECKING, Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, make_wsgi_app
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from protocols import BreakerState

if TYPE_CHECKING:
    from edge_agent.agent import EdgeAgent

log = logging.getLogger("edge_agent.health")

PREFIX = "breakwater_edge"
STATES = [s.value for s in BreakerState]


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Everything a scrape reports, taken in one turn of the agent's loop."""

    agent_id: str
    warehouse_id: str
    taken_at: datetime
    readings: dict[str, int]
    dead_letters: dict[str, int]
    rejected: dict[str, int]
    drops: dict[tuple[str, str], int]
    commands: dict[str, int]
    events_created: int
    events_published: int
    states_resent: int
    store_errors: int
    outbox_depth: int
    outbox_oldest_age_s: float
    uplink_connected: bool
    sensors_connected: bool
    rules: dict[tuple[str, str], str]  # (zone, rule) -> state
    breakers: dict[str, tuple[str, bool]]  # name -> (state, open)

    def health(self) -> dict[str, Any]:
        return {
            "status": "ok",
            "agent_id": self.agent_id,
            "warehouse_id": self.warehouse_id,
            "uplink_connected": self.uplink_connected,
            "sensors_connected": self.sensors_connected,
            "outbox_depth": self.outbox_depth,
            "outbox_oldest_age_s": round(self.outbox_oldest_age_s, 3),
            "breakers": {n: {"state": s, "open": o} for n, (s, o) in self.breakers.items()},
        }


def take_snapshot(agent: EdgeAgent) -> Snapshot:
    """Read the agent's figures; call from its event loop."""
    stats = agent.stats
    core = agent.core
    counters = core.counters
    now = agent.clock.now()
    oldest = agent.oldest_queued_at()
    return Snapshot(
        agent_id=agent.agent_id,
        warehouse_id=agent.warehouse_id,
        taken_at=now,
        readings=dict(counters.accepted_by_sensor),
        dead_letters=dict(counters.rejected_by_sensor),
        rejected=dict(stats.readings_rejected),
        drops=dict(stats.drops),
        commands=dict(stats.commands),
        events_created=stats.events_created,
        events_published=stats.events_published,
        states_resent=stats.states_resent,
        store_errors=stats.store_errors,
        outbox_depth=stats.outbox_depth,
        outbox_oldest_age_s=0.0 if oldest is None else max(0.0, (now - oldest).total_seconds()),
        uplink_connected=stats.uplink_connected,
        sensors_connected=stats.sensors_connected,
        rules={(m.spec.zone, m.spec.id): m.state.value for m in core.machines.values()},
        breakers={n: (b.state.value, b.open) for n, b in core.breakers.items()},
    )


class SnapshotCollector(Collector):
    """Prometheus families from one :class:`Snapshot` per scrape."""

    def __init__(self, take: Callable[[], Snapshot]) -> None:
        self._take = take

    def collect(self) -> Iterable[Metric]:
        s = self._take()
        yield from _families(s)


def _families(s: Snapshot) -> Iterator[Metric]:
    def counter(name: str, doc: str, labels: list[str], rows: Iterable[tuple[Any, ...]]
                ) -> CounterMetricFamily:
        family = CounterMetricFamily(f"{PREFIX}_{name}", doc, labels=labels)
        for *values, count in rows:
            family.add_metric([str(v) for v in values], count)
        return family

    def gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
        return GaugeMetricFamily(f"{PREFIX}_{name}", doc, value=value)

    yield counter("readings", "Payloads accepted, per sensor.", ["sensor"],
                  s.readings.items())
    yield counter("dead_letters", "Payloads or values refused, per sensor (or topic).",
                  ["sensor"], s.dead_letters.items())
    yield counter("rejected", "Refusals by reason (json, type, range, sentinel, ...).",
                  ["reason"], s.rejected.items())
    yield counter("drops", "Readings not used as sent, per sensor and cause "
                  "(out_of_order, duplicate, clock_suspect).", ["sensor", "cause"],
                  ((sensor, cause, n) for (sensor, cause), n in s.drops.items()))
    yield counter("commands", "Commands by outcome (applied, refused, refused_<reason>).",
                  ["outcome"], s.commands.items())
    yield counter("events_created", "Breaker events created.", [], [(s.events_created,)])
    yield counter("events_published", "Breaker events published.", [],
                  [(s.events_published,)])
    yield counter("states_resent", "Current breaker states re-sent on a new uplink session.",
                  [], [(s.states_resent,)])
    yield counter("store_errors", "Failed writes of the state database.", [],
                  [(s.store_errors,)])
    yield gauge("outbox_depth", "Messages waiting in the outbox.", s.outbox_depth)
    yield gauge("outbox_oldest_age_seconds", "Age of the oldest waiting message.",
                s.outbox_oldest_age_s)
    yield gauge("uplink_connected", "1 while the uplink broker is connected.",
                int(s.uplink_connected))
    yield gauge("sensors_connected", "1 while the sensor broker is connected.",
                int(s.sensors_connected))
    rules = GaugeMetricFamily(f"{PREFIX}_rule_state", "1 for the rule's current state.",
                              labels=["zone", "rule", "state"])
    for (zone, rule), state in sorted(s.rules.items()):
        for name in STATES:
            rules.add_metric([zone, rule, name], int(name == state))
    yield rules
    breakers = GaugeMetricFamily(f"{PREFIX}_breaker_open", "1 while the breaker is open.",
                                 labels=["breaker", "state"])
    for name, (state, is_open) in sorted(s.breakers.items()):
        breakers.add_metric([name, state], int(is_open))
    yield breakers


class _ThreadingServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        log.debug("health %s", format % args)


class HealthServer:
    """``/metrics`` and ``/healthz`` of one agent on ``host:port`` (0: a free port)."""

    def __init__(self, agent: EdgeAgent, loop: asyncio.AbstractEventLoop, host: str,
                 port: int, *, timeout_s: float = 2.0) -> None:
        self._agent = agent
        self._loop = loop
        self._timeout_s = timeout_s
        registry = CollectorRegistry(auto_describe=False)
        registry.register(SnapshotCollector(self._take))
        self._metrics = make_wsgi_app(registry)
        self._server = make_server(host, port, self._app, server_class=_ThreadingServer,
                                   handler_class=_QuietHandler)
        self.port: int = self._server.server_port
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        name=f"{agent.agent_id}-health", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def _take(self) -> Snapshot:
        async def inside() -> Snapshot:
            return take_snapshot(self._agent)

        future = asyncio.run_coroutine_threadsafe(inside(), self._loop)
        return future.result(self._timeout_s)

    def _app(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path == "/metrics":
            return self._metrics(environ, start_response)  # type: ignore[no-any-return]
        if path == "/healthz":
            try:
                body, status = self._take().health(), "200 OK"
            except Exception as exc:  # the loop did not answer: that is the finding
                body = {"status": "unresponsive", "error": type(exc).__name__}
                status = "503 Service Unavailable"
            data = json.dumps(body).encode()
            start_response(status, [("Content-Type", "application/json"),
                                    ("Content-Length", str(len(data)))])
            return [data]
        start_response("404 Not Found", [("Content-Type", "text/plain")])
        return [b"/metrics or /healthz\n"]
