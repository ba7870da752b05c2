"""One normalised reading: what every sensor format is turned into."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

Metric = Literal["temperature_c", "humidity_pct"]


@dataclass(slots=True)
class Reading:
    """One normalised reading (°C or %RH) of one metric from one sensor."""

    sensor_id: str
    zone: str
    metric: Metric
    value: float
    ts: datetime  # event time used by the rules
    received_at: datetime
    clock_suspect: bool = False

    def to_json(self) -> dict[str, Any]:
        # Rule state, not a stored column: event times keep their microseconds, because a
        # duplicate is an exact repeat of a sensor's event time (stamp() keeps only ms).
        return {
            "sensor_id": self.sensor_id,
            "zone": self.zone,
            "metric": self.metric,
            "value": self.value,
            "ts": self.ts.isoformat(),
            "received_at": self.received_at.isoformat(),
            "clock_suspect": self.clock_suspect,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Reading:
        return cls(
            sensor_id=str(data["sensor_id"]),
            zone=str(data["zone"]),
            metric="humidity_pct" if data["metric"] == "humidity_pct" else "temperature_c",
            value=float(data["value"]),
            ts=datetime.fromisoformat(data["ts"]),
            received_at=datetime.fromisoformat(data["received_at"]),
            clock_suspect=bool(data.get("clock_suspect", False)),
        )
