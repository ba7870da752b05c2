"""Wire payload models (pydantic v2). Version 1 of the contract.

Rules of the contract:
- every payload carries ``v`` (the schema version); unknown fields are ignored so a
  newer minor revision never breaks an older reader;
- times are ISO 8601 with a UTC offset; event time (when it happened at the sensor)
  and receive/publish time travel together wherever both exist;
- identifiers that appear in topics obey :func:`protocols.topics.validate_level`.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    field_validator,
    model_validator,
)

from protocols.topics import validate_level

SCHEMA_VERSION = 1
# The largest count or sequence number on the wire: what SQLite INTEGER and PostgreSQL
# bigint hold. A larger one (a corrupt or hostile payload) is refused at the boundary,
# naming its field, instead of failing later inside the transaction that applies it.
MAX_INT64 = 2**63 - 1

# Physically possible for a warehouse sensor; anything outside is a broken sensor.
MIN_TEMPERATURE_C = -60.0
MAX_TEMPERATURE_C = 80.0


def _level(value: str) -> str:
    return validate_level(value, "identifier")


def _has_utc_form(value: datetime) -> datetime:
    # "0001-01-01T00:00:00+01:00" is a valid aware time with no UTC equivalent: every
    # reader converts to UTC, so it is refused here, naming the field, not deep in a loop
    try:
        value.astimezone(UTC)
    except OverflowError as exc:
        message = "has no UTC equivalent (outside years 1-9999 in UTC)"
        raise ValueError(message) from exc
    return value


# An aware time that converts to UTC: what every time field of the contract is.
UtcDatetime = Annotated[AwareDatetime, AfterValidator(_has_utc_form)]

# When an order, a payment or a parcel event can really have happened. A status event in
# year 3 or 5639 was accepted before and acted on: an order "delivered" in 1970 had its
# customer's data scheduled for erasure at once.
EARLIEST_EVENT = datetime(2000, 1, 1, tzinfo=UTC)
LATEST_EVENT = datetime(2100, 1, 1, tzinfo=UTC)


def _plausible_event_time(value: datetime) -> datetime:
    value = _has_utc_form(value)
    if not EARLIEST_EVENT <= value < LATEST_EVENT:
        message = "must fall between 2000-01-01 and 2099-12-31 (UTC)"
        raise ValueError(message)
    return value


EventDatetime = Annotated[AwareDatetime, AfterValidator(_plausible_event_time)]


Ident = Annotated[str, AfterValidator(_level)]


def _encodable(value: str) -> str:
    # JSON may carry a lone UTF-16 surrogate ("\ud800"): valid in a Python str, but no
    # database driver can store it, so it failed deep in a loop instead of here
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        message = "is not valid text (a lone UTF-16 surrogate)"
        raise ValueError(message) from None
    return value


# Free text on the wire (ids a carrier or an operator makes up, reasons): any characters
# but a lone surrogate.
Text = Annotated[str, AfterValidator(_encodable)]

# The id of one lifetime of an agent's state database (edge agents use uuid4().hex).
# Lower-case hex and dashes only, so it can never smuggle anything into a log or topic.
INCARNATION_PATTERN = r"^[0-9a-f-]{8,64}$"
Incarnation = Annotated[str, StringConstraints(pattern=INCARNATION_PATTERN)]


class WireModel(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True, allow_inf_nan=False)

    v: Literal[1] = 1


class SensorReading(WireModel):
    """Native sensor format: one reading with its event timestamp."""

    sensor_id: Ident
    ts: UtcDatetime
    temperature_c: float | None = Field(default=None, ge=MIN_TEMPERATURE_C, le=MAX_TEMPERATURE_C)
    humidity_pct: float | None = Field(default=None, ge=0.0, le=100.0)

    @model_validator(mode="after")
    def _has_a_value(self) -> SensorReading:
        if self.temperature_c is None and self.humidity_pct is None:
            raise ValueError("a reading needs temperature_c or humidity_pct")
        return self


class BreakerState(StrEnum):
    """Rule and breaker states, as in Prometheus alerts / ThingsBoard alarms."""

    OK = "ok"
    PENDING = "pending"
    TRIPPED = "tripped"
    CLEARING = "clearing"
    UNKNOWN = "unknown"


class Override(StrEnum):
    NONE = "none"
    FORCE_TRIPPED = "force_tripped"
    INHIBITED = "inhibited"


class TripValue(BaseModel):
    """One reading that contributed to a trip."""

    model_config = ConfigDict(extra="ignore", frozen=True, allow_inf_nan=False)

    sensor_id: str
    metric: Literal["temperature_c", "humidity_pct"]
    value: float
    ts: UtcDatetime


class TripLimit(BaseModel):
    """The rule a breaker follows: ``metric`` ``op`` ``value`` held for ``for_s`` seconds
    trips it (what a person reads as "above 8 °C for 5 min")."""

    model_config = ConfigDict(extra="ignore", frozen=True, allow_inf_nan=False)

    metric: Literal["temperature_c", "humidity_pct"]
    op: Literal["above", "below"]
    value: float
    for_s: float = Field(ge=0)


class BreakerEvent(WireModel):
    """A breaker's state change, published by the agent that owns the breaker.

    ``open`` is what the coordinator acts on: an open breaker means the warehouse must
    not take orders. Live events are retained; events replayed from the agent's outbox
    carry ``historical=True``, are not retained and never overwrite newer live state.
    Receivers deduplicate on ``(agent_id, seq)``; ``episode_id`` names the incident.

    ``incarnation`` names the lifetime of the agent's state database: it is created with
    the database and changes only when the database is wiped or replaced, which is also
    when ``seq`` and ``session_seq`` start again from zero. ``seq`` is only comparable
    within one incarnation. Optional: v1 agents omit it.
    """

    warehouse_id: Ident
    agent_id: Ident
    breaker: Ident
    state: BreakerState
    previous_state: BreakerState | None = None
    open: bool
    override: Override = Override.NONE
    override_actor: str | None = None
    override_expires_at: UtcDatetime | None = None
    acknowledged: bool = False
    acknowledged_by: str | None = None
    zone: str | None = None
    rule: str | None = None
    reason: str = Field(min_length=1, max_length=64)
    detail: str = ""
    values: list[TripValue] = Field(default_factory=list, max_length=64)
    # optional (v1 agents omit it): the rule's limit, for charts and notices
    limit: TripLimit | None = None
    since: UtcDatetime
    episode_id: str | None = None
    seq: int = Field(ge=0, le=MAX_INT64)
    session_seq: int = Field(ge=0, le=MAX_INT64)
    incarnation: Incarnation | None = None
    event_time: UtcDatetime
    published_at: UtcDatetime
    clock_suspect: bool = False
    historical: bool = False

    @model_validator(mode="after")
    def _consistent(self) -> BreakerEvent:
        if self.override is Override.FORCE_TRIPPED and not self.open:
            raise ValueError("open must be true while override is force_tripped")
        if self.override is Override.INHIBITED and self.open:
            raise ValueError("open must be false while override is inhibited")
        if self.override is Override.NONE:
            expected = self.state in (BreakerState.TRIPPED, BreakerState.CLEARING)
            if self.open != expected:
                raise ValueError(f"open must be {expected} in state {self.state.value}")
        if self.override is not Override.NONE and not self.override_actor:
            raise ValueError("override_actor is required while an override is active")
        if self.open and self.episode_id is None:
            raise ValueError("episode_id is required while the breaker is open")
        if self.acknowledged and not self.acknowledged_by:
            raise ValueError("acknowledged_by is required when acknowledged")
        return self


class AgentState(StrEnum):
    ONLINE = "online"
    OFFLINE = "offline"


class AgentStatus(WireModel):
    """Birth (``online``) and death (``offline``, the last will) of an agent session.

    ``session_seq`` grows once per established connection of the agent and per process
    start, never per failed attempt (Sparkplug's bdSeq); a death whose ``session_seq`` is
    older than the latest birth is stale and ignored.

    Heartbeat: an agent that sets ``heartbeat_s`` re-publishes its online status
    (same ``session_seq``, newer ``ts``, retained) at least that often, so a receiver can
    treat it as offline when it goes silent without a last will (a partition where the
    broker keeps the session, a hung process). Optional: older agents omit it.

    ``incarnation``: as in :class:`BreakerEvent`; ``session_seq`` orders sessions only
    within one incarnation. Optional: v1 agents omit it.
    """

    warehouse_id: Ident
    agent_id: Ident
    state: AgentState
    session_seq: int = Field(ge=0, le=MAX_INT64)
    incarnation: Incarnation | None = None
    ts: UtcDatetime
    software: str = ""
    breakers: list[Ident] = Field(default_factory=list)
    graceful: bool = False
    heartbeat_s: float | None = Field(default=None, gt=0, le=86_400)


class RuleCountdown(WireModel):
    """Published while a rule is pending: how long until it trips, in event time."""

    warehouse_id: Ident
    agent_id: Ident
    zone: Ident
    rule: Ident
    breaker: Ident
    state: BreakerState
    pending_since: UtcDatetime | None = None
    trips_at: UtcDatetime | None = None
    seconds_left: float | None = Field(default=None, ge=0)
    readings_in_window: int = Field(default=0, ge=0, le=MAX_INT64)
    event_time: UtcDatetime

    @model_validator(mode="after")
    def _pending_has_deadline(self) -> RuleCountdown:
        if self.state is BreakerState.PENDING and (
            self.trips_at is None or self.seconds_left is None
        ):
            raise ValueError("a pending countdown needs trips_at and seconds_left")
        return self


class TelemetrySummary(WireModel):
    """Per-zone, per-metric summary of one window (default one minute) of readings."""

    warehouse_id: Ident
    agent_id: Ident
    zone: Ident
    metric: Literal["temperature_c", "humidity_pct"]
    window_start: UtcDatetime
    window_end: UtcDatetime
    count: int = Field(ge=1, le=MAX_INT64)
    min: float
    mean: float
    max: float
    last: float
    seq: int = Field(ge=0, le=MAX_INT64)
    # As in BreakerEvent: seq is only comparable within one incarnation.
    incarnation: Incarnation | None = None
    historical: bool = False
    # Readings of the zone's sensors the agent did not use as sent since the previous
    # summary of this zone, per sensor and cause (out_of_order, duplicate, clock_suspect:
    # re-timed on arrival): never silent. Optional: older agents omit it.
    drops: dict[Ident, dict[str, Annotated[int, Field(ge=0, le=MAX_INT64)]]] | None = None

    @model_validator(mode="after")
    def _ordered(self) -> TelemetrySummary:
        if self.window_end <= self.window_start:
            raise ValueError("window_end must be after window_start")
        if not (self.min <= self.mean <= self.max):
            raise ValueError("min <= mean <= max must hold")
        if not (self.min <= self.last <= self.max):
            raise ValueError("min <= last <= max must hold")
        return self


class CommandKind(StrEnum):
    ACK = "ack"
    FORCE_TRIPPED = "force_tripped"
    INHIBIT = "inhibit"
    RELEASE = "release"


class BreakerCommand(WireModel):
    """An operator's manual command to one breaker. Every command is audited."""

    command_id: Text = Field(min_length=1, max_length=64)
    command: CommandKind
    actor: Text = Field(min_length=1, max_length=128)
    reason: Text = Field(min_length=1, max_length=500)
    issued_at: UtcDatetime
    expires_at: UtcDatetime | None = None
    # Signing (protocols/command_auth.py): MQTT 3.1.1 tells a subscriber nothing about
    # who published, so an agent that holds a command key acts only on commands signed
    # for it. Optional so unsigned v1 senders still parse (and are then refused).
    agent_id: Ident | None = None
    # The breaker it is for, signed with it: the topic names the breaker too, but a
    # topic is not signed, and a captured command republished on another breaker's
    # topic must not act there.
    breaker: Ident | None = None
    nonce: str | None = Field(default=None, pattern=r"^[0-9a-f]{16,64}$")
    # over the command as an agent from before ``breaker`` parses it (without the two
    # fields below): what such an agent checks, so commands reach it during an upgrade
    signature: str | None = Field(default=None, pattern=r"^[0-9a-f]{64}$")
    # over the command with ``breaker``: what this version's agents check
    breaker_signature: str | None = Field(default=None, pattern=r"^[0-9a-f]{64}$")

    @model_validator(mode="after")
    def _override_needs_expiry(self) -> BreakerCommand:
        if self.command in (CommandKind.FORCE_TRIPPED, CommandKind.INHIBIT):
            if self.expires_at is None:
                raise ValueError(f"expires_at is required for {self.command.value}")
            if self.expires_at <= self.issued_at:
                raise ValueError("expires_at must be after issued_at")
        return self


class AuditRecord(WireModel):
    """What an agent did with a command (applied or refused, and why)."""

    warehouse_id: Ident
    agent_id: Ident
    breaker: str
    command_id: str
    command: CommandKind
    actor: str
    reason: str
    outcome: Literal["applied", "refused", "expired"]
    detail: str = ""
    ts: UtcDatetime


class DeadLetter(WireModel):
    """A payload the agent could not accept, with the reason naming the field."""

    warehouse_id: Ident
    agent_id: Ident
    source_topic: str
    sensor_id: str | None = None
    error: str
    field: str = "$"
    payload: str = Field(max_length=2048)
    received_at: UtcDatetime
    rejected_total: int = Field(ge=1, le=MAX_INT64)


class TrackingUpdate(WireModel):
    """A courier's tracking update for one shipment (HTTP ``POST /tracking`` or MQTT)."""

    shipment_id: Text = Field(min_length=1, max_length=64)
    carrier: Ident
    warehouse_id: Ident
    order_id: Text | None = Field(default=None, max_length=128)
    status: Literal["picked_up", "in_transit", "out_for_delivery", "delivered", "exception"]
    ts: EventDatetime
    lat: float | None = Field(default=None, ge=-90, le=90)
    lon: float | None = Field(default=None, ge=-180, le=180)

    @field_validator("lat", "lon")
    @classmethod
    def _finite(cls, value: float | None) -> float | None:
        if value is not None and not math.isfinite(value):
            raise ValueError("must be finite")
        return value

    @model_validator(mode="after")
    def _both_or_neither(self) -> TrackingUpdate:
        if (self.lat is None) != (self.lon is None):
            raise ValueError("lat and lon go together")
        return self


def utc_isoformat(value: datetime) -> str:
    """Format an aware datetime the way the contract writes it."""
    return value.isoformat().replace("+00:00", "Z")
