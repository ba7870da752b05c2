"""What the availability tracker (:mod:`coordinator.ops.availability`) knows and says: the
records it keeps (persisted one to one in :mod:`coordinator.ops.tracker_store`), the
actions its inputs return, its configuration and its whole state."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Literal

from protocols import BreakerState

MANUAL_HOLD = "manual"
# Missed heartbeats tolerated before silence counts, whatever the configured grace.
MISSED_HEARTBEATS = 3
AGENT_OFFLINE_PREFIX = "agent_offline:"
COURIER_STALE_PREFIX = "courier_stale:"

EventOutcome = Literal["applied", "stale", "historical"]
# Retired incarnations remembered per agent (one is added per wipe or replacement).
RETIRED_KEEP = 16
# A dedupe key: (agent_id, incarnation, seq).
DedupeKey = tuple[str, str | None, int]


# -- state records (persisted one to one in coordinator.ops.schema) ---------------
@dataclass(frozen=True, slots=True)
class BreakerRecord:
    warehouse_id: str
    breaker: str
    agent_id: str
    state: BreakerState
    open: bool
    episode_id: str | None
    reason: str
    seq: int
    session_seq: int
    since: datetime
    event_time: datetime
    last_seen: datetime
    # The lifetime of the agent that reported this state (None: a v1 agent).
    incarnation: str | None = None


@dataclass(frozen=True, slots=True)
class AgentRecord:
    agent_id: str
    warehouse_id: str
    session_seq: int
    online: bool
    offline_since: datetime | None
    # ``ts`` of the newest online status of the session (its birth or a heartbeat).
    last_birth_at: datetime | None
    last_death_at: datetime | None
    # When the agent last gave evidence of life (receive time, the tracker's clock).
    last_seen: datetime
    # The heartbeat interval the agent advertised; None = it promises none (no
    # silence rule for it).
    heartbeat_s: float | None = None
    # The incarnation of the session this record describes.
    incarnation: str | None = None


@dataclass(frozen=True, slots=True)
class Lifetime:
    """Which incarnation of an agent is current, and which ones it replaced."""

    agent_id: str
    warehouse_id: str
    incarnation: str | None
    retired: tuple[str, ...]
    since: datetime


@dataclass(frozen=True, slots=True)
class Hold:
    warehouse_id: str
    name: str
    incident_hint: str
    reason: str
    since: datetime


# -- actions ------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class BreakerRecorded:
    record: BreakerRecord


@dataclass(frozen=True, slots=True)
class AgentRecorded:
    record: AgentRecord


@dataclass(frozen=True, slots=True)
class LifetimeStarted:
    """An agent's state database was replaced: its seq and sessions start over."""

    lifetime: Lifetime
    previous: str | None
    # False for the first lifetime the tracker ever hears of an agent (nothing to audit).
    replaced: bool


@dataclass(frozen=True, slots=True)
class EventProcessed:
    agent_id: str
    seq: int
    warehouse_id: str
    breaker: str
    open: bool
    historical: bool
    outcome: EventOutcome
    incarnation: str | None = None


@dataclass(frozen=True, slots=True)
class DuplicateDropped:
    agent_id: str
    seq: int


@dataclass(frozen=True, slots=True)
class HoldSet:
    hold: Hold


@dataclass(frozen=True, slots=True)
class HoldLifted:
    warehouse_id: str
    name: str


@dataclass(frozen=True, slots=True)
class WarehouseUnavailable:
    """The warehouse stopped being available: reroute its unshipped orders."""

    warehouse_id: str
    incident_id: str
    cause: str
    reason: str
    at: datetime


@dataclass(frozen=True, slots=True)
class WarehouseAvailable:
    """Every cause cleared: the warehouse takes new orders again."""

    warehouse_id: str
    incident_id: str
    at: datetime


Action = (
    BreakerRecorded
    | AgentRecorded
    | LifetimeStarted
    | EventProcessed
    | DuplicateDropped
    | HoldSet
    | HoldLifted
    | WarehouseUnavailable
    | WarehouseAvailable
)


@dataclass(frozen=True, slots=True)
class TrackerConfig:
    agent_offline_grace: timedelta = timedelta(seconds=120)


@dataclass
class TrackerState:
    """Everything the tracker knows; rebuilt from the database on start."""

    breakers: dict[tuple[str, str], BreakerRecord] = field(default_factory=dict)
    agents: dict[str, AgentRecord] = field(default_factory=dict)
    holds: dict[tuple[str, str], Hold] = field(default_factory=dict)
    processed: set[DedupeKey] = field(default_factory=set)
    lifetimes: dict[str, Lifetime] = field(default_factory=dict)
    # warehouse -> incident id of the current unavailability episode
    incidents: dict[str, str] = field(default_factory=dict)
    used_incidents: set[str] = field(default_factory=set)
