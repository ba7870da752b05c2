"""An incident's timeline says when the warehouse's agent lost its uplink and got it back:
agent statuses published through the real broker as an agent publishes them (a retained
birth, its last will, a birth of the next session; then heartbeats that stop), the
coordinator's liveness tracking on a manual clock, and the incident view read back."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path

import aiomqtt
import pytest

from benchmarks.reroute import seed_orders_at
from coordinator.db import open_database
from coordinator.incident_view import incident_view
from coordinator.ops.runner import OpsService
from protocols import AgentState, AgentStatus, Topics, encode
from protocols.clock import ManualClock
from protocols.timestamps import stamp
from simulators.brokers import Broker
from tests.coordinator.ops.helpers import (
    ops_config,
    read,
    register_gateways,
    settings_for,
    wait_for,
    warehouse_available,
)

pytestmark = pytest.mark.broker
WH = "WH-02"
AGENT = "gw-WH-02"
GRACE_S = 60


def _status(state: AgentState, session: int, ts: datetime,
            heartbeat_s: float | None = None) -> AgentStatus:
    return AgentStatus(warehouse_id=WH, agent_id=AGENT, state=state, session_seq=session,
                       ts=ts, graceful=False, heartbeat_s=heartbeat_s)


def _incidents(path: Path) -> list[str]:
    return [str(r[0]) for r in read(path, "SELECT incident_id FROM ops_incidents "
                                          "WHERE warehouse_id = ? ORDER BY opened_at", [WH])]


def _timeline(path: Path, incident_id: str, now: datetime) -> list[dict[str, object]]:
    db = open_database(path, migrate=False)
    try:
        return list(incident_view(db, incident_id, now)["timeline"])
    finally:
        db.conn.close()


async def test_timeline_shows_the_uplink_lost_and_regained_around_the_incident(
        broker: Broker, topics: Topics, tmp_path: Path) -> None:
    path = tmp_path / "coordinator.sqlite"
    t0 = datetime.now(UTC).replace(microsecond=0)
    db = open_database(path)
    seed_orders_at(db, WH, 5, t0, stock_boost=100)
    db.conn.close()
    register_gateways(path, {AGENT: WH}, t0)
    clock = ManualClock(t0)
    topic = topics.agent_status(WH, AGENT)

    async with OpsService(settings_for(path, broker.url, topics),
                          ops_config(tmp_path, grace_s=GRACE_S), clock) as ops, \
            aiomqtt.Client(broker.host, broker.port) as agent:
        await asyncio.wait_for(ops.watcher.connected.wait(), 10)

        async def publish(status: AgentStatus) -> None:
            await agent.publish(topic, encode(status), qos=1, retain=True)

        def online() -> bool | None:
            rows = read(path, "SELECT online, session_seq FROM ops_agent_sessions "
                              "WHERE agent_id = ?", [AGENT])
            return bool(rows[0][0]) if rows else None

        await publish(_status(AgentState.ONLINE, 1, t0))
        await wait_for(lambda: online() is True, what="the birth")
        # the link drops: the broker publishes the agent's last will
        clock.advance(30)
        lost_at = clock.now()
        await publish(_status(AgentState.OFFLINE, 1, t0))
        await wait_for(lambda: online() is False, what="the last will")
        # past the grace the warehouse is taken out of service: the incident
        clock.advance(GRACE_S + 1)
        await wait_for(lambda: not warehouse_available(path, WH), what="the offline hold")
        [incident] = _incidents(path)
        # the next session's birth: the uplink is back, the warehouse reopens
        clock.advance(120)
        back_at = clock.now()
        await publish(_status(AgentState.ONLINE, 2, back_at, heartbeat_s=20))
        await wait_for(lambda: warehouse_available(path, WH), what="the birth after the will")

        timeline = _timeline(path, incident, clock.now())
        kinds = [i["kind"] for i in timeline]
        assert kinds.count("uplink_lost") == 1 and kinds.count("uplink_regained") == 1
        lost = next(i for i in timeline if i["kind"] == "uplink_lost")
        regained = next(i for i in timeline if i["kind"] == "uplink_regained")
        assert (lost["at"], lost["agent_id"], lost["how"]) == (stamp(lost_at), AGENT,
                                                                "last_will")
        assert regained["how"] == "online_status"
        assert datetime.fromisoformat(str(regained["at"])) == back_at
        # in story order: lost, then out of service, then back, then closed
        assert (kinds.index("uplink_lost") < kinds.index("unavailable")
                < kinds.index("uplink_regained") <= kinds.index("closed"))

        # heartbeats stop without a will (a hung agent): lost at the silence hold
        clock.advance(20)
        await publish(_status(AgentState.ONLINE, 2, clock.now(), heartbeat_s=20))
        await asyncio.sleep(0.2)  # a heartbeat of a live session writes no timeline row
        assert read(path, "SELECT count(*) FROM ops_uplink_log") == [(2,)]
        clock.advance(GRACE_S + 45)
        await wait_for(lambda: not warehouse_available(path, WH), what="the silence hold")
        second = _incidents(path)[-1]
        assert second != incident
        clock.advance(10)
        await publish(_status(AgentState.ONLINE, 2, clock.now(), heartbeat_s=20))
        await wait_for(lambda: warehouse_available(path, WH), what="the heartbeat")
        timeline = _timeline(path, second, clock.now())
        mine = [(i["kind"], i["how"]) for i in timeline if str(i["kind"]).startswith("uplink")]
        # the first incident's loss is in this window too (two hours before): the story
        # around it, oldest first
        assert mine == [("uplink_lost", "last_will"), ("uplink_regained", "online_status"),
                        ("uplink_lost", "heartbeats_stopped"),
                        ("uplink_regained", "online_status")]
