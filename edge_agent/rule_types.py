"""What a rule is given and what it says: its spec, and the transitions, notices and
countdowns a :class:`~edge_agent.rules.RuleMachine` returns.

The core, the breakers, the replay and the config need these, not the machine.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

from edge_agent.readings import Reading
from protocols.models import BreakerState

Combine = Literal["any", "all", "at_least"]


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
    # How the zone's sensors combine (docs/edge.md): ``any`` one sensor's excursion trips
    # (the default: safety first), ``all`` live sensors, or ``at_least`` N of them.
    combine: Combine = "any"
    at_least: int = 1

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
    # sensor_silent | sensor_back | dip_tolerated | out_of_order | duplicate | clock_step
    kind: str
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
    # the Z is only true of a UTC time: a sensor's +08:00 must not be labelled Z
    return f"{agent_id}/{zone}/{rule}/{start.astimezone(UTC).strftime('%Y%m%dT%H%M%S.%fZ')}"
