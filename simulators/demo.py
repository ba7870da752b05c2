"""The one-command demo: the freezing-rain night, replayed through the real pieces.

``run_demo`` starts, in one process: the broker (embedded amqtt unless ``MQTT_URL`` is
set), the coordinator with its ops side and dashboard (``create_app_with_ops``) served by
uvicorn on 127.0.0.1 (port 8000 or ``BREAKWATER_DEMO_PORT``/``--port``; a free one when
taken) on a SQLite file with the sample region, one edge agent per warehouse (asyncio
tasks), loads the day's orders and the orders waiting at the incident warehouse, replays
the scenario at speed on one shared :class:`ManualClock` (agents and coordinator see event
time), prints live progress (markers, trips, reroutes) and a final report. Everything it
started is stopped on the way out, Ctrl-C included.

The coordinator it runs is :mod:`simulators.inprocess_coordinator`; the orders are
:mod:`simulators.demo_orders`; what it measures and the report are :mod:`simulators.demo_report`.

Without ``edge_agent`` or ``coordinator`` installed the same command replays the sensors
and reports what the rule must do (:mod:`simulators.reference`).
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
import os
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import tzinfo
from pathlib import Path
from typing import Any

import aiomqtt

from protocols import BreakerEvent, Topics
from protocols.clock import ManualClock
from simulators.brokers import EmbeddedBroker
from simulators.demo_orders import load_orders, scenario_orders
from simulators.demo_report import DemoOutcome, RerouteSeen, coordinator_report, print_report
from simulators.edge_configs import write_configs
from simulators.event_stream import events
from simulators.events import Event, Marker, Outage, ScenarioReading
from simulators.harness import (
    AgentFactory,
    AgentLike,
    BreakerWatcher,
    UplinkOutageRun,
    run_scenario,
)
from simulators.inprocess_coordinator import start_coordinator
from simulators.orders import write_jsonl
from simulators.receiver import Receiver
from simulators.reference import sustained_trips
from simulators.region import Region, default_region
from simulators.scenario import Scenario
from simulators.scenario_files import load_scenario
from simulators.sensors import MqttPublisher, Replayer, parse_speed
from simulators.sites import sites

UplinkHook = Callable[[UplinkOutageRun], Awaitable[None]]


def _print_trip(tz: tzinfo | None) -> Callable[[BreakerEvent], None]:
    """Print a breaker as it opens, in the scenario's time zone."""

    def show(event: BreakerEvent) -> None:
        if event.open and event.previous_state != event.state:
            at = event.event_time.astimezone(tz) if tz else event.event_time
            print(f"  !! {event.warehouse_id}/{event.breaker} {event.state.value}"
                  f" at {at:%H:%M:%S} event time ({event.reason})", flush=True)  # fmt: skip

    return show



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
    scenario: Scenario,
    region: Region,
    speed: float | None,
    workdir: Path,
    url: str,
    *,
    port: int | None,
    hold: bool,
    outcome: DemoOutcome,
) -> int:
    topics = Topics()
    day, waiting = scenario_orders(scenario, region)
    write_jsonl(day, workdir / "orders-day.jsonl")
    write_jsonl(waiting, workdir / "orders-waiting.jsonl")
    outcome.waiting = len(waiting)
    outcome.expected = sustained_trips(events(scenario, region))
    trip_keys = {(t.warehouse, t.zone, t.trips_at): t.warehouse for t in outcome.expected}
    tz = scenario.start.tzinfo

    async def narrate(event: Event) -> None:
        if isinstance(event, ScenarioReading):
            key = (event.warehouse, event.zone, event.at)
            if key in trip_keys and event.warehouse not in outcome.trip_readings:
                outcome.trip_readings[event.warehouse] = time.perf_counter()
        elif isinstance(event, Marker):
            print(f"  [{event.at.astimezone(tz):%H:%M:%S}] {event.label}", flush=True)
        elif isinstance(event, Outage):
            state = "starts" if event.active else "ends"
            enacted = ""
            if event.kind == "uplink" and factory is not None:
                # on_event runs just before the harness cuts or restores the uplink
                now = time.perf_counter()
                if event.active:
                    outcome.uplink_windows.append((event.warehouse, now, None, None))
                    enacted = ": agent cut off from the coordinator, breakers decide locally"
                else:
                    for i, window in enumerate(outcome.uplink_windows):
                        if window[0] == event.warehouse and window[2] is None:
                            outcome.uplink_windows[i] = (window[0], window[1], event.at, now)
                    enacted = ": uplink listening again"
            print(f"  [{event.at.astimezone(tz):%H:%M:%S}] {event.kind} outage {state}"
                  f" at {event.warehouse}{enacted}", flush=True)  # fmt: skip

    factory = edge_agent_factory()
    clock = ManualClock(scenario.start)
    inbox = Receiver(journal=workdir / "notifications" / "ops-alerts.jsonl").start()
    outcome.inbox = inbox
    try:
        coordinator = await start_coordinator(
            workdir, url, topics, clock, port=port, alerts_url=inbox.url
        )
    except BaseException:
        inbox.close()
        raise
    try:
        if coordinator is not None:
            outcome.dashboard_url = f"{coordinator.url}/"
            outcome.sink_path = coordinator.sink_path
            print(f"coordinator + dashboard: {coordinator.url}/  (API docs {coordinator.url}/docs)")
            print(f"log in as {coordinator.login[0]!r} with password "
                  f"{coordinator.login[1]!r} (this demo's database only)", flush=True)
            await load_orders(coordinator.url, coordinator.headers, coordinator.db_path,
                               clock.now(), day, waiting)

            def rerouted(timing: Any) -> None:
                seen = RerouteSeen(
                    str(timing.warehouse_id), int(timing.moved), int(timing.stuck),
                    float(timing.started), float(timing.committed),
                )  # fmt: skip
                outcome.reroutes.append(seen)
                late = outcome.reported_late(seen.warehouse)
                since = outcome.trip_readings.get(seen.warehouse)
                if late is not None:
                    took = (f" {seen.committed - late[1]:.3f} s after its uplink came back"
                            f" at {late[0].astimezone(tz):%H:%M:%S} event time")  # fmt: skip
                elif since:
                    took = f" {seen.committed - since:.3f} s after the reading"
                else:
                    took = ""
                print(f"  >> {seen.warehouse}: {seen.moved + seen.stuck} orders rerouted"
                      f" ({seen.moved} moved, {seen.stuck} needs_attention), committed{took}",
                      flush=True)  # fmt: skip

            with contextlib.suppress(RuntimeError):
                coordinator.on_reroute(rerouted)
        else:
            print(f"orders: {len(day)} for the day, {len(waiting)} waiting -> {workdir}"
                  " (coordinator not installed)")  # fmt: skip

        async def uplink_back(outage: UplinkOutageRun) -> None:
            # Event time is held here: a trip the agent kept while cut off is rerouted
            # now, at the outage's end, before the replay moves on.
            outcome.uplink_outages.append(outage)
            at = outage.restored_at.astimezone(tz) if outage.restored_at else "?"
            trips = [e for e in outage.events if e.open and not e.historical]
            if coordinator is not None and trips:
                await _wait_for_reroutes(outcome, {outage.warehouse})
            # printed after the reroute, so the order of the lines does not depend on
            # how fast the coordinator commits
            events = "breaker event" if outage.delivered_events == 1 else "breaker events"
            print(f"  [{at:%H:%M:%S}] {outage.warehouse} uplink back: agent reconnected and"
                  f" delivered its {outage.queued} queued messages ({outage.delivered_events}"
                  f" {events}) in {outage.reconnect_wall_s or 0:.2f} s wall",
                  flush=True)  # fmt: skip

        outcome.replay_line, outcome.trips = await _replay_part(
            scenario, region, speed, workdir, url, topics, factory, narrate, clock, uplink_back
        )
        if coordinator is not None:
            await _wait_for_reroutes(outcome)
            await coordinator_report(coordinator.url, coordinator.headers, waiting, outcome)
        print_report(scenario, workdir, outcome, hold=hold)
        if coordinator is not None and hold:
            print(f"\nserving {outcome.dashboard_url} until Ctrl-C", flush=True)
            await coordinator.wait()
    finally:
        if coordinator is not None:
            await coordinator.stop()
        inbox.close()
    return 0


async def _wait_for_reroutes(
    outcome: DemoOutcome, warehouses: set[str] | None = None, timeout_s: float = 20.0
) -> None:
    """The reroute commits on the coordinator's ops thread; wait for each tripped site."""
    tripped = {t.warehouse_id for t in outcome.trips} if warehouses is None else warehouses
    deadline = time.monotonic() + timeout_s
    while not tripped <= {r.warehouse for r in outcome.reroutes}:
        if time.monotonic() > deadline:
            break
        await asyncio.sleep(0.02)



async def _replay_part(
    scenario: Scenario,
    region: Region,
    speed: float | None,
    workdir: Path,
    url: str,
    topics: Topics,
    factory: AgentFactory | None,
    narrate: Callable[[Event], Awaitable[None]],
    clock: ManualClock,
    uplink_back: UplinkHook | None = None,
) -> tuple[str, list[BreakerEvent]]:
    """Replay through the agents (or sensors only); live breaker trips are printed."""
    monitor = BreakerWatcher(
        url, topics, name="bw-demo-monitor", on_event=_print_trip(scenario.start.tzinfo)
    )
    monitor_task = asyncio.create_task(monitor.run())
    trips: list[BreakerEvent] = []
    try:
        await asyncio.wait_for(monitor.ready.wait(), timeout=10)
        if factory is not None:
            print(f"edge agents: one per warehouse, in-process, configs in {workdir / 'edge'}")
            run = await run_scenario(
                scenario, broker_url=url, topics=topics, workdir=workdir / "edge",
                agent_factory=factory, region=region, speed=speed, on_event=narrate,
                progress=None, clock=clock, on_uplink_restored=uplink_back,
            )  # fmt: skip
            stats = run.replay
            trips = run.trips()
        else:
            config_paths = write_configs(sites(scenario, region), workdir / "edge", topics)
            print(f"edge configs: {len(config_paths)} agents -> {workdir / 'edge'}"
                  " (edge_agent not installed: replaying sensors only)")  # fmt: skip
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
    return line, trips


DEFAULT_PORT = 8000


def _log_to_file(path: Path) -> Path:
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.set_name(f"breakwater-demo:{path}")
    root = logging.getLogger()
    _levels[path] = root.level
    root.addHandler(handler)
    root.setLevel(min(root.level, logging.INFO))
    return path


def _stop_logging_to_file(path: Path) -> None:
    root = logging.getLogger()
    for handler in list(root.handlers):
        if handler.get_name() == f"breakwater-demo:{path}":
            root.removeHandler(handler)
            handler.close()
    root.setLevel(_levels.pop(path, root.level))


# the root logger's level before a demo run raised it (restored when the run ends)
_levels: dict[Path, int] = {}


def run_demo(
    *,
    scenario: str = "freezing_rain_night",
    speed: str = "max",
    workdir: Path | None = None,
    region: Region | None = None,
    port: int | None = None,
    hold: bool = False,
    outcome: DemoOutcome | None = None,
) -> int:
    """Run the demo; returns the exit code. Cleans up everything it started on Ctrl-C.

    ``port``: the dashboard/API port (default ``BREAKWATER_DEMO_PORT`` or 8000; a free
    one when taken). ``hold``: keep serving after the report until Ctrl-C. ``outcome``
    is filled with what was measured (tests read it).
    """
    loaded = load_scenario(scenario)
    used_region = region or default_region()
    folder = workdir or Path(tempfile.mkdtemp(prefix="breakwater-demo-"))
    folder.mkdir(parents=True, exist_ok=True)
    # the progress lines and the report are the demo's voice: the components' log records
    # (agents, coordinator, broker) go to a file, not between them
    log_file = _log_to_file(folder / "demo.log")
    print(f"component logs: {log_file}")
    if port is None:
        port = int(os.environ.get("BREAKWATER_DEMO_PORT", DEFAULT_PORT))
    url = os.environ.get("MQTT_URL")
    broker: EmbeddedBroker | None = None
    started = time.perf_counter()
    try:
        if not url:
            broker = EmbeddedBroker()
            broker.start()
            url = broker.url
            print(f"embedded MQTT broker on {url} (set MQTT_URL to use your own)")
        else:
            print(f"using MQTT broker {url}")
        return asyncio.run(
            _demo(
                loaded,
                used_region,
                parse_speed(speed),
                folder,
                url,
                port=port,
                hold=hold,
                outcome=outcome or DemoOutcome(),
            )
        )
    except KeyboardInterrupt:
        print("\ninterrupted: stopped the replay, agents, coordinator and broker")
        return 130
    finally:
        if broker is not None:
            broker.close()
        print(f"demo finished in {time.perf_counter() - started:.1f} s")
        _stop_logging_to_file(log_file)
