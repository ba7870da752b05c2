"""A scenario's event stream: pure and deterministic, so the same scenario, region and
seed always give the same time-ordered stream; and a short human summary of it."""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Iterator

from simulators.couriers import courier_tracking
from simulators.events import Event, Marker, Outage, event_key
from simulators.region import Region
from simulators.scenario import Scenario
from simulators.sensor_model import SensorModel
from simulators.sites import sites


def events(
    scenario: Scenario, region: Region | None = None, *, seed: int | None = None
) -> Iterator[Event]:
    """The scenario's time-ordered event stream. Pure: same inputs, same stream.

    ``seed`` overrides the file's seed. Events at the same instant come in a fixed
    order: markers, outages, tracking, readings (then by warehouse and sensor).
    """
    used_seed = scenario.seed if seed is None else seed
    streams: list[Iterable[Event]] = []
    controls: list[Event] = [
        Marker(scenario.start, f"scenario {scenario.name} starts"),
        Marker(scenario.end_at, f"scenario {scenario.name} ends"),
    ]
    controls += [Marker(scenario.at(m.at), m.label) for m in scenario.markers]
    for site in sites(scenario, region):
        for sensor in site.sensors:
            streams.append(SensorModel(scenario, sensor, site, used_seed).readings(site))
        for kind, windows in (("power", site.power_cuts), ("uplink", site.uplink_outages)):
            for w in windows:
                controls.append(Outage(scenario.at(w.start), site.warehouse_id, kind, True))  # type: ignore[arg-type]
                controls.append(Outage(scenario.at(w.end), site.warehouse_id, kind, False))  # type: ignore[arg-type]
    for courier in scenario.couriers:
        streams.append(courier_tracking(scenario, courier, region, used_seed))
    streams.append(sorted(controls, key=event_key))
    yield from heapq.merge(*streams, key=event_key)


def summary(scenario: Scenario, region: Region | None = None) -> str:
    """A short human summary: span, sites, sensors, event counts, expectations."""
    counts: dict[str, int] = {}
    for event in events(scenario, region):
        name = type(event).__name__
        counts[name] = counts.get(name, 0) + 1
    resolved = sites(scenario, region)
    lines = [
        f"scenario {scenario.name}: {scenario.start.isoformat()} .. {scenario.end_at.isoformat()}"
        f" (seed {scenario.seed})",
        f"  sites: {len(resolved)}; sensors: {sum(len(s.sensors) for s in resolved)};"
        f" couriers: {len(scenario.couriers)}",
        "  events: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())),
    ]
    for trip in scenario.expect.trips:
        when = f" at {scenario.at(trip.at).isoformat()}" if trip.at is not None else ""
        lines.append(f"  expects trip: {trip.warehouse}/{trip.breaker}{when}")
    if not scenario.expect.trips:
        lines.append("  expects: no trips")
    for waiting in scenario.orders.waiting:
        lines.append(f"  orders waiting: {waiting.count} at {waiting.warehouse}")
    return "\n".join(lines)
