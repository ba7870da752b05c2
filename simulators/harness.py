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
from simulators.region import Region
from simulators.scenario import Event, Scenario, sites
from simulators.sensors import MqttPublisher, Replayer, ReplayStats, parse_mqtt_url


class HarnessError(RuntimeError):
    """The scenario could not be run (agents did not keep up, broker unreachable...)."""


class AgentCounters(Protocol):
    @property
    def readings_accepted(self) -> int: ...

    @property
    def readings_rejected(self) -> Mapping[str, int]: ...


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
class ScenarioRun:
    """What happened on the wire while the scenario played."""

    replay: ReplayStats
    events: list[SeenEvent] = field(default_factory=list)
    config_paths: list[Path] = field(default_factory=list)
    # agents still running stop_timeout_s after cancellation (they should be none)
    unstopped: list[str] = field(default_factory=list)

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
) -> ScenarioRun:
    """Write edge configs, start one agent per site, replay, and collect breaker events.

    ``start``/``until`` cut the replay to a window of the scenario (agents start with
    the clock at ``start``, so a silence is counted from there).
    """
    # A replay moves event time in jumps far larger than a heartbeat interval, so the
    # coordinator would see every quiet agent as silent and pause its warehouse. Agent
    # liveness has its own tests (tests/coordinator/ops/test_agent_liveness*.py); here
    # heartbeats are off and availability follows breakers and last wills only.
    paths = write_configs(
        sites(scenario, region), workdir, topics, mqtt_url=broker_url,
        extra={"agent": {"heartbeat_s": 0}},
    )  # fmt: skip
    clock = clock or ManualClock(start or scenario.start)
    if start is not None:
        clock.set(start)  # never moves a shared clock backwards
    agents = [agent_factory(path, clock, topics) for path in paths]
    by_warehouse = {agent.warehouse_id: agent for agent in agents}
    watcher = BreakerWatcher(broker_url, topics)
    watch_task = asyncio.create_task(watcher.run())
    agent_tasks = [asyncio.create_task(agent.run()) for agent in agents]
    replayer: Replayer | None = None
    unstopped: list[str] = []

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
            for task in agent_tasks:
                if task.done():
                    task.result()  # surface an agent crash instead of a timeout
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
                on_event=on_event,
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
    return ScenarioRun(
        replay=stats, events=list(watcher.events), config_paths=paths, unstopped=unstopped
    )
