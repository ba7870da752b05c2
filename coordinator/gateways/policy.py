"""Who may speak for a warehouse: the pure judgement of one breaker event or agent status
against the gateway registry. No database, no clock: the caller passes what it read.

The policy is "fail closed, never blind":

- a message that would **re-open** a warehouse (a clear, an ``online`` status) needs full
  trust: a registered gateway of that warehouse, its confirmed incarnation, a sane time;
- a message that would **close** a warehouse from a registered gateway of that warehouse
  applies even when its time or incarnation is suspect: at receive time, flagged;
- anything from an unregistered agent, another warehouse's agent or for an unknown
  warehouse is refused (and the caller dead-letters, counts and alerts it).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from protocols import AgentState, AgentStatus, BreakerEvent
from protocols.timestamps import stamp

GatewayMessage = BreakerEvent | AgentStatus


@dataclass(frozen=True)
class Gateway:
    """One registry row: ``incarnation`` is the confirmed one (None: none seen yet, the
    first one seen is adopted); ``pending`` a newer one awaiting an operator."""

    agent_id: str
    warehouse_id: str
    incarnation: str | None
    pending: str | None = None


class Outcome(StrEnum):
    APPLY = "apply"  # trusted: feed it as it is
    APPLY_FLAGGED = "apply_flagged"  # closes the warehouse; applied, flagged to operators
    HOLD = "hold"  # would re-open from a new incarnation: waits for the confirmation
    REFUSE = "refuse"  # never applied


class Reason(StrEnum):
    UNKNOWN_WAREHOUSE = "unknown_warehouse"
    UNREGISTERED_AGENT = "unregistered_agent"
    FOREIGN_AGENT = "foreign_agent"  # registered for another warehouse
    FUTURE_TIME = "future_time"
    NEW_INCARNATION = "new_incarnation"
    FIRST_INCARNATION = "first_incarnation"  # adopted (trust on first use), recorded


@dataclass(frozen=True)
class Verdict:
    outcome: Outcome
    message: GatewayMessage  # what to apply (a far-future trip: at receive time)
    reason: Reason | None = None
    field: str | None = None
    detail: str = ""
    adopt_incarnation: str | None = None  # the registry records it as confirmed
    pending_incarnation: str | None = None  # the registry records it as awaiting

    @property
    def applies(self) -> bool:
        return self.outcome in (Outcome.APPLY, Outcome.APPLY_FLAGGED)


def closes(message: GatewayMessage) -> bool:
    """Whether the message would take the warehouse out of service (or keep it out)."""
    if isinstance(message, BreakerEvent):
        return message.open
    return message.state is AgentState.OFFLINE


def _time_of(message: GatewayMessage) -> tuple[str, datetime]:
    if isinstance(message, BreakerEvent):
        return "event_time", message.event_time
    return "ts", message.ts


def _at_receive_time(message: GatewayMessage, now: datetime) -> GatewayMessage:
    if isinstance(message, BreakerEvent):
        return message.model_copy(update={
            "event_time": now, "since": min(message.since, now),
            "published_at": min(message.published_at, now), "clock_suspect": True})
    return message.model_copy(update={"ts": now})


def judge(message: GatewayMessage, gateway: Gateway | None, *, warehouse_known: bool,
          now: datetime, max_skew: timedelta) -> Verdict:
    wid, agent = message.warehouse_id, message.agent_id
    if not warehouse_known:
        return Verdict(Outcome.REFUSE, message, Reason.UNKNOWN_WAREHOUSE, "warehouse_id",
                       f"warehouse {wid!r} is not in the catalogue")
    if gateway is None:
        return Verdict(Outcome.REFUSE, message, Reason.UNREGISTERED_AGENT, "agent_id",
                       f"agent {agent!r} is not registered for any warehouse")
    if gateway.warehouse_id != wid:
        return Verdict(Outcome.REFUSE, message, Reason.FOREIGN_AGENT, "agent_id",
                       f"agent {agent!r} is registered for {gateway.warehouse_id!r}, "
                       f"not {wid!r}")
    closing = closes(message)
    field, moment = _time_of(message)
    flagged: list[tuple[Reason, str, str]] = []
    if moment - now > max_skew:
        if not closing:
            return Verdict(Outcome.REFUSE, message, Reason.FUTURE_TIME, field,
                           f"{field} {stamp(moment)} is {moment - now} ahead of the "
                           f"coordinator's clock (allowed {max_skew})")
        message = _at_receive_time(message, now)
        flagged.append((Reason.FUTURE_TIME, field,
                        f"{field} {stamp(moment)} was in the future: applied at "
                        "receive time"))
    incarnation = message.incarnation
    adopt = pending = None
    if incarnation is not None and incarnation != gateway.incarnation:
        if gateway.incarnation is None:
            adopt = incarnation  # the first lifetime seen of a registered gateway
        else:
            pending = incarnation
            text = (f"incarnation {incarnation} of {agent!r} is not the confirmed "
                    f"{gateway.incarnation}: awaits an operator's confirmation")
            if not closing:
                return Verdict(Outcome.HOLD, message, Reason.NEW_INCARNATION, "incarnation",
                               text, pending_incarnation=pending)
            flagged.append((Reason.NEW_INCARNATION, "incarnation", text))
    if flagged:
        reason, where, _ = flagged[0]
        return Verdict(Outcome.APPLY_FLAGGED, message, reason, where,
                       "; ".join(f[2] for f in flagged), adopt, pending)
    return Verdict(Outcome.APPLY, message, Reason.FIRST_INCARNATION if adopt else None,
                   None, "", adopt, None)
