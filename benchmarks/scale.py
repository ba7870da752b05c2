"""Scale benchmark: a fleet's reconnect storm after a broker restart.

``storm_s``: ``gateways`` real edge agents (``EdgeAgent``, the agents' own uplink code, one
state database each) are connected through a private Mosquitto to a real coordinator
process (``python -m coordinator serve``; its database a SQLite file, or PostgreSQL
with ``--db postgresql``, as for every figure here). The broker is stopped; while it is
away every agent trips its cold-chain breaker from its own sensor readings (the event
waits in its outbox); the broker is started again and the clock runs until the
coordinator has applied every gateway's breaker event. Every agent reconnects with its
birth and its event at once: the storm. ``lost`` (events never applied within the
bound) and ``applied_twice`` (warehouses with more than one incident for their one trip)
must be 0; ``redelivered`` counts the repeats the coordinator dropped by ``(agent, seq)``.
Target: under the agents' jitter window (``uplink.reconnect_max_s``) + 5 s.

Baseline, same run: ``calm_s``: the same number of breaker events (each gateway's clear)
published back to back by one connected client, applied by the same coordinator: what
applying costs without any reconnect.

``nats_*`` (full run only): the same storm on a private 3-node NATS cluster (JetStream +
MQTT; each agent given all three URLs, starting on a random one; all three nodes
restarted), bounded and reported as measured.

``failover_s``: see :mod:`benchmarks.failover`; ``intake_*``: :mod:`benchmarks.instances`.
"""

from __future__ import annotations

import asyncio
import logging
import os
import tempfile
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path

import aiomqtt

from benchmarks.databases import Databases, count
from benchmarks.failover import measure as measure_failover
from benchmarks.instances import CLIENTS
from benchmarks.instances import measure as measure_instances
from benchmarks.runner import Result
from coordinator.db import open_database, write_transaction
from coordinator.gateways.store import register
from coordinator.region import generate_region, load_region
from edge_agent.agent import EdgeAgent
from edge_agent.config import AgentConfig
from protocols import BreakerEvent, BreakerState, SensorReading, Topics, encode
from protocols.clock import ManualClock
from simulators.brokers import MosquittoBroker, free_port
from simulators.coordinators import coordinators
from simulators.nats_cluster import NatsCluster, find_nats_server

SENSOR = "t1"
ZONE = "cold"
BREAKER = "cold_chain"
JITTER_WINDOW_S = 10.0  # the agents' uplink reconnect_max_s (the default)
BOUND_S = 120.0  # a storm not applied by then is reported as lost
CALM_SEQ = 1_000_000  # the baseline's events: beyond any seq the agents reached


def agent_config(directory: Path, warehouse: str, uplinks: Sequence[str],
                 topics: Topics) -> AgentConfig:
    agent_id = f"gw-{warehouse}"
    return AgentConfig.model_validate({
        "agent": {"agent_id": agent_id, "warehouse_id": warehouse,
                  "state_db": str(directory / f"{agent_id}.sqlite"),
                  # few wake-ups: two thousand agents share one event loop here
                  "tick_interval_s": 30, "heartbeat_s": 0},
        # no local broker: readings are handed to the agent directly (as its local loop
        # would); the loop retries a closed port at its slowest pace
        "local_mqtt": {"url": f"mqtt://127.0.0.1:{_closed_port()}", "reconnect_min_s": 30,
                       "reconnect_max_s": 60},
        "uplink_mqtt": {"url": list(uplinks), "username": agent_id, "topic_root": topics.root,
                        "reconnect_max_s": JITTER_WINDOW_S},
        "sensors": [{"id": SENSOR, "zone": ZONE, "max_gap_s": 100_000}],
        "rules": [{"id": "temp_high", "zone": ZONE, "breaker": BREAKER,
                   "metric": "temperature_c", "above": 8.0, "for_s": 60, "min_readings": 2,
                   "clear_below": 7.5, "clear_for_s": 60}],
        "breakers": [{"name": BREAKER}],
    })


_CLOSED = 0


def _closed_port() -> int:
    global _CLOSED
    if not _CLOSED:
        _CLOSED = free_port()  # nothing listens there
    return _CLOSED


def query(db_path: str, sql: str) -> int:
    return count(db_path, sql)


def applied(db_path: str, *, open_: bool) -> int:
    return query(db_path, "SELECT count(DISTINCT agent_id) FROM ops_processed_events "
                          f"WHERE outcome = 'applied' AND open = {int(open_)}")


async def wait_until(check: Callable[[], bool], bound: float, every: float = 0.1) -> float:
    """Seconds until ``check()`` holds, or ``bound`` if it never did."""
    started = time.perf_counter()
    while not check():
        if time.perf_counter() - started > bound:
            return bound
        await asyncio.sleep(every)
    return time.perf_counter() - started


class Fleet:
    """``gateways`` real edge agents in this process, on a shared manual clock."""

    def __init__(self, warehouses: list[str], uplinks: Sequence[str], topics: Topics,
                 workdir: Path) -> None:
        self.clock = ManualClock(datetime.now(UTC))
        self.topics = topics
        self.agents = [
            EdgeAgent(agent_config(workdir, wh, uplinks, topics), clock=self.clock,
                      topics=topics)
            for wh in warehouses
        ]
        self.tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        self.tasks = [asyncio.create_task(a.run()) for a in self.agents]

    def connected(self) -> int:
        return sum(a.stats.uplink_connected for a in self.agents)

    def trip_all(self) -> None:
        """Each agent's rule sees 20 °C twice, 61 s apart: its breaker trips."""
        for step in range(2):
            if step:
                self.clock.advance(61)
            for agent in self.agents:
                reading = SensorReading(sensor_id=SENSOR, ts=self.clock.now(),
                                        temperature_c=20.0)
                agent.handle_sensor_message(self.topics.sensor(agent.warehouse_id, SENSOR),
                                            encode(reading))

    def delivered(self) -> bool:
        """Every agent is connected again with an empty outbox (its event has PUBACK)."""
        return all(a.stats.uplink_connected and a.stats.outbox_depth == 0
                   for a in self.agents)

    def tripped(self) -> int:
        return sum(a.breaker_states().get(BREAKER, ("", False))[1] for a in self.agents)

    async def stop(self) -> None:
        for task in self.tasks:
            task.cancel()
        while any(not t.done() for t in self.tasks):
            # aiomqtt may swallow one cancel inside wait_for (Python 3.11): ask again
            await asyncio.wait(self.tasks, timeout=2)
            for task in self.tasks:
                if not task.done():
                    task.cancel()


def seed_fleet(db_path: str, gateways: int) -> tuple[list[str], datetime]:
    """A fresh region of ``gateways`` cold-chain warehouses, each with its gateway
    registered (the coordinator refuses events of unregistered gateways); their ids, and
    the time they were written at."""
    region = generate_region(warehouses=gateways, cold_warehouses=gateways, stores=20,
                             skus=20, stock_share=0.2)
    db = open_database(db_path)
    now = datetime.now(UTC)
    try:
        load_region(db, region, now)
        warehouses = [w.id for w in region.warehouses]
        with write_transaction(db):
            for wh in warehouses:
                register(db, f"gw-{wh}", wh, actor="benchmark", now=now)
    finally:
        db.conn.close()
    return warehouses, now


async def storm(broker_restart: Callable[[], None], broker_stop: Callable[[], None],
                urls: list[str], gateways: int, workdir: Path,
                db_path: str) -> dict[str, float]:
    topics = Topics(f"bwscale-{os.getpid()}-{int(time.time())}")
    warehouses, _ = seed_fleet(db_path, gateways)
    figures: dict[str, float] = {"gateways": gateways}
    with coordinators(db_path, urls, topics.root, workdir, names=("storm",),
                      cluster=False):
        fleet = Fleet(warehouses, urls, topics, workdir / "agents")
        fleet.start()
        try:
            figures.update(await _storm(fleet, db_path, broker_stop, broker_restart,
                                        gateways))
            lifetimes = {a.agent_id: (a.stats.incarnation, a.stats.seq) for a in fleet.agents}
        finally:
            await fleet.stop()
        try:
            figures["calm_s"] = await calm(db_path, urls[0], topics, warehouses, lifetimes)
        except aiomqtt.MqttError:
            figures["calm_s"] = BOUND_S  # the broker did not even take one more client
    return figures


async def _storm(fleet: Fleet, db_path: str, broker_stop: Callable[[], None],
                 broker_restart: Callable[[], None], gateways: int) -> dict[str, float]:
    figures: dict[str, float] = {}
    births = "SELECT count(*) FROM ops_agent_sessions WHERE online = 1"
    figures["connect_s"] = await wait_until(
        lambda: fleet.connected() == gateways and query(db_path, births) == gateways,
        BOUND_S)
    broker_stop()
    fleet.trip_all()
    assert fleet.tripped() == gateways, "every agent trips on its own while away"
    await asyncio.sleep(1.0)  # every agent has noticed the broker is gone
    started = time.perf_counter()
    broker_restart()
    await wait_until(fleet.delivered, BOUND_S + JITTER_WINDOW_S, every=0.2)
    figures["delivered_s"] = time.perf_counter() - started  # the restart counts too
    await wait_until(lambda: applied(db_path, open_=True) >= gateways,
                     BOUND_S + JITTER_WINDOW_S, every=0.2)
    figures["storm_s"] = time.perf_counter() - started
    figures["lost"] = gateways - applied(db_path, open_=True)
    figures["applied_twice"] = query(
        db_path, "SELECT count(*) FROM (SELECT warehouse_id FROM ops_incidents "
                 "GROUP BY warehouse_id HAVING count(*) > 1) AS twice")
    figures["redelivered"] = query(
        db_path, "SELECT coalesce(max(value), 0) FROM ops_counters "
                 "WHERE name = 'duplicates_dropped'")
    return figures


async def calm(db_path: str, url: str, topics: Topics, warehouses: list[str],
               lifetimes: dict[str, tuple[str | None, int]]) -> float:
    """Baseline: every gateway's clear event (next seq of its lifetime) published back to
    back by one connected client; seconds until the coordinator applied them all."""
    host, port = url.removeprefix("mqtt://").split(":")
    now = datetime.now(UTC)
    async with aiomqtt.Client(host, int(port), identifier=f"calm-{topics.root}",
                              timeout=60) as client:
        started = time.perf_counter()
        for wh in warehouses:
            agent_id = f"gw-{wh}"
            incarnation, seq = lifetimes[agent_id]
            event = BreakerEvent(
                warehouse_id=wh, agent_id=agent_id, breaker=BREAKER, state=BreakerState.OK,
                open=False, reason="recovered", since=now, event_time=now, published_at=now,
                seq=seq + CALM_SEQ, session_seq=CALM_SEQ, incarnation=incarnation)
            await client.publish(topics.breaker(wh, BREAKER), encode(event), qos=1)
        calm_sql = ("SELECT count(DISTINCT agent_id) FROM ops_processed_events WHERE "
                    f"outcome = 'applied' AND open = 0 AND seq >= {CALM_SEQ}")
        await wait_until(lambda: query(db_path, calm_sql) >= len(warehouses), BOUND_S, 0.2)
        return time.perf_counter() - started


async def trips(url: str, db_path: str, workdir: Path, gateways: int, *,
                cluster: bool) -> float:
    """``gateways`` trips (one per warehouse of a fresh region) published back to back by
    one connected client to one coordinator process, with the lease off (handled as they
    arrive) or on (written to the shared inbox, applied by the leader in batches);
    seconds until all are applied."""
    topics = Topics(f"bwtrips{int(cluster)}-{os.getpid()}-{int(time.time())}")
    warehouses, now = seed_fleet(db_path, gateways)
    run_dir = workdir / f"trips-{int(cluster)}"
    run_dir.mkdir()
    host, port = url.removeprefix("mqtt://").split(":")
    with coordinators(db_path, [url], topics.root, run_dir, names=("t",), cluster=cluster):
        if cluster:
            await wait_until(lambda: query(db_path, "SELECT count(*) FROM ops_lease") > 0,
                             BOUND_S)
        async with aiomqtt.Client(host, int(port), identifier=f"trips-{topics.root}",
                                  timeout=60) as client:
            started = time.perf_counter()
            for wh in warehouses:
                event = BreakerEvent(
                    warehouse_id=wh, agent_id=f"gw-{wh}", breaker=BREAKER,
                    state=BreakerState.TRIPPED, open=True, reason="threshold_exceeded",
                    since=now, episode_id=f"ep-{wh}", seq=1, session_seq=1, event_time=now,
                    published_at=now)
                # retained, as agents publish breaker events: the instance serves HTTP
                # (and leads) before its watcher's first subscription is in place, and a
                # trip published in between would otherwise never reach it
                await client.publish(topics.breaker(wh, BREAKER), encode(event), qos=1,
                                     retain=True)
            await wait_until(lambda: applied(db_path, open_=True) >= gateways, BOUND_S, 0.2)
            return time.perf_counter() - started


def run(quick: bool, db: str = "sqlite") -> Result:
    logging.basicConfig(level=logging.CRITICAL)  # thousands of reconnect warnings
    gateways = 20 if quick else 2000
    result = Result("scale" if db == "sqlite" else f"scale_{db}")
    with tempfile.TemporaryDirectory(prefix="bw-scale-") as tmp, \
            Databases(db, Path(tmp)) as databases:  # one PostgreSQL server for the run
        work = Path(tmp) / "mosquitto"
        (work / "agents").mkdir(parents=True)
        with MosquittoBroker() as broker:
            figures = asyncio.run(storm(broker.start, broker.stop, [broker.url], gateways, work,
                                        databases.new("storm")))
        result.add("storm_s", figures["storm_s"], "s",
                   f"{gateways} agents reconnect after a Mosquitto restart, until all applied",
                   target=f"< {JITTER_WINDOW_S + 5:.0f}")
        result.add("lost", figures["lost"], "", "breaker events never applied", "0")
        result.add("applied_twice", figures["applied_twice"], "",
                   "warehouses with a second incident for one trip", "0")
        result.add("redelivered", figures["redelivered"], "", "repeats dropped by (agent, seq)")
        result.add("delivered_s", figures["delivered_s"], "s",
                   "until every agent is back with an empty outbox (broker side of the storm)")
        result.add("calm_s", figures["calm_s"], "s",
                   "baseline: the same number of events from one connected client")
        result.add("connect_s", figures["connect_s"], "s", "first connect of the whole fleet")
        with MosquittoBroker() as broker:
            alone = asyncio.run(trips(broker.url, databases.new("trips"), Path(tmp),
                                      gateways, cluster=False))
            shared = asyncio.run(trips(broker.url, databases.new("trips-cluster"),
                                       Path(tmp), gateways, cluster=True))
        result.add("trips_s", alone, "s",
                   f"{gateways} trips from one client, one instance, lease off (baseline)")
        result.add("trips_cluster_s", shared, "s",
                   "the same with the lease on: shared inbox, applied in batches by the leader")
        failover = measure_failover(quick, Path(tmp), db, databases)
        result.add("failover_s", failover["failover_s"], "s",
                   f"leader SIGKILLed -> standby applied the next breaker event (median of "
                   f"{1 if quick else 3}; lease TTL {failover['lease_ttl_s']:g} s)", "< 5")
        result.add("failover_max_s", failover["failover_max_s"], "s")
        intake = measure_instances(quick, Path(tmp), db, databases)
        where = "SQLite shared on one host" if db == "sqlite" else "one PostgreSQL database"
        note = f"{CLIENTS} clients posting orders back to back, {where}"
        result.add("intake_1_per_s", intake["intake_1_per_s"], "orders/s",
                   f"clients on instance a only (b up as standby); {note}; median of "
                   f"{intake['intake_rounds']:g} rounds alternated with the next "
                   f"(range {intake['intake_1_min_per_s']:.0f}-"
                   f"{intake['intake_1_max_per_s']:.0f})")
        result.add("intake_2_per_s", intake["intake_2_per_s"], "orders/s",
                   f"the same clients spread over both instances (range "
                   f"{intake['intake_2_min_per_s']:.0f}-{intake['intake_2_max_per_s']:.0f})")
        result.add("instances_2_over_1", intake["instances_2_over_1"], "",
                   "a second instance must not slow intake", ">= 1.0")
        result.add("oversold", intake["oversold"], "", "held reservations above stock", "0")
        # --quick leaves NATS out: its first sessions alone take minutes on 2 cores, and
        # the suite covers the cluster with the node-loss tests
        if not quick and find_nats_server() is not None:
            nats_gateways = gateways
            work = Path(tmp) / "nats"
            (work / "agents").mkdir(parents=True)
            with NatsCluster() as cluster:
                figures = asyncio.run(storm(lambda: cluster.start(ready=False), cluster.stop,
                                            cluster.urls, nats_gateways, work,
                                            databases.new("nats-storm")))
            result.add("nats_gateways", nats_gateways)
            result.add("nats_storm_s", figures["storm_s"], "s",
                       f"same storm on a 3-node NATS cluster (bound {BOUND_S:.0f} s)")
            result.add("nats_lost", figures["lost"], "", "not applied within the bound")
            result.add("nats_applied_twice", figures["applied_twice"])
            result.add("nats_connect_s", figures["connect_s"], "s")
    return result
