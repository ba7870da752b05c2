"""A reference evaluation of the sustained-threshold rule over a scenario's readings.

This is the oracle the scenario tests and the demo report use to say *when* a breaker
must trip, independently of the edge agent: per zone, a reading above the limit starts
(or continues) a run, a reading at or below it ends the run, and the rule trips at the
first reading at least ``for_s`` after the run began once the run holds ``min_readings``
readings. Silence is not evaluated here (the agent's staleness logic owns that).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from simulators.edge_configs import rule_for_zone
from simulators.events import Event, ScenarioReading
from simulators.scenario import Metric


@dataclass(frozen=True, slots=True)
class Trip:
    warehouse: str
    zone: str
    breaker: str
    metric: Metric
    crossed_at: datetime  # first reading of the run above the limit
    trips_at: datetime  # the reading that completes the duration
    readings: int


@dataclass(slots=True)
class _Run:
    since: datetime
    count: int
    tripped: bool = False


def sustained_trips(
    stream: Iterable[Event],
    *,
    above: float | None = None,
    for_s: float | None = None,
    min_readings: int | None = None,
) -> list[Trip]:
    """Every trip the zone rules (see :func:`rule_for_zone`) would raise, in time order.

    ``above``/``for_s``/``min_readings`` override the templates' values when given.
    """
    runs: dict[tuple[str, str], _Run] = {}
    trips: list[Trip] = []
    for event in stream:
        if not isinstance(event, ScenarioReading):
            continue
        rule = rule_for_zone(event.zone)
        if rule is None:
            continue
        value = event.value(rule.metric)
        if value is None:
            continue
        limit = rule.above if above is None else above
        duration = rule.for_s if for_s is None else for_s
        needed = rule.min_readings if min_readings is None else min_readings
        key = (event.warehouse, event.zone)
        run = runs.get(key)
        if value <= limit:
            runs.pop(key, None)
            continue
        if run is None:
            run = runs[key] = _Run(since=event.at, count=0)
        run.count += 1
        held = (event.at - run.since).total_seconds()
        if not run.tripped and held >= duration and run.count >= needed:
            run.tripped = True
            trips.append(
                Trip(
                    warehouse=event.warehouse,
                    zone=event.zone,
                    breaker=rule.breaker,
                    metric=rule.metric,
                    crossed_at=run.since,
                    trips_at=event.at,
                    readings=run.count,
                )
            )
    return trips


def longest_run_s(stream: Iterable[Event], limit: float, metric: Metric) -> dict[str, float]:
    """Per ``warehouse/zone``, the longest time (s) readings stayed above ``limit``."""
    since: dict[str, datetime] = {}
    longest: dict[str, float] = {}
    for event in stream:
        if not isinstance(event, ScenarioReading):
            continue
        value = event.value(metric)
        if value is None:
            continue
        key = f"{event.warehouse}/{event.zone}"
        if value > limit:
            start = since.setdefault(key, event.at)
            longest[key] = max(longest.get(key, 0.0), (event.at - start).total_seconds())
        else:
            since.pop(key, None)
    return longest
