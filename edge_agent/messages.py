"""Event assembly: turning the core's decisions into wire payloads for one agent.

Everything here is pure: ids, sequence numbers and times come in as arguments. The
durable kinds (breaker events, telemetry, audit records) become :class:`OutgoingMessage`
rows for the outbox; countdowns and dead letters are best effort and go out directly.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from edge_agent.breakers import BreakerChange
from edge_agent.errors import SensorPayloadError
from edge_agent.rules import RuleMachine
from edge_agent.telemetry import Summary
from protocols import (
    AgentState,
    AgentStatus,
    AuditRecord,
    BreakerEvent,
    DeadLetter,
    RuleCountdown,
    TelemetrySummary,
    Topics,
    TripLimit,
    TripValue,
    encode,
)

SOFTWARE = "breakwater-edge/0.1"


@dataclass(frozen=True, slots=True)
class OutgoingMessage:
    """One durable message for the outbox, published in ``seq`` order."""

    kind: str  # breaker | telemetry | audit
    topic: str
    payload: str
    qos: int
    retain: bool
    seq: int
    breaker: str | None = None


@dataclass(frozen=True, slots=True)
class Identity:
    """Who the messages are from, and the lifetime and session they belong to."""

    warehouse_id: str
    agent_id: str
    topics: Topics
    incarnation: str | None


def trip_limit(machine: RuleMachine | None) -> TripLimit | None:
    """The limit of the rule behind a change (``above 8 °C for 300 s``), for the
    coordinator's charts and the notices people read."""
    if machine is None:
        return None
    spec = machine.spec
    value = spec.above if spec.above is not None else spec.below
    if value is None or spec.metric not in ("temperature_c", "humidity_pct"):
        return None
    return TripLimit(metric="humidity_pct" if spec.metric == "humidity_pct" else "temperature_c",
                     op="above" if spec.above is not None else "below", value=value,
                     for_s=spec.for_s)


def breaker_message(
    me: Identity, change: BreakerChange, seq: int, session_seq: int, now: datetime,
    limit: TripLimit | None = None,
) -> OutgoingMessage:
    event = BreakerEvent(
        warehouse_id=me.warehouse_id,
        agent_id=me.agent_id,
        breaker=change.breaker,
        state=change.state,
        previous_state=change.previous_state,
        open=change.open,
        override=change.override,
        override_actor=change.override_actor,
        override_expires_at=change.override_expires_at,
        acknowledged=change.acknowledged,
        acknowledged_by=change.acknowledged_by,
        zone=change.zone,
        rule=change.rule,
        reason=change.reason[:64],
        detail=change.detail,
        values=[
            TripValue(sensor_id=r.sensor_id, metric=r.metric, value=r.value, ts=r.ts)
            for r in change.values[-64:]
        ],
        limit=limit,
        since=change.since,
        episode_id=change.episode_id,
        seq=seq,
        session_seq=session_seq,
        incarnation=me.incarnation,
        event_time=change.event_time,
        published_at=now,
        clock_suspect=change.clock_suspect,
    )
    return OutgoingMessage(
        "breaker",
        me.topics.breaker(me.warehouse_id, change.breaker),
        event.model_dump_json(exclude_none=True),
        1,
        True,
        seq,
        change.breaker,
    )


def telemetry_message(
    me: Identity, summary: Summary, seq: int, drops: dict[str, dict[str, int]]
) -> OutgoingMessage:
    model = TelemetrySummary(
        warehouse_id=me.warehouse_id,
        agent_id=me.agent_id,
        zone=summary.zone,
        metric="humidity_pct" if summary.metric == "humidity_pct" else "temperature_c",
        window_start=summary.window_start,
        window_end=summary.window_end,
        count=summary.count,
        min=summary.min,
        mean=summary.mean,
        max=summary.max,
        last=summary.last,
        seq=seq,
        incarnation=me.incarnation,
        drops=drops or None,
    )
    return OutgoingMessage(
        "telemetry",
        me.topics.telemetry(me.warehouse_id, summary.zone),
        model.model_dump_json(exclude_none=True),
        1,
        False,
        seq,
    )


def audit_message(me: Identity, audit: AuditRecord, seq: int) -> OutgoingMessage:
    return OutgoingMessage(
        "audit", me.topics.audit(me.warehouse_id), audit.model_dump_json(exclude_none=True),
        1, False, seq,
    )


def countdown(me: Identity, machine: RuleMachine, now: datetime) -> RuleCountdown:
    cd = machine.countdown(now)
    spec = machine.spec
    return RuleCountdown(
        warehouse_id=me.warehouse_id,
        agent_id=me.agent_id,
        zone=spec.zone,
        rule=spec.id,
        breaker=spec.breaker,
        state=cd.state,
        pending_since=cd.pending_since,
        trips_at=cd.trips_at,
        seconds_left=cd.seconds_left,
        readings_in_window=cd.readings_in_window,
        event_time=now,
    )


def dead_letter(
    me: Identity,
    topic: str,
    payload: bytes,
    exc: SensorPayloadError,
    now: datetime,
    sensor_id: str | None,
    total: int,
) -> DeadLetter:
    return DeadLetter(
        warehouse_id=me.warehouse_id,
        agent_id=me.agent_id,
        source_topic=topic[:512],
        sensor_id=sensor_id,
        error=str(exc)[:500],
        field=exc.field,
        payload=payload[:2048].decode("utf-8", errors="replace")[:2048],
        received_at=now,
        rejected_total=total,
    )


def agent_status(
    me: Identity, state: AgentState, session_seq: int, ts: datetime, *,
    breakers: list[str], heartbeat_s: float, graceful: bool = False,
) -> bytes:
    """Birth, heartbeat (``online``) or last will / goodbye (``offline``) of a session."""
    return encode(
        AgentStatus(
            warehouse_id=me.warehouse_id,
            agent_id=me.agent_id,
            state=state,
            session_seq=session_seq,
            incarnation=me.incarnation,
            ts=ts,
            software=SOFTWARE,
            breakers=breakers,
            graceful=graceful,
            heartbeat_s=heartbeat_s if heartbeat_s > 0 and state is AgentState.ONLINE else None,
        )
    )


def as_historical(kind: str, payload: str) -> str:
    """An outbox payload re-sent after newer live state: marked so it never overwrites it."""
    if kind == "breaker":
        event = BreakerEvent.model_validate_json(payload)
        return event.model_copy(update={"historical": True}).model_dump_json(exclude_none=True)
    if kind == "telemetry":
        summary = TelemetrySummary.model_validate_json(payload)
        return summary.model_copy(update={"historical": True}).model_dump_json(
            exclude_none=True
        )
    return payload
