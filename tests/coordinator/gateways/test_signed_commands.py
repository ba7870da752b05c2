"""The coordinator signs every command with the gateway's own key from the registry: a
real agent given that key (written by ``gateway key``) applies an operator's command, and
once the registry's key is rotated without re-provisioning the agent, the agent refuses."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from coordinator.__main__ import main as coordinator_cli
from coordinator.auth.roles import Role
from edge_agent.agent import EdgeAgent
from edge_agent.config import AgentConfig
from protocols import AuditRecord, Topics
from protocols.clock import ManualClock
from simulators.brokers import Broker
from tests.auth import headers_for
from tests.coordinator.ops.app_server import ops_app, serving
from tests.coordinator.ops.helpers import ops_config, register_gateways, settings_for
from tests.edge_agent.conftest import AGENT, WH, Collector, cancel_and_wait, config_dict, wait_until

pytestmark = pytest.mark.broker


async def test_an_operators_command_is_signed_for_the_agent_and_a_stale_key_is_refused(
        broker: Broker, topics: Topics, tmp_path: Path) -> None:
    db_path = tmp_path / "coordinator.sqlite"
    register_gateways(db_path, {AGENT: WH})
    key_file = tmp_path / "agent.key"
    assert coordinator_cli(["gateway", "key", AGENT, "--out", str(key_file),
                            "--db", str(db_path)]) == 0
    assert key_file.stat().st_mode & 0o077 == 0  # the gateway's secret: owner only
    raw = config_dict(tmp_path, broker.url, broker.url, topics)
    raw["agent"]["command_key_file"] = str(key_file)
    agent = EdgeAgent(AgentConfig.model_validate(raw), clock=ManualClock(datetime.now(UTC)),
                      topics=topics)
    operator = headers_for(db_path, Role.OPERATOR, name="duty-lead")
    app = ops_app(settings_for(db_path, broker.url, topics), ops_config(tmp_path),
                  ManualClock(datetime.now(UTC)))
    path = f"/warehouses/{WH}/breakers/cold_chain/commands"
    async with Collector(broker.url, [topics.audit(WH)]) as audits, serving(app) as url, \
            httpx.AsyncClient(base_url=url, headers=operator, timeout=15) as http:
        task = asyncio.create_task(agent.run())
        try:
            await wait_until(lambda: agent.stats.uplink_connected, what="agent connected")
            await wait_until(lambda: app.state.ops.watcher.connected.is_set(),
                             what="coordinator connected")
            sent = await http.post(path, json={"command": "inhibit", "reason": "defrost",
                                               "minutes": 30})
            assert sent.status_code == 202, sent.text
            await wait_until(lambda: len(audits.messages) == 1, what="the agent's audit")
            # the registry's key changes; the agent still holds the old one
            assert coordinator_cli(["gateway", "rotate-key", AGENT, "--out",
                                    str(tmp_path / "new.key"), "--db", str(db_path)]) == 0
            again = await http.post(path, json={"command": "release", "reason": "done"})
            assert again.status_code == 202
            await wait_until(lambda: len(audits.messages) == 2, what="the second audit")
        finally:
            await cancel_and_wait(task)
    records = [AuditRecord.model_validate_json(m.payload) for m in audits.messages]
    assert [(r.outcome, r.actor) for r in records] == [("applied", "token:duty-lead"),
                                                       ("refused", "token:duty-lead")]
    assert records[1].detail == "bad_signature"
    key = key_file.read_text().strip()
    assert all(key.encode() not in m.payload for m in audits.messages)
