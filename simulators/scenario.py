"""The incident scenario file format: time references and the validated models.

A scenario describes a timeline per warehouse and sensor (steady state, ramps,
excursions, noise, defrost cycles, door-open spikes, slow drift, silences), power cuts,
uplink outages, courier tracking going silent, and the order stream around it. The
format reference is in docs/simulators.md; the shipped files are in
``simulators/scenarios/``. Reading a file (with line numbers in errors) is in
:mod:`simulators.scenario_files`; the event stream a scenario gives is in
:mod:`simulators.event_stream`.
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from functools import cached_property
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

from protocols.topics import validate_level

FORMAT_VERSION = 1

Metric = Literal["temperature_c", "humidity_pct"]
SensorFormat = Literal["native", "zigbee2mqtt", "tasmota", "plain"]
METRICS: tuple[Metric, ...] = ("temperature_c", "humidity_pct")

# -- time references -------------------------------------------------------------
_CLOCK = re.compile(r"^(\d{1,2}):(\d{2})(?::(\d{2}))?$")
_OFFSET = re.compile(r"^\+(\d+(?:\.\d+)?)(s|m|h)$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600}


def _check_time_ref(value: Any) -> str | datetime:
    if isinstance(value, bool):
        raise ValueError("a time must be 'HH:MM[:SS]', '+90s'/'+15m'/'+2h' or an ISO datetime")
    if isinstance(value, int):
        # YAML 1.1 reads an unquoted 02:12 as the base-60 integer 132.
        raise ValueError("quote clock times, e.g. at: '02:12' (unquoted, YAML reads a number)")
    if isinstance(value, datetime):
        return value
    if isinstance(value, str):
        text = value.strip()
        clock = _CLOCK.match(text)
        if clock:
            hour, minute = int(clock[1]), int(clock[2])
            second = int(clock[3] or 0)
            if hour > 23 or minute > 59 or second > 59:
                raise ValueError(f"{text!r} is not a valid clock time")
            return text
        if _OFFSET.match(text):
            return text
        try:
            return datetime.fromisoformat(text)
        except ValueError:
            pass
    raise ValueError(
        f"{value!r} is not a time: use 'HH:MM[:SS]', '+90s'/'+15m'/'+2h' or an ISO datetime"
    )


TimeRef = Annotated[str | datetime, Field(union_mode="left_to_right")]


def resolve_time(ref: str | datetime, start: datetime) -> datetime:
    """Resolve a time reference against the scenario start (aware, in start's zone).

    ``HH:MM[:SS]`` is the next such wall-clock time at or after ``start`` (so a night
    scenario starting 23:30 reads ``'02:12'`` as the next day); ``+15m`` is an offset;
    a naive ISO datetime is taken in the start's zone.
    """
    tz: tzinfo = start.tzinfo or UTC
    if isinstance(ref, datetime):
        return ref if ref.tzinfo else ref.replace(tzinfo=tz)
    clock = _CLOCK.match(ref)
    if clock:
        wall = time(int(clock[1]), int(clock[2]), int(clock[3] or 0))
        day: date = start.date()
        candidate = datetime.combine(day, wall, tzinfo=tz)
        if candidate < start:
            candidate += timedelta(days=1)
        return candidate
    offset = _OFFSET.match(ref)
    if offset:
        return start + timedelta(seconds=float(offset[1]) * _UNIT_S[offset[2]])
    parsed = datetime.fromisoformat(ref)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=tz)


# -- the file format ---------------------------------------------------------------
class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


def _ident(value: str) -> str:
    return validate_level(value, "identifier")


class _Timed(_Spec):
    at: TimeRef

    @field_validator("at", mode="before")
    @classmethod
    def _time(cls, value: Any) -> str | datetime:
        return _check_time_ref(value)


class SetStep(_Timed):
    """From ``at`` on, the metric's level is ``to`` (a step change)."""

    kind: Literal["set"]
    metric: Metric = "temperature_c"
    to: float


class RampStep(_Timed):
    """From ``at``, move the level linearly to ``to`` over ``over_s`` seconds, then stay."""

    kind: Literal["ramp"]
    metric: Metric = "temperature_c"
    to: float
    over_s: float = Field(gt=0, le=7 * 86400)


class ExcursionStep(_Timed):
    """A temporary excursion to ``to``: up over ``ramp_s``, held ``for_s``, back over ``ramp_s``."""

    kind: Literal["excursion"]
    metric: Metric = "temperature_c"
    to: float
    for_s: float = Field(gt=0, le=7 * 86400)
    ramp_s: float = Field(default=0, ge=0, le=86400)


class SilenceStep(_Timed):
    """The sensor publishes nothing from ``at`` for ``for_s`` seconds (or until the end)."""

    kind: Literal["silence"]
    for_s: float | None = Field(default=None, gt=0)


Step = Annotated[SetStep | RampStep | ExcursionStep | SilenceStep, Field(discriminator="kind")]


class Noise(_Spec):
    """Gaussian noise per metric (standard deviation), clipped at three deviations."""

    temperature_c: float = Field(default=0.0, ge=0, le=5)
    humidity_pct: float = Field(default=0.0, ge=0, le=20)


class Defrost(_Spec):
    """A defrost cycle every ``every_s``: temperature rises by ``rise_c`` and falls back."""

    every_s: float = Field(ge=600, le=7 * 86400)
    duration_s: float = Field(gt=0, le=86400)
    rise_c: float = Field(gt=0, le=20)
    offset_s: float = Field(default=0, ge=0)

    @model_validator(mode="after")
    def _fits(self) -> Defrost:
        if self.duration_s >= self.every_s:
            raise ValueError("duration_s must be shorter than every_s")
        return self


class DoorOpen(_Spec):
    """Random door-open spikes (Poisson, ``per_hour``); never overlapping.

    Each spike jumps by a rise drawn from ``rise_c`` and decays linearly over a duration
    drawn from ``duration_s`` (both ``[min, max]``).
    """

    per_hour: float = Field(gt=0, le=60)
    duration_s: tuple[float, float]
    rise_c: tuple[float, float]
    min_gap_s: float = Field(default=120, ge=0)

    @field_validator("duration_s", "rise_c")
    @classmethod
    def _range(cls, value: tuple[float, float]) -> tuple[float, float]:
        low, high = value
        if not (0 < low <= high):
            raise ValueError("must be [min, max] with 0 < min <= max")
        return value


class Drift(_Spec):
    """Slow linear drift per hour since the start."""

    temperature_c_per_h: float = Field(default=0.0, ge=-5, le=5)
    humidity_pct_per_h: float = Field(default=0.0, ge=-20, le=20)


def _temperature_only() -> list[Metric]:
    return ["temperature_c"]


class SensorSpec(_Spec):
    id: str
    zone: str
    format: SensorFormat = "native"
    metrics: list[Metric] = Field(default_factory=_temperature_only, min_length=1)
    interval_s: float = Field(default=30, ge=1, le=3600)
    phase_s: float = Field(default=0, ge=0, le=3600)
    baseline: dict[Metric, float]
    noise: Noise = Noise()
    defrost: Defrost | None = None
    door_open: DoorOpen | None = None
    drift: Drift = Drift()
    timeline: list[Step] = Field(default_factory=list)
    temp_unit: Literal["C", "F"] = "C"
    tasmota_sensor: str = Field(default="SHT3X", pattern=r"^[A-Za-z0-9_-]{1,32}$")

    @field_validator("id", "zone")
    @classmethod
    def _topic_level(cls, value: str) -> str:
        return _ident(value)

    @model_validator(mode="after")
    def _consistent(self) -> SensorSpec:
        if len(set(self.metrics)) != len(self.metrics):
            raise ValueError("metrics must not repeat")
        missing = [m for m in self.metrics if m not in self.baseline]
        if missing:
            raise ValueError(f"baseline needs a value for {', '.join(missing)}")
        if self.format == "plain" and len(self.metrics) != 1:
            raise ValueError("a plain sensor publishes exactly one metric")
        for step in self.timeline:
            metric = getattr(step, "metric", None)
            if metric is not None and metric not in self.metrics:
                raise ValueError(f"timeline step at {step.at} changes {metric}, not measured")
        return self


class Window(_Spec):
    """A span of time: ``from`` .. ``to`` (time references)."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    start: TimeRef = Field(alias="from")
    end: TimeRef = Field(alias="to")
    label: str = ""

    @field_validator("start", "end", mode="before")
    @classmethod
    def _time(cls, value: Any) -> str | datetime:
        return _check_time_ref(value)


class WarehouseSpec(_Spec):
    """One site. Without ``sensors`` it gets the default layout for its kind."""

    id: str
    cold_chain: bool | None = None
    sensors: list[SensorSpec] | None = None
    power_cuts: list[Window] = Field(default_factory=list)
    uplink_outages: list[Window] = Field(default_factory=list)

    @field_validator("id")
    @classmethod
    def _topic_level(cls, value: str) -> str:
        return _ident(value)

    @model_validator(mode="after")
    def _unique(self) -> WarehouseSpec:
        ids = [s.id for s in self.sensors or []]
        dupes = sorted({i for i in ids if ids.count(i) > 1})
        if dupes:
            raise ValueError(f"sensor ids repeat: {', '.join(dupes)}")
        return self


class CourierSpec(_Spec):
    """A carrier's shipments from one warehouse, each updated every ``update_every_s``."""

    carrier: str
    warehouse: str
    shipments: int = Field(default=20, ge=1, le=2000)
    update_every_s: float = Field(default=300, ge=10, le=86400)
    lifetime_s: float = Field(default=3600, ge=60)
    silent: list[Window] = Field(default_factory=list)

    @field_validator("carrier", "warehouse")
    @classmethod
    def _topic_level(cls, value: str) -> str:
        return _ident(value)


class WaitingOrders(_Spec):
    warehouse: str
    count: int = Field(ge=1, le=100_000)


class OrderSettings(_Spec):
    """The order stream the demo loads before the replay (see simulators.orders)."""

    per_day: int = Field(default=14_000, ge=0, le=10_000_000)
    background: int = Field(default=2_000, ge=0, le=1_000_000)
    waiting: list[WaitingOrders] = Field(default_factory=list)
    seed: int | None = None


class ExpectedTrip(_Spec):
    warehouse: str
    breaker: str
    reason: str | None = None
    at: TimeRef | None = None

    @field_validator("at", mode="before")
    @classmethod
    def _time(cls, value: Any) -> str | datetime | None:
        return None if value is None else _check_time_ref(value)


class Expect(_Spec):
    """What the end-to-end test asserts; ``trips`` lists every trip, no others allowed."""

    trips: list[ExpectedTrip] = Field(default_factory=list)
    rerouted_from: list[str] = Field(default_factory=list)


class MarkerSpec(_Timed):
    label: str = Field(min_length=1, max_length=200)


class Scenario(_Spec):
    format: Literal[1] = 1
    name: str
    description: str = ""
    start: datetime
    end: TimeRef
    seed: int = 0
    include_region: bool = False
    warehouses: list[WarehouseSpec] = Field(default_factory=list)
    couriers: list[CourierSpec] = Field(default_factory=list)
    orders: OrderSettings = OrderSettings()
    markers: list[MarkerSpec] = Field(default_factory=list)
    expect: Expect = Expect()

    @field_validator("name")
    @classmethod
    def _topic_level(cls, value: str) -> str:
        return _ident(value)

    @field_validator("start", mode="before")
    @classmethod
    def _aware_start(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = datetime.fromisoformat(value)
        if isinstance(value, datetime) and value.tzinfo is None:
            raise ValueError("start needs a UTC offset, e.g. 2026-01-15T01:30:00+08:00")
        return value

    @field_validator("end", mode="before")
    @classmethod
    def _time(cls, value: Any) -> str | datetime:
        return _check_time_ref(value)

    @model_validator(mode="after")
    def _unique(self) -> Scenario:
        ids = [w.id for w in self.warehouses]
        dupes = sorted({i for i in ids if ids.count(i) > 1})
        if dupes:
            raise ValueError(f"warehouse ids repeat: {', '.join(dupes)}")
        return self

    def at(self, ref: str | datetime) -> datetime:
        return resolve_time(ref, self.start)

    @cached_property
    def end_at(self) -> datetime:
        return self.at(self.end)
