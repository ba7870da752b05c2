"""Breakwater's wire contract: MQTT topics and payload models shared by every component.

Nothing outside this package spells a topic string; everything on the wire is one of
the pydantic models in :mod:`protocols.models`, encoded with :func:`encode` and decoded
with :func:`decode`.
"""

from protocols.codec import decode, encode
from protocols.errors import PayloadError, ProtocolError, TopicError
from protocols.models import (
    SCHEMA_VERSION,
    AgentState,
    AgentStatus,
    AuditRecord,
    BreakerCommand,
    BreakerEvent,
    BreakerState,
    CommandKind,
    DeadLetter,
    Override,
    RuleCountdown,
    SensorReading,
    TelemetrySummary,
    TrackingUpdate,
    TripLimit,
    TripValue,
)
from protocols.mqtt_url import (
    MqttAddress,
    MqttUrlError,
    TlsFileError,
    client_tls_context,
    parse_mqtt_url,
)
from protocols.topics import ParsedTopic, Topics, validate_level

__all__ = [
    "SCHEMA_VERSION",
    "AgentState",
    "AgentStatus",
    "AuditRecord",
    "BreakerCommand",
    "BreakerEvent",
    "BreakerState",
    "CommandKind",
    "DeadLetter",
    "MqttAddress",
    "MqttUrlError",
    "Override",
    "ParsedTopic",
    "PayloadError",
    "ProtocolError",
    "RuleCountdown",
    "SensorReading",
    "TelemetrySummary",
    "TlsFileError",
    "TopicError",
    "Topics",
    "TrackingUpdate",
    "TripLimit",
    "TripValue",
    "client_tls_context",
    "decode",
    "encode",
    "parse_mqtt_url",
    "validate_level",
]
