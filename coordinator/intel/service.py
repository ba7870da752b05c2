"""The intel module's long-lived parts, built in the app's lifespan: the HTTP client for
the map service and the backup carrier, the geocoder chain, the carrier adapter, and the
background loop that hands stuck parcels over and retrains the return classifier on
schedule.

    create_app(settings, extra_routers=[intel.api.router], lifespan_hooks=[intel_lifespan()])
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import httpx
from fastapi import FastAPI
from prometheus_client import Counter

from coordinator.db import Database
from coordinator.errors import StoreError
from coordinator.intel import addresses, heal_store, parcels, returns, returns_store
from coordinator.intel.config import IntelConfig, ReturnsConfig
from coordinator.intel.geocode import AmapGeocoder, Gazetteer, Geocoder
from coordinator.intel.parcels import CarrierAdapter, WebhookCarrier
from protocols.clock import Clock

log = logging.getLogger(__name__)

# addresses checked per round (each may cost a map-service call)
ADDRESS_BATCH = 200


def retrain_due(last: datetime | None, now: datetime, pending: int,
                config: ReturnsConfig) -> bool:
    """Scheduled retraining: enough new corrections and the last model old enough."""
    if pending < config.min_corrections_to_retrain:
        return False
    return last is None or now - last >= timedelta(hours=config.retrain_every_h)


@dataclass
class IntelService:
    config: IntelConfig
    clock: Clock
    connect: Callable[[], Database]
    geocoders: list[Geocoder] = field(default_factory=list)
    carrier: CarrierAdapter | None = None
    failures: int = 0

    def tick(self) -> dict[str, Any]:
        """One round (blocking: run it in a thread): new delivery addresses, stuck
        parcels, then retraining."""
        db = self.connect()
        now = self.clock.now()
        out: dict[str, Any] = {"handovers": [], "retrained": None, "addresses": []}
        # new delivery addresses (from the customer side's contacts) are checked here,
        # off the intake path: a map service's latency never slows order intake
        for order_id, address in heal_store.addresses_to_check(db, ADDRESS_BATCH):
            checked = addresses.check_address(db, self.geocoders, order_id=order_id,
                                              address=address,
                                              city=self.config.geocoder.region, now=now)
            out["addresses"].append({"order_id": order_id, "outcome": checked["outcome"]})
        if self.carrier is not None:
            out["handovers"] = parcels.handle_stuck(db, self.carrier, self.config.parcels,
                                                    now)
        pending = returns_store.pending_corrections(db)
        if retrain_due(returns_store.last_trained_at(db), now, pending, self.config.returns):
            out["retrained"] = returns.retrain(db, now, trigger="schedule").version
        return out

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.config.parcels.check_every_s)
            try:
                await asyncio.to_thread(self.tick)
            except (StoreError, OSError) as exc:
                # a failed round is retried next round; nothing it did is half-written
                self.failures += 1
                log.warning("intel round failed: %s", exc)


def build(config: IntelConfig, clock: Clock, connect: Callable[[], Database],
          client: httpx.Client) -> IntelService:
    geo = config.geocoder
    geocoders: list[Geocoder] = []
    if geo.amap_key.get_secret_value():
        geocoders.append(AmapGeocoder(geo.amap_key.get_secret_value(), url=geo.amap_url,
                                      client=client))
    geocoders.append(Gazetteer(geo.region))
    carrier = (WebhookCarrier(config.parcels.backup_webhook_url, client=client)
               if config.parcels.backup_webhook_url and config.parcels.backup_carrier
               else None)
    return IntelService(config, clock, connect, geocoders, carrier)


def intel_lifespan() -> Callable[[FastAPI], AbstractAsyncContextManager[Any]]:
    """A lifespan hook: puts an :class:`IntelService` at ``app.state.intel`` and runs its
    loop until shutdown."""

    @asynccontextmanager
    async def running(app: FastAPI) -> AsyncIterator[None]:
        config = IntelConfig.of(app.state.settings)
        timeout = max(config.geocoder.timeout_s, config.parcels.timeout_s)
        metrics = getattr(app.state, "metrics", None)
        if metrics is not None and getattr(app.state, "intel_events", None) is None:
            app.state.intel_events = Counter(
                "breakwater_intel_events",
                "Order-history imports, return reasons and address checks, by event.",
                ["event"], registry=metrics.registry)
        with httpx.Client(timeout=timeout) as client:
            service = build(config, app.state.clock, app.state.connections.get, client)
            app.state.intel = service
            task = asyncio.create_task(service.run(), name="intel-loop")
            try:
                yield
            finally:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
                app.state.intel = None

    return running
