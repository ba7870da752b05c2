"""Shipped scenarios through the real MQTT path: the test broker, one real edge agent per
warehouse (in-process, sharing the replay's ManualClock) and, where the outcome is the
coordinator's, the real coordinator with its ops side served by uvicorn on 127.0.0.1
(``simulators.inprocess_coordinator.start_coordinator``) on a SQLite file in tmp_path.

Windows are cut with ``start=``/``until=`` so the whole file runs in seconds; each cut
keeps what the assertion needs (e.g. the freezing-rain replay starts at 02:05, well
before cold room 2 crosses 8 °C at 02:12).
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from protocols import Topics
from protocols.clock import ManualClock
from simulators.brokers import Broker
from simulators.event_stream import events
from simulators.events import Event, Outage, ScenarioReading
from simulators.harness import AgentLike, UplinkOutageRun, run_scenario
from simulators.inprocess_coordinator import RunningCoordinator, start_coordinator
from simulators.orders import post_orders, targeted_orders
from simulators.reference import sustained_trips
from simulators.region import builtin_region, default_region
from simulators.scenario_files import load_scenario
from tests.auth import ADMIN

agent_module = pytest.importorskip("edge_agent.agent")
config_module = pytest.importorskip("edge_agent.config")
pytest.importorskip("coordinator.ops.app")

pytestmark = [pytest.mark.broker, pytest.mark.slow]
REGION = builtin_region()
INCIDENT = "WH-02"


def _agent(path: Path, clock: ManualClock, topics: Topics) -> AgentLike:
    agent: AgentLike = agent_module.EdgeAgent(
        config_module.load_config(path), clock=clock, topics=topics
    )
    return agent


@asynccontextmanager
async def _coordinator(
    workdir: Path, broker: Broker, topics: Topics, clock: ManualClock
) -> AsyncIterator[RunningCoordinator]:
    running = await start_coordinator(workdir / "coordinator", broker.url, topics, clock)
    assert running is not None
    try:
        yield running
    finally:
        await running.stop()


async def _wait_for(condition: str, check: object, timeout_s: float = 15.0) -> None:
    """Poll ``check()`` (a coroutine function returning bool) until true."""
    assert callable(check)
    deadline = time.monotonic() + timeout_s
    while not await check():
        if time.monotonic() > deadline:
            pytest.fail(f"not within {timeout_s} s: {condition}")
        await asyncio.sleep(0.05)


def _rows(db_path: Path, sql: str, params: tuple[object, ...] = ()) -> list[sqlite3.Row]:
    with sqlite3.connect(f"file:{db_path}?mode=ro", uri=True) as conn:
        conn.row_factory = sqlite3.Row
        return list(conn.execute(sql, params))


def _infeasible_lines(db_path: Path, order_ids: list[str]) -> list[str]:
    """Lines of allocated orders that sit somewhere they cannot be served from."""
    marks = ",".join("?" * len(order_ids))
    rows = _rows(
        db_path,
        "SELECT o.id, o.status, l.line_no, l.sku_id, l.qty, l.warehouse_id AS wh,"
        " w.available, w.cold_chain AS wh_cold, s.cold_chain AS sku_cold,"
        " (SELECT COALESCE(SUM(r.qty), 0) FROM reservations r WHERE r.order_id = o.id"
        "   AND r.line_no = l.line_no AND r.warehouse_id = l.warehouse_id"
        "   AND r.status = 'held') AS held,"
        " i.on_hand, i.reserved"
        " FROM orders o JOIN order_lines l ON l.order_id = o.id"
        " JOIN skus s ON s.id = l.sku_id"
        " LEFT JOIN warehouses w ON w.id = l.warehouse_id"
        " LEFT JOIN inventory i ON i.warehouse_id = l.warehouse_id AND i.sku_id = l.sku_id"
        f" WHERE o.status = 'allocated' AND o.id IN ({marks})",
        tuple(order_ids),
    )
    bad: list[str] = []
    for r in rows:
        why = []
        if r["wh"] in (None, INCIDENT):
            why.append(f"at {r['wh']}")
        if not r["available"]:
            why.append("warehouse unavailable")
        if r["sku_cold"] and not r["wh_cold"]:
            why.append("cold item at a dry warehouse")
        if r["held"] < r["qty"] or r["on_hand"] is None or r["reserved"] > r["on_hand"]:
            why.append(f"stock: held {r['held']} of {r['qty']}")
        if why:
            bad.append(f"{r['id']}#{r['line_no']}: " + ", ".join(why))
    return bad


async def test_freezing_rain_trips_cold_chain_at_0217_and_nothing_else(
    broker: Broker, topics: Topics, tmp_path: Path
) -> None:
    scenario = load_scenario("freezing_rain_night")
    run = await run_scenario(
        scenario, broker_url=broker.url, topics=topics, workdir=tmp_path,
        agent_factory=_agent, region=REGION, start=scenario.at("02:05"),
        until=scenario.at("02:25"),
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
        agent_factory=_agent, region=REGION, junk_every=7, start=scenario.at("02:05"),
        until=scenario.at("02:20"),
    )  # fmt: skip
    assert run.replay.junk > 30
    trips = [(e.warehouse_id, e.breaker, e.event_time) for e in run.trips()]
    assert trips == [("WH-02", "cold_chain", scenario.at("02:17"))]


async def test_freezing_rain_moves_every_unshipped_order_to_a_feasible_backup(
    broker: Broker, topics: Topics, tmp_path: Path
) -> None:
    """The whole chain: reading -> agent -> BreakerEvent -> coordinator -> reroute. Every
    unshipped WH-02 order ends at an available, cold-chain, stocked backup or in
    needs_attention with a reason; shipped ones stay; nothing is allocated to WH-02
    after the trip (new orders next to it included)."""
    scenario = load_scenario("freezing_rain_night")
    region = default_region()
    start = scenario.at("02:05")
    clock = ManualClock(start)
    waiting = targeted_orders(region, INCIDENT, 287, seed=11, start=scenario.start)
    async with _coordinator(tmp_path, broker, topics, clock) as coordinator:
        db_path = coordinator.db_path
        posted = await post_orders(waiting, coordinator.url, batch=500, headers=ADMIN)
        held = [r["order_id"] for r in posted.results if r.get("warehouse_id") == INCIDENT]
        assert len(held) > 250, posted.results[:3]  # the engine puts them at WH-02
        async with httpx.AsyncClient(base_url=coordinator.url, headers=ADMIN, timeout=30) as http:
            shipped = held[:5]  # already left the building: they must stay where they are
            for order_id in shipped:
                answer = await http.post(f"/orders/{order_id}/events", json={"kind": "shipped"})
                assert answer.status_code == 200, answer.text
            unshipped = held[5:]
            run = await run_scenario(
                scenario, broker_url=broker.url, topics=topics, workdir=tmp_path / "edge",
                agent_factory=_agent, region=region, start=start,
                until=scenario.at("02:18"), clock=clock,
            )  # fmt: skip
            trips = [(e.warehouse_id, e.breaker, e.event_time) for e in run.trips()]
            assert trips == [(INCIDENT, "cold_chain", scenario.at("02:17"))]

            async def rerouted() -> bool:
                left = await http.get(
                    "/orders", params={"status": "allocated", "warehouse_id": INCIDENT}
                )
                return left.status_code == 200 and left.json() == []

            await _wait_for("no allocated order left at WH-02", rerouted)
            availability = (await http.get(f"/warehouses/{INCIDENT}/availability")).json()
            assert availability["available"] is False, availability

            marks = ",".join("?" * len(unshipped))
            states = _rows(
                db_path,
                f"SELECT id, status, status_reason, warehouse_id FROM orders WHERE id IN ({marks})",
                tuple(unshipped),
            )
            by_status: dict[str, int] = {}
            for row in states:
                by_status[row["status"]] = by_status.get(row["status"], 0) + 1
                if row["status"] == "needs_attention":
                    assert row["status_reason"], dict(row)
                else:
                    assert row["status"] == "allocated", dict(row)
                    assert row["warehouse_id"] != INCIDENT
            assert sum(by_status.values()) == len(unshipped)
            assert by_status.get("allocated", 0) > 0, by_status
            assert _infeasible_lines(db_path, unshipped) == []
            stayed = _rows(
                db_path,
                f"SELECT status, warehouse_id FROM orders WHERE id IN ({','.join('?' * 5)})",
                tuple(shipped),
            )
            assert [(r["status"], r["warehouse_id"]) for r in stayed] == [("shipped", INCIDENT)] * 5

            # New orders right next to the tripped warehouse, after the trip.
            clock.set(scenario.at("02:30"))
            late = targeted_orders(region, INCIDENT, 40, seed=12, start=scenario.at("02:30"))
            after = await post_orders(late, coordinator.url, batch=100, headers=ADMIN)
            assert len(after.results) == 40, after.errors
            assert all(r.get("warehouse_id") != INCIDENT for r in after.results)
            assert {r.get("status") for r in after.results} <= {
                "allocated",
                "unallocated",
                "needs_attention",
            }
    trip_at = scenario.at("02:17")
    decisions = _rows(
        db_path, "SELECT order_id, decided_at, outcome, warehouse_ids FROM allocation_decisions"
    )
    late_to_incident = [
        dict(d)
        for d in decisions
        if datetime.fromisoformat(d["decided_at"]) >= trip_at
        and INCIDENT in json.loads(d["warehouse_ids"])
    ]
    assert late_to_incident == []
    reroutes = [d for d in decisions if datetime.fromisoformat(d["decided_at"]) >= trip_at]
    assert len(reroutes) >= len(unshipped) + 40


async def test_power_cut_trips_the_silent_site_by_silence(
    broker: Broker, topics: Topics, tmp_path: Path
) -> None:
    scenario = load_scenario("power_cut")
    run = await run_scenario(
        scenario, broker_url=broker.url, topics=topics, workdir=tmp_path,
        agent_factory=_agent, region=REGION, start=scenario.at("00:55"),
        until=scenario.at("01:25"),
    )  # fmt: skip
    trips = run.trips()
    assert [(e.warehouse_id, e.breaker) for e in trips] == [("WH-05", "cold_chain")]
    trip = trips[0]
    assert trip.reason == "sensor_silent"
    # silent from 01:10; the last readings were at 01:09:30 and the limit is 600 s
    assert scenario.at("01:19:30") <= trip.event_time <= scenario.at("01:21")


async def test_noisy_morning_trips_nothing(broker: Broker, topics: Topics, tmp_path: Path) -> None:
    scenario = load_scenario("noisy_normal_day")
    # both defrost cycles (01:00 and 02:00, 25 min each) and ~16 door spikes per room
    until = scenario.at("02:45")
    run = await run_scenario(
        scenario, broker_url=broker.url, topics=topics, workdir=tmp_path,
        agent_factory=_agent, region=REGION, until=until,
    )  # fmt: skip
    assert run.replay.readings > 1500
    above = [
        e
        for e in events(scenario, REGION)
        if isinstance(e, ScenarioReading)
        and e.zone.startswith("cold_room")
        and e.at <= until
        and dict(e.values).get("temperature_c", 0) > 8
    ]
    assert len(above) > 10  # the agents did see excursions above the limit, all short
    assert run.trips() == []


async def test_courier_silence_trips_courier_stale_at_wh03(
    broker: Broker, topics: Topics, tmp_path: Path
) -> None:
    """Tracking goes over MQTT (the replayer publishes TrackingUpdate on the tracking
    topic) to the coordinator's ops watcher; 30 min without sf-express updates from
    14:00 must trip courier_stale for WH-03, and nothing else may trip."""
    scenario = load_scenario("courier_silence")
    region = default_region()
    start = scenario.at("13:54")  # every sf-express shipment reports (each 120 s) before 14:00
    clock = ManualClock(start)
    async with _coordinator(tmp_path, broker, topics, clock) as coordinator:
        run = await run_scenario(
            scenario, broker_url=broker.url, topics=topics, workdir=tmp_path / "edge",
            agent_factory=_agent, region=region, start=start, until=scenario.at("14:33"),
            clock=clock,
        )  # fmt: skip
        assert run.replay.tracking > 0
        assert run.trips() == []  # no sensor breaker
        async with httpx.AsyncClient(base_url=coordinator.url, headers=ADMIN, timeout=30) as http:

            async def stale() -> bool:
                body = (await http.get("/warehouses/WH-03/availability")).json()
                return body.get("available") is False

            await _wait_for("WH-03 unavailable", stale)
            body = (await http.get("/warehouses/WH-03/availability")).json()
            holds = [h for h in body["holds"] if h["hold"].startswith("courier_stale")]
            assert [h["hold"] for h in holds] == ["courier_stale:sf-express"], body
            # 30 minutes after the last sf-express update (shortly after 14:00)
            since = datetime.fromisoformat(holds[0]["since"])
            assert scenario.at("14:30") <= since <= scenario.at("14:33"), since
            for other in ("WH-01", "WH-02", "WH-04"):
                body = (await http.get(f"/warehouses/{other}/availability")).json()
                assert body["available"] is True, body


async def test_trip_during_uplink_outage_reaches_the_coordinator_after_reconnect(
    broker: Broker, topics: Topics, tmp_path: Path
) -> None:
    """WH-02's uplink is cut from 02:16:00 to 02:17:30 (a real dropped connection through
    the harness's relay, reconnects refused). The agent trips cold_chain at 02:17:00 while
    cut off; the coordinator hears nothing until the uplink is back, then gets the trip
    with its original event time, and reroutes at 02:17:30. Every breaker event of every
    agent reaches the wire and the coordinator exactly once."""
    scenario = load_scenario("freezing_rain_night")
    region = default_region()
    start, cut, back = scenario.at("02:05"), scenario.at("02:16"), scenario.at("02:17:30")
    trip_at = scenario.at("02:17")
    clock = ManualClock(start)
    agents: list[Any] = []  # EdgeAgent: breaker_states() and all of its stats

    def factory(path: Path, clock: ManualClock, topics: Topics) -> AgentLike:
        agent = _agent(path, clock, topics)
        agents.append(agent)
        return agent

    async with _coordinator(tmp_path, broker, topics, clock) as coordinator:
        waiting = targeted_orders(region, INCIDENT, 40, seed=21, start=scenario.start)
        posted = await post_orders(waiting, coordinator.url, batch=100, headers=ADMIN)
        held = [r["order_id"] for r in posted.results if r.get("warehouse_id") == INCIDENT]
        assert len(held) > 30, posted.results[:3]
        async with httpx.AsyncClient(base_url=coordinator.url, headers=ADMIN, timeout=30) as http:

            async def availability() -> dict[str, Any]:
                body: dict[str, Any] = (
                    await http.get(f"/warehouses/{INCIDENT}/availability")
                ).json()
                return body

            before_restore: list[dict[str, Any]] = []
            tripped_offline: list[bool] = []

            async def at_outage_end(event: Event) -> None:
                if isinstance(event, Outage) and not event.active:
                    # the agent tripped at 02:17:00, but the coordinator has not heard
                    incident = next(a for a in agents if a.warehouse_id == INCIDENT)
                    tripped_offline.append(
                        incident.breaker_states()["cold_chain"][1]
                    )
                    before_restore.append(await availability())

            after_restore: list[dict[str, Any]] = []

            async def restored(outage: UplinkOutageRun) -> None:
                async def unavailable() -> bool:
                    return (await availability())["available"] is False

                await _wait_for("WH-02 unavailable once its uplink is back", unavailable)
                after_restore.append(await availability())

            run = await run_scenario(
                scenario, broker_url=broker.url, topics=topics, workdir=tmp_path / "edge",
                agent_factory=factory, region=region, start=start, until=scenario.at("02:20"),
                clock=clock, on_event=at_outage_end, on_uplink_restored=restored,
            )  # fmt: skip

            async def rerouted() -> bool:
                left = await http.get(
                    "/orders", params={"status": "allocated", "warehouse_id": INCIDENT}
                )
                return left.status_code == 200 and left.json() == []

            await _wait_for("no allocated order left at WH-02", rerouted)
    db_path = coordinator.db_path

    # the outage was enacted: cut at 02:16, back at 02:17:30, the trip queued meanwhile
    [outage] = run.uplink_outages
    assert (outage.warehouse, outage.cut_at, outage.restored_at) == (INCIDENT, cut, back)
    assert outage.queued >= 1 and outage.delivered_events >= 1
    assert outage.reconnect_wall_s is not None and outage.reconnect_wall_s < 5
    assert tripped_offline == [True]
    assert before_restore[0]["available"] is True, before_restore
    assert before_restore[0]["open_breakers"] == []
    [breaker] = after_restore[0]["open_breakers"]
    assert breaker["breaker"] == "cold_chain"

    # the trip keeps its event time; it came over the wire (live) only after the outage
    [trip] = run.trips()
    assert (trip.warehouse_id, trip.breaker, trip.event_time) == (INCIDENT, "cold_chain", trip_at)
    [arrived] = [
        s for s in run.events if (s.event.agent_id, s.event.seq) == (trip.agent_id, trip.seq)
    ]
    assert outage.restored_wall is not None and arrived.wall_s >= outage.restored_wall
    state = _rows(
        db_path,
        "SELECT event_time, seq FROM ops_breaker_states WHERE warehouse_id = ? AND breaker = ?",
        (INCIDENT, "cold_chain"),
    )
    assert [datetime.fromisoformat(r["event_time"]) for r in state] == [trip_at]
    processed = _rows(
        db_path,
        "SELECT agent_id, seq, open, received_at FROM ops_processed_events WHERE warehouse_id = ?",
        (INCIDENT,),
    )
    opened = [r for r in processed if r["seq"] == trip.seq]
    assert len(opened) == 1 and opened[0]["open"] == 1
    assert datetime.fromisoformat(opened[0]["received_at"]) >= back
    decisions = _rows(db_path, "SELECT decided_at FROM allocation_decisions")
    moved = [d for d in decisions if datetime.fromisoformat(d["decided_at"]) > start]
    assert moved and all(datetime.fromisoformat(d["decided_at"]) >= back for d in moved)

    # nothing lost, nothing twice: every breaker event each agent created is on the wire
    # once, and the coordinator processed exactly those
    for agent in agents:
        seqs = [s.event.seq for s in run.events if s.event.warehouse_id == agent.warehouse_id]
        assert len(seqs) == len(set(seqs)), (agent.warehouse_id, seqs)
        assert len(seqs) == agent.stats.events_created, agent.warehouse_id
        assert agent.stats.outbox_depth == 0
    wire = {(s.event.agent_id, s.event.seq) for s in run.events}
    everything = _rows(db_path, "SELECT agent_id, seq FROM ops_processed_events")
    assert {(r["agent_id"], r["seq"]) for r in everything} == wire
