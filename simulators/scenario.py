"""Incident scenarios: a YAML file format, its validation, and a pure event generator.

A scenario describes a timeline per warehouse and sensor (steady state, ramps,
excursions, noise, defrost cycles, door-open spikes, slow drift, silences), power cuts,
uplink outages, courier tracking going silent, and the order stream around it. The
format reference is in docs/simulators.md; the shipped files are in
``simulators/scenarios/``.

:func:`load_scenario` validates a file with pydantic and raises :class:`ScenarioError`
naming the file, the line and the field. :func:`events` is pure and deterministic:
the same scenario, region and seed always give the same time-ordered stream.
"""

from __future__ import annotations

import hashlib
import heapq
import math
import random
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from functools import cached_property
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from protocols.geo import offset_km
from protocols.models import TrackingUpdate
from protocols.topics import validate_level
from simulators.region import Region, Warehouse

FORMAT_VERSION = 1

Metric = Literal["temperature_c", "humidity_pct"]
SensorFormat = Literal["native", "zigbee2mqtt", "tasmota", "plain"]
METRICS: tuple[Metric, ...] = ("temperature_c", "humidity_pct")


class ScenarioError(ValueError):
    """A scenario file that is not valid. ``line`` is 1-based (0 when unknown)."""

    def __init__(self, message: str, *, file: str, line: int = 0, field: str = "") -> None:
        self.file = file
        self.line = line
        self.field = field
        where = f"{file}:{line}" if line else file
        text = f"{where}: {field}: {message}" if field else f"{where}: {message}"
        super().__init__(text)


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


# -- loading with line numbers --------------------------------------------------------
Path_ = tuple[str | int, ...]


def _marks(node: yaml.Node, path: Path_, out: dict[Path_, int]) -> None:
    out[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            key = key_node.value if isinstance(key_node, yaml.ScalarNode) else str(key_node)
            out[(*path, key)] = key_node.start_mark.line + 1
            _marks(value_node, (*path, key), out)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _marks(item, (*path, index), out)


_STEP_KINDS = {"set", "ramp", "excursion", "silence"}


def _line_for(loc: Sequence[str | int], marks: dict[Path_, int]) -> tuple[int, str]:
    """The deepest location in the file that the error path reaches, and its dotted name."""
    path: Path_ = ()
    shown: list[str] = []
    for index, part in enumerate(loc):
        candidate = (*path, part)
        if candidate in marks:
            path = candidate
        elif part in _STEP_KINDS and index >= 2 and loc[index - 2] == "timeline":
            continue  # pydantic's union tag, not a key of the file
        shown.append(str(part))
    return marks.get(path, 0), ".".join(shown) or "$"


def parse_scenario(text: str, *, file: str = "<scenario>") -> Scenario:
    """Validate scenario YAML text; raise :class:`ScenarioError` with line and field."""
    try:
        loader = yaml.SafeLoader(text)
        try:
            node = loader.get_single_node()
            data = loader.construct_document(node) if node is not None else None
        finally:
            loader.dispose()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        line = mark.line + 1 if mark is not None else 0
        message = f"not valid YAML: {exc.problem}"
        raise ScenarioError(message, file=file, line=line) from exc
    except yaml.YAMLError as exc:
        message = f"not valid YAML: {exc}"
        raise ScenarioError(message, file=file) from exc
    if not isinstance(data, dict):
        raise ScenarioError("the file must be a mapping (name:, start:, ...)", file=file, line=1)
    marks: dict[Path_, int] = {}
    if node is not None:
        _marks(node, (), marks)
    try:
        scenario = Scenario.model_validate(data)
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        line, field = _line_for(first["loc"], marks)
        message = first["msg"].removeprefix("Value error, ")
        raise ScenarioError(message, file=file, line=line, field=field) from exc
    _check_times(scenario, file, marks)
    return scenario


def _check_times(scenario: Scenario, file: str, marks: dict[Path_, int]) -> None:
    """Cross-field time checks pydantic cannot place: everything inside start..end."""

    def fail(path: Path_, message: str) -> None:
        line, field = _line_for(path, marks)
        raise ScenarioError(message, file=file, line=line, field=field)

    start, end = scenario.start, scenario.end_at
    if end <= start:
        fail(("end",), "end must be after start")
    if end - start > timedelta(days=7):
        fail(("end",), "a scenario spans at most 7 days")

    def inside(path: Path_, ref: str | datetime) -> datetime:
        when = scenario.at(ref)
        if not start <= when <= end:
            fail(path, f"{when.isoformat()} is outside the scenario ({start} .. {end})")
        return when

    def window(path: Path_, w: Window) -> None:
        if inside((*path, "from"), w.start) >= inside((*path, "to"), w.end):
            fail((*path, "to"), "to must be after from")

    for wi, wh in enumerate(scenario.warehouses):
        for key, windows in (("power_cuts", wh.power_cuts), ("uplink_outages", wh.uplink_outages)):
            for i, w in enumerate(windows):
                window(("warehouses", wi, key, i), w)
        for si, sensor in enumerate(wh.sensors or []):
            for ti, step in enumerate(sensor.timeline):
                inside(("warehouses", wi, "sensors", si, "timeline", ti, "at"), step.at)
    for ci, courier in enumerate(scenario.couriers):
        for i, w in enumerate(courier.silent):
            window(("couriers", ci, "silent", i), w)
    for mi, marker in enumerate(scenario.markers):
        inside(("markers", mi, "at"), marker.at)
    for ti, trip in enumerate(scenario.expect.trips):
        if trip.at is not None:
            inside(("expect", "trips", ti, "at"), trip.at)


def load_scenario(path: str | Path) -> Scenario:
    """Read and validate a scenario file (or a shipped scenario's name)."""
    source = Path(path)
    if not source.exists() and not source.suffix:
        source = shipped_path(str(path))
    try:
        text = source.read_text(encoding="utf-8")
    except OSError as exc:
        message = f"cannot read: {exc.strerror or exc}"
        raise ScenarioError(message, file=str(source)) from exc
    return parse_scenario(text, file=str(source))


def shipped_scenarios() -> list[str]:
    """Names of the scenarios shipped in ``simulators/scenarios/``."""
    folder = resources.files("simulators") / "scenarios"
    return sorted(
        p.name.removesuffix(".yaml") for p in folder.iterdir() if p.name.endswith(".yaml")
    )


def shipped_path(name: str) -> Path:
    return Path(str(resources.files("simulators") / "scenarios" / f"{name}.yaml"))


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


# -- events ---------------------------------------------------------------------------
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
_KIND_ORDER = {Marker: 0, Outage: 1, Tracking: 2, ScenarioReading: 3}


def _event_key(event: Event) -> tuple[datetime, int, str, str]:
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


def rng_for(seed: int, *parts: object) -> random.Random:
    """A random stream derived from the seed and a name; stable across runs and Pythons."""
    digest = hashlib.sha256("|".join(map(str, (seed, *parts))).encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


def _clipped_gauss(rng: random.Random, sd: float) -> float:
    if sd <= 0:
        return 0.0
    return max(-3 * sd, min(3 * sd, rng.gauss(0.0, sd)))


class _SensorModel:
    """Value of each metric of one sensor as a function of event time."""

    def __init__(self, scenario: Scenario, spec: SensorSpec, site: Site, seed: int) -> None:
        self.spec = spec
        self.start = scenario.start
        self.end = scenario.end_at
        self.steps = sorted(
            ((scenario.at(s.at), i, s) for i, s in enumerate(spec.timeline)),
            key=lambda item: (item[0], item[1]),
        )
        self.silences: list[tuple[datetime, datetime]] = []
        for when, _, step in self.steps:
            if isinstance(step, SilenceStep):
                until = self.end if step.for_s is None else when + timedelta(seconds=step.for_s)
                self.silences.append((when, until))
        for cut in site.power_cuts:
            self.silences.append((scenario.at(cut.start), scenario.at(cut.end)))
        self.noise_rng = rng_for(seed, site.warehouse_id, spec.id, "noise")
        self.link_rng = rng_for(seed, site.warehouse_id, spec.id, "link")
        self.doors = self._doors(rng_for(seed, site.warehouse_id, spec.id, "door"))

    def _doors(self, rng: random.Random) -> list[tuple[float, float, float]]:
        """(start offset s, duration s, rise °C) of each door opening, non-overlapping."""
        door = self.spec.door_open
        if door is None:
            return []
        total = (self.end - self.start).total_seconds()
        out: list[tuple[float, float, float]] = []
        t = rng.expovariate(door.per_hour / 3600)
        while t < total:
            duration = rng.uniform(*door.duration_s)
            rise = rng.uniform(*door.rise_c)
            out.append((t, duration, rise))
            t += duration + door.min_gap_s + rng.expovariate(door.per_hour / 3600)
        return out

    def silent(self, at: datetime) -> bool:
        return any(begin <= at < until for begin, until in self.silences)

    def level(self, metric: Metric, at: datetime) -> float:
        value = self.spec.baseline[metric]
        for when, _, step in self.steps:
            if when > at or isinstance(step, SilenceStep) or step.metric != metric:
                continue
            elapsed = (at - when).total_seconds()
            if isinstance(step, SetStep):
                value = step.to
            elif isinstance(step, RampStep):
                value += (step.to - value) * min(1.0, elapsed / step.over_s)
            elif isinstance(step, ExcursionStep):
                value += (step.to - value) * _envelope(elapsed, step.for_s, step.ramp_s)
        hours = (at - self.start).total_seconds() / 3600
        drift = self.spec.drift
        value += hours * (
            drift.temperature_c_per_h if metric == "temperature_c" else drift.humidity_pct_per_h
        )
        if metric == "temperature_c":
            value += self._defrost(at) + self._door(at)
        return value

    def _defrost(self, at: datetime) -> float:
        cycle = self.spec.defrost
        if cycle is None:
            return 0.0
        since = (at - self.start).total_seconds() - cycle.offset_s
        if since < 0:
            return 0.0
        into = since % cycle.every_s
        if into >= cycle.duration_s:
            return 0.0
        peak = cycle.duration_s / 3  # heaters warm fast, the room cools back slowly
        if into < peak:
            return cycle.rise_c * into / peak
        return cycle.rise_c * (1 - (into - peak) / (cycle.duration_s - peak))

    def _door(self, at: datetime) -> float:
        offset = (at - self.start).total_seconds()
        for begin, duration, rise in self.doors:
            if begin <= offset < begin + duration:
                return rise * (1 - (offset - begin) / duration)
        return 0.0

    def readings(self, site: Site) -> Iterator[ScenarioReading]:
        spec = self.spec
        battery = 100.0
        k = 0
        while True:
            at = self.start + timedelta(seconds=spec.phase_s + k * spec.interval_s)
            k += 1
            if at > self.end:
                return
            # Draw noise even while silent so a silence never shifts later readings.
            noise = {
                m: _clipped_gauss(self.noise_rng, getattr(spec.noise, m)) for m in spec.metrics
            }
            link = self.link_rng.randint(60, 200)
            battery = max(5.0, battery - 0.001 * spec.interval_s / 30)
            if self.silent(at):
                continue
            values: list[tuple[Metric, float]] = []
            for metric in spec.metrics:
                value = self.level(metric, at) + noise[metric]
                if metric == "humidity_pct":
                    value = min(100.0, max(0.0, value))
                values.append((metric, round(value, 2)))
            yield ScenarioReading(
                at=at, warehouse=site.warehouse_id, sensor=spec.id, zone=spec.zone,
                format=spec.format, values=tuple(values), temp_unit=spec.temp_unit,
                tasmota_sensor=spec.tasmota_sensor, battery=round(battery), linkquality=link,
            )  # fmt: skip


def _envelope(elapsed: float, hold_s: float, ramp_s: float) -> float:
    """0..1 weight of an excursion ``elapsed`` seconds after it began."""
    if elapsed < 0:
        return 0.0
    if ramp_s > 0 and elapsed < ramp_s:
        return elapsed / ramp_s
    if elapsed < ramp_s + hold_s:
        return 1.0
    if ramp_s > 0 and elapsed < 2 * ramp_s + hold_s:
        return 1.0 - (elapsed - ramp_s - hold_s) / ramp_s
    return 0.0


def _tracking(
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
    out.sort(key=_event_key)
    yield from out


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
            streams.append(_SensorModel(scenario, sensor, site, used_seed).readings(site))
        for kind, windows in (("power", site.power_cuts), ("uplink", site.uplink_outages)):
            for w in windows:
                controls.append(Outage(scenario.at(w.start), site.warehouse_id, kind, True))  # type: ignore[arg-type]
                controls.append(Outage(scenario.at(w.end), site.warehouse_id, kind, False))  # type: ignore[arg-type]
    for courier in scenario.couriers:
        streams.append(_tracking(scenario, courier, region, used_seed))
    streams.append(sorted(controls, key=_event_key))
    yield from heapq.merge(*streams, key=_event_key)


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
