"""A scenario's simulated sites: each warehouse spec resolved against the region, and
the default sensor layouts a site gets when the scenario does not list its sensors."""

from __future__ import annotations

from dataclasses import dataclass

from simulators.region import Region, Warehouse
from simulators.scenario import Noise, Scenario, SensorSpec, WarehouseSpec, Window


# -- default site layouts ---------------------------------------------------------------
def default_sensors(cold_chain: bool) -> list[SensorSpec]:
    """The layout a site gets when the scenario does not list its sensors.

    Formats rotate so every format the agent reads is exercised in every demo.
    """
    if cold_chain:
        return [
            SensorSpec(
                id="cr1-t1", zone="cold_room_1", format="zigbee2mqtt",
                metrics=["temperature_c", "humidity_pct"],
                baseline={"temperature_c": 3.5, "humidity_pct": 85.0},
                noise=Noise(temperature_c=0.15, humidity_pct=1.0),
            ),
            SensorSpec(
                id="cr2-t1", zone="cold_room_2", format="native",
                metrics=["temperature_c", "humidity_pct"],
                baseline={"temperature_c": 3.8, "humidity_pct": 84.0},
                noise=Noise(temperature_c=0.15, humidity_pct=1.0),
            ),
            SensorSpec(
                id="amb-t1", zone="ambient", format="tasmota", temp_unit="F",
                metrics=["temperature_c", "humidity_pct"],
                baseline={"temperature_c": 6.0, "humidity_pct": 70.0},
                noise=Noise(temperature_c=0.3, humidity_pct=2.0), interval_s=60,
            ),
        ]  # fmt: skip
    return [
        SensorSpec(
            id="dry-h1", zone="dry_store", format="plain", metrics=["humidity_pct"],
            baseline={"humidity_pct": 55.0}, noise=Noise(humidity_pct=1.5), interval_s=60,
        ),
        SensorSpec(
            id="dry-t1", zone="dry_store", format="tasmota",
            metrics=["temperature_c", "humidity_pct"],
            baseline={"temperature_c": 14.0, "humidity_pct": 56.0},
            noise=Noise(temperature_c=0.2, humidity_pct=1.5), interval_s=60,
        ),
    ]  # fmt: skip


@dataclass(frozen=True, slots=True)
class Site:
    """A warehouse as simulated: its spec resolved against the region and defaults."""

    warehouse_id: str
    cold_chain: bool
    sensors: tuple[SensorSpec, ...]
    power_cuts: tuple[Window, ...]
    uplink_outages: tuple[Window, ...]
    location: Warehouse | None


def sites(scenario: Scenario, region: Region | None = None) -> list[Site]:
    """Every simulated site: the scenario's warehouses, plus the region's when asked."""
    out: list[Site] = []
    listed = {w.id for w in scenario.warehouses}
    specs = list(scenario.warehouses)
    if scenario.include_region and region is not None:
        specs += [WarehouseSpec(id=w.id) for w in region.warehouses if w.id not in listed]
    for spec in specs:
        location = region.warehouse(spec.id) if region is not None else None
        cold = spec.cold_chain
        if cold is None:
            cold = location.cold_chain if location is not None else True
        sensors = spec.sensors if spec.sensors is not None else default_sensors(cold)
        out.append(
            Site(
                spec.id,
                cold,
                tuple(sensors),
                tuple(spec.power_cuts),
                tuple(spec.uplink_outages),
                location,
            )
        )
    return out
