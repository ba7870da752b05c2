"""Every MQTT topic of the contract. Nothing else in Breakwater spells a topic string.

Layout (``<root>`` defaults to ``breakwater``; one major version per topic tree)::

    topic under <root>/v1/                  payload           QoS  retain
    wh/<warehouse>/breaker/<breaker>        BreakerEvent      1    yes (live only)
    wh/<warehouse>/agent/<agent>/status     AgentStatus       1    yes (will: offline)
    wh/<warehouse>/countdown/<zone>/<rule>  RuleCountdown     0    yes
    wh/<warehouse>/telemetry/<zone>         TelemetrySummary  1    no
    wh/<warehouse>/cmd/<breaker>            BreakerCommand    1    no  (operators to agent)
    wh/<warehouse>/audit                    AuditRecord       1    no
    wh/<warehouse>/deadletter               DeadLetter        0    no
    wh/<warehouse>/sensor/<sensor>          SensorReading     0/1  no  (local broker)
    tracking/<carrier>                      TrackingUpdate    1    no

Levels use only letters, digits, ``_`` and ``-`` so the same tree works on Mosquitto,
EMQX, amqtt and NATS's MQTT gateway (which rejects ``.`` and spaces).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from protocols.errors import TopicError

TOPIC_VERSION = "v1"
DEFAULT_ROOT = "breakwater"
_LEVEL = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


def validate_level(value: str, what: str = "topic level") -> str:
    """Return ``value`` if it is a legal topic level, else raise :class:`TopicError`."""
    if not _LEVEL.match(value):
        raise TopicError(
            f"{what} {value!r} must be 1-64 characters of letters, digits, '_' or '-'"
        )
    return value


@dataclass(frozen=True, slots=True)
class ParsedTopic:
    """What a concrete topic says: its kind and the identifiers in it."""

    kind: str
    warehouse: str | None = None
    breaker: str | None = None
    agent: str | None = None
    zone: str | None = None
    rule: str | None = None
    sensor: str | None = None
    carrier: str | None = None


class Topics:
    """Builds and parses the topics under one root.

    Tests give each test its own ``root`` so that runs sharing a broker never see each
    other's retained messages.
    """

    def __init__(self, root: str = DEFAULT_ROOT) -> None:
        parts = root.split("/")
        for part in parts:
            validate_level(part, "topic root level")
        self.root = root
        self._base = f"{root}/{TOPIC_VERSION}"
        self._depth = len(parts) + 1

    def __repr__(self) -> str:
        return f"Topics(root={self.root!r})"

    # -- concrete topics -------------------------------------------------------
    def _wh(self, warehouse: str, *levels: str) -> str:
        validate_level(warehouse, "warehouse id")
        for level in levels:
            validate_level(level)
        return "/".join((self._base, "wh", warehouse, *levels))

    def breaker(self, warehouse: str, breaker: str) -> str:
        return self._wh(warehouse, "breaker", breaker)

    def agent_status(self, warehouse: str, agent: str) -> str:
        return self._wh(warehouse, "agent", agent, "status")

    def countdown(self, warehouse: str, zone: str, rule: str) -> str:
        return self._wh(warehouse, "countdown", zone, rule)

    def telemetry(self, warehouse: str, zone: str) -> str:
        return self._wh(warehouse, "telemetry", zone)

    def command(self, warehouse: str, breaker: str) -> str:
        return self._wh(warehouse, "cmd", breaker)

    def audit(self, warehouse: str) -> str:
        return self._wh(warehouse, "audit")

    def deadletter(self, warehouse: str) -> str:
        return self._wh(warehouse, "deadletter")

    def sensor(self, warehouse: str, sensor: str) -> str:
        return self._wh(warehouse, "sensor", sensor)

    def tracking(self, carrier: str) -> str:
        validate_level(carrier, "carrier id")
        return f"{self._base}/tracking/{carrier}"

    # -- subscription filters --------------------------------------------------
    def _wh_filter(self, warehouse: str | None, *levels: str) -> str:
        wh = "+" if warehouse is None else validate_level(warehouse, "warehouse id")
        return "/".join((self._base, "wh", wh, *levels))

    def breaker_filter(self, warehouse: str | None = None) -> str:
        return self._wh_filter(warehouse, "breaker", "+")

    def agent_status_filter(self, warehouse: str | None = None) -> str:
        return self._wh_filter(warehouse, "agent", "+", "status")

    def countdown_filter(self, warehouse: str | None = None) -> str:
        return self._wh_filter(warehouse, "countdown", "+", "+")

    def telemetry_filter(self, warehouse: str | None = None) -> str:
        return self._wh_filter(warehouse, "telemetry", "+")

    def command_filter(self, warehouse: str | None = None) -> str:
        return self._wh_filter(warehouse, "cmd", "+")

    def deadletter_filter(self, warehouse: str | None = None) -> str:
        return self._wh_filter(warehouse, "deadletter")

    def audit_filter(self, warehouse: str | None = None) -> str:
        return self._wh_filter(warehouse, "audit")

    def sensor_filter(self, warehouse: str | None = None) -> str:
        return self._wh_filter(warehouse, "sensor", "+")

    def tracking_filter(self) -> str:
        return f"{self._base}/tracking/+"

    # -- parsing ---------------------------------------------------------------
    def parse(self, topic: str) -> ParsedTopic:
        """Say what a received topic is; raise :class:`TopicError` if it is not ours."""
        parts = topic.split("/")
        if "/".join(parts[: self._depth]) != self._base:
            raise TopicError(f"topic {topic!r} is not under {self._base!r}")
        rest = parts[self._depth :]
        match rest:
            case ["wh", wh, "breaker", breaker]:
                return ParsedTopic("breaker", warehouse=wh, breaker=breaker)
            case ["wh", wh, "agent", agent, "status"]:
                return ParsedTopic("agent_status", warehouse=wh, agent=agent)
            case ["wh", wh, "countdown", zone, rule]:
                return ParsedTopic("countdown", warehouse=wh, zone=zone, rule=rule)
            case ["wh", wh, "telemetry", zone]:
                return ParsedTopic("telemetry", warehouse=wh, zone=zone)
            case ["wh", wh, "cmd", breaker]:
                return ParsedTopic("command", warehouse=wh, breaker=breaker)
            case ["wh", wh, "audit"]:
                return ParsedTopic("audit", warehouse=wh)
            case ["wh", wh, "deadletter"]:
                return ParsedTopic("deadletter", warehouse=wh)
            case ["wh", wh, "sensor", sensor]:
                return ParsedTopic("sensor", warehouse=wh, sensor=sensor)
            case ["tracking", carrier]:
                return ParsedTopic("tracking", carrier=carrier)
        raise TopicError(f"topic {topic!r} matches no kind in the contract")
