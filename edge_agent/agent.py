"""The MQTT shell around the pure rules and breakers (aiomqtt).

Two connections: the gateway's local sensor broker and the uplink broker (they may be the
same URL). Sensor messages are parsed, fed to the rule machines, and the resulting breaker
events are committed to SQLite (state first, then the outbox) before anything is published.
A separate uplink task drains the outbox with QoS 1 on a persistent session: live breaker
events are retained; after a reconnect the newest queued event of each breaker goes first
(live, retained), then the rest in sequence order as ``historical`` (not retained).

Every time decision uses the injected :class:`~protocols.clock.Clock`.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from types import MappingProxyType
from typing import Any, Literal

import aiomqtt
from paho.mqtt.client import topic_matches_sub

from edge_agent.breakers import Breaker, BreakerChange
from edge_agent.config import AgentConfig, MqttSection
from edge_agent.errors import SensorPayloadError, StoreError
from edge_agent.rules import Action, Notice, Reading, RuleMachine, RuleSpec, Transition
from edge_agent.sensors import SensorParser
from edge_agent.store import OutboxRow, OutgoingMessage, Store, open_store
from edge_agent.telemetry import Summary, TelemetryAggregator
from protocols import (
    AgentState,
    AgentStatus,
    AuditRecord,
    BreakerCommand,
    BreakerEvent,
    BreakerState,
    CommandKind,
    DeadLetter,
    PayloadError,
    RuleCountdown,
    TelemetrySummary,
    TopicError,
    Topics,
    TripLimit,
    TripValue,
    decode,
    encode,
)
from protocols.clock import Clock, SystemClock

log = logging.getLogger("edge_agent")

SOFTWARE = "breakwater-edge/0.1"
SYSTEM_ACTOR = "edge-agent"
SENSOR_BATCH = 256  # queued sensor messages handled per turn of the event loop
UNSAVED_MAX = 10_000  # beyond this, unsaved non-breaker messages are dropped


@dataclass(frozen=True, slots=True)
class AgentStats:
    """A read-only snapshot of the agent's counters."""

    readings_accepted: int
    readings_rejected: MappingProxyType[str, int]
    events_published: int
    events_created: int
    messages_published: int
    outbox_depth: int
    outbox_dropped: MappingProxyType[str, int]
    deadletters_published: int
    deadletters_dropped: int
    notices: MappingProxyType[str, int]
    uplink_connected: bool
    sensors_connected: bool
    session_seq: int
    seq: int
    store_errors: int = 0
    # The state database's lifetime id (None before the store was first opened).
    incarnation: str | None = None


@dataclass(slots=True)
class _Counters:
    accepted: int = 0
    rejected: dict[str, int] = field(default_factory=dict)
    events_published: int = 0
    events_created: int = 0
    messages_published: int = 0
    deadletters_published: int = 0
    deadletters_dropped: int = 0
    notices: dict[str, int] = field(default_factory=dict)
    rejected_by_sensor: dict[str, int] = field(default_factory=dict)
    store_errors: int = 0


def _client_kwargs(section: MqttSection, identifier: str) -> dict[str, Any]:
    """Called once per connection loop: the TLS context (CA and client certificate read
    from disk) is built here and reused by every reconnect."""
    return {
        "hostname": section.host,
        "port": section.port,
        "identifier": section.client_id or identifier,
        "password": section.password,
        "keepalive": section.keepalive_s,
        "tls_context": section.tls_context(),
    }


# What OpenSSL and paho say when a TLS connection is refused for its certificates; aiomqtt
# passes on only the text, so these mark the failures that retrying will not fix.
_TLS_FAILURE_MARKS = ("SSL", "certificate", "CERTIFICATE", "tlsv", "TLSV")


def _log_connect_failure(
    what: str, section: MqttSection, exc: aiomqtt.MqttError, backoff: float
) -> None:
    text = str(exc)
    if section.tls and any(mark in text for mark in _TLS_FAILURE_MARKS):
        # An error, not a warning: a wrong CA or a refused client certificate is a
        # configuration fault that keeps every event in the outbox until someone acts.
        log.error(
            "%s %s: TLS failed: %s (check ca_file=%s, cert_file=%s, key_file=%s); "
            "retrying in %.1fs",
            what, section.url, text, section.ca_file or "<system trust store>",
            section.cert_file, section.key_file, backoff,
        )
    else:
        log.warning("%s %s: %s; retrying in %.1fs", what, section.url, text, backoff)


class EdgeAgent:
    """One warehouse gateway's agent. ``await run()`` until cancelled."""

    def __init__(
        self,
        config: AgentConfig,
        *,
        clock: Clock = SystemClock(),  # noqa: B008 - stateless, shared on purpose
        topics: Topics | None = None,
    ) -> None:
        self.config = config
        self.clock = clock
        self.topics = topics or Topics(config.uplink_mqtt.topic_root)
        self.agent_id = config.agent.agent_id
        self.warehouse_id = config.agent.warehouse_id
        self._counters = _Counters()

        # Sensor routing: exact topics by dict lookup (the hot path), filters by matching.
        self._exact: dict[str, list[SensorParser]] = {}
        self._wild: list[tuple[str, SensorParser]] = []
        self._subscriptions: list[str] = []
        default_topics: list[str] = []
        max_skew = config.agent.max_skew_s
        for sensor in config.sensors:
            parser = SensorParser(sensor, max_skew)
            topic = sensor.topic or self.topics.sensor(self.warehouse_id, sensor.id)
            if "+" in topic or "#" in topic:
                self._wild.append((topic, parser))
            else:
                self._exact.setdefault(topic, []).append(parser)
            if sensor.topic is None:
                default_topics.append(topic)
            elif topic not in self._subscriptions:
                self._subscriptions.append(topic)
        if len(default_topics) > 1:
            # One wildcard instead of thousands of SUBSCRIBEs; strangers are counted.
            self._subscriptions.append(self.topics.sensor_filter(self.warehouse_id))
        else:
            self._subscriptions.extend(default_topics)

        gaps: dict[str, dict[str, float]] = {}
        for rule in config.rules:
            gaps[f"{rule.zone}/{rule.id}"] = {
                s.id: s.max_gap_s
                for s in config.sensors
                if s.zone == rule.zone and (s.format != "plain" or s.metric == rule.metric)
            }
        self._specs = [
            RuleSpec(
                id=r.id,
                zone=r.zone,
                breaker=r.breaker,
                metric=r.metric,
                above=r.above,
                below=r.below,
                for_s=r.for_s,
                min_readings=r.min_readings,
                dip_grace_s=r.dip_grace_s,
                clear_threshold=_clear_threshold(r.above, r.below, r.clear_below, r.clear_above),
                clear_for_s=r.clear_for_s,
                min_tripped_s=r.min_tripped_s,
                silence_trips_after_s=r.silence_trips_after_s,
                max_gap_s=gaps[f"{r.zone}/{r.id}"],
            )
            for r in config.rules
        ]
        self._machines: dict[str, RuleMachine] = {}
        self._by_key: dict[tuple[str, str], list[RuleMachine]] = {}
        self._breakers: dict[str, Breaker] = {}
        self._dirty_breakers: set[str] = set()
        self._telemetry = TelemetryAggregator(config.agent.telemetry_window_s)
        # The readings log is a bounded sample between commits: never a per-reading write.
        self._readings: deque[Reading] = deque(maxlen=max(500, 2 * len(config.sensors)))
        self._deadletters: deque[DeadLetter] = deque()
        self._countdowns: dict[tuple[str, str], RuleCountdown] = {}
        self._logged_at: dict[str, datetime] = {}
        self._wake = asyncio.Event()
        self._store: Store | None = None
        self._session_seq = 0
        self._incarnation: str | None = None  # the state database's, once it is open
        self._status_topic = self.topics.agent_status(self.warehouse_id, self.agent_id)
        self._last_heartbeat: datetime | None = None  # ts of the last online status sent
        self._heartbeat_due = False
        self._connected = False
        self._sensors_connected = False
        # Messages a failed commit could not save: they go first in the next commit.
        self._unsaved: list[OutgoingMessage] = []
        self._final_seq = 0  # what stats report once run() has ended and the store is closed
        self._final_outbox = 0

    # -- public surface ----------------------------------------------------------
    @property
    def stats(self) -> AgentStats:
        c = self._counters
        store = self._store
        return AgentStats(
            readings_accepted=c.accepted,
            readings_rejected=MappingProxyType(dict(c.rejected)),
            events_published=c.events_published,
            events_created=c.events_created,
            messages_published=c.messages_published,
            outbox_depth=self._final_outbox if store is None else store.outbox_count,
            outbox_dropped=MappingProxyType(dict(store.dropped if store else {})),
            deadletters_published=c.deadletters_published,
            deadletters_dropped=c.deadletters_dropped,
            notices=MappingProxyType(dict(c.notices)),
            uplink_connected=self._connected,
            sensors_connected=self._sensors_connected,
            session_seq=self._session_seq,
            seq=self._final_seq if store is None else store.seq,
            store_errors=c.store_errors,
            incarnation=self._incarnation,
        )

    def breaker_states(self) -> dict[str, tuple[str, bool]]:
        """Current ``(state, open)`` of each breaker (for operators and tests)."""
        self._ensure_started()
        return {name: (b.state.value, b.open) for name, b in self._breakers.items()}

    async def run(self) -> None:
        """Connect, ingest and publish until cancelled; reconnects on broker loss."""
        self._ensure_started()
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
            await _cancel_and_wait(tasks)
            self._close()

    async def tick(self) -> None:
        """Evaluate deadlines at ``clock.now()`` and persist what changed."""
        self._tick()

    # -- lifecycle -----------------------------------------------------------------
    def _ensure_started(self) -> None:
        if self._store is not None:
            return
        cfg = self.config.agent
        now = self.clock.now()
        store = open_store(self.config)
        self._store = store
        self._incarnation = store.incarnation
        # A new process is a new session even before it connects: its events say so.
        self._session_seq = store.bump_session()
        saved_at = store.saved_at
        rule_data = store.load_rules()
        breaker_data = store.load_breakers()
        self._machines.clear()
        self._by_key.clear()
        self._breakers.clear()
        for spec in self._specs:
            data = rule_data.get(spec.key)
            if data is not None and saved_at is not None:
                machine = RuleMachine.restore(
                    spec,
                    self.agent_id,
                    data,
                    saved_at=saved_at,
                    now=now,
                    outage_tolerance_s=cfg.outage_tolerance_s,
                )
            else:
                machine = RuleMachine.create(spec, self.agent_id, now)
            self._machines[spec.key] = machine
            self._by_key.setdefault((spec.zone, spec.metric), []).append(machine)
        changes: list[BreakerChange] = []
        for bc in self.config.breakers:
            rules = [s.key for s in self._specs if s.breaker == bc.name]
            breaker = Breaker.create(bc.name, self.agent_id, rules, now)
            states = {r: self._machines[r].state for r in rules}
            episodes = {r: self._machines[r].episode for r in rules}
            saved = breaker_data.get(bc.name)
            if saved is not None:
                breaker.restore(saved, states, episodes)
                reason = "restored"
            else:
                breaker.rule_states.update(states)
                reason = "started"
            self._breakers[bc.name] = breaker
            self._dirty_breakers.add(bc.name)
            changes.append(breaker.current(now, reason))
        self._commit(now, changes=changes)
        # Config, parsers and machines live as long as the process: keep them out of the
        # cyclic collector's full passes (measured: ~20% of ingest time at 1000 sensors).
        gc.freeze()
        log.info(
            "agent %s started: %d sensors, %d rules, breakers %s (seq %d, session %d, "
            "incarnation %s)",
            self.agent_id,
            len(self.config.sensors),
            len(self._specs),
            self.breaker_states(),
            store.seq,
            store.session_seq,
            store.incarnation,
        )

    def _close(self) -> None:
        store, self._store = self._store, None
        if store is None:
            return
        with contextlib.suppress(Exception):
            self._commit(self.clock.now(), store=store)
        self._final_seq, self._final_outbox = store.seq, store.outbox_count
        store.close()

    # -- sensors (hot path) ------------------------------------------------------
    async def _local_loop(self) -> None:
        section = self.config.local_mqtt
        backoff = section.reconnect_min_s
        kwargs = _client_kwargs(section, f"{self.agent_id}-sensors")
        while True:
            try:
                queues: list[asyncio.Queue[aiomqtt.Message]] = []
                async with aiomqtt.Client(
                    username=section.username,
                    # A persistent session keeps the subscriptions and what arrives while
                    # the agent is away; its client_id is stable (config or agent id).
                    clean_session=not section.persistent_session,
                    queue_type=_owned_queue(queues),
                    **kwargs,
                ) as client:
                    for start in range(0, len(self._subscriptions), 100):
                        batch = self._subscriptions[start : start + 100]
                        qos: int = section.qos
                        await client.subscribe([(t, qos) for t in batch])
                    log.info("sensor broker %s connected", section.url)
                    self._sensors_connected = True
                    backoff = section.reconnect_min_s
                    queue = queues[0]
                    take = self._take_sensor_message
                    # The iterator waits (and notices a lost connection); whatever else is
                    # already queued is taken without a task per message, in bounded batches
                    # so the uplink and tick tasks still get their turn.
                    async for message in client.messages:
                        take(message)
                        for _ in range(min(queue.qsize(), SENSOR_BATCH)):
                            take(queue.get_nowait())
            except aiomqtt.MqttError as exc:
                _reraise_if_cancelling(exc)
                self._sensors_connected = False
                _log_connect_failure("sensor broker", section, exc, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, section.reconnect_max_s)

    def _take_sensor_message(self, message: aiomqtt.Message) -> None:
        payload = message.payload
        if not isinstance(payload, bytes):
            payload = str(payload).encode()
        try:
            self.handle_sensor_message(message.topic.value, payload)
        except Exception:  # one message must never stop ingestion; counted and logged
            self._reject("internal")
            if self._should_log("internal", self.clock.now()):
                log.exception("error handling a message on %s", message.topic.value)

    def handle_sensor_message(self, topic: str, payload: bytes) -> None:
        """Parse and feed one local message. Never raises: bad input is dead-lettered."""
        if self._store is None:
            self._ensure_started()
        parsers = self._exact.get(topic)
        if parsers is None:
            parsers = [p for flt, p in self._wild if topic_matches_sub(flt, topic)]
            if not parsers:
                self._reject("unknown_topic")
                return
        now = self.clock.now()
        for parser in parsers:
            try:
                readings = parser.parse(payload, now)
            except SensorPayloadError as exc:
                self._dead_letter(topic, payload, exc, now, parser.config.id)
                continue
            except Exception as exc:  # a bug must not stop ingestion; it is counted
                log.exception("unexpected error parsing %s", topic)
                self._dead_letter(
                    topic,
                    payload,
                    SensorPayloadError(str(exc), reason="internal"),
                    now,
                    parser.config.id,
                )
                continue
            self._counters.accepted += 1
            for reading in readings:
                self._ingest(reading)

    def _ingest(self, reading: Reading) -> None:
        actions: list[Action] = []
        machines = self._by_key.get((reading.zone, reading.metric))
        if machines:
            for machine in machines:
                produced = machine.feed(reading)
                if produced:
                    actions.extend(produced)
        self._readings.append(reading)
        summary = self._telemetry.add(reading)
        if actions or summary is not None:
            self._handle(actions, [summary] if summary else [], reading.received_at)

    def _reject(self, reason: str) -> None:
        rejected = self._counters.rejected
        rejected[reason] = rejected.get(reason, 0) + 1

    def _dead_letter(
        self,
        topic: str,
        payload: bytes,
        exc: SensorPayloadError,
        now: datetime,
        sensor_id: str | None,
    ) -> None:
        self._reject(exc.reason)
        key = sensor_id or topic
        by_sensor = self._counters.rejected_by_sensor
        total = by_sensor[key] = by_sensor.get(key, 0) + 1
        if self._should_log(f"reject:{key}", now):
            log.warning("rejected payload from %s on %s (%d so far): %s", key, topic, total, exc)
        letter = DeadLetter(
            warehouse_id=self.warehouse_id,
            agent_id=self.agent_id,
            source_topic=topic[:512],
            sensor_id=sensor_id,
            error=str(exc)[:500],
            field=exc.field,
            payload=payload[:2048].decode("utf-8", errors="replace")[:2048],
            received_at=now,
            rejected_total=total,
        )
        if len(self._deadletters) >= self.config.agent.deadletter_queue_max:
            self._deadletters.popleft()  # a junk flood keeps only the newest letters
            self._counters.deadletters_dropped += 1
        self._deadletters.append(letter)
        self._wake.set()

    def _should_log(self, key: str, now: datetime) -> bool:
        last = self._logged_at.get(key)
        if last is not None and (now - last).total_seconds() < self.config.agent.log_interval_s:
            return False
        self._logged_at[key] = now
        return True

    # -- actions -> state -> outbox ----------------------------------------------
    def _handle(
        self,
        actions: Iterable[Action],
        summaries: list[Summary],
        now: datetime,
        *,
        changes: list[BreakerChange] | None = None,
        audits: list[AuditRecord] | None = None,
        always_commit: bool = False,
    ) -> None:
        changes = list(changes or [])
        transitions = False
        for action in actions:
            if isinstance(action, Transition):
                transitions = True
                log.info(
                    "rule %s/%s: %s -> %s (%s) at %s",
                    action.zone,
                    action.rule,
                    action.previous.value,
                    action.state.value,
                    action.reason,
                    action.event_time.isoformat(),
                )
                breaker = self._breakers[action.breaker]
                change = breaker.apply(action)
                self._dirty_breakers.add(breaker.name)
                if change is not None:
                    changes.append(change)
                self._queue_countdown(self._machines[action.key], now)
            else:
                self._notice(action)
        if changes or summaries or audits or transitions or always_commit:
            self._commit(now, changes=changes, summaries=summaries, audits=audits or [])

    def _notice(self, notice: Notice) -> None:
        notices = self._counters.notices
        notices[notice.kind] = notices.get(notice.kind, 0) + 1
        key = f"{notice.kind}:{notice.rule}:{notice.sensor_id}"
        if notice.kind in ("sensor_silent", "sensor_back", "dip_tolerated") or self._should_log(
            key, notice.event_time
        ):
            log.warning(
                "%s: rule %s zone %s sensor %s %s",
                notice.kind,
                notice.rule,
                notice.zone,
                notice.sensor_id,
                notice.detail,
            )

    def _commit(
        self,
        now: datetime,
        *,
        changes: Iterable[BreakerChange] = (),
        summaries: Iterable[Summary] = (),
        audits: Iterable[AuditRecord] = (),
        store: Store | None = None,
    ) -> None:
        """Persist state, recent readings and new messages, then wake the uplink."""
        store = store or self._store
        assert store is not None
        outgoing, self._unsaved = self._unsaved, []
        for change in changes:
            event = self._event(change, store.next_seq(), now)
            outgoing.append(
                OutgoingMessage(
                    "breaker",
                    self.topics.breaker(self.warehouse_id, change.breaker),
                    event.model_dump_json(exclude_none=True),
                    1,
                    True,
                    event.seq,
                    change.breaker,
                )
            )
            self._counters.events_created += 1
        for summary in summaries:
            seq = store.next_seq()
            model = TelemetrySummary(
                warehouse_id=self.warehouse_id,
                agent_id=self.agent_id,
                zone=summary.zone,
                metric="humidity_pct" if summary.metric == "humidity_pct" else "temperature_c",
                window_start=summary.window_start,
                window_end=summary.window_end,
                count=summary.count,
                min=summary.min,
                mean=summary.mean,
                max=summary.max,
                last=summary.last,
                seq=seq,
                incarnation=self._incarnation,
            )
            outgoing.append(
                OutgoingMessage(
                    "telemetry",
                    self.topics.telemetry(self.warehouse_id, summary.zone),
                    model.model_dump_json(exclude_none=True),
                    1,
                    False,
                    seq,
                )
            )
        for audit in audits:
            outgoing.append(
                OutgoingMessage(
                    "audit",
                    self.topics.audit(self.warehouse_id),
                    audit.model_dump_json(exclude_none=True),
                    1,
                    False,
                    store.next_seq(),
                )
            )
        rules = {}
        for rule_id, machine in self._machines.items():
            if machine.dirty:
                rules[rule_id] = machine.snapshot()
                machine.dirty = False
        breakers = {name: self._breakers[name].snapshot() for name in self._dirty_breakers}
        self._dirty_breakers.clear()
        readings = list(self._readings)
        self._readings.clear()
        try:
            refused = store.commit(
                now, rules=rules, breakers=breakers, readings=readings, outgoing=outgoing
            )
        except StoreError:
            # A failed write (disk full, locked file) must not lose a trip: keep the
            # messages and the dirty state for the next commit (next reading or tick).
            self._counters.store_errors += 1
            if len(outgoing) > UNSAVED_MAX:
                outgoing = [m for m in outgoing if m.kind == "breaker"]
            self._unsaved = outgoing
            for rule_id in rules:
                self._machines[rule_id].dirty = True
            self._dirty_breakers.update(breakers)
            if self._should_log("store", now):
                log.exception("state store write failed (%d so far); retrying on the next "
                              "commit", self._counters.store_errors)
            return
        for message in refused:
            log.warning("outbox full: dropped %s message seq %d", message.kind, message.seq)
        if outgoing:
            self._wake.set()

    def _event(self, change: BreakerChange, seq: int, now: datetime) -> BreakerEvent:
        return BreakerEvent(
            warehouse_id=self.warehouse_id,
            agent_id=self.agent_id,
            breaker=change.breaker,
            state=change.state,
            previous_state=change.previous_state,
            open=change.open,
            override=change.override,
            override_actor=change.override_actor,
            override_expires_at=change.override_expires_at,
            acknowledged=change.acknowledged,
            acknowledged_by=change.acknowledged_by,
            zone=change.zone,
            rule=change.rule,
            reason=change.reason[:64],
            detail=change.detail,
            values=[
                TripValue(sensor_id=r.sensor_id, metric=r.metric, value=r.value, ts=r.ts)
                for r in change.values[-64:]
            ],
            limit=self._limit(change.zone, change.rule),
            since=change.since,
            episode_id=change.episode_id,
            seq=seq,
            session_seq=self._session_seq,
            incarnation=self._incarnation,
            event_time=change.event_time,
            published_at=now,
            clock_suspect=change.clock_suspect,
        )

    def _limit(self, zone: str | None, rule: str | None) -> TripLimit | None:
        """The limit of the rule behind a change, for the coordinator's charts and notices."""
        machine = self._machines.get(f"{zone}/{rule}")
        if machine is None:
            return None
        spec = machine.spec
        op: Literal["above", "below"] = "above" if spec.above is not None else "below"
        value = spec.above if spec.above is not None else spec.below
        if value is None or spec.metric not in ("temperature_c", "humidity_pct"):
            return None
        metric: Literal["temperature_c", "humidity_pct"] = (
            "humidity_pct" if spec.metric == "humidity_pct" else "temperature_c")
        return TripLimit(metric=metric, op=op, value=value, for_s=spec.for_s)

    def _queue_countdown(self, machine: RuleMachine, now: datetime) -> None:
        cd = machine.countdown(now)
        spec = machine.spec
        self._countdowns[(spec.zone, spec.id)] = RuleCountdown(
            warehouse_id=self.warehouse_id,
            agent_id=self.agent_id,
            zone=spec.zone,
            rule=spec.id,
            breaker=spec.breaker,
            state=cd.state,
            pending_since=cd.pending_since,
            trips_at=cd.trips_at,
            seconds_left=cd.seconds_left,
            readings_in_window=cd.readings_in_window,
            event_time=now,
        )

    # -- time ----------------------------------------------------------------------
    async def _tick_loop(self) -> None:
        interval = self.config.agent.tick_interval_s
        while True:
            await asyncio.sleep(interval)
            self._tick()

    def _tick(self) -> None:
        self._ensure_started()
        now = self.clock.now()
        actions: list[Action] = []
        for machine in self._machines.values():
            actions.extend(machine.tick(now))
        changes: list[BreakerChange] = []
        audits: list[AuditRecord] = []
        for breaker in self._breakers.values():
            actor = breaker.override_actor
            change = breaker.tick(now)
            if change is not None:
                self._dirty_breakers.add(breaker.name)
                changes.append(change)
                audits.append(
                    AuditRecord(
                        warehouse_id=self.warehouse_id,
                        agent_id=self.agent_id,
                        breaker=breaker.name,
                        command_id=f"expiry-{now.strftime('%Y%m%dT%H%M%S')}",
                        command=CommandKind.RELEASE,
                        actor=SYSTEM_ACTOR,
                        reason=f"override set by {actor} expired",
                        outcome="expired",
                        detail=change.detail,
                        ts=now,
                    )
                )
        summaries = self._telemetry.flush(now)
        self._handle(actions, summaries, now, changes=changes, audits=audits, always_commit=True)
        for machine in self._machines.values():
            if machine.state is BreakerState.PENDING:
                self._queue_countdown(machine, now)
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

    # -- commands --------------------------------------------------------------------
    def handle_command(self, breaker_name: str, payload: bytes, topic: str = "") -> None:
        """Apply one operator command and audit it. Never raises."""
        self._ensure_started()
        now = self.clock.now()
        try:
            command = decode(BreakerCommand, payload)
        except PayloadError as exc:
            self._dead_letter(
                topic,
                payload,
                SensorPayloadError(f"command: {exc}", field=exc.field, reason="command"),
                now,
                None,
            )
            return
        breaker = self._breakers.get(breaker_name)
        changes: list[BreakerChange] = []
        if breaker is None:
            outcome, detail = "refused", f"no breaker named {breaker_name!r}"
        else:
            result = breaker.command(command, now)
            outcome, detail = result.outcome, result.detail
            self._dirty_breakers.add(breaker.name)
            if result.change is not None:
                changes.append(result.change)
        log.info(
            "command %s %s on %s by %s: %s (%s)",
            command.command_id,
            command.command.value,
            breaker_name,
            command.actor,
            outcome,
            detail,
        )
        audit = AuditRecord(
            warehouse_id=self.warehouse_id,
            agent_id=self.agent_id,
            breaker=breaker_name,
            command_id=command.command_id,
            command=command.command,
            actor=command.actor,
            reason=command.reason,
            outcome="applied" if outcome == "applied" else "refused",
            detail=detail,
            ts=now,
        )
        self._commit(now, changes=changes, audits=[audit])

    # -- uplink ----------------------------------------------------------------------
    def _status(
        self,
        state: AgentState,
        session_seq: int,
        *,
        graceful: bool = False,
        ts: datetime | None = None,
    ) -> bytes:
        every = self.config.agent.heartbeat_s
        return encode(
            AgentStatus(
                warehouse_id=self.warehouse_id,
                agent_id=self.agent_id,
                state=state,
                session_seq=session_seq,
                incarnation=self._incarnation,
                ts=ts or self.clock.now(),
                software=SOFTWARE,
                breakers=list(self._breakers),
                graceful=graceful,
                heartbeat_s=every if every > 0 and state is AgentState.ONLINE else None,
            )
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
        backoff = section.reconnect_min_s
        status_topic = self._status_topic
        kwargs = _client_kwargs(section, f"{self.agent_id}-uplink")
        used = False  # the current session_seq has not connected yet
        while True:
            store = self._store
            assert store is not None
            if used:
                self._session_seq = store.bump_session()
            session = self._session_seq
            will = aiomqtt.Will(
                status_topic, self._status(AgentState.OFFLINE, session), qos=1, retain=True
            )
            try:
                async with aiomqtt.Client(
                    # amqtt queues offline QoS 1 messages only for named clients
                    username=section.username or self.agent_id,
                    clean_session=False,
                    will=will,
                    **kwargs,
                ) as client:
                    used = True
                    backoff = section.reconnect_min_s
                    try:
                        await self._uplink_session(client, status_topic, session)
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
                _reraise_if_cancelling(exc)
                self._connected = False
                _log_connect_failure("uplink", section, exc, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, section.reconnect_max_s)
            finally:
                self._connected = False

    async def _uplink_session(
        self, client: aiomqtt.Client, status_topic: str, session: int
    ) -> None:
        await client.subscribe(self.topics.command_filter(self.warehouse_id), qos=1)
        await self._publish_online(client, session)
        self._connected = True
        log.info("uplink %s connected (session %d)", self.config.uplink_mqtt.url, session)
        reader = asyncio.create_task(self._read_commands(client))
        writer = asyncio.create_task(self._drain_outbox(client))
        try:
            done, _ = await asyncio.wait({reader, writer}, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                task.result()
        finally:
            await _cancel_and_wait([reader, writer])

    async def _read_commands(self, client: aiomqtt.Client) -> None:
        async for message in client.messages:
            topic = message.topic.value
            try:
                parsed = self.topics.parse(topic)
            except TopicError:
                continue
            if parsed.kind != "command" or parsed.breaker is None:
                continue
            payload = message.payload
            if not isinstance(payload, bytes):
                payload = str(payload).encode()
            self.handle_command(parsed.breaker, payload, topic)

    async def _drain_outbox(self, client: aiomqtt.Client) -> None:
        store = self._store
        assert store is not None
        replay_upto = store.outbox_max_seq()
        # Live first: the newest queued state of each breaker, retained, not historical.
        for row in store.latest_breaker_rows(replay_upto):
            await self._publish_row(client, store, row, historical=False)
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
        payload = row.payload
        retain = row.retain and not historical
        if historical:
            if row.kind == "breaker":
                event = BreakerEvent.model_validate_json(payload)
                payload = event.model_copy(update={"historical": True}).model_dump_json(
                    exclude_none=True
                )
            elif row.kind == "telemetry":
                summary = TelemetrySummary.model_validate_json(payload)
                payload = summary.model_copy(update={"historical": True}).model_dump_json(
                    exclude_none=True
                )
        await client.publish(row.topic, payload.encode(), qos=row.qos, retain=retain)
        store.delete_outbox(row.id)
        self._counters.messages_published += 1
        if row.kind == "breaker":
            self._counters.events_published += 1

    async def _drain_best_effort(self, client: aiomqtt.Client) -> None:
        """Heartbeat, then QoS 0 extras: countdowns (latest only, retained) and dead letters."""
        if self._heartbeat_due:
            await self._publish_online(client, self._session_seq)
        if self._countdowns:
            countdowns, self._countdowns = self._countdowns, {}
            for (zone, rule), countdown in countdowns.items():
                await client.publish(
                    self.topics.countdown(self.warehouse_id, zone, rule),
                    encode(countdown),
                    qos=0,
                    retain=True,
                )
                self._counters.messages_published += 1
        topic = self.topics.deadletter(self.warehouse_id)
        for _ in range(min(200, len(self._deadletters))):
            letter = self._deadletters.popleft()
            await client.publish(topic, encode(letter), qos=0)
            self._counters.deadletters_published += 1
            self._counters.messages_published += 1
        if self._deadletters:
            self._wake.set()  # more to send; let live events interleave first


async def _cancel_and_wait(tasks: list[asyncio.Task[None]]) -> None:
    """Cancel ``tasks`` and wait until they have ended. Python 3.11's ``wait_for`` (used
    inside aiomqtt) can swallow a cancellation that races with a result, so a task that is
    still running after a second is cancelled again rather than waited on forever."""
    for task in tasks:
        task.cancel()
    pending = {t for t in tasks if not t.done()}
    while pending:
        _, pending = await asyncio.wait(pending, timeout=1.0)
        for task in pending:
            task.cancel()
    for task in tasks:
        if not task.cancelled() and task.exception() is not None:
            log.debug("task %s ended with %r", task.get_name(), task.exception())


def _reraise_if_cancelling(exc: BaseException) -> None:
    """A disconnect that fails while the task is being cancelled must not swallow the
    cancellation (the reconnect loop would then run forever)."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError from exc


def _owned_queue(
    holder: list[asyncio.Queue[aiomqtt.Message]],
) -> type[asyncio.Queue[aiomqtt.Message]]:
    """A queue class for aiomqtt's ``queue_type`` that hands us the instance it builds."""

    class OwnedQueue(asyncio.Queue[aiomqtt.Message]):
        def __init__(self, maxsize: int = 0) -> None:
            super().__init__(maxsize)
            holder.append(self)

    return OwnedQueue


def _clear_threshold(
    above: float | None,
    below: float | None,
    clear_below: float | None,
    clear_above: float | None,
) -> float:
    if above is not None:
        return above if clear_below is None else clear_below
    assert below is not None
    return below if clear_above is None else clear_above
