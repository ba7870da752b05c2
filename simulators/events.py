"""The events a scenario's stream is made of, and the order they come in at one instant."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from protocols.models import TrackingUpdate
from simulators.scenario import Metric, SensorFormat


@dataclass(frozen=True, slots=True)
class ScenarioReading:
    """One sensor reading at event time ``at``; ``values`` maps metric to °C / %RH."""

    at: datetime
    warehouse: str
    sensor: str
    zone: str
    format: SensorFormat
    values: tuple[tuple[Metric, float], ...]
    temp_unit: Literal["C", "F"] = "C"
    tasmota_sensor: str = "SHT3X"
    battery: int = 100
    linkquality: int = 120

    def value(self, metric: Metric) -> float | None:
        for name, value in self.values:
            if name == metric:
                return value
        return None


@dataclass(frozen=True, slots=True)
class Tracking:
    at: datetime
    update: TrackingUpdate


@dataclass(frozen=True, slots=True)
class Outage:
    """An uplink outage or a power cut starting (``active``) or ending."""

    at: datetime
    warehouse: str
    kind: Literal["uplink", "power"]
    active: bool


@dataclass(frozen=True, slots=True)
class Marker:
    at: datetime
    label: str
    warehouse: str | None = None


Event = ScenarioReading | Tracking | Outage | Marker


def event_key(event: Event) -> tuple[datetime, int, str, str]:
    match event:
        case ScenarioReading():
            return (event.at, 3, event.warehouse, event.sensor)
        case Tracking():
            return (event.at, 2, event.update.warehouse_id, event.update.shipment_id)
        case Outage():
            return (event.at, 1, event.warehouse, event.kind)
        case Marker():
            return (event.at, 0, event.warehouse or "", event.label)
    raise TypeError(type(event).__name__)
