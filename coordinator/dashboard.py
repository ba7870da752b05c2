"""The operator dashboard: one static page plus the read-only JSON it polls.

- ``GET /`` and ``GET /dashboard``: the page (``coordinator/static/dashboard.html``, vanilla
  JS and CSS inline, no CDN, live through server-sent events, Chinese by default with an
  English switch, times in the configured zone; ``?order=ID`` opens an order's timeline
  and decision trace, ``&why_not=WH`` asks why not that warehouse).
- ``GET /dashboard/events``: the same state as server-sent events, pushed when something
  changes (the page keeps one ``EventSource`` open; no polling).
- ``GET /dashboard/state``: warehouses with availability, open breakers, holds and last
  seen; recent incidents; order counts by status; the oldest waiting orders (unallocated,
  needs attention) with their reason; notification counts by status and kind.

Wiring: ``create_app(settings, extra_routers=[dashboard.router, ...])``. The page also
reads ``GET /orders/{id}``, ``GET /orders/{id}/decision`` and, when the ops side runs,
``GET /metrics/summary``; without it the metrics panel says so and the rest still works.

The state is read by :mod:`coordinator.dashboard_state` through the thread's own
connection (``app.state.connections``); nothing is written.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from functools import cache
from importlib import resources
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.responses import HTMLResponse, Response, StreamingResponse
from starlette.concurrency import run_in_threadpool

from coordinator import auth
from coordinator.coalesce import Coalescer
from coordinator.dashboard_state import state
from coordinator.db import Database
from coordinator.live import Hub
from coordinator.observability import Metrics
from coordinator.ops.config import OpsConfig
from coordinator.read_yield import ReadYield
from coordinator.roster import DEFAULT_TIMEZONE
from protocols.timestamps import stamp

router = APIRouter(tags=["dashboard"], dependencies=[auth.requires(auth.ANY_ROLE)])

PAGE_PACKAGE = "coordinator"
PAGE_PATH = ("static", "dashboard.html")


@cache
def page_html() -> str:
    """The page, read once from the package data (it never changes while serving)."""
    return resources.files(PAGE_PACKAGE).joinpath(*PAGE_PATH).read_text(encoding="utf-8")


# what the pages load besides themselves, served from the package (sites run offline)
STATIC_FILES = {
    "common.js": "text/javascript; charset=utf-8",
    "vendor/uplot/uPlot.iife.min.js": "text/javascript; charset=utf-8",
    "vendor/uplot/uPlot.min.css": "text/css; charset=utf-8",
    "vendor/uplot/LICENSE": "text/plain; charset=utf-8",
}


@cache
def static_bytes(name: str) -> bytes:
    return resources.files(PAGE_PACKAGE).joinpath("static", *name.split("/")).read_bytes()


@router.get("/static/{name:path}", include_in_schema=False)
def static_file(name: str) -> Response:
    if name not in STATIC_FILES:
        raise HTTPException(404, f"no static file {name!r}")
    return Response(static_bytes(name), media_type=STATIC_FILES[name],
                    headers={"Cache-Control": "no-cache"})


@router.get("/", response_class=HTMLResponse, include_in_schema=False)
@router.get("/dashboard", response_class=HTMLResponse,
            summary="Operator dashboard (HTML; ?order=ID opens an order)")
def dashboard_page() -> HTMLResponse:
    return HTMLResponse(page_html(), headers={"Cache-Control": "no-cache"})


def timezone_of(request: Request) -> str:
    """The one time zone people read times in (``ops.notify.timezone``, as the running ops
    service validated it, secrets and all): the page, the notices and the demo report all
    show times in it. Without the ops side: the region's default."""
    ops = getattr(request.app.state, "ops", None)
    config: OpsConfig | None = getattr(ops, "config", None)
    return config.notify.timezone if config is not None else DEFAULT_TIMEZONE


def current_state(request: Request, incidents_limit: int = 20) -> dict[str, Any]:
    db: Database = request.app.state.connections.get()
    reads: Coalescer = request.app.state.reads
    # identical reads in flight (every open page after one change) share one computation;
    # the shared dict is copied, not changed
    out = dict(reads.run(("dashboard.state", incidents_limit),
                         lambda: state(db, incident_limit=incidents_limit)))
    out["generated_at"] = stamp(request.app.state.clock.now())
    out["timezone"] = timezone_of(request)
    out["down"] = [w["id"] for w in out["warehouses"] if w["state"] != "available"]
    return out


@router.get("/dashboard/state", summary="What the dashboard shows, in one read")
def dashboard_state(
    request: Request,
    incidents_limit: Annotated[int, Query(ge=1, le=200, alias="incidents")] = 20,
) -> dict[str, Any]:
    """Warehouses (state, reason and its codes, open breakers, holds, agents, last seen,
    latest readings, open orders), recent incidents (moved / stuck), order counts by
    status, notifications by status, the time zone and which warehouses are down."""
    return current_state(request, incidents_limit)


# the page re-reads at most this often however fast changes come (a reroute publishes
# for every stage), and says it is alive this often when nothing changes
COALESCE_S = 0.2
KEEPALIVE_S = 15.0


def sse(event: str, data: Any) -> str:
    """One server-sent event; JSON has no raw newlines, so one ``data:`` line."""
    return f"event: {event}\ndata: {json.dumps(data, ensure_ascii=False)}\n\n"


@router.get("/dashboard/events", summary="The dashboard state as server-sent events",
            response_class=StreamingResponse,
            responses={200: {"content": {"text/event-stream": {}}}})
async def dashboard_events(request: Request) -> StreamingResponse:
    """``event: state`` with the whole of ``GET /dashboard/state`` when the stream opens
    and again after every change (coalesced); ``: keepalive`` comments in between. Any
    coordinator instance serves it: changes reach it through the app's live hub."""
    hub: Hub = request.app.state.live
    metrics: Metrics = request.app.state.metrics
    # each recompute gives way to a transition like GET /dashboard/state, without a slot:
    # every open page recomputes after a change, sharing one computation
    gate: ReadYield = request.app.state.read_yield

    async def stream() -> AsyncIterator[str]:
        async with hub.subscribe() as changes:
            metrics.live_clients.inc()
            try:
                yield "retry: 2000\n\n"
                await gate.give_way()
                yield sse("state", await run_in_threadpool(current_state, request))
                while not changes.closed:
                    changed = await changes.changes(within_s=KEEPALIVE_S)
                    if changes.closed:
                        return
                    if not changed:
                        yield ": keepalive\n\n"
                        continue
                    await asyncio.sleep(COALESCE_S)
                    changed |= await changes.changes(within_s=0)
                    await gate.give_way()
                    state_now = await run_in_threadpool(current_state, request)
                    yield sse("state", {**state_now, "changed": sorted(changed)})
            finally:
                metrics.live_clients.dec()

    return StreamingResponse(stream(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache",
                                      "X-Accel-Buffering": "no"})
