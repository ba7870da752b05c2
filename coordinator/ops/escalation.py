"""Escalation: an incident still open and unacknowledged re-notifies, louder each time.

Pure (time is an input): :func:`due` says which escalations are due at ``now`` for the
open incidents it is given; :func:`recipients` picks who gets one from the people on
call. Level 1 goes to the on-duty group's WeCom robot (mentioning the people on duty);
level 2 and up go by SMS to the next people on call, one more each level, up to
``max_levels``. Acknowledging the incident (on the page or over HTTP) stops it.

Who is on call comes from the staff roster (warehouse, name, role, phone, on-duty hours):
anything returning :class:`Person` s (the roster store's ``on_duty``). The shell that reads
open incidents, asks the roster, queues the messages in the outbox and records each
escalation on the incident's timeline is :func:`coordinator.ops.escalation_store.run`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal, Protocol

# who is called first when several are on duty: the warehouse's own operators, then leads
ROLE_ORDER = ("operator", "warehouse_lead", "lead", "manager", "admin")


class Person(Protocol):
    """Someone on the roster (the customer loop's ``StaffMember`` has these fields)."""

    @property
    def name(self) -> str: ...

    @property
    def role(self) -> str: ...

    @property
    def phone(self) -> str: ...


@dataclass(frozen=True, slots=True)
class Policy:
    first_after: timedelta = timedelta(minutes=10)
    repeat_after: timedelta = timedelta(minutes=10)
    max_levels: int = 3


@dataclass(frozen=True, slots=True)
class OpenIncident:
    incident_id: str
    warehouse_id: str
    opened_at: datetime
    acknowledged: bool
    levels_sent: int  # escalations already recorded for it
    last_sent_at: datetime | None


@dataclass(frozen=True, slots=True)
class Escalate:
    incident_id: str
    warehouse_id: str
    level: int
    channel: Literal["wecom", "sms"]
    due_at: datetime


def due(incidents: Sequence[OpenIncident], policy: Policy, now: datetime) -> list[Escalate]:
    """The next escalation of each open, unacknowledged incident whose time has come.

    One level per call per incident: a coordinator that was down for an hour sends the
    next level, not every missed one at once."""
    out = []
    for inc in incidents:
        if inc.acknowledged or inc.levels_sent >= policy.max_levels:
            continue
        if inc.levels_sent == 0:
            at = inc.opened_at + policy.first_after
        else:
            at = (inc.last_sent_at or inc.opened_at) + policy.repeat_after
        if now >= at:
            level = inc.levels_sent + 1
            out.append(Escalate(inc.incident_id, inc.warehouse_id, level,
                                "wecom" if level == 1 else "sms", at))
    return out


def _rank(person: Person) -> tuple[int, str]:
    role = person.role if person.role in ROLE_ORDER else ROLE_ORDER[-1]
    return (ROLE_ORDER.index(role), person.name)


def recipients(level: int, people: Sequence[Person]) -> list[Person]:
    """Level 1: everyone on duty (mentioned in the group); level n >= 2: the first n - 1
    people on call by role (operators first), so each level reaches one more person."""
    ranked = sorted((p for p in people if p.phone), key=_rank)
    return ranked if level == 1 else ranked[: level - 1]
