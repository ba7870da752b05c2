"""Signed commands through a real broker: an agent with a key refuses unsigned,
mis-signed, replayed (also after a restart) and over-long commands, each audited with the
reason, and applies a signed one; a technician's local CLI command works without the
coordinator."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from edge_agent.__main__ import main as edge_main
from edge_agent.agent import EdgeAgent
from edge_agent.config import AgentConfig
from protocols import AuditRecord, BreakerCommand, CommandKind, Topics, encode
from protocols.clock import ManualClock
from protocols.command_auth import new_command_key, sign_command
from simulators.brokers import Broker, MosquittoBroker
from tests.edge_agent.conftest import (
    AGENT,
    WH,
    Collector,
    cancel_and_wait,
    config_dict,
    wait_until,
)

pytestmark = pytest.mark.broker


def keyed_config(tmp_path: Path, local: str, uplink: str, topics: Topics) -> AgentConfig:
    (tmp_path / "agent.key").write_text(new_command_key() + "\n")
    raw = config_dict(tmp_path, local, uplink, topics)
    raw["agent"]["command_key_file"] = str(tmp_path / "agent.key")
    raw["agent"]["command_max_ttl_s"] = 3600
    return AgentConfig.model_validate(raw)


def inhibit(now: datetime, cid: str, minutes: float = 30) -> BreakerCommand:
    return BreakerCommand(
        command_id=cid, command=CommandKind.INHIBIT, actor="ops:li", reason="defrost",
        issued_at=now, expires_at=now + timedelta(minutes=minutes), agent_id=AGENT,
        breaker="cold_chain",
    )


@contextlib.asynccontextmanager
async def running(agent: EdgeAgent) -> AsyncIterator[None]:
    task = asyncio.create_task(agent.run())
    try:
        await wait_until(lambda: agent.stats.uplink_connected and agent.stats.sensors_connected,
                         what="connected")
        yield
    finally:
        await cancel_and_wait(task)


async def test_unsigned_mis_signed_replayed_and_over_long_commands_are_refused(
    tmp_path: Path, broker: Broker, topics: Topics
) -> None:
    config = keyed_config(tmp_path, broker.url, broker.url, topics)
    key = config.command_key_path.read_text().strip().encode()  # type: ignore[union-attr]
    now = datetime.now(UTC)
    clock = ManualClock(now)
    topic = topics.command(WH, "cold_chain")
    signed = sign_command(inhibit(now, "c-ok"), key)
    sent = [
        inhibit(now, "c-unsigned"),
        sign_command(inhibit(now, "c-forged"), b"not-the-agents-key-at-all"),
        sign_command(inhibit(now, "c-long", minutes=24 * 60), key),
        sign_command(inhibit(now, "c-other").model_copy(update={"agent_id": "gw-other"}), key),
        # signed for another breaker, captured and republished on this one's topic
        sign_command(inhibit(now, "c-moved").model_copy(update={"breaker": "dock"}), key),
        signed,
        signed,  # captured and replayed
    ]
    async with Collector(broker.url, [topics.audit(WH)]) as audits:
        agent = EdgeAgent(config, clock=clock, topics=topics)
        async with running(agent):
            for cmd in sent:
                await _publish(broker.url, topic, encode(cmd))
            await wait_until(lambda: len(audits.messages) == len(sent), what="audits")
            assert agent.breaker_states()["cold_chain"][1] is False  # inhibited: closed
        # A restart does not reopen the replay: the nonce is in the state database.
        again = EdgeAgent(config, clock=clock, topics=topics)
        async with running(again):
            await _publish(broker.url, topic, encode(signed))
            await wait_until(lambda: len(audits.messages) == len(sent) + 1, what="audit")
    records = [AuditRecord.model_validate_json(m.payload) for m in audits.messages]
    outcomes = [(r.command_id, r.outcome, r.detail) for r in records]
    assert outcomes == [
        ("c-unsigned", "refused", "unsigned"),
        ("c-forged", "refused", "bad_signature"),
        ("c-long", "refused", "ttl_too_long"),
        ("c-other", "refused", "wrong_agent"),  # signed for another gateway (a shared key)
        ("c-moved", "refused", "wrong_breaker"),
        ("c-ok", "applied", "override_inhibited"),
        ("c-ok", "refused", "replayed"),
        ("c-ok", "refused", "replayed"),
    ]
    assert again.stats.commands == {"refused_replayed": 1}
    # the key never appears in what the agent sends
    assert all(key not in m.payload for m in audits.messages)


async def test_a_technician_acts_on_site_through_the_local_broker_without_the_coordinator(
    tmp_path: Path, broker: Broker, topics: Topics
) -> None:
    uplink = MosquittoBroker()
    uplink.start()
    try:
        config = keyed_config(tmp_path, broker.url, uplink.url, topics)
        site = tmp_path / "site.toml"
        _write_toml(site, config)
        agent = EdgeAgent(config, clock=ManualClock(datetime.now(UTC)), topics=topics)
        async with running(agent):
            uplink.stop()  # head office unreachable
            code = await asyncio.to_thread(
                edge_main,
                ["command", str(site), "cold_chain", "force_tripped", "--actor", "wang",
                 "--reason", "compressor smoke", "--minutes", "30"],
            )
            assert code == 0
            await wait_until(lambda: agent.breaker_states()["cold_chain"][1], what="tripped")
            assert agent.stats.commands == {"applied": 1}
    finally:
        uplink.close()


async def _publish(url: str, topic: str, payload: bytes) -> None:
    import aiomqtt

    host, port = url.split("://", 1)[1].rsplit(":", 1)
    async with aiomqtt.Client(host, int(port), username="ops-test") as client:
        await client.publish(topic, payload, qos=1)


def _write_toml(path: Path, config: AgentConfig) -> None:
    import tomli_w

    data = config.model_dump(mode="json", exclude_none=True)
    path.write_text(tomli_w.dumps(data))
