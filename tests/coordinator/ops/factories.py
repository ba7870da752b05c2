"""Wire messages as agents and couriers publish them, for the ops tests."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from protocols import AgentState, AgentStatus, BreakerEvent, BreakerState, TrackingUpdate

T0 = datetime(2026, 11, 24, 2, 17, tzinfo=UTC)


def breaker_event(
    *,
    seq: int,
    open: bool = True,
    warehouse: str = "wh-cc-2",
    agent: str = "gw-cc-2",
    breaker: str = "cold_chain",
    episode: str | None = "ep-1",
    session_seq: int = 1,
    historical: bool = False,
    at: datetime = T0,
    incarnation: str | None = None,
) -> BreakerEvent:
    return BreakerEvent(
        warehouse_id=warehouse,
        agent_id=agent,
        breaker=breaker,
        state=BreakerState.TRIPPED if open else BreakerState.OK,
        open=open,
        reason="threshold_exceeded" if open else "recovered",
        since=at,
        episode_id=episode if open else None,
        seq=seq,
        session_seq=session_seq,
        incarnation=incarnation,
        event_time=at,
        published_at=at,
        historical=historical,
    )


def agent_status(
    *,
    online: bool,
    session_seq: int,
    warehouse: str = "wh-cc-2",
    agent: str = "gw-cc-2",
    at: datetime = T0,
    incarnation: str | None = None,
    heartbeat_s: float | None = None,
) -> AgentStatus:
    return AgentStatus(
        warehouse_id=warehouse,
        agent_id=agent,
        state=AgentState.ONLINE if online else AgentState.OFFLINE,
        session_seq=session_seq,
        incarnation=incarnation,
        ts=at,
        heartbeat_s=heartbeat_s,
    )


def tracking(
    shipment: str,
    *,
    at: datetime,
    carrier: str = "sf-express",
    warehouse: str = "wh-cc-2",
    status: str = "in_transit",
    order_id: str | None = None,
) -> TrackingUpdate:
    return TrackingUpdate.model_validate(
        {
            "shipment_id": shipment,
            "carrier": carrier,
            "warehouse_id": warehouse,
            "order_id": order_id,
            "status": status,
            "ts": at.isoformat(),
        }
    )


def minutes(n: float) -> timedelta:
    return timedelta(minutes=n)
