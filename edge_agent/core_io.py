"""What the agent's pure core takes from and gives to its shell: one step's
:class:`Output` (messages, dead letters, countdowns, transitions), the :class:`State` to
save with them, and what was :class:`Saved` at the last start."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from edge_agent.messages import OutgoingMessage
from edge_agent.readings import Reading
from edge_agent.rule_types import Transition
from protocols import DeadLetter, RuleCountdown


@dataclass(slots=True)
class Output:
    """What one step produced. ``persist``: state changed and must be saved even if no
    message was produced (a tick, a transition)."""

    messages: list[OutgoingMessage] = field(default_factory=list)
    deadletters: list[DeadLetter] = field(default_factory=list)
    countdowns: list[RuleCountdown] = field(default_factory=list)
    transitions: list[Transition] = field(default_factory=list)  # for logs and replays
    persist: bool = False


@dataclass(slots=True)
class State:
    """What the shell persists with an output's messages, in the same transaction."""

    rules: dict[str, dict[str, Any]]
    breakers: dict[str, dict[str, Any]]
    readings: list[Reading]
    nonces: dict[str, datetime]


@dataclass(frozen=True, slots=True)
class Saved:
    """What the shell loaded from the state store at start."""

    rules: dict[str, dict[str, Any]]
    breakers: dict[str, dict[str, Any]]
    saved_at: datetime | None
    seq: int
    session_seq: int
    incarnation: str | None
    nonces: dict[str, datetime] = field(default_factory=dict)
