"""Who to call about an order: on-duty staff of the active warehouses near its delivery
address, nearest first (pure; the roster and warehouses are read by the caller).

Warehouses within ``radius_km`` (great-circle distance, the engine's one distance
function) that are available and not paused, nearest first, each with its on-duty staff;
a warehouse without anyone on duty is left out. When none is left, the order's own
warehouse is the fallback (its on-duty staff, or its whole active roster when nobody is
on duty there: somebody must answer).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from coordinator.customer.store import WarehousePoint
from coordinator.roster import StaffMember
from protocols.geo import great_circle_km


@dataclass(frozen=True, slots=True)
class NearbyWarehouse:
    warehouse: WarehousePoint
    distance_km: float
    staff: tuple[StaffMember, ...]


def within(points: Sequence[WarehousePoint], lat: float, lon: float,
           radius_km: float) -> list[tuple[WarehousePoint, float]]:
    """Active warehouses within ``radius_km`` of (lat, lon), nearest first."""
    near = [(p, great_circle_km(lat, lon, p.lat, p.lon)) for p in points if p.active]
    return sorted(((p, d) for p, d in near if d <= radius_km), key=lambda pd: (pd[1], pd[0].id))


def nearest_contacts(near: Sequence[tuple[WarehousePoint, float]],
                     on_duty: Mapping[str, Sequence[StaffMember]]) -> list[NearbyWarehouse]:
    return [NearbyWarehouse(p, d, tuple(on_duty[p.id])) for p, d in near if on_duty.get(p.id)]


def fallback_contact(point: WarehousePoint, lat: float, lon: float,
                     members: Sequence[StaffMember]) -> NearbyWarehouse:
    """The order's own warehouse, whatever its distance or state."""
    return NearbyWarehouse(point, great_circle_km(lat, lon, point.lat, point.lon),
                           tuple(members))
