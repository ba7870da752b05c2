"""The one-command demo: the freezing-rain night, replayed through the real pieces.

``run_demo`` starts, in one process: the broker (embedded amqtt unless ``MQTT_URL`` is
set), the coordinator with its ops side and dashboard (``create_app_with_ops``) served by
uvicorn on 127.0.0.1 (port 8000 or ``BREAKWATER_DEMO_PORT``/``--port``; a free one when
taken) on a SQLite file with the sample region, one edge agent per warehouse (asyncio
tasks), loads the day's orders and the orders waiting at the incident warehouse, replays
the scenario at speed on one shared :class:`ManualClock` (agents and coordinator see event
time), prints live progress (markers, trips, reroutes) and a final report. Everything it
started is stopped on the way out, Ctrl-C included.

Without ``edge_agent`` or ``coordinator`` installed the same command replays the sensors
and reports what the rule must do (:mod:`simulators.reference`).
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
import os
import secrets
import socket
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, tzinfo
from pathlib import Path
from types import ModuleType
from typing import Any

import aiomqtt

from protocols import BreakerEvent, Topics
from protocols.clock import ManualClock
from simulators.brokers import EmbeddedBroker, free_port
from simulators.edge_configs import agent_id_for, write_configs
from simulators.event_stream import events
from simulators.events import Event, Marker, Outage, ScenarioReading
from simulators.harness import (
    AgentFactory,
    AgentLike,
    BreakerWatcher,
    UplinkOutageRun,
    run_scenario,
)
from simulators.inbox import LocalInbox
from simulators.orders import (
    GeneratedOrder,
    order_stream,
    post_orders,
    targeted_orders,
    write_jsonl,
)
from simulators.reference import Trip, sustained_trips
from simulators.region import Region, default_region
from simulators.scenario import Scenario
from simulators.scenario_files import load_scenario
from simulators.sensors import MqttPublisher, Replayer, parse_speed
from simulators.sites import sites

StopFn = Callable[[], Awaitable[None]]
UplinkHook = Callable[[UplinkOutageRun], Awaitable[None]]


def _print_trip(tz: tzinfo | None) -> Callable[[BreakerEvent], None]:
    """Print a breaker as it opens, in the scenario's time zone."""

    def show(event: BreakerEvent) -> None:
        if event.open and event.previous_state != event.state:
            at = event.event_time.astimezone(tz) if tz else event.event_time
            print(f"  !! {event.warehouse_id}/{event.breaker} {event.state.value}"
                  f" at {at:%H:%M:%S} event time ({event.reason})", flush=True)  # fmt: skip

    return show


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


@dataclass
class RunningCoordinator:
    url: str
    stop: StopFn
    wait: StopFn  # returns when the server stops (Ctrl-C while holding)
    app: Any  # the FastAPI app (``app.state.ops`` is the ops service while it runs)
    db_path: Path
    sink_path: Path | None  # the franchisee notice file sink (ops side only)
    headers: dict[str, str]  # the demo's own admin token (Authorization: Bearer)
    login: tuple[str, str]  # username and password of the demo's admin login

    def on_reroute(self, hook: Callable[[Any], None]) -> None:
        """Call ``hook(RerouteTiming)`` for each reroute the ops side commits."""
        ops = getattr(self.app.state, "ops", None)
        if ops is None:
            raise RuntimeError("the coordinator runs without the ops side")

        def seen(result: Any) -> None:
            for timing in result.rerouted:
                hook(timing)

        ops.on_result = seen


def _quiet_server_class() -> type[Any]:
    import uvicorn

    class QuietServer(uvicorn.Server):
        """uvicorn without its own Ctrl-C handling: in the main thread it would swallow
        SIGINT to stop only itself while the replay went on. Here Ctrl-C reaches
        ``asyncio.run``, which cancels the demo; its ``finally`` stops the server."""

        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            yield

    return QuietServer


def port_or_free(port: int | None, host: str = "127.0.0.1") -> int:
    """``port`` if it can be bound on ``host`` now, else a free one (None or 0: a free one)."""
    if not port:
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
    alerts_url: str | None = None,
) -> RunningCoordinator | None:
    """The coordinator (with ops and dashboard when installed) served by uvicorn on
    127.0.0.1 in this event loop, or None if the coordinator is not installed.

    SQLite file and notification sink live in ``workdir``; the sample region is loaded;
    the coordinator shares the replay's clock, so courier silence and "received" times
    are in event time too. ``port``: that port if free, else (or when None) a free one.
    ``alerts_url``: an HTTP receiver (:class:`simulators.inbox.LocalInbox`) that gets the
    operations alerts on ``/wecom``, ``/sms`` and ``/webhook`` in their real formats.
    """
    try:
        import uvicorn

        catalog = importlib.import_module("coordinator.catalog")
        db_module = importlib.import_module("coordinator.db")
        region_module = importlib.import_module("coordinator.region")
        settings_module = importlib.import_module("coordinator.settings")
        app_module = importlib.import_module("coordinator.app")
        serving_module = importlib.import_module("coordinator.serving")
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
    headers, login = _demo_credentials(db, clock.now())
    _register_gateways(db, clock.now())
    db.conn.close()
    chosen = port_or_free(port)
    sections: dict[str, Any] = {}
    if alerts_url is not None:
        # customers of every channel are reached through the local inbox; of the status
        # nodes only "rerouted" is sent (the day's thousands of nodes would drown it)
        route = {"route": "webhook", "url": f"{alerts_url}/customer"}
        sections["customer"] = {"message_nodes": ["rerouted"], "channels": {
            c: route for c in ("wechat_mini", "meituan", "douyin")}}
    settings = settings_module.Settings(
        db_path=str(db_path), host="127.0.0.1", port=chosen, mqtt_url=mqtt_url,
        topic_root=topics.root, sections=sections,
    )  # fmt: skip
    sink: Path | None = None
    if ops_app is not None and ops_config is not None:
        sink = workdir / "notifications" / "franchisee.jsonl"
        notify: dict[str, Any] = {"franchisee": {"jsonl_path": str(sink)}}
        if alerts_url is not None:
            notify |= {
                "wecom": {"enabled": True, "url": f"{alerts_url}/wecom"},
                "sms": {"enabled": True, "url": f"{alerts_url}/sms",
                        "phone_numbers": ["13800000000"]},
                "webhook": {"enabled": True, "url": f"{alerts_url}/webhook"},
            }  # fmt: skip
        config = ops_config.OpsConfig.model_validate({"notify": notify})
        app = ops_app.create_app_with_ops(settings, clock=clock, config=config)
    else:
        app = app_module.create_app(settings, clock=clock)
    server = _quiet_server_class()(
        uvicorn.Config(app, host="127.0.0.1", port=chosen, log_level="warning", access_log=False,
                       timeout_graceful_shutdown=serving_module.SHUTDOWN_GRACE_S)
    )
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

    async def wait() -> None:
        await asyncio.shield(task)

    return RunningCoordinator(f"http://127.0.0.1:{chosen}", stop, wait, app, db_path, sink,
                              headers, login)


def _register_gateways(db: Any, now: datetime) -> None:
    """One gateway per warehouse, named as the replayed agents are: the coordinator
    refuses breaker events from agents it has not registered."""
    gateways = importlib.import_module("coordinator.gateways.store")
    for (warehouse_id,) in db.execute("SELECT id FROM warehouses").fetchall():
        gateways.register(db, agent_id_for(warehouse_id), warehouse_id, actor="demo", now=now)


def _demo_credentials(db: Any, now: datetime) -> tuple[dict[str, str], tuple[str, str]]:
    """An admin login for the person watching (a fresh random password, printed) and an
    admin token for the demo's own requests: every endpoint wants a credential."""
    auth_store = importlib.import_module("coordinator.auth.store")
    roles = importlib.import_module("coordinator.auth.roles")
    password = secrets.token_urlsafe(12)
    auth_store.add_user(db, username="admin", password=password, role=roles.Role.ADMIN,
                        scope=roles.Scope(), now=now)
    _, token = auth_store.issue_token(db, name="demo", role=roles.Role.ADMIN,
                                      scope=roles.Scope(), now=now, created_by="demo")
    return {"Authorization": f"Bearer {token}"}, ("admin", password)


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


@dataclass
class RerouteSeen:
    warehouse: str
    moved: int
    stuck: int
    started: float  # perf_counter: the BreakerEvent's arrival at the coordinator
    committed: float  # perf_counter: the reroute transaction committed


@dataclass
class DemoOutcome:
    """What the demo measured (the report prints it; the demo test asserts on it)."""

    expected: list[Trip] = field(default_factory=list)
    trips: list[BreakerEvent] = field(default_factory=list)
    reroutes: list[RerouteSeen] = field(default_factory=list)
    # perf_counter when the reading that completed each expected trip was published
    trip_readings: dict[str, float] = field(default_factory=dict)
    waiting: int = 0
    waiting_now: dict[str, int] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    notifications: dict[str, int] = field(default_factory=dict)
    alerts: int = 0
    sink_path: Path | None = None
    sink_lines: int = 0
    dashboard_url: str | None = None
    replay_line: str = ""
    inbox: LocalInbox | None = None
    uplink_outages: list[UplinkOutageRun] = field(default_factory=list)
    # enacted uplink outages as narrated: (warehouse, cut wall, back event time, back wall)
    uplink_windows: list[tuple[str, float, datetime | None, float | None]] = field(
        default_factory=list
    )

    def reported_late(self, warehouse: str) -> tuple[datetime, float] | None:
        """When (event time, perf_counter) the uplink of ``warehouse`` came back, if its
        trip reading was published while the uplink was cut (the trip waited for it)."""
        reading = self.trip_readings.get(warehouse)
        if reading is None:
            return None
        for site, cut_wall, back_at, back_wall in self.uplink_windows:
            if site != warehouse or back_at is None or back_wall is None:
                continue
            if cut_wall <= reading < back_wall:
                return back_at, back_wall
        return None


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
    day, waiting = _orders(scenario, region)
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
    inbox = LocalInbox(workdir / "notifications" / "ops-alerts.jsonl").start()
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
            await _load_orders(coordinator.url, coordinator.headers, coordinator.db_path,
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
            await _coordinator_report(coordinator.url, coordinator.headers, waiting, outcome)
        _report(scenario, workdir, outcome, hold=hold)
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


async def _load_orders(
    base_url: str,
    headers: dict[str, str],
    db_path: Path,
    at: datetime,
    day: list[GeneratedOrder],
    waiting: list[GeneratedOrder],
) -> None:
    """The day's orders are shipped and in transit before the night, so exactly the
    waiting orders sit unshipped at the incident warehouse."""
    started = time.perf_counter()
    posted = await post_orders(day, base_url, batch=500, headers=headers)
    ids = [
        str(r["order_id"])
        for r in posted.results
        if r.get("status") == "allocated" and r.get("order_id")
    ]
    moved_on = await asyncio.to_thread(_ship_in_store, db_path, ids, at)
    held = await post_orders(waiting, base_url, batch=500, headers=headers)
    where: dict[str, int] = {}
    for row in held.results:
        key = str(row.get("warehouse_id"))
        where[key] = where.get(key, 0) + 1
    print(
        f"orders: {len(posted.results)} of the day posted, {moved_on} shipped and in transit;"
        f" {len(held.results)} waiting: "
        + ", ".join(f"{n} at {wh}" for wh, n in sorted(where.items()))
        + f"  ({time.perf_counter() - started:.1f} s)",
        flush=True,
    )


def _ship_in_store(db_path: Path, order_ids: list[str], at: datetime) -> int:
    """Mark orders shipped, then in transit, with the coordinator's own ledger function
    (what ``POST /orders/{id}/events`` runs), in one write transaction: 4,000 HTTP calls
    would take the demo tens of seconds on a shared machine for nothing it shows."""
    db_module = importlib.import_module("coordinator.db")
    ledger = importlib.import_module("coordinator.ledger")
    db = db_module.open_database(str(db_path))
    try:
        with db_module.write_transaction(db):
            for order_id in order_ids:
                ledger.record_status_event(db, order_id, "shipped", at)
                ledger.record_status_event(db, order_id, "in_transit", at)
    finally:
        db.conn.close()
    return len(order_ids)


async def _coordinator_report(
    base_url: str, headers: dict[str, str], waiting: list[GeneratedOrder], outcome: DemoOutcome
) -> None:
    """Where the waiting orders are now (re-posting is idempotent and answers with the
    order's current status and warehouse), the seed's metrics, notices and alerts."""
    import httpx

    async with httpx.AsyncClient(base_url=base_url, headers=headers, timeout=60) as http:
        response = await http.post("/orders", json=[o.body() for o in waiting])
        if response.status_code == 200:
            for row in response.json().get("results", []):
                key = f"{row.get('status')} at {row.get('warehouse_id') or '-'}"
                outcome.waiting_now[key] = outcome.waiting_now.get(key, 0) + 1
        # customers ask where their order is (by the channel's order number): each gets
        # the status at once, and the reply goes to the channel (the first response)
        for order in waiting[:INQUIRIES]:
            await http.post("/inquiries", json={"channel": order.channel.value,
                                                "channel_order_id": order.channel_order_id,
                                                "question": "我的订单到哪了"})
        # let the dispatcher deliver the queued notices (file sink: milliseconds)
        deadline = time.monotonic() + 5
        while True:
            response = await http.get("/metrics/summary")
            if response.status_code != 200:
                break
            outcome.metrics = response.json()
            pending = sum(
                by.get("pending", 0) for by in outcome.metrics.get("notifications", {}).values()
            )
            if pending == 0 or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.1)
        for kind, by in outcome.metrics.get("notifications", {}).items():
            for status, n in by.items():
                outcome.notifications[f"{kind} {status}"] = int(n)
        # open: the alert's order still waits (a retry may have placed it since)
        response = await http.get("/alerts", params={"open": "true", "limit": 1000})
        if response.status_code == 200:
            body = response.json()
            outcome.alerts = len(body) if isinstance(body, list) else int(body.get("count", 0))
    if outcome.sink_path is not None and outcome.sink_path.exists():
        with outcome.sink_path.open(encoding="utf-8") as sink:
            outcome.sink_lines = sum(1 for _ in sink)


INQUIRIES = 20  # customers of waiting orders who ask where their order is


def _pct(value: Any) -> str:
    return f"{value:.1%}" if isinstance(value, int | float) else "n/a"


def _report(scenario: Scenario, workdir: Path, outcome: DemoOutcome, *, hold: bool) -> None:
    tz = scenario.start.tzinfo
    print("\n== Breakwater demo report ==")
    print(f"scenario: {scenario.name}  ({scenario.description})")
    print(outcome.replay_line)
    print("breakers the rule must trip (reference evaluation of the replayed readings):")
    for trip in outcome.expected:
        print(
            f"  {trip.warehouse}/{trip.breaker} zone {trip.zone}: above since"
            f" {trip.crossed_at.astimezone(tz):%H:%M:%S}, trips at"
            f" {trip.trips_at.astimezone(tz):%H:%M:%S} ({trip.readings} readings)"
        )
    if not outcome.expected:
        print("  none")
    for outage in outcome.uplink_outages:
        cut = f"{outage.cut_at.astimezone(tz):%H:%M:%S}"
        back = f"{outage.restored_at.astimezone(tz):%H:%M:%S}" if outage.restored_at else "end"
        print(f"uplink cut at {outage.warehouse} {cut}-{back} event time: {outage.queued}"
              " messages kept in the agent's outbox, all delivered after reconnecting"
              f" ({outage.reconnect_wall_s or 0:.2f} s wall)")  # fmt: skip
    print(f"breakers tripped by the edge agents: {len(outcome.trips)}")
    for event in outcome.trips:
        print(
            f"  {event.warehouse_id}/{event.breaker} tripped at"
            f" {event.event_time.astimezone(tz):%H:%M:%S} event time ({event.reason})"
        )
    for seen in outcome.reroutes:
        since = outcome.trip_readings.get(seen.warehouse)
        late = outcome.reported_late(seen.warehouse)
        if late is not None:
            wall = (
                f"reported when its uplink came back at {late[0].astimezone(tz):%H:%M:%S}"
                f" event time; {seen.committed - late[1]:.3f} s wall from the uplink's return"
                " to commit"
            )
        elif since is not None:
            wall = f"{seen.committed - since:.3f} s wall from publishing the trip reading to commit"
        else:
            wall = "trip by silence or courier"
        print(
            f"orders rerouted from {seen.warehouse}: {seen.moved + seen.stuck}"
            f" ({seen.moved} moved, {seen.stuck} needs_attention); {wall};"
            f" coordinator {seen.committed - seen.started:.3f} s"
        )
    if outcome.waiting_now:
        where = ", ".join(f"{n} {k}" for k, n in sorted(outcome.waiting_now.items()))
        print(f"the {outcome.waiting} waiting orders now: {where}")
    if outcome.metrics:
        first = outcome.metrics.get("first_response", {})
        internal = outcome.metrics.get("order_to_first_status", {})
        transparency = outcome.metrics.get("status_transparency", {})
        healing = outcome.metrics.get("self_healing", {})
        print("the three customer-facing metrics:")
        p50, p95 = first.get("p50_s"), first.get("p95_s")
        print(f"  first response time: p95 {p95 if p95 is not None else 'n/a'} s,"
              f" p50 {p50 if p50 is not None else 'n/a'} s over {first.get('answered', 0)}"
              f" of {first.get('inquiries', 0)} inquiries (a customer's question at the channel"
              " -> the status reply acknowledged by the channel; replay clock)")  # fmt: skip
        print(f"  status transparency: {_pct(transparency.get('rate'))}"
              f" ({transparency.get('complete_timelines', 0)} of"
              f" {transparency.get('shipped_orders', 0)} shipped orders with allocated,"
              " shipped and in-transit times)")  # fmt: skip
        print(f"  self-healing rate:   {_pct(healing.get('rate'))}"
              f" ({healing.get('resolved_automatically', 0)} of"
              f" {healing.get('exceptions', 0)} exceptions resolved automatically)")  # fmt: skip
        p95 = internal.get("p95_s")
        print(f"  (internal: order received -> first status entry, p95"
              f" {p95 if p95 is not None else 'n/a'} s over {internal.get('answered', 0)}"
              " orders)")  # fmt: skip
        sent = ", ".join(f"{k}: {n}" for k, n in sorted(outcome.notifications.items()))
        print(f"notices and alerts: {sent or 'none'};"
              f" {outcome.alerts} open order alerts (unallocated or stuck)")  # fmt: skip
    if outcome.sink_path is not None:
        print(f"franchisee notices (file sink): {outcome.sink_path} ({outcome.sink_lines} lines)")
    if outcome.inbox is not None:
        counts = ", ".join(f"{k}: {n}" for k, n in sorted(outcome.inbox.by_channel().items()))
        print(f"operations alerts (local HTTP inbox standing in for WeCom, SMS, webhook):"
              f" {counts or 'none'} -> {outcome.inbox.path}")  # fmt: skip
        for entry in outcome.inbox.received:
            body = entry["body"]
            if entry["channel"] == "wecom" and isinstance(body, dict):
                content = (body.get("markdown") or body.get("text") or {}).get("content", "")
                for line in str(content).splitlines()[:6]:
                    print(f"  | {line}")
                break
    print(f"work files: {workdir}")
    if outcome.dashboard_url:
        print(f"dashboard: {outcome.dashboard_url}")
        if not hold:
            print("  (serving while the demo runs; add --hold to keep it up after the report)")


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
