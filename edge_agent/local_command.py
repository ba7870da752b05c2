"""``python -m edge_agent command``: a technician on site acts on a breaker without the
coordinator. The command is signed with the gateway's own key (readable only by whoever
may administer the gateway) and published to the local broker, where the agent listens
for commands when it has a key; the agent verifies and audits it like any other.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta

import aiomqtt

from edge_agent.config import AgentConfig, MqttSection
from protocols import BreakerCommand, CommandKind, Topics, encode
from protocols.command_auth import load_command_key, sign_command

COMMAND_KEY_ENV = "BREAKWATER_COMMAND_KEY"
LOCAL_ACTOR_PREFIX = "local:"


def local_command(
    config: AgentConfig,
    breaker: str,
    kind: CommandKind,
    *,
    actor: str,
    reason: str,
    now: datetime,
    minutes: float | None = None,
) -> BreakerCommand:
    """A command signed with the gateway's key, for its own agent and ``breaker``."""
    key = load_command_key(config.command_key_path, COMMAND_KEY_ENV)
    expires = None
    if kind in (CommandKind.FORCE_TRIPPED, CommandKind.INHIBIT):
        if minutes is None:
            raise ValueError("--minutes: required for force_tripped and inhibit")
        expires = now + timedelta(minutes=minutes)
    cmd = BreakerCommand(
        command_id=f"local-{uuid.uuid4().hex[:16]}",
        command=kind,
        actor=f"{LOCAL_ACTOR_PREFIX}{actor}",
        reason=reason,
        issued_at=now,
        expires_at=expires,
        agent_id=config.agent.agent_id,
        breaker=breaker,
    )
    return sign_command(cmd, key)


async def publish_command(
    config: AgentConfig, breaker: str, cmd: BreakerCommand, *, via_uplink: bool = False
) -> str:
    """Publish ``cmd`` (QoS 1) to the local broker, or the uplink one; return the topic."""
    section: MqttSection = config.uplink_mqtt if via_uplink else config.local_mqtt
    topics = Topics(config.uplink_mqtt.topic_root)
    topic = topics.command(config.agent.warehouse_id, breaker)
    async with aiomqtt.Client(
        hostname=section.host,
        port=section.port,
        username=section.username,
        password=section.password,
        tls_context=section.tls_context(),
        identifier=f"{config.agent.agent_id}-cli-{uuid.uuid4().hex[:8]}",
    ) as client:
        await client.publish(topic, encode(cmd), qos=1)
    return topic
