"""The operator dashboard: one static page plus the read-only JSON it polls.

- ``GET /`` and ``GET /dashboard``: the page (``coordinator/static/dashboard.html``, vanilla
  JS and CSS inline, no CDN, refreshes every 2 s; ``?order=ID`` opens an order's timeline
  and decision trace, ``&why_not=WH`` asks why not that warehouse).
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

from functools import cache
from importlib import resources
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse

from coordinator import auth
from coordinator.coalesce import Coalescer
from coordinator.dashboard_state import state
from coordinator.db import Database
from protocols.timestamps import stamp

router = APIRouter(tags=["dashboard"], dependencies=[auth.requires(auth.ANY_ROLE)])

PAGE_PACKAGE = "coordinator"
PAGE_PATH = ("static", "dashboard.html")


@cache
def page_html() -> str:
    """The page, read once from the package data (it never changes while serving)."""
    return resources.files(PAGE_PACKAGE).joinpath(*PAGE_PATH).read_text(encoding="utf-8")


@router.get("/", response_class=HTMLResponse, include_in_schema=False)
@router.get("/dashboard", response_class=HTMLResponse,
            summary="Operator dashboard (HTML; ?order=ID opens an order)")
def dashboard_page() -> HTMLResponse:
    return HTMLResponse(page_html(), headers={"Cache-Control": "no-cache"})


@router.get("/dashboard/state", summary="What the dashboard shows, in one read")
def dashboard_state(
    request: Request,
    incidents_limit: Annotated[int, Query(ge=1, le=200, alias="incidents")] = 20,
) -> dict[str, Any]:
    """Warehouses (state, reason, open breakers, holds, agents, last seen, open orders),
    recent incidents (moved / stuck), order counts by status, notifications by status."""
    db: Database = request.app.state.connections.get()
    reads: Coalescer = request.app.state.reads
    # identical polls in flight share one read; the shared dict is copied, not changed
    out = dict(reads.run(("dashboard.state", incidents_limit),
                         lambda: state(db, incident_limit=incidents_limit)))
    out["generated_at"] = stamp(request.app.state.clock.now())
    return out
