"""What the agent counts: readings and dead letters per sensor, drops by cause, commands.

Plain counters, owned by the core; the shell adds what only it sees (publishing, the
store) and :mod:`edge_agent.health` exposes both to Prometheus.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType


@dataclass(slots=True)
class Counters:
    accepted: int = 0
    rejected: dict[str, int] = field(default_factory=dict)  # by reason
    accepted_by_sensor: dict[str, int] = field(default_factory=dict)
    rejected_by_sensor: dict[str, int] = field(default_factory=dict)
    drops: dict[tuple[str, str], int] = field(default_factory=dict)  # (sensor, cause)
    notices: dict[str, int] = field(default_factory=dict)
    commands: dict[str, int] = field(default_factory=dict)  # by outcome / refusal reason
    events_created: int = 0

    def accept(self, sensor: str) -> None:
        self.accepted += 1
        self.accepted_by_sensor[sensor] = self.accepted_by_sensor.get(sensor, 0) + 1

    def reject(self, reason: str, key: str | None = None) -> int:
        """Count one rejection; return how many ``key`` (a sensor or topic) has had."""
        self.rejected[reason] = self.rejected.get(reason, 0) + 1
        if key is None:
            return 0
        total = self.rejected_by_sensor[key] = self.rejected_by_sensor.get(key, 0) + 1
        return total

    def drop(self, sensor: str, cause: str) -> None:
        self.drops[(sensor, cause)] = self.drops.get((sensor, cause), 0) + 1

    def notice(self, kind: str) -> None:
        self.notices[kind] = self.notices.get(kind, 0) + 1

    def command(self, outcome: str) -> None:
        self.commands[outcome] = self.commands.get(outcome, 0) + 1


@dataclass(frozen=True, slots=True)
class AgentStats:
    """A read-only snapshot of the agent's counters."""

    readings_accepted: int
    readings_rejected: MappingProxyType[str, int]
    events_published: int
    events_created: int
    messages_published: int
    outbox_depth: int
    outbox_dropped: MappingProxyType[str, int]
    deadletters_published: int
    deadletters_dropped: int
    notices: MappingProxyType[str, int]
    uplink_connected: bool
    sensors_connected: bool
    session_seq: int
    seq: int
    store_errors: int = 0
    # The state database's lifetime id (None before the store was first opened).
    incarnation: str | None = None
    drops: MappingProxyType[tuple[str, str], int] = field(
        default_factory=lambda: MappingProxyType({})
    )
    commands: MappingProxyType[str, int] = field(default_factory=lambda: MappingProxyType({}))
    states_resent: int = 0
    uplink_broker: str | None = None  # host:port of the current uplink session's broker
