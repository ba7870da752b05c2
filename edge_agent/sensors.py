"""Sensor payloads as real gateways emit them, normalised to readings in °C and %RH.

Formats: ``native`` (:class:`protocols.SensorReading` JSON with an event timestamp),
``zigbee2mqtt`` (``{"temperature": 7.9, "humidity": 61.2, ...}``, no timestamp: receive
time is used), ``tasmota`` (``tele/<device>/SENSOR``: ``{"Time": ..., "<SENSOR>":
{"Temperature": .., "Humidity": ..}, "TempUnit": "C"|"F"}``) and ``plain`` (one number on a
per-metric topic). Every rejection raises :class:`SensorPayloadError` naming the field.
"""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime, timedelta
from typing import Any, Final, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError

from edge_agent.config import SensorConfig
from edge_agent.errors import SensorPayloadError
from edge_agent.rules import Metric, Reading
from protocols import SensorReading
from protocols.models import MAX_TEMPERATURE_C, MIN_TEMPERATURE_C

TEMPERATURE: Final = "temperature_c"
HUMIDITY: Final = "humidity_pct"
LIMITS: dict[str, tuple[float, float]] = {
    TEMPERATURE: (MIN_TEMPERATURE_C, MAX_TEMPERATURE_C),
    HUMIDITY: (0.0, 100.0),
}


class _FastNative(BaseModel):
    """:class:`SensorReading` without its Python-level validators, for the hot path.

    Everything it checks runs inside pydantic-core. What it skips is re-checked cheaply:
    ``sensor_id`` must equal the configured (already validated) id, and a payload without
    any value falls back to :class:`SensorReading`, which rejects it naming the field.
    """

    model_config = ConfigDict(extra="ignore", frozen=True, allow_inf_nan=False)

    v: Literal[1] = 1
    sensor_id: str
    ts: AwareDatetime
    temperature_c: float | None = Field(default=None, ge=MIN_TEMPERATURE_C, le=MAX_TEMPERATURE_C)
    humidity_pct: float | None = Field(default=None, ge=0.0, le=100.0)


class SensorParser:
    """Parses the payloads of one configured sensor."""

    __slots__ = ("_config", "_id", "_max_skew", "_zone")

    def __init__(self, config: SensorConfig, max_skew_s: float) -> None:
        self._config = config
        self._id = config.id
        self._zone = config.zone
        self._max_skew = timedelta(seconds=max_skew_s)

    @property
    def config(self) -> SensorConfig:
        return self._config

    def parse(self, payload: bytes, received_at: datetime) -> list[Reading]:
        fmt = self._config.format
        if fmt == "native":
            return self._native(payload, received_at)
        if fmt == "zigbee2mqtt":
            return self._zigbee2mqtt(payload, received_at)
        if fmt == "tasmota":
            return self._tasmota(payload, received_at)
        return self._plain(payload, received_at)

    # -- formats ---------------------------------------------------------------
    def _native(self, payload: bytes, received_at: datetime) -> list[Reading]:
        try:
            reading: SensorReading | _FastNative = _FastNative.model_validate_json(payload)
            if reading.temperature_c is None and reading.humidity_pct is None:
                raise ValueError("no value")
        except ValueError:
            # Slow path, only for bad payloads: the contract's own model names the field.
            try:
                reading = SensorReading.model_validate_json(payload)
            except ValueError as exc:  # pydantic.ValidationError is a ValueError
                raise _from_validation(exc) from exc
        if reading.sensor_id != self._id:
            message = f"sensor_id {reading.sensor_id!r} does not match sensor {self._id!r}"
            raise SensorPayloadError(message, field="sensor_id", reason="sensor_id")
        ts, suspect = self._event_time(reading.ts, received_at)
        out: list[Reading] = []
        if reading.temperature_c is not None:
            out.append(
                Reading(
                    self._id,
                    self._zone,
                    TEMPERATURE,
                    reading.temperature_c,
                    ts,
                    received_at,
                    suspect,
                )
            )
        if reading.humidity_pct is not None:
            out.append(
                Reading(
                    self._id, self._zone, HUMIDITY, reading.humidity_pct, ts, received_at, suspect
                )
            )
        return out

    def _zigbee2mqtt(self, payload: bytes, received_at: datetime) -> list[Reading]:
        data = _json_object(payload)
        values: list[tuple[Metric, float]] = []
        if "temperature" in data:
            values.append((TEMPERATURE, _number(data["temperature"], "temperature")))
        if "humidity" in data:
            values.append((HUMIDITY, _number(data["humidity"], "humidity")))
        if not values:
            raise SensorPayloadError(
                "no temperature or humidity in payload", field="temperature", reason="missing"
            )
        return [self._reading(metric, value, received_at, received_at) for metric, value in values]

    def _tasmota(self, payload: bytes, received_at: datetime) -> list[Reading]:
        data = _json_object(payload)
        name = self._config.tasmota_sensor
        block: Any
        if name is not None:
            if name not in data:
                raise SensorPayloadError(f"no {name!r} block", field=name, reason="missing")
            block = data[name]
        else:
            found = [
                key
                for key, value in data.items()
                if isinstance(value, dict) and ("Temperature" in value or "Humidity" in value)
            ]
            if not found:
                raise SensorPayloadError(
                    "no sensor block with Temperature or Humidity", field="$", reason="missing"
                )
            name = found[0]
            block = data[name]
        if not isinstance(block, dict):
            raise SensorPayloadError(f"{name} must be an object", field=name, reason="type")
        unit = data.get("TempUnit", "C")
        if unit not in ("C", "F"):
            raise SensorPayloadError(
                f"TempUnit must be 'C' or 'F', got {unit!r}", field="TempUnit", reason="type"
            )
        ts, suspect = received_at, False
        if "Time" in data:
            ts, suspect = self._event_time(_tasmota_time(data["Time"]), received_at)
        values: list[tuple[Metric, float]] = []
        if "Temperature" in block:
            temp = _number(block["Temperature"], f"{name}.Temperature")
            if unit == "F":
                temp = (temp - 32.0) * 5.0 / 9.0
            values.append((TEMPERATURE, temp))
        if "Humidity" in block:
            values.append((HUMIDITY, _number(block["Humidity"], f"{name}.Humidity")))
        if not values:
            raise SensorPayloadError(
                f"{name} has no Temperature or Humidity", field=name, reason="missing"
            )
        return [self._reading(m, v, ts, received_at, suspect) for m, v in values]

    def _plain(self, payload: bytes, received_at: datetime) -> list[Reading]:
        metric = self._config.metric
        assert metric is not None
        try:
            text = payload.decode("utf-8").strip()
            value = float(text)
        except (UnicodeDecodeError, ValueError) as exc:
            message = f"not a number: {payload[:40]!r}"
            raise SensorPayloadError(message, field="$", reason="type") from exc
        if not math.isfinite(value):
            raise SensorPayloadError("must be finite", field="$", reason="non_finite")
        return [self._reading(metric, value, received_at, received_at)]

    # -- helpers ---------------------------------------------------------------
    def _reading(
        self,
        metric: Metric,
        value: float,
        ts: datetime,
        received_at: datetime,
        suspect: bool = False,
    ) -> Reading:
        low, high = LIMITS[metric]
        if not low <= value <= high:
            message = f"{metric} {value:g} is outside the possible range {low:g}..{high:g}"
            raise SensorPayloadError(message, field=metric, reason="range")
        return Reading(self._id, self._zone, metric, value, ts, received_at, suspect)

    def _event_time(self, ts: datetime, received_at: datetime) -> tuple[datetime, bool]:
        """Payload time if within ``max_skew`` of the gateway clock, else receive time."""
        skew = ts - received_at
        if -self._max_skew <= skew <= self._max_skew:
            return ts, False
        return received_at, True


def _from_validation(exc: ValueError) -> SensorPayloadError:
    if not isinstance(exc, ValidationError):
        return SensorPayloadError(str(exc), reason="invalid")
    first = exc.errors(include_url=False)[0]
    field = ".".join(str(p) for p in first["loc"]) or "$"
    kind = first["type"]
    if kind == "json_invalid":
        reason, field = "json", "$"
    elif kind == "finite_number":
        reason = "non_finite"
    elif kind in ("greater_than_equal", "less_than_equal"):
        reason = "range"
    elif kind == "missing" or kind == "value_error":
        reason = "missing"
    else:
        reason = "type"
    message = f"{field}: {first['msg']}"
    return SensorPayloadError(message, field=field, reason=reason)


def _json_object(payload: bytes) -> dict[str, Any]:
    try:
        data = json.loads(payload)
    except (ValueError, UnicodeDecodeError) as exc:
        raise SensorPayloadError(f"malformed JSON: {exc}", field="$", reason="json") from exc
    if not isinstance(data, dict):
        raise SensorPayloadError("payload must be a JSON object", field="$", reason="type")
    return data


def _number(value: Any, field: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        message = f"{field} must be a number, got {type(value).__name__}"
        raise SensorPayloadError(message, field=field, reason="type")
    number = float(value)
    if not math.isfinite(number):
        raise SensorPayloadError(f"{field} must be finite", field=field, reason="non_finite")
    return number


def _tasmota_time(value: Any) -> datetime:
    if not isinstance(value, str):
        raise SensorPayloadError("Time must be a string", field="Time", reason="type")
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError as exc:
        raise SensorPayloadError(
            f"Time {value!r} is not ISO 8601", field="Time", reason="type"
        ) from exc
    # Tasmota writes local time without an offset; gateways run on UTC (see docs/edge.md).
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


__all__ = ["SensorParser"]
