"""Named breakers fed by the rules of one or more zones, with operator commands.

A breaker's state is the worst state of its rules (tripped > clearing > unknown > pending >
ok). ``open`` follows the state unless an override is active: ``force_tripped`` holds it
open, ``inhibited`` holds it closed, each with an actor, a reason and an expiry. Acknowledge
is separate from clear: an ack lasts until the breaker closes (the episode ends). Every
command is answered with an audit outcome. Pure: no I/O, time is an argument.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from edge_agent.readings import Reading
from edge_agent.rule_types import Transition
from protocols.models import BreakerCommand, BreakerState, CommandKind, Override

SEVERITY = {
    BreakerState.OK: 0,
    BreakerState.PENDING: 1,
    BreakerState.UNKNOWN: 2,
    BreakerState.CLEARING: 3,
    BreakerState.TRIPPED: 4,
}
OPEN_STATES = (BreakerState.TRIPPED, BreakerState.CLEARING)
RECENT_COMMANDS = 200


@dataclass(frozen=True, slots=True)
class BreakerChange:
    """What an event about a breaker says (the agent adds ids, seq and times)."""

    breaker: str
    state: BreakerState
    previous_state: BreakerState | None
    open: bool
    override: Override
    override_actor: str | None
    override_expires_at: datetime | None
    acknowledged: bool
    acknowledged_by: str | None
    zone: str | None
    rule: str | None
    reason: str
    detail: str
    values: tuple[Reading, ...]
    since: datetime
    episode_id: str | None
    event_time: datetime
    clock_suspect: bool


@dataclass(frozen=True, slots=True)
class CommandOutcome:
    outcome: str  # applied | refused | expired
    detail: str
    change: BreakerChange | None = None


@dataclass(slots=True)
class Breaker:
    name: str
    agent_id: str
    since: datetime
    rule_states: dict[str, BreakerState] = field(default_factory=dict)
    rule_episodes: dict[str, str | None] = field(default_factory=dict)
    episode_id: str | None = None
    override: Override = Override.NONE
    override_actor: str | None = None
    override_reason: str | None = None
    override_expires_at: datetime | None = None
    acknowledged_by: str | None = None
    recent_commands: list[str] = field(default_factory=list)
    last_zone: str | None = None
    last_rule: str | None = None

    @classmethod
    def create(cls, name: str, agent_id: str, rules: list[str], now: datetime) -> Breaker:
        states = dict.fromkeys(rules, BreakerState.UNKNOWN)
        return cls(
            name=name,
            agent_id=agent_id,
            since=now,
            rule_states=states,
            rule_episodes=dict.fromkeys(rules),
        )

    @property
    def state(self) -> BreakerState:
        if not self.rule_states:
            return BreakerState.OK
        return max(self.rule_states.values(), key=SEVERITY.__getitem__)

    @property
    def open(self) -> bool:
        if self.override is Override.FORCE_TRIPPED:
            return True
        if self.override is Override.INHIBITED:
            return False
        return self.state in OPEN_STATES

    def _view(self) -> tuple[object, ...]:
        return (self.state, self.open, self.override, self.acknowledged_by, self.episode_id)

    # -- inputs ----------------------------------------------------------------
    def apply(self, transition: Transition) -> BreakerChange | None:
        """A rule of this breaker changed state; return the breaker's change, if any."""
        before_state, before = self.state, self._view()
        self.rule_states[transition.key] = transition.state
        self.rule_episodes[transition.key] = transition.episode_id
        self.last_zone, self.last_rule = transition.zone, transition.rule
        self._settle_episode(transition.episode_id)
        if self._view() == before:
            return None
        if self.state is not before_state:
            self.since = transition.event_time
        return self._change(
            previous=before_state,
            reason=transition.reason,
            detail=transition.detail,
            values=transition.values,
            event_time=transition.event_time,
            clock_suspect=transition.clock_suspect,
        )

    def _settle_episode(self, candidate: str | None) -> None:
        if self.open:
            if self.episode_id is None:
                self.episode_id = candidate or next(
                    (e for e in self.rule_episodes.values() if e), None
                )
        elif self.state not in OPEN_STATES:
            # The episode ends when the rules clear; the ack ends with it.
            self.episode_id = None
            self.acknowledged_by = None

    def command(self, cmd: BreakerCommand, now: datetime) -> CommandOutcome:
        if cmd.command_id in self.recent_commands:
            return CommandOutcome("refused", "duplicate command_id (already handled)")
        self.recent_commands.append(cmd.command_id)
        del self.recent_commands[:-RECENT_COMMANDS]
        before_state, before = self.state, self._view()
        kind = cmd.command
        if kind is CommandKind.ACK:
            if not self.open:
                return CommandOutcome("refused", "breaker is not open: nothing to acknowledge")
            if self.acknowledged_by is not None:
                return CommandOutcome("refused", f"already acknowledged by {self.acknowledged_by}")
            self.acknowledged_by = cmd.actor
            reason = "acknowledged"
        elif kind in (CommandKind.FORCE_TRIPPED, CommandKind.INHIBIT):
            assert cmd.expires_at is not None
            if cmd.expires_at <= now:
                return CommandOutcome("refused", "expires_at is already past")
            self.override = (
                Override.FORCE_TRIPPED if kind is CommandKind.FORCE_TRIPPED else Override.INHIBITED
            )
            self.override_actor = cmd.actor
            self.override_reason = cmd.reason
            self.override_expires_at = cmd.expires_at
            if self.override is Override.FORCE_TRIPPED and self.episode_id is None:
                self.episode_id = f"{self.agent_id}/{self.name}/manual/{cmd.command_id}"
            reason = f"override_{self.override.value}"
        else:  # RELEASE
            if self.override is Override.NONE:
                return CommandOutcome("refused", "no override to release")
            self._clear_override()
            reason = "override_released"
        self._after_override()
        change = None
        if self._view() != before:
            self.since = now
            change = self._change(
                previous=before_state,
                reason=reason,
                detail=f"{cmd.actor}: {cmd.reason}",
                values=(),
                event_time=now,
                clock_suspect=False,
            )
        return CommandOutcome("applied", reason, change)

    def tick(self, now: datetime) -> BreakerChange | None:
        """Expire an override whose time is up."""
        expires = self.override_expires_at
        if self.override is Override.NONE or expires is None or now < expires:
            return None
        before_state = self.state
        actor = self.override_actor
        self._clear_override()
        self._after_override()
        self.since = now
        return self._change(
            previous=before_state,
            reason="override_expired",
            detail=f"set by {actor}",
            values=(),
            event_time=now,
            clock_suspect=False,
        )

    def clock_stepped(self, by_s: float) -> None:
        """The gateway clock stepped by ``by_s`` seconds: an override keeps the time it
        had left (set for an hour while the clock read 2038, it would otherwise have
        held for twelve years once NTP set the clock right; or ended at once after a
        step forward)."""
        if self.override_expires_at is not None:
            self.override_expires_at += timedelta(seconds=by_s)

    def _clear_override(self) -> None:
        self.override = Override.NONE
        self.override_actor = None
        self.override_reason = None
        self.override_expires_at = None

    def _after_override(self) -> None:
        if not self.open and self.state not in OPEN_STATES:
            self.episode_id = None
            self.acknowledged_by = None
        elif self.open and self.episode_id is None:
            self._settle_episode(None)

    def current(self, now: datetime, reason: str = "current_state") -> BreakerChange:
        return self._change(
            previous=None, reason=reason, detail="", values=(), event_time=now, clock_suspect=False
        )

    def _change(
        self,
        *,
        previous: BreakerState | None,
        reason: str,
        detail: str,
        values: tuple[Reading, ...],
        event_time: datetime,
        clock_suspect: bool,
    ) -> BreakerChange:
        episode = self.episode_id
        if self.open and episode is None:  # open always names its incident
            episode = f"{self.agent_id}/{self.name}/{self.since.strftime('%Y%m%dT%H%M%S.%fZ')}"
            self.episode_id = episode
        return BreakerChange(
            breaker=self.name,
            state=self.state,
            previous_state=previous,
            open=self.open,
            override=self.override,
            override_actor=self.override_actor,
            override_expires_at=self.override_expires_at,
            acknowledged=self.acknowledged_by is not None,
            acknowledged_by=self.acknowledged_by,
            zone=self.last_zone,
            rule=self.last_rule,
            reason=reason,
            detail=detail,
            values=values,
            since=self.since,
            episode_id=episode,
            event_time=event_time,
            clock_suspect=clock_suspect,
        )

    # -- persistence -----------------------------------------------------------
    def snapshot(self) -> dict[str, Any]:
        return {
            "since": self.since.isoformat(),
            "episode_id": self.episode_id,
            "override": self.override.value,
            "override_actor": self.override_actor,
            "override_reason": self.override_reason,
            "override_expires_at": (
                None if self.override_expires_at is None else self.override_expires_at.isoformat()
            ),
            "acknowledged_by": self.acknowledged_by,
            "recent_commands": self.recent_commands,
            "last_zone": self.last_zone,
            "last_rule": self.last_rule,
        }

    def restore(
        self,
        data: dict[str, Any],
        rule_states: dict[str, BreakerState],
        rule_episodes: dict[str, str | None],
    ) -> None:
        """Reload overrides/acks; the rule states come from the restored rule machines."""
        self.since = datetime.fromisoformat(data["since"])
        self.rule_states.update(rule_states)
        self.rule_episodes.update(rule_episodes)
        self.episode_id = data.get("episode_id")
        self.override = Override(data.get("override", "none"))
        self.override_actor = data.get("override_actor")
        self.override_reason = data.get("override_reason")
        expires = data.get("override_expires_at")
        self.override_expires_at = None if expires is None else datetime.fromisoformat(expires)
        self.acknowledged_by = data.get("acknowledged_by")
        self.recent_commands = list(data.get("recent_commands", []))
        self.last_zone = data.get("last_zone")
        self.last_rule = data.get("last_rule")
        self._after_override()


__all__ = ["Breaker", "BreakerChange", "CommandOutcome"]
