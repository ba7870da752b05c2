"""The agent's pure core: everything between "payload in" and "messages out".

``ingest(topic, payload, now)``, ``tick(now)`` and ``command(breaker, payload, now)`` each
return an :class:`Output` (durable messages for the outbox, best-effort countdowns and
dead letters); ``take_state()`` hands the shell what must be persisted with them. No MQTT,
no SQLite, no clock: the shell (:mod:`edge_agent.agent`) owns those, as
``coordinator/ops/watcher.py`` does for the coordinator. A replay
(:mod:`edge_agent.replay`) drives the same core in event time. Whether a command may be
acted on (signature, replayed nonces) is :mod:`edge_agent.command_gate`; the rule specs
built from the configuration, :mod:`edge_agent.rule_specs`.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Sequence
from datetime import datetime, timedelta

from edge_agent import rule_snapshots
from edge_agent.breakers import Breaker, BreakerChange
from edge_agent.command_gate import CommandGate
from edge_agent.config import AgentConfig
from edge_agent.core_io import Output, Saved, State
from edge_agent.counters import Counters
from edge_agent.errors import SensorPayloadError
from edge_agent.messages import (
    Identity,
    audit_message,
    breaker_message,
    countdown,
    dead_letter,
    telemetry_message,
    trip_limit,
)
from edge_agent.readings import Metric, Reading
from edge_agent.routing import SensorRouter
from edge_agent.rule_specs import rule_specs
from edge_agent.rule_types import Action, Notice, Transition
from edge_agent.rules import RuleMachine
from edge_agent.telemetry import Summary, TelemetryAggregator
from protocols import (
    AuditRecord,
    BreakerCommand,
    BreakerState,
    CommandKind,
    PayloadError,
    Topics,
    decode,
)

log = logging.getLogger("edge_agent")

SYSTEM_ACTOR = "edge-agent"
DROP_CAUSES = ("out_of_order", "duplicate")


class AgentCore:
    """One gateway's rules, breakers, telemetry and commands, fed payloads and times."""

    def __init__(
        self, config: AgentConfig, topics: Topics, *, command_key: bytes | None = None
    ) -> None:
        self.config = config
        self.topics = topics
        self.router = SensorRouter(config, topics)
        self.specs = rule_specs(config)
        self.counters = Counters()
        self.commands = CommandGate(command_key, config.agent.agent_id,
                                    config.agent.command_max_ttl_s,
                                    unsigned=config.agent.unsigned_commands)
        self.me = Identity(config.agent.warehouse_id, config.agent.agent_id, topics, None)
        self.seq = 0
        self.session_seq = 0
        self.machines: dict[str, RuleMachine] = {}
        self.breakers: dict[str, Breaker] = {}
        self._by_key: dict[tuple[str, str], list[RuleMachine]] = {}
        self._dirty_breakers: set[str] = set()
        self._telemetry = TelemetryAggregator(config.agent.telemetry_window_s)
        # The readings log is a bounded sample between commits: never a per-reading write.
        self._readings: deque[Reading] = deque(maxlen=max(500, 2 * len(config.sensors)))
        self._window_drops: dict[str, dict[str, dict[str, int]]] = {}  # zone -> sensor -> cause
        self._logged_at: dict[str, datetime] = {}
        # the latest time the shell has given: one far below it is the clock stepped back
        self._latest: datetime | None = None
        self._step_tolerance = timedelta(seconds=config.agent.max_skew_s)

    # -- start -----------------------------------------------------------------
    def start(self, now: datetime, saved: Saved) -> Output:
        """Rebuild rules and breakers from what was saved; the current state of every
        breaker is the first event of this process."""
        cfg = self.config.agent
        self.seq, self.session_seq = saved.seq, saved.session_seq
        self.me = Identity(self.me.warehouse_id, self.me.agent_id, self.topics,
                           saved.incarnation)
        self.commands.load(saved.nonces, now)
        self.machines.clear()
        self._by_key.clear()
        self.breakers.clear()
        for spec in self.specs:
            data = saved.rules.get(spec.key)
            if data is not None and saved.saved_at is not None:
                machine = rule_snapshots.restore(
                    spec, self.me.agent_id, data, saved_at=saved.saved_at, now=now,
                    outage_tolerance_s=cfg.outage_tolerance_s,
                )
            else:
                machine = RuleMachine.create(spec, self.me.agent_id, now)
            self.machines[spec.key] = machine
            self._by_key.setdefault((spec.zone, spec.metric), []).append(machine)
        changes: list[BreakerChange] = []
        for bc in self.config.breakers:
            rules = [s.key for s in self.specs if s.breaker == bc.name]
            breaker = Breaker.create(bc.name, self.me.agent_id, rules, now)
            states = {r: self.machines[r].state for r in rules}
            episodes = {r: self.machines[r].episode for r in rules}
            data = saved.breakers.get(bc.name)
            if data is not None:
                breaker.restore(data, states, episodes)
                reason = "restored"
            else:
                breaker.rule_states.update(states)
                reason = "started"
            self.breakers[bc.name] = breaker
            self._dirty_breakers.add(bc.name)
            changes.append(breaker.current(now, reason))
        out = Output(persist=True)
        self._messages(out, now, changes=changes)
        # saved after ``now``: the clock went back while the agent was down (a gateway
        # that booted on a bad RTC ran ahead, then NTP set it right)
        self._latest = saved.saved_at
        self._stepped_back(out, now)
        return out

    def _stepped_back(self, out: Output, now: datetime) -> None:
        """A ``now`` further than ``max_skew_s`` below the latest one given (or the
        saved time at start) is the clock stepped back: handled here, as time never goes
        back. A step forward looks like time passing; the shell finds it."""
        latest = self._latest
        if latest is None or now >= latest:
            self._latest = now
            return
        if latest - now <= self._step_tolerance:
            return
        self._latest = now
        stepped = self.clock_stepped(now, (now - latest).total_seconds())
        out.persist = True
        out.messages.extend(stepped.messages)
        out.countdowns.extend(stepped.countdowns)
        out.transitions.extend(stepped.transitions)

    def clock_stepped(self, now: datetime, by_s: float) -> Output:
        """The gateway clock stepped by ``by_s`` seconds (back: found by the core; forward:
        told by the shell, which compares it with a monotonic clock):
        every rule starts its sensors again from ``now``
        (:meth:`edge_agent.rules.RuleMachine.clock_stepped`); an override keeps the time
        it had left."""
        out = Output(persist=True)
        log.warning("gateway clock stepped %+.0f s: rules start their sensors again from %s",
                    by_s, now.isoformat())
        actions: list[Action] = []
        for machine in self.machines.values():
            actions.extend(machine.clock_stepped(now, by_s))
        for breaker in self.breakers.values():
            breaker.clock_stepped(by_s)
            self._dirty_breakers.add(breaker.name)
        self._logged_at.clear()
        self._handle(out, actions, [], now)
        return out

    # -- readings (hot path) ---------------------------------------------------
    def ingest(self, topic: str, payload: bytes, now: datetime) -> Output:
        """Parse and feed one local message. Never raises: bad input is dead-lettered."""
        out = Output()
        if self._latest is None or now >= self._latest:
            self._latest = now  # the usual case, inline: this is the hot path
        else:
            self._stepped_back(out, now)
        parsers = self.router.parsers(topic)
        if not parsers:
            self.counters.reject("unknown_topic")
            return out
        for parser in parsers:
            sensor = parser.config.id
            try:
                parsed = parser.parse(payload, now)
            except SensorPayloadError as exc:
                self._dead_letter(out, topic, payload, exc, now, sensor)
                continue
            except Exception as exc:  # a bug must not stop ingestion; it is counted
                log.exception("unexpected error parsing %s", topic)
                error = SensorPayloadError(str(exc), reason="internal")
                self._dead_letter(out, topic, payload, error, now, sensor)
                continue
            for error in parsed.errors:
                self._dead_letter(out, topic, payload, error, now, sensor)
            self.counters.accept(sensor)
            for reading in parsed.readings:
                self._feed(out, reading)
        return out

    def feed_value(self, sensor_id: str, metric: Metric, value: float, ts: datetime) -> Output:
        """Feed one value already in °C / %RH with its event time (a data logger's export
        in a replay), checked like a payload's value. An unknown sensor is refused."""
        out = Output()
        parser = self.router.parser_for(sensor_id)
        source = f"logger/{sensor_id}"
        if parser is None:
            error = SensorPayloadError(f"no sensor {sensor_id!r} in the config",
                                       field="sensor_id", reason="unknown_sensor")
            self._dead_letter(out, source, str(value).encode(), error, ts, None)
            return out
        try:
            reading = parser.reading(metric, value, ts)
        except SensorPayloadError as exc:
            self._dead_letter(out, source, str(value).encode(), exc, ts, sensor_id)
            return out
        self.counters.accept(sensor_id)
        self._feed(out, reading)
        return out

    def _feed(self, out: Output, reading: Reading) -> None:
        actions: list[Action] = []
        machines = self._by_key.get((reading.zone, reading.metric))
        if machines:
            for machine in machines:
                produced = machine.feed(reading)
                if produced:
                    actions.extend(produced)
        if reading.clock_suspect:
            self._drop(reading.zone, reading.sensor_id, "clock_suspect")
        drop = None
        if actions:
            drop = next(
                (a.kind for a in actions if isinstance(a, Notice) and a.kind in DROP_CAUSES), None
            )
        if drop is not None:
            # every rule of the zone says the same of one reading: counted once, per sensor
            self._drop(reading.zone, reading.sensor_id, drop)
            self._notice(Notice("*", reading.zone, drop, reading.ts, reading.sensor_id,
                                f"event time {reading.ts.isoformat()}"))
            return
        self._readings.append(reading)
        summary = self._telemetry.add(reading)
        if actions or summary is not None:
            self._handle(out, actions, [summary] if summary else [], reading.received_at)

    def _drop(self, zone: str, sensor: str, cause: str) -> None:
        self.counters.drop(sensor, cause)
        by_sensor = self._window_drops.setdefault(zone, {}).setdefault(sensor, {})
        by_sensor[cause] = by_sensor.get(cause, 0) + 1

    def _dead_letter(
        self, out: Output, topic: str, payload: bytes, exc: SensorPayloadError,
        now: datetime, sensor_id: str | None,
    ) -> None:
        total = self.counters.reject(exc.reason, sensor_id or topic)
        key = sensor_id or topic
        if self._should_log(f"reject:{key}", now):
            log.warning("rejected payload from %s on %s (%d so far): %s", key, topic, total, exc)
        out.deadletters.append(dead_letter(self.me, topic, payload, exc, now, sensor_id, total))

    # -- time ------------------------------------------------------------------
    def tick(self, now: datetime) -> Output:
        """Deadlines at ``now``: staleness, silence trips, override expiry, telemetry."""
        out = Output(persist=True)
        self._stepped_back(out, now)
        actions: list[Action] = []
        for machine in self.machines.values():
            actions.extend(machine.tick(now))
        changes: list[BreakerChange] = []
        audits: list[AuditRecord] = []
        for breaker in self.breakers.values():
            actor = breaker.override_actor
            change = breaker.tick(now)
            if change is not None:
                self._dirty_breakers.add(breaker.name)
                changes.append(change)
                audits.append(AuditRecord(
                    warehouse_id=self.me.warehouse_id, agent_id=self.me.agent_id,
                    breaker=breaker.name,
                    command_id=f"expiry-{now.strftime('%Y%m%dT%H%M%S')}",
                    command=CommandKind.RELEASE, actor=SYSTEM_ACTOR,
                    reason=f"override set by {actor} expired", outcome="expired",
                    detail=change.detail, ts=now,
                ))
        self._handle(out, actions, self._telemetry.flush(now), now, changes=changes,
                     audits=audits)
        for machine in self.machines.values():
            if machine.state is BreakerState.PENDING:
                out.countdowns.append(countdown(self.me, machine, now))
        return out

    # -- commands --------------------------------------------------------------
    def command(self, breaker_name: str, payload: bytes, now: datetime, topic: str = "") -> Output:
        """Verify, apply and audit one operator command. Never raises."""
        out = Output()
        self._stepped_back(out, now)
        try:
            cmd = decode(BreakerCommand, payload)
        except PayloadError as exc:
            error = SensorPayloadError(f"command: {exc}", field=exc.field, reason="command")
            self._dead_letter(out, topic, payload, error, now, None)
            return out
        refusal = self.commands.refusal(cmd, breaker_name, now)
        breaker = self.breakers.get(breaker_name)
        changes: list[BreakerChange] = []
        if refusal is not None:
            outcome, detail = "refused", refusal
        elif breaker is None:
            outcome, detail = "refused", f"no breaker named {breaker_name!r}"
        else:
            result = breaker.command(cmd, now)
            outcome, detail = result.outcome, result.detail
            self._dirty_breakers.add(breaker.name)
            if result.change is not None:
                changes.append(result.change)
        self.counters.command(outcome if refusal is None else f"refused_{refusal}")
        log.info("command %s %s on %s by %s: %s (%s)", cmd.command_id, cmd.command.value,
                 breaker_name, cmd.actor, outcome, detail)
        audit = AuditRecord(
            warehouse_id=self.me.warehouse_id, agent_id=self.me.agent_id,
            breaker=breaker_name, command_id=cmd.command_id, command=cmd.command,
            actor=cmd.actor, reason=cmd.reason,
            outcome="applied" if outcome == "applied" else "refused", detail=detail, ts=now,
        )
        out.persist = True
        self._messages(out, now, changes=changes, audits=[audit])
        return out

    # -- state -----------------------------------------------------------------
    def take_state(self, now: datetime) -> State:
        """What changed since the last call, for the shell to save (and give back with
        :meth:`keep_state` if the save failed)."""
        rules = {}
        for key, machine in self.machines.items():
            if machine.dirty:
                rules[key] = rule_snapshots.snapshot(machine)
                machine.dirty = False
        breakers = {name: self.breakers[name].snapshot() for name in self._dirty_breakers}
        self._dirty_breakers.clear()
        readings = list(self._readings)
        self._readings.clear()
        return State(rules, breakers, readings, self.commands.take_new(now))

    def keep_state(self, state: State) -> None:
        for key in state.rules:
            self.machines[key].dirty = True
        self._dirty_breakers.update(state.breakers)
        self.commands.keep_new(state.nonces)

    # -- actions -> messages ---------------------------------------------------
    def _handle(
        self, out: Output, actions: list[Action], summaries: list[Summary], now: datetime,
        *, changes: list[BreakerChange] | None = None, audits: list[AuditRecord] | None = None,
    ) -> None:
        changes = list(changes or [])
        for action in actions:
            if isinstance(action, Transition):
                out.persist = True
                out.transitions.append(action)
                log.info("rule %s/%s: %s -> %s (%s, %s) at %s", action.zone, action.rule,
                         action.previous.value, action.state.value, action.reason,
                         action.detail, action.event_time.isoformat())
                breaker = self.breakers[action.breaker]
                change = breaker.apply(action)
                self._dirty_breakers.add(breaker.name)
                if change is not None:
                    changes.append(change)
                out.countdowns.append(countdown(self.me, self.machines[action.key], now))
            else:
                self._notice(action)
        self._messages(out, now, changes=changes, summaries=summaries, audits=audits or [])

    def _messages(
        self, out: Output, now: datetime, *, changes: Sequence[BreakerChange] = (),
        summaries: Sequence[Summary] = (), audits: Sequence[AuditRecord] = (),
    ) -> None:
        for change in changes:
            self.seq += 1
            limit = trip_limit(self.machines.get(f"{change.zone}/{change.rule}"))
            out.messages.append(
                breaker_message(self.me, change, self.seq, self.session_seq, now, limit))
            self.counters.events_created += 1
        for summary in summaries:
            self.seq += 1
            drops = self._window_drops.pop(summary.zone, {})
            out.messages.append(telemetry_message(self.me, summary, self.seq, drops))
        for audit in audits:
            self.seq += 1
            out.messages.append(audit_message(self.me, audit, self.seq))

    def _notice(self, notice: Notice) -> None:
        self.counters.notice(notice.kind)
        key = f"{notice.kind}:{notice.rule}:{notice.sensor_id}"
        loud = notice.kind in ("sensor_silent", "sensor_back", "dip_tolerated", "clock_step")
        if loud or self._should_log(key, notice.event_time):
            log.warning("%s: rule %s zone %s sensor %s %s", notice.kind, notice.rule,
                        notice.zone, notice.sensor_id, notice.detail)

    def _should_log(self, key: str, now: datetime) -> bool:
        last = self._logged_at.get(key)
        # (a clock stepped back below ``last`` must not silence the key until it is back)
        if last is not None and 0 <= (now - last).total_seconds() < \
                self.config.agent.log_interval_s:
            return False
        self._logged_at[key] = now
        return True

