"""Each class of forgery replayed through an OPEN real broker (anyone may publish), so
the coordinator's own checks are what stops them: none changes availability, each is
counted, kept as a dead letter with its reason, and raised on the WeCom robot. And the
other side of the policy: trips that are suspect but come from a registered gateway
still close the warehouse."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiomqtt
import pytest
from pydantic import BaseModel

from benchmarks.reroute import seed_orders_at
from coordinator import dashboard_state
from coordinator.db import open_database
from coordinator.ops.runner import OpsService
from protocols import Topics, encode
from protocols.clock import ManualClock
from simulators.brokers import Broker
from simulators.receiver import Receiver
from tests.coordinator.ops.factories import agent_status, breaker_event
from tests.coordinator.ops.helpers import counter, ops_config, read, settings_for, wait_for

pytestmark = pytest.mark.broker

INC_A = "a" * 32
INC_B = "b" * 32


@pytest.fixture
def robot() -> Iterator[Receiver]:
    with Receiver() as receiver:
        yield receiver


@pytest.fixture
def seeded(tmp_path: Path) -> Path:
    path = tmp_path / "coordinator.sqlite"
    db = open_database(path)
    seed_orders_at(db, "WH-02", 20, datetime.now(UTC), stock_boost=100)  # gw-WH-0N registered
    db.conn.close()
    return path


async def publish(broker: Broker, topic: str, message: BaseModel) -> None:
    async with aiomqtt.Client(broker.host, broker.port) as client:  # anonymous: open broker
        await client.publish(topic, encode(message), qos=1)


def available(path: Path) -> dict[str, bool]:
    return {r[0]: bool(r[1]) for r in read(path, "SELECT id, available FROM warehouses")}


def dead_letters(path: Path) -> list[tuple[str, str, str | None, str]]:
    return [tuple(r) for r in read(
        path, "SELECT outcome, reason, field, warehouse_id FROM security_events ORDER BY id")]


async def test_every_forgery_class_is_refused_counted_dead_lettered_and_alerted(
        broker: Broker, topics: Topics, tmp_path: Path, seeded: Path, robot: Receiver) -> None:
    clock = ManualClock(datetime.now(UTC))
    now = clock.now()
    config = ops_config(tmp_path, wecom_url=robot.url + "/wecom")
    async with OpsService(settings_for(seeded, broker.url, topics), config, clock) as ops:
        await asyncio.wait_for(ops.watcher.connected.wait(), 10)
        # the genuine gateway of WH-02 trips (its first incarnation is adopted)
        await publish(broker, topics.breaker("WH-02", "cold_chain"), breaker_event(
            seq=10, warehouse="WH-02", agent="gw-WH-02", at=now, incarnation=INC_A))
        await wait_for(lambda: not available(seeded)["WH-02"], what="the genuine trip")
        before = available(seeded)
        forgeries = [
            # a warehouse that does not exist (a flood of these buried real incidents)
            (topics.breaker("WH-99", "cold_chain"), breaker_event(
                seq=1, warehouse="WH-99", agent="gw-WH-02", at=now, incarnation=INC_A),
             "unknown_warehouse", "warehouse_id"),
            # an agent the coordinator has never registered
            (topics.breaker("WH-03", "cold_chain"), breaker_event(
                seq=1, warehouse="WH-03", agent="gw-rogue", at=now), "unregistered_agent",
             "agent_id"),
            # WH-02's gateway speaking for WH-03
            (topics.breaker("WH-03", "cold_chain"), breaker_event(
                seq=11, warehouse="WH-03", agent="gw-WH-02", at=now, incarnation=INC_A),
             "foreign_agent", "agent_id"),
            # a clear from the future with a huge seq: would make every later trip stale
            (topics.breaker("WH-02", "cold_chain"), breaker_event(
                seq=10**9, open=False, warehouse="WH-02", agent="gw-WH-02",
                at=now + timedelta(days=30), incarnation=INC_A), "future_time", "event_time"),
            # an offline status of an unknown agent (it put a real warehouse on hold)
            (topics.agent_status("WH-04", "gw-ghost"), agent_status(
                online=False, session_seq=1, warehouse="WH-04", agent="gw-ghost", at=now),
             "unregistered_agent", "agent_id"),
        ]
        for number, (topic, message, _, _) in enumerate(forgeries, start=1):
            await publish(broker, topic, message)
            await wait_for(lambda n=number: counter(seeded, "security_refused") == n,
                           what=f"forgery {number} refused")
        clock.advance(ops_config(tmp_path).agent_offline_grace_s + 60)  # past any grace
        await ops.call(lambda core: core.tick(clock.now()))
        assert available(seeded) == before  # WH-02 still closed, nothing else touched
        letters = dead_letters(seeded)
        assert [(r, f) for _, r, f, _ in letters] == [(r, f) for *_, r, f in forgeries]
        assert {o for o, *_ in letters} == {"refuse"}
        assert read(seeded, "SELECT count(*) FROM ops_incidents WHERE warehouse_id "
                            "IN ('WH-99', 'WH-03', 'WH-04')") == [(0,)]
        # a later genuine trip is still honoured: the forged clear's seq was never recorded
        await publish(broker, topics.breaker("WH-02", "humidity"), breaker_event(
            seq=12, warehouse="WH-02", agent="gw-WH-02", breaker="humidity", at=now,
            incarnation=INC_A))
        await wait_for(lambda: read(seeded, "SELECT count(*) FROM ops_breaker_states WHERE "
                                            "warehouse_id = 'WH-02' AND open = 1") == [(2,)],
                       what="the genuine humidity trip")
        await wait_for(lambda: len(robot.accepted("/wecom")) >= 5, what="the alerts")
        shown = await ops.call(lambda core: dashboard_state.state(core.db)["security"])
        assert shown["by_outcome"] == {"refuse": 5}
        assert {e["reason"] for e in shown["recent"]} >= {"unknown_warehouse", "foreign_agent"}
    alerts = "\n".join(str(r.body) for r in robot.accepted("/wecom"))
    for reason in ("unknown_warehouse", "unregistered_agent", "foreign_agent", "future_time"):
        assert reason in alerts


async def test_suspect_trips_from_a_registered_gateway_still_close_the_warehouse(
        broker: Broker, topics: Topics, tmp_path: Path, seeded: Path, robot: Receiver) -> None:
    clock = ManualClock(datetime.now(UTC))
    now = clock.now()
    config = ops_config(tmp_path, wecom_url=robot.url + "/wecom")
    async with OpsService(settings_for(seeded, broker.url, topics), config, clock) as ops:
        await asyncio.wait_for(ops.watcher.connected.wait(), 10)
        # a gateway whose clock runs a day ahead trips: applied at receive time, flagged
        await publish(broker, topics.breaker("WH-05", "cold_chain"), breaker_event(
            seq=1, warehouse="WH-05", agent="gw-WH-05", at=now + timedelta(days=1),
            incarnation=INC_A))
        await wait_for(lambda: not available(seeded)["WH-05"], what="the far-future trip")
        [(since,)] = read(seeded, "SELECT event_time FROM ops_breaker_states "
                                  "WHERE warehouse_id = 'WH-05'")
        assert abs(datetime.fromisoformat(since) - now) < timedelta(seconds=5)
        # WH-06's gateway is known in incarnation A; a replaced one (B) trips before
        # anyone confirmed it: the trip applies, its clear waits
        await publish(broker, topics.agent_status("WH-06", "gw-WH-06"), agent_status(
            online=True, session_seq=1, warehouse="WH-06", agent="gw-WH-06", at=now,
            incarnation=INC_A))
        await wait_for(lambda: read(seeded, "SELECT incarnation FROM gateways WHERE "
                                            "agent_id = 'gw-WH-06'") == [(INC_A,)],
                       what="incarnation A adopted")
        await publish(broker, topics.breaker("WH-06", "cold_chain"), breaker_event(
            seq=1, warehouse="WH-06", agent="gw-WH-06", at=now, incarnation=INC_B))
        await wait_for(lambda: not available(seeded)["WH-06"], what="the new incarnation's trip")
        await publish(broker, topics.breaker("WH-06", "cold_chain"), breaker_event(
            seq=2, open=False, warehouse="WH-06", agent="gw-WH-06",
            at=now + timedelta(seconds=1), incarnation=INC_B))
        await wait_for(lambda: counter(seeded, "security_held") == 1, what="the clear held")
        assert not available(seeded)["WH-06"]
        await ops.confirm_incarnation("gw-WH-06", actor="user:duty-lead",
                                      reason="SD card re-imaged")
        await wait_for(lambda: available(seeded)["WH-06"], what="the held clear applied")
    letters = dead_letters(seeded)
    assert ("apply_flagged", "future_time", "event_time", "WH-05") in letters
    assert ("apply_flagged", "new_incarnation", "incarnation", "WH-06") in letters
    assert ("hold", "new_incarnation", "incarnation", "WH-06") in letters
    assert counter(seeded, "security_flagged") == 2
    audit = read(seeded, "SELECT action, actor FROM gateway_audit WHERE agent_id = 'gw-WH-06' "
                         "ORDER BY id")
    assert audit[-1] == ("confirm_incarnation", "user:duty-lead")
