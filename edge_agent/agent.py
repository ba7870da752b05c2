"""The agent's thin MQTT shell (aiomqtt) around the pure core (:mod:`edge_agent.core`).

Two connections: the gateway's local sensor broker and the uplink broker (they may be the
same URL). This module only moves bytes: sensor messages go to ``core.ingest``, commands
to ``core.command``, ticks to ``core.tick``; what the core returns is committed to SQLite
(state first, with the outbox, in one transaction) before anything is published. The
uplink task drains the outbox with QoS 1 on a persistent session.

On every new uplink session the agent first re-publishes the current state of each
breaker (its newest event, retained, with its original ``seq``), as a Sparkplug birth
carries current values: a broker that acknowledged an event and then lost it (killed
before it saved it to disk) is healed by the next connection, and the coordinator's
``(agent_id, seq)`` dedupe absorbs the repeats on a flapping link. Then the rest of the
outbox follows in sequence order as ``historical`` (not retained).

Every time decision uses the injected :class:`~protocols.clock.Clock`.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import logging
import os
from collections import deque
from datetime import datetime
from types import MappingProxyType

import aiomqtt

from edge_agent.config import AgentConfig
from edge_agent.core import AgentCore, Output, Saved
from edge_agent.counters import AgentStats
from edge_agent.errors import StoreError
from edge_agent.local_command import COMMAND_KEY_ENV
from edge_agent.messages import OutgoingMessage, agent_status, as_historical
from edge_agent.mqtt_io import (
    broker_address,
    cancel_and_wait,
    client_kwargs,
    log_connect_failure,
    owned_queue,
    reraise_if_cancelling,
)
from edge_agent.store import OutboxRow, Store, open_store
from protocols import (
    AgentState,
    DeadLetter,
    RuleCountdown,
    TopicError,
    Topics,
    encode,
)
from protocols.clock import Clock, SystemClock
from protocols.command_auth import load_command_key
from protocols.mqtt_url import parse_mqtt_url
from protocols.reconnect import BrokerRotation

log = logging.getLogger("edge_agent")

SENSOR_BATCH = 256  # queued sensor messages handled per turn of the event loop
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
    ) -> None:
        self.config = config
        self.clock = clock
        self.topics = topics or Topics(config.uplink_mqtt.topic_root)
        self.agent_id = config.agent.agent_id
        self.warehouse_id = config.agent.warehouse_id
        if command_key is None and (
            config.command_key_path is not None or _env_key_present()
        ):
            # read once at start; a missing or short key stops the agent naming the file
            command_key = load_command_key(config.command_key_path, COMMAND_KEY_ENV)
        self.core = AgentCore(config, self.topics, command_key=command_key)
        self._deadletters: deque[DeadLetter] = deque()
        self._countdowns: dict[tuple[str, str], RuleCountdown] = {}
        self._wake = asyncio.Event()
        self._store: Store | None = None
        self._status_topic = self.topics.agent_status(self.warehouse_id, self.agent_id)
        self._last_heartbeat: datetime | None = None  # ts of the last online status sent
        self._heartbeat_due = False
        self._connected = False
        self._uplink_broker: str | None = None  # host:port of the current uplink session
        self._sensors_connected = False
        # Messages a failed commit could not save: they go first in the next commit.
        self._unsaved: list[OutgoingMessage] = []
        self._final_outbox = 0
        self._published = 0
        self._events_published = 0
        self._deadletters_published = 0
        self._deadletters_dropped = 0
        self._store_errors = 0
        self._states_resent = 0

    # -- public surface ----------------------------------------------------------
    @property
    def stats(self) -> AgentStats:
        c = self.core.counters
        store = self._store
        return AgentStats(
            readings_accepted=c.accepted,
            readings_rejected=MappingProxyType(dict(c.rejected)),
            events_published=self._events_published,
            events_created=c.events_created,
            messages_published=self._published,
            outbox_depth=self._final_outbox if store is None else store.outbox_count,
            outbox_dropped=MappingProxyType(dict(store.dropped if store else {})),
            deadletters_published=self._deadletters_published,
            deadletters_dropped=self._deadletters_dropped,
            notices=MappingProxyType(dict(c.notices)),
            uplink_connected=self._connected,
            sensors_connected=self._sensors_connected,
            session_seq=self.core.session_seq,
            seq=self.core.seq,
            store_errors=self._store_errors,
            incarnation=self.core.me.incarnation,
            drops=MappingProxyType(dict(c.drops)),
            commands=MappingProxyType(dict(c.commands)),
            states_resent=self._states_resent,
            uplink_broker=self._uplink_broker if self._connected else None,
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
            asyncio.create_task(self._local_loop(), name=f"{self.agent_id}-local"),
            asyncio.create_task(self._uplink_loop(), name=f"{self.agent_id}-uplink"),
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
        out = self.core.ingest(topic, payload, self.clock.now())
        if out.messages or out.persist or out.deadletters or out.countdowns:
            self._apply(out, self.clock.now())

    def handle_command(self, breaker_name: str, payload: bytes, topic: str = "") -> None:
        """Verify, apply and audit one operator command. Never raises."""
        self._ensure_started()
        now = self.clock.now()
        self._apply(self.core.command(breaker_name, payload, now, topic), now)

    # -- lifecycle -----------------------------------------------------------------
    def _ensure_started(self) -> None:
        if self._store is not None:
            return
        now = self.clock.now()
        store = open_store(self.config)
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
        # Config, parsers and machines live as long as the process: keep them out of the
        # cyclic collector's full passes (measured: ~20% of ingest time at 1000 sensors).
        gc.freeze()
        if self.core.command_key is None:
            log.warning("no command key configured: commands are not authenticated "
                        "(set command_key_file or %s)", COMMAND_KEY_ENV)
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
    def _apply(self, out: Output, now: datetime) -> None:
        for letter in out.deadletters:
            if len(self._deadletters) >= self.config.agent.deadletter_queue_max:
                self._deadletters.popleft()  # a junk flood keeps only the newest letters
                self._deadletters_dropped += 1
            self._deadletters.append(letter)
        for cd in out.countdowns:
            self._countdowns[(cd.zone, cd.rule)] = cd
        if out.messages or out.persist:
            self._commit(now, out.messages)
        if out.deadletters or out.countdowns:
            self._wake.set()

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
            self._wake.set()

    # -- sensors (hot path) ------------------------------------------------------
    async def _local_loop(self) -> None:
        section = self.config.local_mqtt
        rotation = BrokerRotation(section.broker_urls, section.backoff())
        attempt = rotation.first()
        kwargs = client_kwargs(section, f"{self.agent_id}-sensors")
        subscriptions = [*self.core.router.subscriptions]
        # A technician on site signs commands with the gateway's key and publishes them
        # here (python -m edge_agent command): no coordinator or uplink needed.
        command_filter = self.topics.command_filter(self.warehouse_id)
        while True:
            await asyncio.sleep(attempt.delay_s)
            try:
                queues: list[asyncio.Queue[aiomqtt.Message]] = []
                async with aiomqtt.Client(
                    **broker_address(attempt.url),
                    username=section.username,
                    # A persistent session keeps the subscriptions and what arrives while
                    # the agent is away; its client_id is stable (config or agent id).
                    clean_session=not section.persistent_session,
                    queue_type=owned_queue(queues),
                    **kwargs,
                ) as client:
                    for start in range(0, len(subscriptions), 100):
                        batch = subscriptions[start : start + 100]
                        qos: int = section.qos
                        await client.subscribe([(t, qos) for t in batch])
                    if self.core.command_key is not None and not self._samebroker_address():
                        await client.subscribe(command_filter, qos=1)
                    log.info("sensor broker %s connected", attempt.url)
                    rotation.connected(self.clock.now())
                    self._sensors_connected = True
                    queue = queues[0]
                    take = self._take_local_message
                    # The iterator waits (and notices a lost connection); whatever else is
                    # already queued is taken without a task per message, in bounded batches
                    # so the uplink and tick tasks still get their turn.
                    async for message in client.messages:
                        take(message)
                        for _ in range(min(queue.qsize(), SENSOR_BATCH)):
                            take(queue.get_nowait())
            except aiomqtt.MqttError as exc:
                reraise_if_cancelling(exc)
                self._sensors_connected = False
                failed = attempt.url
                attempt = rotation.failed(self.clock.now())
                log_connect_failure("sensor broker", section, failed, exc, attempt)

    def _samebroker_address(self) -> bool:
        local, uplink = self.config.local_mqtt, self.config.uplink_mqtt
        return (local.host, local.port) == (uplink.host, uplink.port)

    def _take_local_message(self, message: aiomqtt.Message) -> None:
        payload = message.payload
        if not isinstance(payload, bytes):
            payload = str(payload).encode()
        topic = message.topic.value
        try:
            if self._command_breaker(topic) is not None:
                self._take_command(topic, payload)
            else:
                self.handle_sensor_message(topic, payload)
        except Exception:  # one message must never stop ingestion; counted and logged
            self.core.counters.reject("internal")
            log.exception("error handling a message on %s", topic)

    @functools.cached_property
    def _command_prefix(self) -> str:
        # every command topic of this warehouse starts so (the filter ends in "+"): a
        # sensor reading is told apart by one string compare, not by a parse that raises
        # TopicError for each reading (measured: that cost the ingest drain 14 %)
        return self.topics.command_filter(self.warehouse_id).removesuffix("+")

    def _command_breaker(self, topic: str) -> str | None:
        if not topic.startswith(self._command_prefix):
            return None
        try:
            parsed = self.topics.parse(topic)
        except TopicError:
            return None
        if parsed.kind != "command" or parsed.breaker is None:
            return None
        if parsed.warehouse != self.warehouse_id:
            return None
        return parsed.breaker

    def _take_command(self, topic: str, payload: bytes) -> None:
        breaker = self._command_breaker(topic)
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
        now = self.clock.now()
        self._apply(self.core.tick(now), now)
        if self._countdowns:
            self._wake.set()
        self._check_heartbeat(now)

    def _check_heartbeat(self, now: datetime) -> None:
        # Driven by ticks on the injected clock: a hung loop sends none, and a replay on a
        # ManualClock heartbeats in event time like the coordinator judges it.
        every = self.config.agent.heartbeat_s
        last = self._last_heartbeat
        due = last is not None and (now - last).total_seconds() >= every
        if every > 0 and self._connected and due:
            self._heartbeat_due = True
            self._wake.set()

    # -- uplink ----------------------------------------------------------------------
    def _status(
        self,
        state: AgentState,
        session_seq: int,
        *,
        graceful: bool = False,
        ts: datetime | None = None,
    ) -> bytes:
        return agent_status(
            self.core.me, state, session_seq, ts or self.clock.now(),
            breakers=list(self.core.breakers), heartbeat_s=self.config.agent.heartbeat_s,
            graceful=graceful,
        )

    async def _publish_online(self, client: aiomqtt.Client, session: int) -> None:
        """Birth and heartbeat: the retained online status of this session, fresh ``ts``."""
        now = self.clock.now()
        self._heartbeat_due = False
        await client.publish(
            self._status_topic,
            self._status(AgentState.ONLINE, session, ts=now),
            qos=1,
            retain=True,
        )
        self._last_heartbeat = now

    async def _uplink_loop(self) -> None:
        section = self.config.uplink_mqtt
        # One rotation for the life of the loop: 2,000 gateways losing one broker together
        # come back spread over the jitter window, not in lockstep.
        rotation = BrokerRotation(section.broker_urls, section.backoff())
        attempt = rotation.first()
        status_topic = self._status_topic
        kwargs = client_kwargs(section, f"{self.agent_id}-uplink")
        used = False  # the current session_seq has been used by an established session
        while True:
            store = self._store
            assert store is not None
            if used:
                # once per established session, not per attempt (Sparkplug's bdSeq)
                self.core.session_seq = store.bump_session()
                used = False
            session = self.core.session_seq
            will = aiomqtt.Will(
                status_topic, self._status(AgentState.OFFLINE, session), qos=1, retain=True
            )
            await asyncio.sleep(attempt.delay_s)
            try:
                async with aiomqtt.Client(
                    **broker_address(attempt.url),
                    # amqtt queues offline QoS 1 messages only for named clients
                    username=section.username or self.agent_id,
                    clean_session=False,
                    will=will,
                    **kwargs,
                ) as client:
                    used = True
                    rotation.connected(self.clock.now())
                    try:
                        await self._uplink_session(client, attempt.url, session)
                    except asyncio.CancelledError:
                        # Say goodbye so receivers need not wait for the keepalive to expire.
                        with contextlib.suppress(Exception):
                            await asyncio.wait_for(
                                client.publish(
                                    status_topic,
                                    self._status(AgentState.OFFLINE, session, graceful=True),
                                    qos=1,
                                    retain=True,
                                ),
                                1.0,
                            )
                        raise
            except aiomqtt.MqttError as exc:
                reraise_if_cancelling(exc)
                self._connected = False
                failed = attempt.url
                attempt = rotation.failed(self.clock.now())
                log_connect_failure("uplink", section, failed, exc, attempt)
            finally:
                self._connected = False

    async def _uplink_session(self, client: aiomqtt.Client, url: str, session: int) -> None:
        await client.subscribe(self.topics.command_filter(self.warehouse_id), qos=1)
        await self._publish_online(client, session)
        self._connected = True
        address = parse_mqtt_url(url)
        self._uplink_broker = f"{address.host}:{address.port}"
        log.info("uplink %s connected (session %d)", url, session)
        reader = asyncio.create_task(self._read_commands(client))
        writer = asyncio.create_task(self._drain_outbox(client))
        try:
            done, _ = await asyncio.wait({reader, writer}, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                task.result()
        finally:
            await cancel_and_wait([reader, writer])

    async def _read_commands(self, client: aiomqtt.Client) -> None:
        async for message in client.messages:
            payload = message.payload
            if not isinstance(payload, bytes):
                payload = str(payload).encode()
            self._take_command(message.topic.value, payload)

    async def _drain_outbox(self, client: aiomqtt.Client) -> None:
        store = self._store
        assert store is not None
        replay_upto = store.outbox_max_seq()
        # Current state first, every session: the newest event of each breaker, retained,
        # with its original seq, whether or not it was published (and acknowledged) before.
        current = store.current_rows()
        for row in current:
            await self._publish_row(client, store, row, historical=False)
            self._states_resent += 1
        # those still queued were just sent: not again as historical
        store.delete_outbox_seqs(row.seq for row in current)
        last_live = replay_upto
        while True:
            self._wake.clear()
            live = store.outbox_rows(after_seq=last_live, limit=100)
            for row in live:
                await self._publish_row(client, store, row, historical=False)
                last_live = max(last_live, row.seq)
            backlog: list[OutboxRow] = []
            if not live:
                backlog = store.outbox_rows(upto_seq=replay_upto, limit=100)
                for row in backlog:
                    await self._publish_row(client, store, row, historical=True)
            await self._drain_best_effort(client)
            if not live and not backlog:
                await self._wake.wait()

    async def _publish_row(
        self, client: aiomqtt.Client, store: Store, row: OutboxRow, *, historical: bool
    ) -> None:
        payload = as_historical(row.kind, row.payload) if historical else row.payload
        retain = row.retain and not historical
        await client.publish(row.topic, payload.encode(), qos=row.qos, retain=retain)
        if row.id:
            store.delete_outbox(row.id)
        self._published += 1
        if row.kind == "breaker":
            self._events_published += 1

    async def _drain_best_effort(self, client: aiomqtt.Client) -> None:
        """Heartbeat, then QoS 0 extras: countdowns (latest only, retained) and dead letters."""
        if self._heartbeat_due:
            await self._publish_online(client, self.core.session_seq)
        if self._countdowns:
            countdowns, self._countdowns = self._countdowns, {}
            for (zone, rule), countdown in countdowns.items():
                await client.publish(
                    self.topics.countdown(self.warehouse_id, zone, rule),
                    encode(countdown),
                    qos=0,
                    retain=True,
                )
                self._published += 1
        topic = self.topics.deadletter(self.warehouse_id)
        for _ in range(min(200, len(self._deadletters))):
            letter = self._deadletters.popleft()
            await client.publish(topic, encode(letter), qos=0)
            self._deadletters_published += 1
            self._published += 1
        if self._deadletters:
            self._wake.set()  # more to send; let live events interleave first


def _env_key_present() -> bool:
    return bool(os.environ.get(COMMAND_KEY_ENV, "").strip())


