"""The one-command demo: the freezing-rain night, replayed through the real pieces.

Phase 1 (now): broker (embedded amqtt unless ``MQTT_URL`` is set), edge configs for
every warehouse, the day's orders plus the orders waiting at the incident warehouse
(JSONL), a monitor on the contract's breaker and agent-status topics, and the scenario
replayed at speed on a shared :class:`ManualClock`, with live progress and a final report
that sets what was observed (breaker events on the wire) against what the rule must do
(:mod:`simulators.reference`).

Integration TODO for the lead (after edge_agent and coordinator are merged), in order;
each step plugs into :class:`DemoParts` so ``run_demo`` itself does not change shape:

1. ``start_coordinator``: open ``workdir/coordinator.sqlite`` (coordinator.db.
   open_database), import the sample region (coordinator/sample_region), start
   ``uvicorn`` on 127.0.0.1:<free port> in a thread (``uvicorn.Server(config)``; stop with
   ``server.should_exit = True``) with MQTT URL = the demo broker, topic root
   ``Topics()`` and the notifications file sink under ``workdir/notifications.jsonl``.
   Return the base URL and a stop callable.
2. Load orders: ``post_orders(day + waiting, base_url, batch=500)``; check that the
   waiting orders were allocated to the incident warehouse (``GET /orders/{id}``); print
   how many (the scenario says 287).
3. ``start_agents``: for each ``workdir/edge/<wh>.toml`` start the edge agent in-process
   (one asyncio task each) with ``clock=ManualClock`` shared with the replayer, local and
   uplink URL = the demo broker. Give the replayer a ``barrier`` that waits until each
   agent has processed every message published so far (agents expose a processed
   counter, or publish a sync marker and wait for its echo), so at max speed event time
   and gateway time agree.
4. On ``Outage(kind="uplink")`` events (``on_event`` hook), disconnect/reconnect that
   agent's uplink client.
5. Final report: read ``GET /metrics/summary`` (first response time, status
   transparency, self-healing rate) and ``GET /incidents`` (orders rerouted, wall time
   from the trip event's arrival to the last reroute commit, needs_attention count);
   count lines in the notifications sink; print the dashboard URL.
6. Ctrl-C: cancel the replay, stop agents, stop uvicorn, stop the broker (the ``finally``
   below already owns the broker and the monitor).
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import os
import socket
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from types import ModuleType
from typing import Any

import aiomqtt

from protocols import BreakerEvent, PayloadError, Topics, decode
from protocols.clock import ManualClock
from simulators.brokers import EmbeddedBroker, free_port
from simulators.edge_configs import write_configs
from simulators.harness import AgentFactory, AgentLike, run_scenario
from simulators.orders import (
    GeneratedOrder,
    order_stream,
    post_orders,
    targeted_orders,
    write_jsonl,
)
from simulators.reference import Trip, sustained_trips
from simulators.region import Region, default_region
from simulators.scenario import Event, Marker, Outage, Scenario, events, load_scenario, sites
from simulators.sensors import MqttPublisher, Replayer, parse_mqtt_url, parse_speed

StopFn = Callable[[], Awaitable[None]]


@dataclass
class DemoParts:
    """Pluggable pieces the integration fills in (see the module docstring)."""

    start_coordinator: Callable[[Path, str], Awaitable[tuple[str, StopFn]]] | None = None
    start_agents: Callable[[list[Path], str, ManualClock], Awaitable[StopFn]] | None = None


@dataclass
class ObservedTrip:
    event: BreakerEvent
    wall_at: float


@dataclass
class Monitor:
    """Watches breaker events on the wire, as the coordinator would."""

    topics: Topics
    trips: list[ObservedTrip] = field(default_factory=list)
    events: int = 0
    rejected: int = 0

    async def run(self, url: str, ready: asyncio.Event) -> None:
        parsed = parse_mqtt_url(url)
        async with aiomqtt.Client(
            parsed.host,
            parsed.port,
            identifier=f"bw-demo-monitor-{uuid.uuid4().hex[:8]}",
            username=parsed.username or "breakwater-demo",
            password=parsed.password,
        ) as client:
            await client.subscribe(self.topics.breaker_filter(), qos=1)
            ready.set()
            async for message in client.messages:
                self.events += 1
                payload = message.payload
                if not isinstance(payload, bytes | bytearray | str):
                    self.rejected += 1
                    continue
                try:
                    event = decode(BreakerEvent, payload)
                except PayloadError:
                    self.rejected += 1
                    continue
                if event.open and event.previous_state != event.state:
                    self.trips.append(ObservedTrip(event, time.perf_counter()))
                    print(
                        f"  !! {event.warehouse_id}/{event.breaker} {event.state.value}"
                        f" at {event.event_time.isoformat()} ({event.reason})"
                    )


def _orders(
    scenario: Scenario, region: Region
) -> tuple[list[GeneratedOrder], list[GeneratedOrder]]:
    seed = scenario.orders.seed if scenario.orders.seed is not None else scenario.seed
    day = order_stream(
        region,
        scenario.orders.background,
        seed=seed,
        start=scenario.start,
        per_day=scenario.orders.per_day,
    )
    waiting: list[GeneratedOrder] = []
    for entry in scenario.orders.waiting:
        waiting += targeted_orders(
            region, entry.warehouse, entry.count, seed=seed, start=scenario.start
        )
    return day, waiting


def _report(
    scenario: Scenario,
    expected: list[Trip],
    monitor: Monitor,
    stats_line: str,
    workdir: Path,
    waiting: int,
) -> None:
    tz = scenario.start.tzinfo
    print("\n== Breakwater demo report ==")
    print(f"scenario: {scenario.name}  ({scenario.description})")
    print(stats_line)
    print(f"orders: {waiting} waiting at the incident warehouse(s); files in {workdir}")
    print("breakers the rule must trip (reference evaluation of the replayed readings):")
    for trip in expected:
        print(
            f"  {trip.warehouse}/{trip.breaker} zone {trip.zone}: above since"
            f" {trip.crossed_at.astimezone(tz):%H:%M:%S}, trips at"
            f" {trip.trips_at.astimezone(tz):%H:%M:%S} ({trip.readings} readings)"
        )
    if not expected:
        print("  none")
    print(f"breaker events seen on the wire: {monitor.events} ({len(monitor.trips)} trips)")
    for observed in monitor.trips:
        event = observed.event
        print(
            f"  {event.warehouse_id}/{event.breaker} tripped at"
            f" {event.event_time.astimezone(tz):%H:%M:%S} event time ({event.reason})"
        )
    if monitor.events == 0:
        print("  (no edge agents are installed in this build)")


@dataclass
class RunningCoordinator:
    url: str
    stop: StopFn
    app: Any  # the FastAPI app (``app.state.ops`` is the ops service while it runs)
    db_path: Path
    sink_path: Path | None  # the franchisee notice file sink (ops side only)

    def on_reroute(self, hook: Callable[[Any], None]) -> None:
        """Call ``hook(RerouteTiming)`` for each reroute the ops side commits."""
        ops = getattr(self.app.state, "ops", None)
        if ops is None:
            raise RuntimeError("the coordinator runs without the ops side")

        def seen(result: Any) -> None:
            for timing in result.rerouted:
                hook(timing)

        ops.on_result = seen


def port_or_free(port: int | None, host: str = "127.0.0.1") -> int:
    """``port`` if it can be bound on ``host`` now, else a free one (None: a free one)."""
    if port is None:
        return free_port()
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind((host, port))
        except OSError:
            return free_port()
    return port


async def start_coordinator(
    workdir: Path,
    mqtt_url: str,
    topics: Topics,
    clock: ManualClock,
    *,
    port: int | None = None,
) -> RunningCoordinator | None:
    """The coordinator (with ops and dashboard when installed) served by uvicorn on
    127.0.0.1 in this event loop, or None if the coordinator is not installed.

    SQLite file and notification sink live in ``workdir``; the sample region is loaded;
    the coordinator shares the replay's clock, so courier silence and "received" times
    are in event time too. ``port``: that port if free, else (or when None) a free one.
    """
    try:
        import uvicorn

        catalog = importlib.import_module("coordinator.catalog")
        db_module = importlib.import_module("coordinator.db")
        region_module = importlib.import_module("coordinator.region")
        settings_module = importlib.import_module("coordinator.settings")
        app_module = importlib.import_module("coordinator.app")
    except ImportError:
        return None
    ops_app: ModuleType | None
    ops_config: ModuleType | None
    try:
        ops_app = importlib.import_module("coordinator.ops.app")
        ops_config = importlib.import_module("coordinator.ops.config")
    except ImportError:
        ops_app = ops_config = None  # the coordinator without the ops side
    os.makedirs(workdir, exist_ok=True)
    db_path = workdir / "coordinator.sqlite"
    db = db_module.open_database(str(db_path))
    for name in region_module.SAMPLE_FILES:
        catalog.import_file(db, region_module.SAMPLE_DIR / f"{name}.csv", clock.now())
    db.conn.close()
    chosen = port_or_free(port)
    settings = settings_module.Settings(
        db_path=str(db_path), host="127.0.0.1", port=chosen, mqtt_url=mqtt_url,
        topic_root=topics.root,
    )  # fmt: skip
    sink: Path | None = None
    if ops_app is not None and ops_config is not None:
        sink = workdir / "notifications" / "franchisee.jsonl"
        config = ops_config.OpsConfig.model_validate(
            {"notify": {"franchisee": {"jsonl_path": str(sink)}}}
        )
        app = ops_app.create_app_with_ops(settings, clock=clock, config=config)
    else:
        app = app_module.create_app(settings, clock=clock)
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=chosen, log_level="warning", access_log=False)
    )
    # In the main thread uvicorn captures SIGINT while serving: Ctrl-C shuts the server
    # down (lifespan: ops service stopped) and is then raised again, reaching asyncio.run.
    task = asyncio.create_task(server.serve())
    deadline = time.monotonic() + 30
    while not server.started:
        if task.done():
            task.result()
            raise RuntimeError("the coordinator stopped while starting")
        if time.monotonic() > deadline:
            raise RuntimeError("the coordinator did not start within 30 s")
        await asyncio.sleep(0.02)

    async def stop() -> None:
        server.should_exit = True
        with contextlib.suppress(Exception, asyncio.CancelledError):
            await asyncio.wait_for(task, 10)

    return RunningCoordinator(f"http://127.0.0.1:{chosen}", stop, app, db_path, sink)


def edge_agent_factory() -> AgentFactory | None:
    """Real edge agents when the edge_agent package is installed, else None."""
    try:
        agent_module = importlib.import_module("edge_agent.agent")
        config_module = importlib.import_module("edge_agent.config")
    except ImportError:
        return None

    def build(path: Path, clock: ManualClock, topics: Topics) -> AgentLike:
        config = config_module.load_config(path)
        agent: AgentLike = agent_module.EdgeAgent(config, clock=clock, topics=topics)
        return agent

    return build


async def _demo(
    scenario: Scenario, region: Region, speed: float | None, workdir: Path, url: str
) -> int:
    topics = Topics()
    day, waiting = _orders(scenario, region)
    write_jsonl(day, workdir / "orders-day.jsonl")
    write_jsonl(waiting, workdir / "orders-waiting.jsonl")
    print(f"orders: {len(day)} for the day, {len(waiting)} waiting -> {workdir}")
    expected = sustained_trips(events(scenario, region))
    tz = scenario.start.tzinfo

    async def narrate(event: Event) -> None:
        if isinstance(event, Marker):
            print(f"  [{event.at.astimezone(tz):%H:%M:%S}] {event.label}")
        elif isinstance(event, Outage):
            state = "starts" if event.active else "ends"
            print(f"  [{event.at.astimezone(tz):%H:%M:%S}] {event.kind} outage {state}"
                  f" at {event.warehouse}")  # fmt: skip

    factory = edge_agent_factory()
    monitor = Monitor(topics)
    clock = ManualClock(scenario.start)
    coordinator = await start_coordinator(workdir, url, topics, clock)
    summary_lines: list[str] = []
    if coordinator is not None:
        print(f"coordinator: {coordinator.url} (docs at {coordinator.url}/docs)")
        posted = await post_orders(day, coordinator.url, batch=500)
        shipped = await _ship(coordinator.url, posted.results)
        held = await post_orders(waiting, coordinator.url, batch=500)
        at: dict[str, int] = {}
        for row in held.results:
            at[str(row.get("warehouse_id"))] = at.get(str(row.get("warehouse_id")), 0) + 1
        print(
            f"orders: {posted.sent} of the day posted and {shipped} of them shipped;"
            f" {held.sent} waiting: " + ", ".join(f"{n} at {wh}" for wh, n in sorted(at.items()))
        )
    try:
        summary_lines = await _replay_part(
            scenario, region, speed, workdir, url, topics, monitor, factory, narrate, clock
        )
        if coordinator is not None:
            summary_lines += await _coordinator_report(coordinator.url, waiting)
    finally:
        if coordinator is not None:
            await coordinator.stop()
    stats_line = summary_lines.pop(0)
    _report(scenario, expected, monitor, stats_line, workdir, len(waiting))
    for line in summary_lines:
        print(line)
    return 0


async def _ship(base_url: str, results: list[dict[str, Any]]) -> int:
    """Mark the day's allocated orders shipped and in transit: only the waiting ones stay
    unshipped at their warehouse, as on the night of the incident."""
    import httpx

    shipped = 0
    async with httpx.AsyncClient(base_url=base_url, timeout=30) as http:
        for row in results:
            if row.get("status") != "allocated" or not row.get("order_id"):
                continue
            response = await http.post(
                f"/orders/{row['order_id']}/events", json={"kind": "shipped"}
            )
            shipped += response.status_code == 200
    return shipped


async def _coordinator_report(base_url: str, waiting: list[GeneratedOrder]) -> list[str]:
    """Where the waiting orders are now (re-posting is idempotent and answers with the
    order's current status and warehouse), and the seed's metrics."""
    import httpx

    lines = ["coordinator:"]
    async with httpx.AsyncClient(base_url=base_url, timeout=60) as http:
        response = await http.post("/orders", json=[o.body() for o in waiting])
        where: dict[str, int] = {}
        if response.status_code == 200:
            for row in response.json().get("results", []):
                key = f"{row.get('status')} at {row.get('warehouse_id')}"
                where[key] = where.get(key, 0) + 1
        lines.append(
            "  waiting orders now: " + ", ".join(f"{v} {k}" for k, v in sorted(where.items()))
        )
        response = await http.get("/metrics/summary")
        if response.status_code == 200:
            lines.append(f"  metrics: {response.json()}")
        response = await http.get("/notifications")
        if response.status_code == 200:
            body = response.json()
            count = len(body) if isinstance(body, list) else body.get("count", "?")
            lines.append(f"  notifications: {count}")
    return lines


async def _replay_part(
    scenario: Scenario,
    region: Region,
    speed: float | None,
    workdir: Path,
    url: str,
    topics: Topics,
    monitor: Monitor,
    factory: AgentFactory | None,
    narrate: Callable[[Event], Awaitable[None]],
    clock: ManualClock,
) -> list[str]:
    if factory is not None:
        print(f"edge agents: one per warehouse, in-process, configs in {workdir / 'edge'}")
        run = await run_scenario(
            scenario,
            broker_url=url,
            topics=topics,
            workdir=workdir / "edge",
            agent_factory=factory,
            region=region,
            speed=speed,
            on_event=narrate,
            progress=None,
            clock=clock,
        )
        stats = run.replay
        monitor.events = len(run.events)
        monitor.trips = [ObservedTrip(e.event, e.wall_s) for e in run.events if e.event.open]
        monitor.trips = [t for t in monitor.trips if t.event in run.trips()]
    else:
        config_paths = write_configs(sites(scenario, region), workdir / "edge", topics)
        print(f"edge configs: {len(config_paths)} agents -> {workdir / 'edge'}"
              " (edge_agent not installed: replaying sensors only)")  # fmt: skip
        ready = asyncio.Event()
        monitor_task = asyncio.create_task(monitor.run(url, ready))
        try:
            await asyncio.wait_for(ready.wait(), timeout=10)
            client_id = f"bw-demo-sensors-{uuid.uuid4().hex[:8]}"
            async with MqttPublisher(url, client_id=client_id) as publisher:
                replayer = Replayer(
                    scenario, publisher, clock, speed, region=region, topics=topics,
                    on_event=narrate,
                )  # fmt: skip
                stats = await replayer.run()
            await asyncio.sleep(0.5)  # let the last breaker events arrive
        finally:
            monitor_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, aiomqtt.MqttError):
                await monitor_task
    formats = ", ".join(f"{k} {v}" for k, v in sorted(stats.by_format.items()))
    line = (
        f"replayed {stats.events} events ({stats.messages} sensor messages: {formats})"
        f" in {stats.wall_s:.2f} s"
    )
    return [line]


def run_demo(
    *,
    scenario: str = "freezing_rain_night",
    speed: str = "max",
    workdir: Path | None = None,
    region: Region | None = None,
    parts: DemoParts | None = None,
) -> int:
    """Run the demo; returns the exit code. Cleans up everything it started on Ctrl-C.

    ``parts`` will carry the coordinator and agent starters once integrated (TODO 1-3).
    """
    del parts  # wired by the integration (see module docstring)
    loaded = load_scenario(scenario)
    used_region = region or default_region()
    folder = workdir or Path(tempfile.mkdtemp(prefix="breakwater-demo-"))
    folder.mkdir(parents=True, exist_ok=True)
    url = os.environ.get("MQTT_URL")
    broker: EmbeddedBroker | None = None
    if not url:
        broker = EmbeddedBroker()
        broker.start()
        url = broker.url
        print(f"embedded MQTT broker on {url} (set MQTT_URL to use your own)")
    else:
        print(f"using MQTT broker {url}")
    started: datetime = datetime.now()
    try:
        return asyncio.run(_demo(loaded, used_region, parse_speed(speed), folder, url))
    except KeyboardInterrupt:
        print("\ninterrupted: stopping everything")
        return 130
    finally:
        if broker is not None:
            broker.close()
        print(f"demo finished in {(datetime.now() - started).total_seconds():.1f} s")
