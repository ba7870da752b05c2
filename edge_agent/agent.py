"""The agent's thin MQTT shell (aiomqtt) around the pure core (:mod:`edge_agent.core`).

Two connections (:mod:`edge_agent.broker_links`): the gateway's local sensor broker and
the uplink broker (they may be the same URL). This module only moves bytes: sensor
messages go to ``core.ingest``, commands to ``core.command``, ticks to ``core.tick``; what
the core returns is committed to SQLite (state first, with the outbox, in one transaction)
before anything is published. The uplink drains the outbox with QoS 1 on a persistent
session; what a session publishes and in which order (current breaker states first, then
the outbox, birth and heartbeats, the QoS 0 extras) is :mod:`edge_agent.uplink_publisher`.
Which messages are commands is :mod:`edge_agent.command_topics`.

Every time decision uses the injected :class:`~protocols.clock.Clock`.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import time
from collections.abc import Callable
from datetime import datetime
from types import MappingProxyType

import aiomqtt

from edge_agent.broker_links import SensorLink, UplinkLink
from edge_agent.clock_steps import StepWatch
from edge_agent.command_topics import CommandTopics
from edge_agent.config import AgentConfig
from edge_agent.core import AgentCore
from edge_agent.core_io import Output, Saved
from edge_agent.counters import AgentStats
from edge_agent.errors import StoreError
from edge_agent.local_command import COMMAND_KEY_ENV
from edge_agent.messages import OutgoingMessage
from edge_agent.mqtt_io import (
    cancel_and_wait,
)
from edge_agent.store import Store, open_store
from edge_agent.uplink_publisher import UplinkPublisher
from protocols import Topics
from protocols.clock import Clock, SystemClock
from protocols.command_auth import load_command_key

log = logging.getLogger("edge_agent")

UNSAVED_MAX = 10_000  # beyond this, unsaved non-breaker messages are dropped


class EdgeAgent:
    """One warehouse gateway's agent. ``await run()`` until cancelled."""

    def __init__(
        self,
        config: AgentConfig,
        *,
        clock: Clock = SystemClock(),  # noqa: B008 - stateless, shared on purpose
        topics: Topics | None = None,
        command_key: bytes | None = None,
        steady: Callable[[], float] | None = None,
    ) -> None:
        self.config = config
        self.clock = clock
        # A monotonic clock beside the wall clock finds a step of the latter (NTP setting
        # a bad RTC right): by default with the system clock, never with a manual one
        # (a test's or a replay's, which jumps on purpose).
        if steady is None and isinstance(clock, SystemClock):
            steady = _since_boot
        self._steady = steady
        self._steps = StepWatch(config.agent.max_skew_s)
        self.topics = topics or Topics(config.uplink_mqtt.topic_root)
        self.agent_id = config.agent.agent_id
        self.warehouse_id = config.agent.warehouse_id
        if command_key is None and (
            config.command_key_path is not None or _env_key_present()
        ):
            # read once at start; a missing or short key stops the agent naming the file
            command_key = load_command_key(config.command_key_path, COMMAND_KEY_ENV)
        self.core = AgentCore(config, self.topics, command_key=command_key)
        self.publisher = UplinkPublisher(config, self.core, self.topics, clock)
        self._commands = CommandTopics(self.topics, self.warehouse_id)
        self._store: Store | None = None
        # Commands signed on site arrive on the sensor broker when it is not the uplink's.
        on_site = self.topics.command_filter(self.warehouse_id)
        self._sensors = SensorLink(
            config, [*self.core.router.subscriptions],
            on_site if self.core.commands.key is not None and not self._samebroker_address()
            else None,
            self._take_local_message, clock)
        self._uplink = UplinkLink(config, self.core, self.publisher, self.topics,
                                  lambda: self._store, self._take_command, clock)
        # Messages a failed commit could not save: they go first in the next commit.
        self._unsaved: list[OutgoingMessage] = []
        self._final_outbox = 0
        self._store_errors = 0

    # -- public surface ----------------------------------------------------------
    @property
    def stats(self) -> AgentStats:
        c = self.core.counters
        store = self._store
        pub = self.publisher
        return AgentStats(
            readings_accepted=c.accepted,
            readings_rejected=MappingProxyType(dict(c.rejected)),
            events_published=pub.events_published,
            events_created=c.events_created,
            messages_published=pub.published,
            outbox_depth=self._final_outbox if store is None else store.outbox_count,
            outbox_dropped=MappingProxyType(dict(store.dropped if store else {})),
            deadletters_published=pub.deadletters_published,
            deadletters_dropped=pub.deadletters_dropped,
            notices=MappingProxyType(dict(c.notices)),
            uplink_connected=self._uplink.connected,
            sensors_connected=self._sensors.connected,
            session_seq=self.core.session_seq,
            seq=self.core.seq,
            store_errors=self._store_errors,
            incarnation=self.core.me.incarnation,
            drops=MappingProxyType(dict(c.drops)),
            commands=MappingProxyType(dict(c.commands)),
            states_resent=pub.states_resent,
            uplink_broker=self._uplink.broker if self._uplink.connected else None,
        )

    def breaker_states(self) -> dict[str, tuple[str, bool]]:
        """Current ``(state, open)`` of each breaker (for operators and tests)."""
        self._ensure_started()
        return {name: (b.state.value, b.open) for name, b in self.core.breakers.items()}

    def oldest_queued_at(self) -> datetime | None:
        store = self._store
        return None if store is None else store.oldest_queued_at()

    async def run(self) -> None:
        """Connect, ingest and publish until cancelled; reconnects on broker loss."""
        self._ensure_started()
        health = None
        cfg = self.config.agent
        if cfg.metrics_port:
            from edge_agent.health import HealthServer  # prometheus-client only when used

            try:
                health = HealthServer(self, asyncio.get_running_loop(), cfg.metrics_host,
                                      cfg.metrics_port)
            except OSError as exc:
                # the cold room matters more than its metrics: run without them, loudly
                log.error("health and metrics port %s:%d unavailable (%s): running without",
                          cfg.metrics_host, cfg.metrics_port, exc)
            else:
                health.start()
                log.info("health and metrics on http://%s:%d/", cfg.metrics_host, health.port)
        tasks = [
            asyncio.create_task(self._sensors.run(), name=f"{self.agent_id}-local"),
            asyncio.create_task(self._uplink.run(), name=f"{self.agent_id}-uplink"),
            asyncio.create_task(self._tick_loop(), name=f"{self.agent_id}-tick"),
        ]
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
            for task in done:
                task.result()
        finally:
            await cancel_and_wait(tasks)
            if health is not None:
                await asyncio.to_thread(health.close)
            self._close()

    async def tick(self) -> None:
        """Evaluate deadlines at ``clock.now()`` and persist what changed."""
        self._tick()

    def handle_sensor_message(self, topic: str, payload: bytes) -> None:
        """Feed one local message to the core. Never raises: bad input is dead-lettered."""
        if self._store is None:
            self._ensure_started()
        now = self._now()
        out = self.core.ingest(topic, payload, now)
        if out.messages or out.persist or out.deadletters or out.countdowns:
            self._apply(out, now)

    def handle_command(self, breaker_name: str, payload: bytes, topic: str = "") -> None:
        """Verify, apply and audit one operator command. Never raises."""
        self._ensure_started()
        now = self._now()
        self._apply(self.core.command(breaker_name, payload, now, topic), now)

    # -- lifecycle -----------------------------------------------------------------
    def _ensure_started(self) -> None:
        if self._store is not None:
            return
        now = self.clock.now()
        store = open_store(self.config, now)
        self._store = store
        # A new process is a new session even before it connects: its events say so.
        session = store.bump_session()
        saved = Saved(
            rules=store.load_rules(),
            breakers=store.load_breakers(),
            saved_at=store.saved_at,
            seq=store.seq,
            session_seq=session,
            incarnation=store.incarnation,
            nonces=store.load_nonces(now),
        )
        self._apply(self.core.start(now, saved), now)
        if self._steady is not None:
            self._steps.observe(now, self._steady())  # steps count from the start
        # Config, parsers and machines live as long as the process: keep them out of the
        # cyclic collector's full passes (measured: ~20% of ingest time at 1000 sensors).
        gc.freeze()
        if self.core.commands.key is None and self.core.commands.unsigned:
            log.warning("no command key configured and unsigned_commands = true: commands "
                        "are not authenticated (a test bench's setting)")
        elif self.core.commands.key is None:
            log.warning("no command key configured: every command is refused (set "
                        "command_key_file or %s)", COMMAND_KEY_ENV)
        log.info(
            "agent %s started: %d sensors, %d rules, breakers %s (seq %d, session %d, "
            "incarnation %s)",
            self.agent_id, len(self.config.sensors), len(self.core.specs),
            self.breaker_states(), store.seq, store.session_seq, store.incarnation,
        )

    def _close(self) -> None:
        store, self._store = self._store, None
        if store is None:
            return
        with contextlib.suppress(Exception):
            self._commit(self.clock.now(), [], store=store)
        self._final_outbox = store.outbox_count
        store.close()

    # -- core output -> store -> uplink --------------------------------------------
    def _now(self) -> datetime:
        """The wall clock for the next step of the core; a step of it since the last
        look (see :mod:`edge_agent.clock_steps`) is handed to the core first."""
        now = self.clock.now()
        if self._steady is not None:
            step = self._steps.observe(now, self._steady())
            # forward only: a step back the core finds itself (time never goes back)
            if step is not None and step > 0 and self._store is not None:
                self._apply(self.core.clock_stepped(now, step), now)
        return now

    def _apply(self, out: Output, now: datetime) -> None:
        self.publisher.keep(out.deadletters, out.countdowns)
        if out.messages or out.persist:
            self._commit(now, out.messages)

    def _commit(
        self, now: datetime, messages: list[OutgoingMessage], *, store: Store | None = None
    ) -> None:
        """Persist state, recent readings and new messages, then wake the uplink."""
        store = store or self._store
        assert store is not None
        outgoing, self._unsaved = [*self._unsaved, *messages], []
        state = self.core.take_state(now)
        store.seq = self.core.seq
        try:
            refused = store.commit(
                now, rules=state.rules, breakers=state.breakers, readings=state.readings,
                outgoing=outgoing, nonces=state.nonces,
            )
        except StoreError:
            # A failed write (disk full, locked file) must not lose a trip: keep the
            # messages and the dirty state for the next commit (next reading or tick).
            self._store_errors += 1
            if len(outgoing) > UNSAVED_MAX:
                outgoing = [m for m in outgoing if m.kind == "breaker"]
            self._unsaved = outgoing
            self.core.keep_state(state)
            log.exception("state store write failed (%d so far); retrying on the next "
                          "commit", self._store_errors)
            return
        for message in refused:
            log.warning("outbox full: dropped %s message seq %d", message.kind, message.seq)
        if outgoing:
            self.publisher.wake.set()

    # -- messages from the links ---------------------------------------------------
    def _samebroker_address(self) -> bool:
        local, uplink = self.config.local_mqtt, self.config.uplink_mqtt
        return (local.host, local.port) == (uplink.host, uplink.port)

    def _take_local_message(self, message: aiomqtt.Message) -> None:
        payload = message.payload
        if not isinstance(payload, bytes):
            payload = str(payload).encode()
        topic = message.topic.value
        try:
            if self._commands.breaker(topic) is not None:
                self._take_command(topic, payload)
            else:
                self.handle_sensor_message(topic, payload)
        except Exception:  # one message must never stop ingestion; counted and logged
            self.core.counters.reject("internal")
            log.exception("error handling a message on %s", topic)

    def _take_command(self, topic: str, payload: bytes) -> None:
        breaker = self._commands.breaker(topic)
        if breaker is not None:
            self.handle_command(breaker, payload, topic)

    # -- time ----------------------------------------------------------------------
    async def _tick_loop(self) -> None:
        interval = self.config.agent.tick_interval_s
        while True:
            await asyncio.sleep(interval)
            self._tick()

    def _tick(self) -> None:
        self._ensure_started()
        now = self._now()
        self._apply(self.core.tick(now), now)
        if self.publisher.countdowns:
            self.publisher.wake.set()
        self.publisher.check_heartbeat(now, connected=self._uplink.connected)


def _since_boot() -> float:
    """Seconds since boot, suspended time included (Linux's CLOCK_BOOTTIME): a gateway
    that slept an hour has really been away an hour, not seen a step of its clock.
    Elsewhere the monotonic clock, which leaves suspended time out."""
    return time.clock_gettime(_BOOT_CLOCK)


_BOOT_CLOCK = getattr(time, "CLOCK_BOOTTIME", time.CLOCK_MONOTONIC)


def _env_key_present() -> bool:
    return bool(os.environ.get(COMMAND_KEY_ENV, "").strip())


