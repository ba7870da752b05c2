"""Shipped scenarios through the real broker and real edge agents (in-process, one per
warehouse, sharing the replay's ManualClock). Skipped until the edge agent is merged.

The coordinator half (reroute of the 287 orders, courier_stale) is wired by the lead
after integration; see docs/simulators.md, "Demo wiring plan".
"""

from __future__ import annotations

from pathlib import Path

import pytest

from protocols import Topics
from protocols.clock import ManualClock
from simulators.brokers import Broker
from simulators.harness import AgentLike, run_scenario
from simulators.reference import sustained_trips
from simulators.region import builtin_region
from simulators.scenario import events, load_scenario

agent_module = pytest.importorskip("edge_agent.agent", reason="edge agent not merged yet")
config_module = pytest.importorskip("edge_agent.config")

pytestmark = [pytest.mark.broker, pytest.mark.slow]
REGION = builtin_region()


def _agent(path: Path, clock: ManualClock, topics: Topics) -> AgentLike:
    agent: AgentLike = agent_module.EdgeAgent(
        config_module.load_config(path), clock=clock, topics=topics
    )
    return agent


async def test_freezing_rain_trips_cold_chain_at_0217_and_nothing_else(
    broker: Broker, topics: Topics, tmp_path: Path
) -> None:
    scenario = load_scenario("freezing_rain_night")
    run = await run_scenario(
        scenario, broker_url=broker.url, topics=topics, workdir=tmp_path,
        agent_factory=_agent, region=REGION,
    )  # fmt: skip
    trips = [(e.warehouse_id, e.breaker, e.event_time) for e in run.trips()]
    assert trips == [("WH-02", "cold_chain", scenario.at("02:17"))]
    assert run.unstopped == []  # every agent stops when cancelled (the demo's Ctrl-C)
    oracle = sustained_trips(events(scenario, REGION))
    assert [t.trips_at for t in oracle] == [scenario.at("02:17")]


async def test_freezing_rain_still_trips_on_time_through_junk(
    broker: Broker, topics: Topics, tmp_path: Path
) -> None:
    scenario = load_scenario("freezing_rain_night")
    run = await run_scenario(
        scenario, broker_url=broker.url, topics=topics, workdir=tmp_path,
        agent_factory=_agent, region=REGION, junk_every=7,
    )  # fmt: skip
    assert run.replay.junk > 100
    trips = [(e.warehouse_id, e.breaker, e.event_time) for e in run.trips()]
    assert trips == [("WH-02", "cold_chain", scenario.at("02:17"))]


async def test_power_cut_trips_the_silent_site_only(
    broker: Broker, topics: Topics, tmp_path: Path
) -> None:
    scenario = load_scenario("power_cut")
    run = await run_scenario(
        scenario, broker_url=broker.url, topics=topics, workdir=tmp_path,
        agent_factory=_agent, region=REGION,
    )  # fmt: skip
    trips = run.trips()
    assert [(e.warehouse_id, e.breaker) for e in trips] == [("WH-05", "cold_chain")]
    trip = trips[0]
    assert trip.reason == "sensor_silent"
    # silent from 01:10; the last readings were at 01:09:30 and the limit is 600 s
    assert scenario.at("01:19:30") <= trip.event_time <= scenario.at("01:21")


async def test_noisy_morning_trips_nothing(broker: Broker, topics: Topics, tmp_path: Path) -> None:
    scenario = load_scenario("noisy_normal_day")
    until = scenario.at("04:30")  # both defrost cycles of WH-07 and dozens of door spikes
    run = await run_scenario(
        scenario, broker_url=broker.url, topics=topics, workdir=tmp_path,
        agent_factory=_agent, region=REGION, until=until,
    )  # fmt: skip
    assert run.replay.readings > 3000
    assert run.trips() == []
