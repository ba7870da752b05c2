"""Run a scenario through real edge agents on a real broker, on one shared ManualClock.

This is the piece the demo and the scenario end-to-end tests share. The agents are
built by an injected factory (``edge_agent.agent.EdgeAgent`` in practice) so this module
does not import the edge agent; each agent runs in-process as an asyncio task, reads its
sensors from the broker and publishes breaker events to it.

Event time and gateway time agree at any speed because the replayer's barrier, called
whenever event time is about to move on, waits until every agent has processed every
sensor message published so far and then ticks each agent at the current event time
(silence deadlines are evaluated on ticks). So a sensor silent since 01:09:30 with a 600 s
silence limit trips at the first event time at or after 01:19:30, and the freezing-rain
reading of 02:17:00 trips cold_chain at 02:17:00, whether the replay takes 2 hours or 3 s.

Uplink outages are enacted, not just narrated. The agent of a site with ``uplink_outages``
gets its uplink through an :class:`~simulators.uplink_relay.UplinkRelay` (its sensors stay on
the broker directly). When an outage starts in event time the relay is cut: the agent
loses its uplink connection, new connections are refused, and the harness waits until
the agent has noticed (having first let it deliver what it decided before the outage),
so whatever it decides during the outage goes to its outbox. When the outage ends the
relay listens again on the same port and the replay holds event time until the agent has
reconnected (its backoff is wall time), drained its outbox and the broker has delivered
its breaker events, then calls ``on_uplink_restored``. So a trip during an outage keeps
its event time and is reported at the outage's end, every run.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Protocol

import aiomqtt

from protocols import BreakerEvent, PayloadError, Topics, decode
from protocols.clock import ManualClock
from simulators.edge_configs import write_configs
from simulators.events import Event, Outage
from simulators.region import Region
from simulators.scenario import Scenario
from simulators.sensors import MqttPublisher, Replayer, ReplayStats, parse_mqtt_url
from simulators.sites import sites
from simulators.uplink_relay import UplinkRelay


class HarnessError(RuntimeError):
    """The scenario could not be run (agents did not keep up, broker unreachable...)."""


class AgentCounters(Protocol):
    @property
    def readings_accepted(self) -> int: ...

    @property
    def readings_rejected(self) -> Mapping[str, int]: ...

    @property
    def uplink_connected(self) -> bool: ...

    @property
    def outbox_depth(self) -> int: ...

    @property
    def events_published(self) -> int: ...


class AgentLike(Protocol):
    """What the harness needs of an edge agent (``edge_agent.agent.EdgeAgent`` fits)."""

    @property
    def warehouse_id(self) -> str: ...

    @property
    def stats(self) -> AgentCounters: ...

    async def run(self) -> None: ...

    async def tick(self) -> None: ...


AgentFactory = Callable[[Path, ManualClock, Topics], AgentLike]


@dataclass(frozen=True, slots=True)
class SeenEvent:
    event: BreakerEvent
    wall_s: float  # time.perf_counter() when it arrived


@dataclass
class UplinkOutageRun:
    """One uplink outage as enacted: event times, and what the agent did around it."""

    warehouse: str
    cut_at: datetime  # event time
    restored_at: datetime | None = None  # event time; None: still down when the replay ended
    queued: int = 0  # outbox messages waiting when the uplink came back
    delivered_events: int = 0  # breaker events the agent published once reconnected
    restored_wall: float | None = None  # time.perf_counter() when the relay listened again
    reconnect_wall_s: float | None = None  # relay back -> agent connected and drained
    # the agent's breaker events as they came over the wire once it was back
    events: list[BreakerEvent] = field(default_factory=list)


@dataclass
class ScenarioRun:
    """What happened on the wire while the scenario played."""

    replay: ReplayStats
    events: list[SeenEvent] = field(default_factory=list)
    config_paths: list[Path] = field(default_factory=list)
    # agents still running stop_timeout_s after cancellation (they should be none)
    unstopped: list[str] = field(default_factory=list)
    uplink_outages: list[UplinkOutageRun] = field(default_factory=list)

    def trips(self) -> list[BreakerEvent]:
        """Live breaker events that opened a breaker (one per episode), in arrival order."""
        out: list[BreakerEvent] = []
        seen: set[tuple[str, str, str | None]] = set()
        for item in self.events:
            event = item.event
            key = (event.warehouse_id, event.breaker, event.episode_id)
            if event.open and not event.historical and key not in seen:
                seen.add(key)
                out.append(event)
        return out


def _uplink_state(agent: AgentLike) -> str:
    stats = agent.stats
    return f"connected: {stats.uplink_connected}, outbox: {stats.outbox_depth}"


def _processed(agent: AgentLike) -> int:
    stats = agent.stats
    return stats.readings_accepted + sum(stats.readings_rejected.values())


class BreakerWatcher:
    """Collects every breaker event on the wire, as the coordinator would see them.

    ``on_event`` is called with each decoded event (the demo prints trips with it);
    undecodable payloads are counted in ``rejected``.
    """

    def __init__(
        self,
        url: str,
        topics: Topics,
        *,
        name: str = "bw-harness",
        on_event: Callable[[BreakerEvent], None] | None = None,
    ) -> None:
        self.url = url
        self.topics = topics
        self.name = name
        self.on_event = on_event
        self.events: list[SeenEvent] = []
        self.rejected = 0
        self.last_arrival = time.perf_counter()
        self.ready = asyncio.Event()

    async def run(self) -> None:
        parsed = parse_mqtt_url(self.url)
        async with aiomqtt.Client(
            parsed.host,
            parsed.port,
            identifier=f"{self.name}-{uuid.uuid4().hex[:10]}",
            username=parsed.username or "breakwater-harness",
            password=parsed.password,
        ) as client:
            await client.subscribe(self.topics.breaker_filter(), qos=1)
            self.ready.set()
            async for message in client.messages:
                payload = message.payload
                self.last_arrival = time.perf_counter()
                if not isinstance(payload, bytes | bytearray | str):
                    self.rejected += 1
                    continue
                try:
                    event = decode(BreakerEvent, payload)
                except PayloadError:
                    self.rejected += 1
                    continue
                self.events.append(SeenEvent(event, self.last_arrival))
                if self.on_event is not None:
                    self.on_event(event)


async def run_scenario(
    scenario: Scenario,
    *,
    broker_url: str,
    topics: Topics,
    workdir: Path,
    agent_factory: AgentFactory,
    region: Region | None = None,
    speed: float | None = None,
    seed: int | None = None,
    until: datetime | None = None,
    start: datetime | None = None,
    junk_every: int = 0,
    drain_timeout_s: float = 10.0,
    stop_timeout_s: float = 5.0,
    settle_s: float = 0.3,
    on_event: Callable[[Event], Awaitable[None]] | None = None,
    progress: bool | None = False,
    clock: ManualClock | None = None,
    on_uplink_restored: Callable[[UplinkOutageRun], Awaitable[None]] | None = None,
    reconnect_timeout_s: float = 15.0,
    enact_uplink_outages: bool = True,
) -> ScenarioRun:
    """Write edge configs, start one agent per site, replay, and collect breaker events.

    ``start``/``until`` cut the replay to a window of the scenario (agents start with
    the clock at ``start``, so a silence is counted from there; an uplink outage still
    running at ``until`` leaves that uplink down to the end). ``on_event`` sees each
    event before the harness enacts it (an outage's start before the cut, its end before
    the restore). ``on_uplink_restored`` is awaited, event time still held, once an agent
    is back on its uplink with its outbox drained (the demo waits there for the
    coordinator's reroute). ``reconnect_timeout_s`` bounds each wait for an agent to
    notice a cut or to reconnect and drain (HarnessError beyond it).
    ``enact_uplink_outages=False`` leaves every uplink up (outages are then only events
    for ``on_event``), for measurements of the live path.
    """
    # A replay moves event time in jumps far larger than a heartbeat interval, so the
    # coordinator would see every quiet agent as silent and pause its warehouse. Agent
    # liveness has its own tests (tests/coordinator/ops/test_agent_liveness*.py); here
    # heartbeats are off and availability follows breakers and last wills only.
    site_list = sites(scenario, region)
    target = parse_mqtt_url(broker_url)
    relays = {
        site.warehouse_id: UplinkRelay(target.host, target.port)
        for site in site_list
        if site.uplink_outages and enact_uplink_outages
    }
    # The agent's reconnect backoff is wall time; a short cap keeps the replay's wait
    # after each outage well under a second.
    uplinks = {wh: {"url": r.url, "reconnect_max_s": 0.5} for wh, r in relays.items()}
    paths = write_configs(
        site_list, workdir, topics, mqtt_url=broker_url,
        extra={"agent": {"heartbeat_s": 0}}, uplinks=uplinks,
    )  # fmt: skip
    clock = clock or ManualClock(start or scenario.start)
    if start is not None:
        clock.set(start)  # never moves a shared clock backwards
    try:
        for relay in relays.values():
            await relay.start()  # before the agents, whose first connect would be refused
        agents = [agent_factory(path, clock, topics) for path in paths]
    except BaseException:
        for relay in relays.values():
            await relay.close()
        raise
    by_warehouse = {agent.warehouse_id: agent for agent in agents}
    watcher = BreakerWatcher(broker_url, topics)
    watch_task = asyncio.create_task(watcher.run())
    agent_tasks = [asyncio.create_task(agent.run()) for agent in agents]
    replayer: Replayer | None = None
    unstopped: list[str] = []
    outages: list[UplinkOutageRun] = []
    open_outages: dict[str, UplinkOutageRun] = {}

    def check_agents() -> None:
        for task in agent_tasks:
            if task.done():
                task.result()  # surface an agent crash instead of a timeout

    async def wait_until(what: str, done: Callable[[], bool], detail: Callable[[], str]) -> None:
        deadline = time.monotonic() + reconnect_timeout_s
        while not done():
            check_agents()
            if time.monotonic() > deadline:
                message = f"{what} within {reconnect_timeout_s}s ({detail()})"
                raise HarnessError(message)
            await asyncio.sleep(0.002)

    def seen_from(warehouse: str) -> int:
        return sum(1 for item in watcher.events if item.event.warehouse_id == warehouse)

    async def cut_uplink(event: Outage) -> None:
        agent = by_warehouse[event.warehouse]
        # At real speed what the agent decided before the outage would long be delivered;
        # at replay speed its uplink may lag, so let it catch up first (after a tick at
        # this instant, which its own wall-time tick loop might otherwise do just before
        # or just after the cut). The outbox then holds what was decided during the outage.
        await agent.tick()
        await wait_until(
            f"{event.warehouse}: the agent did not drain its outbox before the outage",
            lambda: agent.stats.uplink_connected and agent.stats.outbox_depth == 0,
            lambda: _uplink_state(agent),
        )
        await relays[event.warehouse].cut()
        open_outages[event.warehouse] = outage = UplinkOutageRun(event.warehouse, event.at)
        outages.append(outage)
        await wait_until(
            f"{event.warehouse}: the agent did not notice its uplink cut",
            lambda: not agent.stats.uplink_connected,
            lambda: "still connected",
        )

    async def restore_uplink(event: Outage) -> None:
        agent = by_warehouse[event.warehouse]
        outage = open_outages.pop(event.warehouse)
        outage.restored_at = event.at
        outage.queued = agent.stats.outbox_depth
        published, seen = agent.stats.events_published, seen_from(event.warehouse)
        await relays[event.warehouse].restore()
        outage.restored_wall = time.perf_counter()

        def state() -> str:
            return (f"{_uplink_state(agent)}, breaker events on the wire:"
                    f" {seen_from(event.warehouse) - seen}"
                    f" of {agent.stats.events_published - published}")  # fmt: skip

        await wait_until(
            f"{event.warehouse}: the agent did not reconnect its uplink and drain its outbox",
            lambda: agent.stats.uplink_connected and agent.stats.outbox_depth == 0,
            state,
        )
        outage.delivered_events = agent.stats.events_published - published
        # Published means the broker acknowledged them; wait until it has handed them on
        # too, so every subscriber (the coordinator included) has them before time moves.
        await wait_until(
            f"{event.warehouse}: the broker did not deliver the agent's breaker events",
            lambda: seen_from(event.warehouse) - seen >= outage.delivered_events,
            state,
        )
        outage.reconnect_wall_s = time.perf_counter() - outage.restored_wall
        from_site = [i.event for i in watcher.events if i.event.warehouse_id == event.warehouse]
        outage.events = from_site[seen:]
        if on_uplink_restored is not None:
            await on_uplink_restored(outage)

    async def enact(event: Event) -> None:
        if on_event is not None:
            await on_event(event)
        if isinstance(event, Outage) and event.kind == "uplink" and event.warehouse in relays:
            if event.active and event.warehouse not in open_outages:
                await cut_uplink(event)
            elif not event.active and event.warehouse in open_outages:
                await restore_uplink(event)

    async def drain_and_tick() -> None:
        assert replayer is not None
        deadline = time.monotonic() + drain_timeout_s
        published = replayer.stats.by_warehouse
        while True:
            behind = {
                wh: (count, _processed(by_warehouse[wh]))
                for wh, count in published.items()
                if wh in by_warehouse and _processed(by_warehouse[wh]) < count
            }
            if not behind:
                break
            check_agents()
            if time.monotonic() > deadline:
                detail = ", ".join(f"{wh}: {done}/{sent}" for wh, (sent, done) in behind.items())
                message = f"agents did not keep up within {drain_timeout_s}s ({detail})"
                raise HarnessError(message)
            await asyncio.sleep(0.0005)
        for agent in agents:
            await agent.tick()

    try:
        await asyncio.wait_for(watcher.ready.wait(), timeout=10)
        # Give each agent time to connect and subscribe to its sensors before the first
        # reading; a missed first reading would only show up later as a drain timeout.
        await asyncio.sleep(0.5)
        async with MqttPublisher(broker_url, client_id=f"bw-sim-{uuid.uuid4().hex[:10]}") as pub:
            replayer = Replayer(
                scenario,
                pub,
                clock,
                speed,
                region=region,
                seed=seed,
                topics=topics,
                on_event=enact,
                barrier=drain_and_tick,
                progress=progress,
                junk_every=junk_every,
            )
            stats = await replayer.run(until=until, start=start)
            await drain_and_tick()
        # Let the last breaker events arrive: quiet for settle_s after the replay's
        # end (an agent publishes from its own task, after the barrier's tick), at most 5 s.
        replay_end = time.perf_counter()
        settle_until = replay_end + 5
        while time.perf_counter() < settle_until:
            if time.perf_counter() - max(watcher.last_arrival, replay_end) > settle_s:
                break
            await asyncio.sleep(0.02)
    finally:
        for task in [*agent_tasks, watch_task]:
            task.cancel()
        # Errors were surfaced above (drain); on the way out only cleanup matters, and a
        # agent that ignores cancellation must not hang the demo or the test run.
        _, pending = await asyncio.wait([*agent_tasks, watch_task], timeout=stop_timeout_s)
        unstopped = [
            a.warehouse_id for a, t in zip(agents, agent_tasks, strict=True) if t in pending
        ]
        # After the agents: a cancelled agent says goodbye on its uplink first.
        for relay in relays.values():
            await relay.close()
    return ScenarioRun(
        replay=stats, events=list(watcher.events), config_paths=paths, unstopped=unstopped,
        uplink_outages=outages,
    )  # fmt: skip
