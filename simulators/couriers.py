"""Simulated courier tracking: each carrier's shipments from a warehouse, updated on a
schedule, silent in the scenario's windows."""

from __future__ import annotations

import math
from collections.abc import Iterator
from datetime import UTC, timedelta
from typing import Literal

from protocols.geo import offset_km
from protocols.models import TrackingUpdate
from simulators.events import Tracking, event_key
from simulators.random_streams import rng_for
from simulators.region import Region
from simulators.scenario import CourierSpec, Scenario


def courier_tracking(
    scenario: Scenario, courier: CourierSpec, region: Region | None, seed: int
) -> Iterator[Tracking]:
    rng = rng_for(seed, "courier", courier.carrier, courier.warehouse)
    silent = [(scenario.at(w.start), scenario.at(w.end)) for w in courier.silent]
    location = region.warehouse(courier.warehouse) if region is not None else None
    total = (scenario.end_at - scenario.start).total_seconds()
    # Each slot runs shipments back to back; slot phases spread updates over the interval.
    out: list[Tracking] = []
    for slot in range(courier.shipments):
        phase = float(rng.randint(0, int(courier.update_every_s)))
        born = -rng.uniform(0, courier.lifetime_s)  # already under way at the start
        serial = 0
        heading = rng.uniform(0, 2 * math.pi)
        t = phase
        while t <= total:
            if t - born >= courier.lifetime_s:
                born, serial = t, serial + 1
                heading = rng.uniform(0, 2 * math.pi)
            at = scenario.start + timedelta(seconds=t)
            age = t - born
            t += courier.update_every_s
            if any(begin <= at < until for begin, until in silent):
                continue
            delivered = age + courier.update_every_s >= courier.lifetime_s
            status: Literal["picked_up", "in_transit", "delivered"] = (
                "picked_up"
                if age < courier.update_every_s
                else "delivered"
                if delivered
                else "in_transit"
            )
            lat = lon = None
            if location is not None:
                km = 8.0 * age / courier.lifetime_s
                lat, lon = offset_km(
                    location.lat, location.lon, km * math.cos(heading), km * math.sin(heading)
                )
                lat, lon = round(lat, 6), round(lon, 6)
            update = TrackingUpdate(
                shipment_id=f"{courier.carrier}-{courier.warehouse}-{slot:03d}-{serial:03d}",
                carrier=courier.carrier, warehouse_id=courier.warehouse, status=status,
                ts=at.astimezone(UTC), lat=lat, lon=lon,
            )  # fmt: skip
            out.append(Tracking(at=at, update=update))
    out.sort(key=event_key)
    yield from out
