"""Pure, event-time rule state machines: ``ok → pending → tripped → clearing → ok`` + ``unknown``.

A :class:`RuleMachine` knows nothing of MQTT, SQLite or wall clocks. It is fed readings
(``feed(reading) -> actions``) and told the time (``tick(now) -> actions``); every deadline
is data in its state. The same inputs always give the same outputs.

Semantics (see docs/edge.md):
- a reading on the bad side starts ``pending``; the rule trips at the first bad reading whose
  event time is at least ``for_s`` after the first bad reading, provided ``min_readings``
  bad readings were seen in that span (one reading followed by silence cannot trip);
- a reading back on the safe side resets ``pending``, unless ``dip_grace_s`` tolerates it;
- ``tripped`` clears through ``clearing``: the value must stay on the clear side of the
  clear threshold (hysteresis on value) for ``clear_for_s`` (on time), and the rule must
  have been tripped at least ``min_tripped_s``;
- when every sensor of the rule has been silent longer than its ``max_gap_s``, an ``ok`` or
  ``pending`` rule becomes ``unknown`` (pending progress is discarded: unknown never counts
  toward a trip); a tripped rule stays tripped (unknown never clears); ``unknown`` trips
  after ``silence_trips_after_s`` if set (a power cut silences cold-room sensors);
- data returning after ``unknown`` is not a new crossing: the reason says ``data_returned``;
- readings older than the newest one already processed are dropped as ``out_of_order``, an
  exact repeat (same sensor, same event time) as ``duplicate`` -- deterministically.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal

from protocols.models import BreakerState

OK = BreakerState.OK
PENDING = BreakerState.PENDING
TRIPPED = BreakerState.TRIPPED
CLEARING = BreakerState.CLEARING
UNKNOWN = BreakerState.UNKNOWN

MAX_VALUES = 64

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


@dataclass(frozen=True, slots=True)
class RuleSpec:
    """What a rule needs to know, independent of the config file format."""

    id: str
    zone: str
    breaker: str
    metric: str
    above: float | None
    below: float | None
    for_s: float
    min_readings: int
    dip_grace_s: float
    clear_threshold: float
    clear_for_s: float
    min_tripped_s: float
    silence_trips_after_s: float | None
    max_gap_s: dict[str, float]  # sensor id -> max gap, for the sensors feeding this rule

    @property
    def key(self) -> str:
        """Rule ids are unique per zone; ``zone/id`` is unique per agent."""
        return f"{self.zone}/{self.id}"

    def breaching(self, value: float) -> bool:
        if self.above is not None:
            return value > self.above
        assert self.below is not None
        return value < self.below

    def clear_side(self, value: float) -> bool:
        if self.above is not None:
            return value < self.clear_threshold
        return value > self.clear_threshold


@dataclass(frozen=True, slots=True)
class Transition:
    """The rule changed state."""

    rule: str
    zone: str
    breaker: str
    previous: BreakerState
    state: BreakerState
    reason: str
    event_time: datetime
    since: datetime
    episode_id: str | None
    values: tuple[Reading, ...] = ()
    clock_suspect: bool = False
    detail: str = ""

    @property
    def key(self) -> str:
        return f"{self.zone}/{self.rule}"


@dataclass(frozen=True, slots=True)
class Notice:
    """Something worth logging and counting that is not a state change."""

    rule: str
    zone: str
    kind: str  # sensor_silent | sensor_back | dip_tolerated | out_of_order | duplicate
    event_time: datetime
    sensor_id: str | None = None
    detail: str = ""


Action = Transition | Notice


@dataclass(frozen=True, slots=True)
class Countdown:
    state: BreakerState
    pending_since: datetime | None
    trips_at: datetime | None
    seconds_left: float | None
    readings_in_window: int


def episode_id(agent_id: str, zone: str, rule: str, start: datetime) -> str:
    """Stable incident id: gateway, zone, rule and start in event time."""
    return f"{agent_id}/{zone}/{rule}/{start.strftime('%Y%m%dT%H%M%S.%fZ')}"


@dataclass(slots=True)
class RuleMachine:
    spec: RuleSpec
    agent_id: str
    origin: datetime  # when the machine started watching (staleness counts from here)
    state: BreakerState = UNKNOWN
    since: datetime | None = None
    pending_since: datetime | None = None
    bad_count: int = 0
    window: list[Reading] = field(default_factory=list)
    dip_since: datetime | None = None
    tripped_since: datetime | None = None
    clearing_since: datetime | None = None
    episode: str | None = None
    last_ts: datetime | None = None
    at_last: set[str] = field(default_factory=set)
    latest: dict[str, tuple[datetime, float]] = field(default_factory=dict)
    silent: set[str] = field(default_factory=set)
    bad_sensors: dict[str, datetime] = field(default_factory=dict)
    unclear_sensors: dict[str, datetime] = field(default_factory=dict)
    dirty: bool = True

    @classmethod
    def create(cls, spec: RuleSpec, agent_id: str, now: datetime) -> RuleMachine:
        return cls(spec=spec, agent_id=agent_id, origin=now, since=now)

    # -- feeding ---------------------------------------------------------------
    def feed(self, reading: Reading) -> list[Action]:
        ts = reading.ts
        last = self.last_ts
        if last is not None:
            if ts < last:
                return [self._notice("out_of_order", ts, reading.sensor_id)]
            if ts == last and reading.sensor_id in self.at_last:
                return [self._notice("duplicate", ts, reading.sensor_id)]
        if last is None or ts > last:
            self.last_ts = ts
            self.at_last = {reading.sensor_id}
        else:
            self.at_last.add(reading.sensor_id)
        self.dirty = True
        self.latest[reading.sensor_id] = (ts, reading.value)
        actions: list[Action] = []
        if self.silent and reading.sensor_id in self.silent:
            self.silent.discard(reading.sensor_id)
            actions.append(self._notice("sensor_back", ts, reading.sensor_id))
        bad, clear = self._judge(ts, reading)
        state = self.state
        if state is OK:
            if bad:
                self._start_pending(reading, actions, "threshold_crossed")
        elif state is PENDING:
            self._feed_pending(reading, bad, actions)
        elif state is TRIPPED:
            if clear:
                self.clearing_since = ts
                self._go(CLEARING, "clearing_started", reading, actions)
                self._maybe_close(reading, actions)
        elif state is CLEARING:
            if clear:
                self._maybe_close(reading, actions)
            else:
                self.clearing_since = None
                self._go(TRIPPED, "clearing_interrupted", reading, actions)
        else:  # UNKNOWN: data returning is not a new crossing
            if bad:
                self._start_pending(reading, actions, "data_returned")
            else:
                self._go(OK, "data_returned", reading, actions)
        return actions

    def _judge(self, ts: datetime, reading: Reading) -> tuple[bool, bool]:
        """(bad, clear) for the zone: any live sensor on the bad side makes it bad; all
        live sensors must be on the clear side to clear (any warm corner counts)."""
        spec = self.spec
        value = reading.value
        bad = spec.breaching(value)
        clear = spec.clear_side(value)
        if len(spec.max_gap_s) == 1:
            return bad, clear
        sensor = reading.sensor_id
        # Only sensors whose latest value is bad / not clear are kept, so the usual
        # case (every sensor normal) costs two dict operations, not a scan.
        if bad:
            self.bad_sensors[sensor] = ts
        else:
            self.bad_sensors.pop(sensor, None)
        if clear:
            self.unclear_sensors.pop(sensor, None)
        else:
            self.unclear_sensors[sensor] = ts
        gaps = spec.max_gap_s
        if not bad and self.bad_sensors:
            bad = any(
                (ts - seen).total_seconds() <= gaps.get(s, 0.0)
                for s, seen in self.bad_sensors.items()
            )
        if clear and self.unclear_sensors:
            clear = not any(
                (ts - seen).total_seconds() <= gaps.get(s, 0.0)
                for s, seen in self.unclear_sensors.items()
            )
        return bad, clear

    def _start_pending(self, reading: Reading, actions: list[Action], reason: str) -> None:
        self.pending_since = reading.ts
        self.bad_count = 0
        self.window = []
        self.dip_since = None
        self._go(PENDING, reason, reading, actions)
        self._count_bad(reading, actions)

    def _feed_pending(self, reading: Reading, bad: bool, actions: list[Action]) -> None:
        grace = self.spec.dip_grace_s
        if bad:
            if self.dip_since is not None:
                dip = (reading.ts - self.dip_since).total_seconds()
                self.dip_since = None
                if dip > grace:
                    self._go(OK, "back_within_limit", reading, actions)
                    self._start_pending(reading, actions, "threshold_crossed")
                    return
                actions.append(
                    self._notice("dip_tolerated", reading.ts, reading.sensor_id, f"{dip:g}s")
                )
            self._count_bad(reading, actions)
            return
        if grace > 0:
            if self.dip_since is None:
                self.dip_since = reading.ts
                return
            if (reading.ts - self.dip_since).total_seconds() <= grace:
                return
        self._reset_pending()
        self._go(OK, "back_within_limit", reading, actions)

    def _count_bad(self, reading: Reading, actions: list[Action]) -> None:
        self.bad_count += 1
        self.window.append(reading)
        if len(self.window) > MAX_VALUES:
            del self.window[0]
        assert self.pending_since is not None
        held = (reading.ts - self.pending_since).total_seconds()
        if held >= self.spec.for_s and self.bad_count >= self.spec.min_readings:
            self.tripped_since = reading.ts
            self.episode = episode_id(
                self.agent_id, self.spec.zone, self.spec.id, self.pending_since
            )
            self._go(TRIPPED, "threshold_exceeded", reading, actions, values=tuple(self.window))
            self._reset_pending()

    def _maybe_close(self, reading: Reading, actions: list[Action]) -> None:
        assert self.clearing_since is not None and self.tripped_since is not None
        ts = reading.ts
        if (ts - self.clearing_since).total_seconds() < self.spec.clear_for_s:
            return
        if (ts - self.tripped_since).total_seconds() < self.spec.min_tripped_s:
            return
        self.clearing_since = None
        self.tripped_since = None
        self._go(OK, "cleared", reading, actions)
        self.episode = None

    def _reset_pending(self) -> None:
        self.pending_since = None
        self.bad_count = 0
        self.window = []
        self.dip_since = None

    # -- time ------------------------------------------------------------------
    def tick(self, now: datetime) -> list[Action]:
        """Evaluate deadlines at ``now``: staleness, silence trips, dip expiry."""
        actions: list[Action] = []
        spec = self.spec
        for sensor, gap in spec.max_gap_s.items():
            if sensor in self.silent:
                continue
            seen = self.latest.get(sensor)
            heard = self.origin if seen is None else max(seen[0], self.origin)
            if (now - heard).total_seconds() > gap:
                self.silent.add(sensor)
                self.dirty = True
                actions.append(self._notice("sensor_silent", now, sensor, f"silent > {gap:g}s"))
        dip = self.dip_since
        if (
            self.state is PENDING
            and dip is not None
            and (now - dip).total_seconds() > spec.dip_grace_s
        ):
            self._reset_pending()
            self._go_at(OK, "back_within_limit", now, actions)
        if len(self.silent) < len(spec.max_gap_s):
            return actions
        silent_from = self._silent_from()
        if self.state in (OK, PENDING):
            self._reset_pending()
            self._go_at(UNKNOWN, "sensor_silent", now, actions, since=silent_from)
        elif self.state is CLEARING:
            self.clearing_since = None
            self._go_at(TRIPPED, "sensor_silent", now, actions)
        trip_after = spec.silence_trips_after_s
        if (
            self.state is UNKNOWN
            and trip_after is not None
            and (now - silent_from).total_seconds() >= trip_after
        ):
            self.tripped_since = now
            self.episode = episode_id(self.agent_id, spec.zone, spec.id, silent_from)
            self._go_at(TRIPPED, "sensor_silent", now, actions)
        return actions

    def _silent_from(self) -> datetime:
        heard = [seen for seen, _ in self.latest.values()]
        return max([self.origin, *heard])

    def countdown(self, now: datetime) -> Countdown:
        if self.state is PENDING and self.pending_since is not None:
            trips_at = self.pending_since + timedelta(seconds=self.spec.for_s)
            left = max(0.0, (trips_at - now).total_seconds())
            return Countdown(PENDING, self.pending_since, trips_at, left, self.bad_count)
        return Countdown(self.state, None, None, None, 0)

    # -- transitions -----------------------------------------------------------
    def _go(
        self,
        state: BreakerState,
        reason: str,
        reading: Reading,
        actions: list[Action],
        *,
        values: tuple[Reading, ...] = (),
    ) -> None:
        self._emit(state, reason, reading.ts, actions, values, reading.clock_suspect, reading.ts)

    def _go_at(
        self,
        state: BreakerState,
        reason: str,
        now: datetime,
        actions: list[Action],
        *,
        since: datetime | None = None,
    ) -> None:
        self._emit(state, reason, now, actions, (), False, since or now)

    def _emit(
        self,
        state: BreakerState,
        reason: str,
        at: datetime,
        actions: list[Action],
        values: tuple[Reading, ...],
        clock_suspect: bool,
        since: datetime,
    ) -> None:
        previous = self.state
        self.state = state
        self.since = since
        self.dirty = True
        spec = self.spec
        actions.append(
            Transition(
                rule=spec.id,
                zone=spec.zone,
                breaker=spec.breaker,
                previous=previous,
                state=state,
                reason=reason,
                event_time=at,
                since=since,
                episode_id=self.episode,
                values=values,
                clock_suspect=clock_suspect,
            )
        )

    def _notice(self, kind: str, at: datetime, sensor: str | None, detail: str = "") -> Notice:
        return Notice(self.spec.id, self.spec.zone, kind, at, sensor, detail)

    # -- persistence -----------------------------------------------------------
    def snapshot(self) -> dict[str, Any]:
        def iso(value: datetime | None) -> str | None:
            return None if value is None else value.isoformat()

        return {
            "state": self.state.value,
            "since": iso(self.since),
            "pending_since": iso(self.pending_since),
            "bad_count": self.bad_count,
            "window": [r.to_json() for r in self.window],
            "dip_since": iso(self.dip_since),
            "tripped_since": iso(self.tripped_since),
            "clearing_since": iso(self.clearing_since),
            "episode": self.episode,
            "last_ts": iso(self.last_ts),
            "at_last": sorted(self.at_last),
            "latest": {s: [t.isoformat(), v] for s, (t, v) in self.latest.items()},
            "silent": sorted(self.silent),
        }

    @classmethod
    def restore(
        cls,
        spec: RuleSpec,
        agent_id: str,
        data: dict[str, Any],
        *,
        saved_at: datetime,
        now: datetime,
        outage_tolerance_s: float,
    ) -> RuleMachine:
        """Rebuild a machine after a restart.

        Down less than ``outage_tolerance_s``: pending and tripped are rebuilt as they
        were (staleness counts again from ``now``). Longer: a trip is never forgotten, but
        everything else starts ``unknown``.
        """

        def dt(key: str) -> datetime | None:
            value = data.get(key)
            return None if value is None else datetime.fromisoformat(value)

        machine = cls.create(spec, agent_id, now)
        state = BreakerState(data["state"])
        within = (now - saved_at).total_seconds() <= outage_tolerance_s
        if within:
            machine.state = state
            machine.since = dt("since")
            machine.pending_since = dt("pending_since")
            machine.bad_count = int(data.get("bad_count", 0))
            machine.window = [Reading.from_json(r) for r in data.get("window", [])]
            machine.dip_since = dt("dip_since")
            machine.tripped_since = dt("tripped_since")
            machine.clearing_since = dt("clearing_since")
            machine.episode = data.get("episode")
            machine.last_ts = dt("last_ts")
            machine.at_last = set(data.get("at_last", []))
            machine.latest = {
                s: (datetime.fromisoformat(t), float(v))
                for s, (t, v) in data.get("latest", {}).items()
                if s in spec.max_gap_s
            }
            for sensor, (seen, value) in machine.latest.items():
                if spec.breaching(value):
                    machine.bad_sensors[sensor] = seen
                if not spec.clear_side(value):
                    machine.unclear_sensors[sensor] = seen
        elif state in (TRIPPED, CLEARING):
            machine.state = TRIPPED
            machine.since = dt("since")
            machine.tripped_since = dt("tripped_since")
            machine.episode = data.get("episode")
        return machine
