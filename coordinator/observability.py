"""``GET /metrics``: Prometheus exposition through prometheus-client, one registry per app.

Each app builds its :class:`Metrics` in its lifespan (``app.state.metrics``) with its own
:class:`~prometheus_client.CollectorRegistry`, never the library's global one: tests and
benchmarks build many apps in one process, and the global registry refuses a second
metric of the same name. Every metric is defined once in ``docs/metrics.md``.

Three kinds of figure:

- counters and histograms the code updates as things happen (HTTP latency per route,
  reroute latency, telemetry intake, SSE clients): attributes of :class:`Metrics`;
- figures read from the database at scrape time (the seed metrics, open incidents,
  outbox backlog): a part of the app registers an async *refresher* with
  :meth:`Metrics.add_refresher` that reads them (on its own thread) and hands a collector
  the snapshot; ``/metrics`` awaits every refresher, then renders;
- other parts (other issues' modules) add their own metrics with ``registry=metrics.registry``
  and a section in ``docs/metrics.md``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Iterator

from fastapi import APIRouter, FastAPI, Request, Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from coordinator import auth

log = logging.getLogger(__name__)

# Prometheus scrapes with a viewer token as bearer (docs/metrics.md)
router = APIRouter(tags=["operations"], dependencies=[auth.requires(auth.ANY_ROLE)])

Refresher = Callable[[], Awaitable[None]]
# HTTP: from a cached read (~1 ms) to a large batch or import (seconds)
HTTP_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
# a reroute moves hundreds of orders in one transaction: tens of ms to seconds
REROUTE_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class Metrics:
    """The app's registry and the metrics the code updates directly."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.http_duration = Histogram(
            "breakwater_http_request_duration_seconds",
            "HTTP request handling time by method, route template and status class.",
            ["method", "route", "status"], buckets=HTTP_BUCKETS, registry=r)
        self.reroute_duration = Histogram(
            "breakwater_reroute_duration_seconds",
            "From the input that made a warehouse unavailable to the reroute's commit.",
            buckets=REROUTE_BUCKETS, registry=r)
        self.rerouted_orders = Counter(
            "breakwater_rerouted_orders", "Orders caught by a reroute, by outcome.",
            ["outcome"], registry=r)
        self.telemetry_summaries = Counter(
            "breakwater_telemetry_summaries",
            "Agents' telemetry summaries received over MQTT, by outcome.",
            ["outcome"], registry=r)
        self.telemetry_maintenance = Counter(
            "breakwater_telemetry_rows", "Telemetry rows merged into buckets or pruned.",
            ["action"], registry=r)
        self.live_clients = Gauge(
            "breakwater_live_clients", "Open server-sent event streams (dashboard pages).",
            registry=r)
        self._refreshers: list[Refresher] = []

    def add_refresher(self, refresher: Refresher) -> Callable[[], None]:
        """Run ``refresher`` before each scrape; returns the function that removes it."""
        self._refreshers.append(refresher)
        return lambda: self._refreshers.remove(refresher)

    async def render(self) -> bytes:
        for refresher in list(self._refreshers):
            try:
                await refresher()
            except Exception:
                # one failing source (a locked database) must not blank the whole scrape
                log.exception("a /metrics refresher failed; serving its last figures")
        return generate_latest(self.registry)


class TimingMiddleware:
    """Times every HTTP request into ``app.state.metrics`` to its first response byte
    (a server-sent event stream lasts as long as its client: its start is what counts).
    Plain ASGI, so streaming responses pass through untouched."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()

        async def timed_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                observe(scope, int(message["status"]), time.perf_counter() - started)
            await send(message)

        await self.app(scope, receive, timed_send)


def observe(scope: Scope, status: int, seconds: float) -> None:
    app = scope.get("app")
    metrics: Metrics | None = getattr(getattr(app, "state", None), "metrics", None)
    if metrics is None:
        return  # before the lifespan built it
    # the matched route's template (/orders/{order_id}), never the raw path: one series
    # per route, not one per order id
    route = scope.get("route")
    template = str(getattr(route, "path", "unmatched"))
    metrics.http_duration.labels(scope["method"], template, f"{status // 100}xx").observe(
        seconds)


class LiveCollector(Collector):
    """Reads the live hub's own count at scrape time: the hub is built in the lifespan,
    after :class:`Metrics`, and a count kept in two places would drift."""

    def __init__(self, app: FastAPI) -> None:
        self._app = app

    def describe(self) -> Iterator[Metric]:
        return iter(())

    def collect(self) -> Iterator[Metric]:
        hub = getattr(self._app.state, "live", None)
        yield CounterMetricFamily(
            "breakwater_live_notifications_refused",
            "Notifications on the live-update channel refused for naming no topic.",
            value=0 if hub is None else hub.refused)


def install(app: FastAPI) -> None:
    """Add the timing middleware and the ``/metrics`` route to an app."""
    app.add_middleware(TimingMiddleware)
    app.include_router(router)


@router.get("/metrics", response_class=Response,
            summary="Prometheus text format (every metric is described in docs/metrics.md)")
async def prometheus_metrics(request: Request) -> Response:
    metrics: Metrics = request.app.state.metrics
    return Response(await metrics.render(), media_type=CONTENT_TYPE_LATEST)
