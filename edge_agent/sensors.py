"""Sensor payloads as real gateways emit them, normalised to readings in °C and %RH.

Formats: ``native`` (:class:`protocols.SensorReading` JSON with an event timestamp),
``zigbee2mqtt`` (``{"temperature": 7.9, "humidity": 61.2, ...}``, no timestamp: receive
time is used), ``tasmota`` (``tele/<device>/SENSOR``: ``{"Time": ..., "<SENSOR>":
{"Temperature": .., "Humidity": ..}, "TempUnit": "C"|"F"}``) and ``plain`` (one number on a
per-metric topic). Every rejection is a :class:`SensorPayloadError` naming the field; a
payload with one good and one bad value gives the good reading and the error.

Units: every sensor may declare ``unit = "F"`` for its temperature (°C otherwise);
Tasmota's own ``TempUnit`` wins where present.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Final, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError

from edge_agent.config import SensorConfig
from edge_agent.errors import SensorPayloadError
from edge_agent.readings import Metric, Reading
from protocols.models import MAX_TEMPERATURE_C, MIN_TEMPERATURE_C

TEMPERATURE: Final[Metric] = "temperature_c"
HUMIDITY: Final[Metric] = "humidity_pct"
LIMITS: dict[str, tuple[float, float]] = {
    TEMPERATURE: (MIN_TEMPERATURE_C, MAX_TEMPERATURE_C),
    HUMIDITY: (0.0, 100.0),
}


_PLAIN_NUMBER = re.compile(
    r"[+-]?(?:(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?|nan|inf|infinity)",
    re.IGNORECASE)  # nan and inf read, then refused as non_finite


class _FastNative(BaseModel):
    """:class:`SensorReading` without its Python-level validators, for the hot path.

    Everything it checks runs inside pydantic-core. What it skips is re-checked cheaply:
    ``sensor_id`` must equal the configured (already validated) id; values are checked one
    by one (unit, sentinel, range) so one bad value never costs the other; a payload that
    fails here is read again field by field to name what was wrong.
    """

    model_config = ConfigDict(extra="ignore", frozen=True, allow_inf_nan=False)

    v: Literal[1] = 1
    sensor_id: str
    ts: AwareDatetime
    # strict: a JSON string ("7.9") or boolean (true) is not a number; lax mode would
    # take ``true`` as 1.0 °C, a cold reading that resets a real excursion
    temperature_c: float | None = Field(default=None, strict=True)
    humidity_pct: float | None = Field(default=None, strict=True)


# Values some common probes send instead of a measurement, in °C, by name. Both are
# outside the possible range too, but naming them tells the technician what to fix.
SENTINELS: dict[float, str] = {
    85.0: "the DS18B20 power-on value (the probe reset or lost power; not a measurement)",
    -127.0: "the DS18B20 disconnected value (no probe on the wire)",
}


@dataclass(frozen=True, slots=True)
class Parsed:
    """The readings a payload gave, and the values it carried that were refused (each
    names its field): a bad or ``null`` humidity never costs the temperature beside it."""

    readings: list[Reading]
    errors: list[SensorPayloadError] = field(default_factory=list)


class SensorParser:
    """Parses the payloads of one configured sensor."""

    __slots__ = ("_config", "_fahrenheit", "_id", "_max_skew", "_zone")

    def __init__(self, config: SensorConfig, max_skew_s: float) -> None:
        self._config = config
        self._id = config.id
        self._zone = config.zone
        self._max_skew = timedelta(seconds=max_skew_s)
        self._fahrenheit = config.unit == "F"

    @property
    def config(self) -> SensorConfig:
        return self._config

    def parse(self, payload: bytes, received_at: datetime) -> Parsed:
        """Readings in °C and %RH; raises :class:`SensorPayloadError` only when the
        payload gives no usable value at all."""
        fmt = self._config.format
        if fmt == "native":
            return self._native(payload, received_at)
        if fmt == "zigbee2mqtt":
            return self._zigbee2mqtt(payload, received_at)
        if fmt == "tasmota":
            return self._tasmota(payload, received_at)
        return self._plain(payload, received_at)

    # -- formats ---------------------------------------------------------------
    def _native(self, payload: bytes, received_at: datetime) -> Parsed:
        try:
            fast = _FastNative.model_validate_json(payload)
        except ValueError:
            return self._native_slow(payload, received_at)
        if fast.sensor_id != self._id:
            message = f"sensor_id {fast.sensor_id!r} does not match sensor {self._id!r}"
            raise SensorPayloadError(message, field="sensor_id", reason="sensor_id")
        ts, suspect = self._event_time(fast.ts, received_at)
        values = ((TEMPERATURE, fast.temperature_c, TEMPERATURE),
                  (HUMIDITY, fast.humidity_pct, HUMIDITY))
        return self._values(values, ts, received_at, suspect, "$", self._fahrenheit)

    def _native_slow(self, payload: bytes, received_at: datetime) -> Parsed:
        """Only for payloads the fast path refused: which field, and can the rest be used?"""
        data = _json_object(payload)
        header = {k: v for k, v in data.items() if k not in (TEMPERATURE, HUMIDITY)}
        try:
            fast = _FastNative.model_validate(header)
        except ValueError as exc:  # pydantic.ValidationError is a ValueError
            raise _from_validation(exc) from exc
        if fast.sensor_id != self._id:
            message = f"sensor_id {fast.sensor_id!r} does not match sensor {self._id!r}"
            raise SensorPayloadError(message, field="sensor_id", reason="sensor_id")
        ts, suspect = self._event_time(fast.ts, received_at)
        values = ((TEMPERATURE, data.get(TEMPERATURE), TEMPERATURE),
                  (HUMIDITY, data.get(HUMIDITY), HUMIDITY))
        return self._values(values, ts, received_at, suspect, "$", self._fahrenheit)

    def _zigbee2mqtt(self, payload: bytes, received_at: datetime) -> Parsed:
        data = _json_object(payload)
        values = ((TEMPERATURE, data.get("temperature"), "temperature"),
                  (HUMIDITY, data.get("humidity"), "humidity"))
        return self._values(values, received_at, received_at, False, "temperature",
                            self._fahrenheit)

    def _tasmota(self, payload: bytes, received_at: datetime) -> Parsed:
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
        # Tasmota's own TempUnit wins over the declared unit: the device knows what it sent
        unit = data.get("TempUnit", "F" if self._fahrenheit else "C")
        if unit not in ("C", "F"):
            raise SensorPayloadError(
                f"TempUnit must be 'C' or 'F', got {unit!r}", field="TempUnit", reason="type"
            )
        ts, suspect = received_at, False
        if "Time" in data:
            ts, suspect = self._event_time(_tasmota_time(data["Time"]), received_at)
        values = ((TEMPERATURE, block.get("Temperature"), f"{name}.Temperature"),
                  (HUMIDITY, block.get("Humidity"), f"{name}.Humidity"))
        return self._values(values, ts, received_at, suspect, name, unit == "F")

    def _plain(self, payload: bytes, received_at: datetime) -> Parsed:
        metric = self._config.metric
        assert metric is not None
        try:
            text = payload.decode("utf-8").strip()
            # a plain decimal, as a firmware prints one: Python's float() also reads
            # "8_5" as 85 and full-width or other scripts' digits, no sensor's output
            if not _PLAIN_NUMBER.fullmatch(text):
                raise ValueError(text)
            value = float(text)
        except (UnicodeDecodeError, ValueError) as exc:
            message = f"not a number: {payload[:40]!r}"
            raise SensorPayloadError(message, field="$", reason="type") from exc
        if not math.isfinite(value):
            raise SensorPayloadError("must be finite", field="$", reason="non_finite")
        values = ((metric, value, "$"),)
        return self._values(values, received_at, received_at, False, "$", self._fahrenheit)

    # -- helpers ---------------------------------------------------------------
    def _values(
        self,
        values: Iterable[tuple[Metric, Any, str]],
        ts: datetime,
        received_at: datetime,
        suspect: bool,
        missing_field: str,
        fahrenheit: bool,
    ) -> Parsed:
        """One reading per present value; ``null`` is absent (Zigbee2MQTT sends it for a
        value it lacks). Raises only when no value is usable."""
        readings: list[Reading] = []
        errors: list[SensorPayloadError] = []
        for metric, raw, name in values:
            if raw is None:
                continue
            try:
                value = _number(raw, name)
                if fahrenheit and metric == TEMPERATURE:
                    value = (value - 32.0) * 5.0 / 9.0
                readings.append(self._reading(metric, value, ts, received_at, suspect))
            except SensorPayloadError as exc:
                errors.append(exc)
        if not readings:
            if errors:
                raise errors[0]
            raise SensorPayloadError(
                "no temperature or humidity in payload", field=missing_field, reason="missing"
            )
        return Parsed(readings, errors)

    def reading(self, metric: Metric, value: float, ts: datetime) -> Reading:
        """A value already in °C / %RH with its event time (a data logger's export),
        checked like a payload's: finite, no sentinel, within the possible range."""
        if not math.isfinite(value):
            raise SensorPayloadError(f"{metric} must be finite", field=metric,
                                     reason="non_finite")
        return self._reading(metric, value, ts, ts)

    def _reading(
        self,
        metric: Metric,
        value: float,
        ts: datetime,
        received_at: datetime,
        suspect: bool = False,
    ) -> Reading:
        if metric == TEMPERATURE:
            for sentinel, meaning in SENTINELS.items():
                if abs(value - sentinel) < 0.01:
                    message = f"{metric} {value:g} is {meaning}"
                    raise SensorPayloadError(message, field=metric, reason="sentinel")
        low, high = LIMITS[metric]
        if not low <= value <= high:
            message = f"{metric} {value:g} is outside the possible range {low:g}..{high:g}"
            raise SensorPayloadError(message, field=metric, reason="range")
        return Reading(self._id, self._zone, metric, value, ts, received_at, suspect)

    def _event_time(self, ts: datetime, received_at: datetime) -> tuple[datetime, bool]:
        """Payload time if within ``max_skew`` of the gateway clock, else receive time.

        In UTC whatever offset the sensor wrote (``+08:00``): event times go upstream
        and into episode ids, which the contract says are UTC."""
        skew = ts - received_at
        if -self._max_skew <= skew <= self._max_skew:
            return ts.astimezone(UTC), False
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


__all__ = ["SENTINELS", "Parsed", "SensorParser"]
