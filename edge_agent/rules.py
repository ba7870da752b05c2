"""Pure, event-time rule state machines: ``ok → pending → tripped → clearing → ok`` + ``unknown``.

A :class:`RuleMachine` knows nothing of MQTT, SQLite or wall clocks. It is fed readings
(``feed(reading) -> actions``) and told the time (``tick(now) -> actions``); every deadline
is data in its state. The same inputs always give the same outputs. Its spec and the
actions it returns are :mod:`edge_agent.rule_types`.

Semantics (see docs/edge.md). Each sensor's excursion is its own
(:class:`~edge_agent.excursion.SensorTrack`): ordering, duplicates and staleness are per
sensor, so sensors with different clocks never hide each other's readings.
- a sensor's reading on the bad side starts that sensor's excursion; the sensor *votes*
  at its first bad reading whose event time is at least ``for_s`` after its first bad
  reading, provided ``min_readings`` of its bad readings were seen in that span (one
  reading followed by silence cannot trip);
- ``combine`` says how many votes trip the rule: ``any`` (1, the default), ``all`` (every
  live sensor) or ``at_least`` N. The rule is ``pending`` while that many sensors are in an
  excursion, and trips at the reading that brings the votes to that number;
- a reading back on the safe side resets its sensor's excursion, unless ``dip_grace_s``
  tolerates it;
- ``tripped`` clears through ``clearing``: once fewer than the needed number of live
  sensors are off the clear side of the clear threshold (hysteresis on value), for
  ``clear_for_s`` (on time), and the rule has been tripped at least ``min_tripped_s``;
- a sensor silent longer than its ``max_gap_s`` loses its excursion (it cannot be assumed
  to have held through the silence); a ``pending`` rule left with too few sensors in one
  goes ``ok`` (reason ``sensor_silent``);
- when every sensor of the rule has been silent longer than its ``max_gap_s``, an ``ok`` or
  ``pending`` rule becomes ``unknown`` (pending progress is discarded: unknown never counts
  toward a trip); a tripped rule stays tripped (unknown never clears); ``unknown`` trips
  after ``silence_trips_after_s`` if set (a power cut silences cold-room sensors);
- data returning after ``unknown`` is not a new crossing: the reason says ``data_returned``;
- a reading older than the same sensor's newest one already processed is dropped as
  ``out_of_order``, a repeat of its event time as ``duplicate`` -- deterministically, and
  counted per sensor by the caller (the notices name the sensor).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from edge_agent.excursion import SensorTrack, Step
from edge_agent.readings import Metric, Reading
from edge_agent.rule_types import (
    Action,
    Countdown,
    Notice,
    RuleSpec,
    Transition,
    episode_id,
)
from protocols.models import BreakerState

OK = BreakerState.OK
PENDING = BreakerState.PENDING
TRIPPED = BreakerState.TRIPPED
CLEARING = BreakerState.CLEARING
UNKNOWN = BreakerState.UNKNOWN

MAX_VALUES = 64

__all__ = ["Metric", "Reading"]  # re-exported: rules are where readings go


@dataclass(slots=True)
class RuleMachine:
    spec: RuleSpec
    agent_id: str
    origin: datetime  # when the machine started watching (staleness counts from here)
    state: BreakerState = UNKNOWN
    since: datetime | None = None
    tracks: dict[str, SensorTrack] = field(default_factory=dict)
    tripped_since: datetime | None = None
    clearing_since: datetime | None = None
    episode: str | None = None
    dirty: bool = True

    @classmethod
    def create(cls, spec: RuleSpec, agent_id: str, now: datetime) -> RuleMachine:
        tracks = {sensor: SensorTrack(sensor) for sensor in spec.max_gap_s}
        return cls(spec=spec, agent_id=agent_id, origin=now, since=now, tracks=tracks)

    # -- views -----------------------------------------------------------------
    @property
    def needed(self) -> int:
        """How many sensors must agree: 1 for ``any``, every live one for ``all``."""
        spec = self.spec
        if spec.combine == "any":
            return 1
        if spec.combine == "all":
            return max(1, sum(1 for t in self.tracks.values() if not t.silent))
        return spec.at_least

    def _pending_tracks(self) -> list[SensorTrack]:
        tracks = [t for t in self.tracks.values() if t.pending_since is not None]
        tracks.sort(key=lambda t: (t.pending_since, t.sensor_id))
        return tracks

    @property
    def pending_since(self) -> datetime | None:
        """When the zone's excursion started: the needed-th sensor's excursion start."""
        if self.state is not PENDING:
            return None
        tracks = self._pending_tracks()
        n = self.needed
        return tracks[n - 1].pending_since if len(tracks) >= n else None

    @property
    def bad_count(self) -> int:
        tracks = self._pending_tracks()
        return tracks[0].bad_count if tracks and self.state is PENDING else 0

    @property
    def last_ts(self) -> datetime | None:
        seen = [t.last_ts for t in self.tracks.values() if t.last_ts is not None]
        return max(seen) if seen else None

    # -- feeding ---------------------------------------------------------------
    def feed(self, reading: Reading) -> list[Action]:
        track = self.tracks.get(reading.sensor_id)
        if track is None:  # a sensor the config did not give this rule: track it anyway
            track = self.tracks[reading.sensor_id] = SensorTrack(reading.sensor_id)
        ts = reading.ts
        dropped = track.order(ts)
        if dropped is not None:
            return [self._notice(dropped, ts, reading.sensor_id)]
        self.dirty = True
        actions: list[Action] = []
        if track.silent:
            track.silent = False
            # a gap longer than max_gap_s breaks the excursion: it cannot be assumed to
            # have held through the silence
            track.reset()
            actions.append(self._notice("sensor_back", ts, reading.sensor_id))
        spec = self.spec
        step = track.observe(
            reading, spec.breaching(reading.value), spec.clear_side(reading.value), spec.dip_grace_s
        )
        if step in ("started", "counted", "restarted", "dip_tolerated"):
            track.check_vote(spec.for_s, spec.min_readings, ts)
        if step == "dip_tolerated":
            actions.append(
                self._notice("dip_tolerated", ts, reading.sensor_id, f"{track.dip_s:g}s")
            )
        self._evaluate(reading, step, actions)
        return actions

    def _evaluate(self, reading: Reading, step: Step, actions: list[Action]) -> None:
        state = self.state
        if state is OK and step == "none":
            return  # the usual reading: nothing pending, nothing changes (the hot path)
        n = self.needed
        pending = self._pending_tracks()
        if state in (OK, UNKNOWN):
            if len(pending) >= n:
                reason = "data_returned" if state is UNKNOWN else "threshold_crossed"
                self._go(PENDING, reason, reading, actions)
                self._maybe_trip(reading, actions)
            elif state is UNKNOWN:
                self._go(OK, "data_returned", reading, actions)
        elif state is PENDING:
            if step == "restarted" and len(pending) - 1 < n:
                # the excursion that made the zone pending ended in a too-long dip
                self._go(OK, "back_within_limit", reading, actions)
                self._go(PENDING, "threshold_crossed", reading, actions)
            elif len(pending) < n:
                self._go(OK, "back_within_limit", reading, actions)
                return
            self._maybe_trip(reading, actions)
        elif state is TRIPPED:
            if self._clearable(reading.ts):
                self.clearing_since = reading.ts
                self._go(CLEARING, "clearing_started", reading, actions)
                self._maybe_close(reading, actions)
        elif state is CLEARING:
            if self._clearable(reading.ts):
                self._maybe_close(reading, actions)
            else:
                self.clearing_since = None
                self._go(TRIPPED, "clearing_interrupted", reading, actions)

    def _maybe_trip(self, reading: Reading, actions: list[Action]) -> None:
        spec = self.spec
        ts = reading.ts
        voters = [t for t in self._pending_tracks() if t.voting]
        if len(voters) < self.needed:
            return
        start = min(t.pending_since for t in voters if t.pending_since is not None)
        values = sorted((r for t in voters for r in t.window), key=lambda r: (r.ts, r.sensor_id))
        self.tripped_since = ts
        self.episode = episode_id(self.agent_id, spec.zone, spec.id, start)
        detail = "sensors " + ",".join(t.sensor_id for t in voters)
        self._go(
            TRIPPED, "threshold_exceeded", reading, actions,
            values=tuple(values[-MAX_VALUES:]), detail=detail,
        )
        for track in self.tracks.values():
            track.reset()

    def _clearable(self, ts: datetime) -> bool:
        """Fewer than the needed number of live sensors are off the clear side."""
        gaps = self.spec.max_gap_s
        unclear = 0
        for sensor, track in self.tracks.items():
            if track.clear or track.silent or track.last_ts is None:
                continue
            if (ts - track.last_ts).total_seconds() <= gaps.get(sensor, 0.0):
                unclear += 1
        return unclear < self.needed

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

    # -- time ------------------------------------------------------------------
    def clock_stepped(self, now: datetime, by_s: float) -> list[Action]:
        """The gateway clock stepped by ``by_s`` seconds (NTP setting a bad RTC right, a
        manual change): event times on its two sides cannot be compared. Back, every
        reading would look older than its sensor's newest and silence would never come;
        forward, every sensor would look silent and every excursion complete. So each
        sensor starts again from ``now``: order, excursion and silence. Pending progress
        is dropped (a trip needs a full ``for_s`` after the step, never comes from it);
        a tripped rule stays tripped, its clearing and minimum times counted from now."""
        self.origin = now
        for track in self.tracks.values():
            track.rebase()
        self.dirty = True
        actions: list[Action] = [self._notice("clock_step", now, None,
                                              f"gateway clock stepped {by_s:+.0f}s")]
        if self.state is PENDING:
            self._go_at(OK, "clock_step", now, actions)
        if self.tripped_since is not None:
            self.tripped_since = now
        if self.clearing_since is not None:
            self.clearing_since = now
        return actions

    def tick(self, now: datetime) -> list[Action]:
        """Evaluate deadlines at ``now``: staleness, silence trips, dip expiry."""
        actions: list[Action] = []
        spec = self.spec
        for sensor, gap in spec.max_gap_s.items():
            track = self.tracks[sensor]
            if track.silent:
                continue
            heard = self.origin if track.last_ts is None else max(track.last_ts, self.origin)
            if (now - heard).total_seconds() > gap:
                track.silent = True
                # its excursion cannot be assumed to hold through the silence (as when it
                # speaks again): a hot probe that died must not hold the rule pending,
                # its countdown at zero, for as long as it stays dead
                silenced = track.pending_since is not None
                track.reset()
                self.dirty = True
                actions.append(self._notice("sensor_silent", now, sensor, f"silent > {gap:g}s"))
                if silenced and self.state is PENDING and \
                        len(self._pending_tracks()) < self.needed and \
                        any(not self.tracks[s].silent for s in spec.max_gap_s):
                    self._go_at(OK, "sensor_silent", now, actions)
        expired = False
        for track in self.tracks.values():
            dip = track.dip_since
            if dip is not None and (now - dip).total_seconds() > spec.dip_grace_s:
                track.reset()
                expired = True
                self.dirty = True
        if expired and self.state is PENDING and len(self._pending_tracks()) < self.needed:
            self._go_at(OK, "back_within_limit", now, actions)
        if any(not self.tracks[s].silent for s in spec.max_gap_s):
            return actions
        silent_from = self._silent_from()
        if self.state in (OK, PENDING):
            for track in self.tracks.values():
                track.reset()
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
        heard = [t.last_ts for t in self.tracks.values() if t.last_ts is not None]
        return max([self.origin, *heard])

    def countdown(self, now: datetime) -> Countdown:
        start = self.pending_since
        if self.state is PENDING and start is not None:
            trips_at = start + timedelta(seconds=self.spec.for_s)
            left = max(0.0, (trips_at - now).total_seconds())
            return Countdown(PENDING, start, trips_at, left, self.bad_count)
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
        detail: str = "",
    ) -> None:
        self._emit(
            state, reason, reading.ts, actions, values, reading.clock_suspect, reading.ts,
            detail or f"sensor {reading.sensor_id}",
        )

    def _go_at(
        self,
        state: BreakerState,
        reason: str,
        now: datetime,
        actions: list[Action],
        *,
        since: datetime | None = None,
    ) -> None:
        self._emit(state, reason, now, actions, (), False, since or now, "")

    def _emit(
        self,
        state: BreakerState,
        reason: str,
        at: datetime,
        actions: list[Action],
        values: tuple[Reading, ...],
        clock_suspect: bool,
        since: datetime,
        detail: str,
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
                detail=detail,
            )
        )

    def _notice(self, kind: str, at: datetime, sensor: str | None, detail: str = "") -> Notice:
        return Notice(self.spec.id, self.spec.zone, kind, at, sensor, detail)
