"""The coordinator's HTTP API (FastAPI). Build it with :func:`create_app`; nothing at import.

Endpoints are plain ``def`` functions: FastAPI runs them in its thread pool and each takes
the SQLite connection of its own thread from :class:`Connections` (``app.state.connections``)
inside the endpoint body, so a connection is never shared by two threads at once.

Extending (the ops package does this): pass ``extra_routers`` (included as they are) and
``lifespan_hooks``: callables ``hook(app) -> async context manager`` entered, in order, once
the database is open and left in reverse order at shutdown; background tasks (MQTT, the
notification outbox) live there. ``app.state`` holds ``settings``, ``clock``,
``connections`` (per-thread SQLite), ``intake`` (the group-commit order writer) and
``counters``.

The core routers live in :mod:`coordinator.orders_api` and :mod:`coordinator.catalog_api`,
their models in :mod:`coordinator.api_models`, the one 422 shape in
:mod:`coordinator.validation_errors`.
"""

from __future__ import annotations

import asyncio
import threading
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from coordinator import auth, observability, security_metrics
from coordinator.auth.config import auth_config_of
from coordinator.body_limits import BodyLimitMiddleware
from coordinator.catalog_api import catalog_router
from coordinator.coalesce import Coalescer
from coordinator.connections import Connections
from coordinator.db import WalCheckpointer, open_database
from coordinator.errors import StoreError
from coordinator.group_commit import GroupCommitter
from coordinator.live import hub_for
from coordinator.observability import LiveCollector, Metrics
from coordinator.orders_api import orders_router
from coordinator.postgres import is_postgres_url
from coordinator.read_yield import ReadYield, ReadYieldCollector, ReadYieldMiddleware
from coordinator.settings import Settings
from coordinator.text_guard import TextGuardMiddleware
from coordinator.validation_errors import document_invalid_requests, invalid_body
from protocols.clock import Clock, SystemClock

LifespanHook = Callable[[FastAPI], AbstractAsyncContextManager[Any]]


def create_app(
    settings: Settings | None = None,
    *,
    clock: Clock | None = None,
    extra_routers: Iterable[APIRouter] = (),
    lifespan_hooks: Sequence[LifespanHook] = (),
) -> FastAPI:
    """Build the API. The database is opened (and migrated) when the app starts."""
    chosen = settings if settings is not None else Settings.load()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        open_database(chosen.db_path).conn.close()  # create and migrate once, at start
        # per app, never process-wide: tests and benchmarks run many apps in one process
        app.state.metrics = Metrics()
        # in-process on SQLite; through LISTEN/NOTIFY on PostgreSQL (several instances)
        app.state.live = hub_for(chosen.db_path, asyncio.get_running_loop())
        app.state.metrics.registry.register(LiveCollector(app))
        app.state.metrics.registry.register(ReadYieldCollector(app.state.read_yield))
        connections = Connections(chosen.db_path)
        app.state.connections = connections
        security_metrics.install(app)  # auth and gateway refusals on /metrics
        app.state.reads = Coalescer()  # identical reads in flight share one computation
        await auth.bootstrap(app)
        # SQLite's WAL is folded back on a thread of its own; PostgreSQL does that itself
        checkpointer = None if is_postgres_url(chosen.db_path) else WalCheckpointer(
            chosen.db_path)
        if checkpointer is not None:
            checkpointer.start()
        app.state.checkpointer = checkpointer
        # the intake writer commits most: it must not checkpoint inside its commits either
        intake = GroupCommitter(
            lambda: open_database(chosen.db_path, migrate=False, autocheckpoint=False),
            chosen, app.state.clock,
        )
        intake.start()
        app.state.intake = intake
        # No process-wide tuning here (sys.setswitchinterval, gc.freeze): measured on the
        # shared build machine, neither changed the HTTP p99 nor the event loop's stalls
        # beside a busy intake thread beyond the noise (docs/coordinator.md), and both
        # would change every other thread of a process that merely hosts the app.
        try:
            async with AsyncExitStack() as stack:
                for hook in lifespan_hooks:
                    await stack.enter_async_context(hook(app))
                yield
        finally:
            app.state.live.close()
            intake.stop()
            if checkpointer is not None:
                checkpointer.stop()
            connections.close()

    app = FastAPI(
        docs_url=None, redoc_url=None, openapi_url=None,  # served behind a login (auth)
        title="Breakwater coordinator",
        version="0.1.0",
        summary="Order intake, three-layer allocation with decision traces, and rerouting.",
        lifespan=lifespan,
    )
    app.state.settings = chosen
    app.state.clock = clock if clock is not None else SystemClock()
    app.state.counters = Counter()
    app.state.counters_lock = threading.Lock()
    app.state.auth_config = auth_config_of(chosen)
    # the ops loop's priority over reads while it applies a transition (the ops service
    # holds it); per app, like every other long-lived part
    app.state.read_yield = ReadYield(chosen.reads.max_yield_s, chosen.reads.max_active)

    def body_too_large() -> None:
        with app.state.counters_lock:
            app.state.counters["requests_body_too_large"] += 1

    def invalid_text() -> None:
        with app.state.counters_lock:
            app.state.counters["requests_invalid"] += 1

    # inside the body limit (added first = inner): it reads bodies already bounded
    app.add_middleware(TextGuardMiddleware, on_reject=invalid_text)
    app.add_middleware(BodyLimitMiddleware, limits=chosen.limits, on_reject=body_too_large)
    # outside the body limit, inside the timing (added in observability.install): a
    # read's wait is part of its measured latency
    app.add_middleware(ReadYieldMiddleware, gate=app.state.read_yield)

    app.exception_handler(RequestValidationError)(invalid_body)

    @app.exception_handler(StoreError)
    async def store_failed(request: Request, exc: StoreError) -> JSONResponse:
        return JSONResponse(status_code=503, content={"detail": str(exc)})

    # extensions first: they may claim a path the core's templates also match
    # (``POST /import/orders`` before ``POST /import/{kind}``)
    for router in extra_routers:
        app.include_router(router)
    app.include_router(orders_router())
    app.include_router(catalog_router())
    observability.install(app)

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            document_invalid_requests(FastAPI.openapi(app))  # cached in app.openapi_schema
        return FastAPI.openapi(app)

    app.openapi = openapi  # type: ignore[method-assign]
    auth.install(app)  # last: it checks that every route included above declares its roles
    return app
