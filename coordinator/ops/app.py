"""Wiring the ops side into the coordinator's app.

    from coordinator.ops.app import create_app_with_ops
    app = create_app_with_ops(settings)          # what ``python -m coordinator serve`` can run

or, by hand, with coord's :func:`coordinator.app.create_app`::

    create_app(settings, clock=clock, extra_routers=[ops.api.router],
               lifespan_hooks=[ops_lifespan(ops_config)])
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from fastapi import FastAPI

from coordinator import dashboard, order_search, roster_api
from coordinator.app import create_app
from coordinator.coalesce import Coalescer
from coordinator.customer import api as customer_api
from coordinator.customer.service import customer_lifespan
from coordinator.db import Database
from coordinator.gateways import api as gateways_api
from coordinator.intel import api as intel_api
from coordinator.intel.service import intel_lifespan
from coordinator.observability import Metrics
from coordinator.ops import incident_api, metrics
from coordinator.ops.api import router
from coordinator.ops.cluster_metrics import ClusterCollector
from coordinator.ops.config import OpsConfig, ops_config_of
from coordinator.ops.metrics import SummaryCollector
from coordinator.ops.runner import OpsService
from coordinator.roster import StaffMember
from coordinator.roster_store import on_duty
from coordinator.settings import Settings
from protocols.clock import Clock


def ops_lifespan(config: OpsConfig | None = None
                 ) -> Callable[[FastAPI], AbstractAsyncContextManager[Any]]:
    """A lifespan hook: runs :class:`OpsService` and puts it at ``app.state.ops``."""

    @asynccontextmanager
    async def running(app: FastAPI) -> AsyncIterator[None]:
        registry: Metrics = app.state.metrics
        chosen = config or ops_config_of(app.state.settings)
        zone = ZoneInfo(chosen.notify.timezone)

        def roster(db: Database, warehouse_id: str, at: datetime) -> list[StaffMember]:
            # who escalations reach: the staff roster's on-duty people of the warehouse
            return on_duty(db, warehouse_id, at, zone)

        async with OpsService(app.state.settings, chosen, app.state.clock,
                              live=app.state.live, metrics=registry, roster=roster,
                              checkpointer=getattr(app.state, "checkpointer", None),
                              read_yield=getattr(app.state, "read_yield", None)) as ops:
            app.state.ops = ops
            figures = SummaryCollector()
            registry.registry.register(figures)
            instance = ClusterCollector(ops)
            registry.registry.register(instance)

            def read_summary() -> dict[str, Any]:
                # on a worker thread's own connection, never on the ops thread: scrapes
                # must not queue in front of breaker events; identical ones share a read
                reads: Coalescer = app.state.reads
                return reads.run("metrics.summary",
                                 lambda: metrics.summary(app.state.connections.get()))

            async def refresh() -> None:
                figures.data = await asyncio.to_thread(read_summary)

            remove = registry.add_refresher(refresh)
            try:
                yield
            finally:
                remove()
                registry.registry.unregister(figures)
                registry.registry.unregister(instance)
                app.state.ops = None

    return running


def create_app_with_ops(settings: Settings | None = None, *, clock: Clock | None = None,
                        config: OpsConfig | None = None) -> FastAPI:
    """The coordinator API plus the ops endpoints, background tasks, the intel and
    customer sides and the dashboard."""
    # the dashboard claims GET /, so it goes last; the customer side needs the ops
    # service (its dispatcher) running, so its hook comes after
    return create_app(settings, clock=clock,
                      extra_routers=[router, intel_api.router, gateways_api.router,
                                     gateways_api.security_router, roster_api.router,
                                     customer_api.router, incident_api.router,
                                     order_search.router, dashboard.router],
                      lifespan_hooks=[ops_lifespan(config), intel_lifespan(),
                                      customer_lifespan()])
