"""The value model of one simulated sensor: each metric as a function of event time.

Baseline, timeline steps, drift, defrost cycles, door-open spikes and clipped noise,
silences and power cuts; see "Value model" in docs/simulators.md.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from datetime import datetime, timedelta

from simulators.events import ScenarioReading
from simulators.random_streams import rng_for
from simulators.scenario import (
    ExcursionStep,
    Metric,
    RampStep,
    Scenario,
    SensorSpec,
    SetStep,
    SilenceStep,
)
from simulators.sites import Site


def _clipped_gauss(rng: random.Random, sd: float) -> float:
    if sd <= 0:
        return 0.0
    return max(-3 * sd, min(3 * sd, rng.gauss(0.0, sd)))


class SensorModel:
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
