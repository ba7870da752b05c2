"""What an uplink session publishes, and in which order (the agent's outbox drain).

On every new uplink session the agent first re-publishes the current state of each
breaker (its newest event, retained, with its original ``seq``), as a Sparkplug birth
carries current values: a broker that acknowledged an event and then lost it (killed
before it saved it to disk) is healed by the next connection, and the coordinator's
``(agent_id, seq)`` dedupe absorbs the repeats on a flapping link. Then the rest of the
outbox follows in sequence order as ``historical`` (not retained); live messages go
first whenever there are any. Between batches go the best-effort QoS 0 extras kept here
in memory: the heartbeat, the latest countdown of each rule (retained) and dead letters.

The connection itself (reconnects, will, commands) is the shell's,
:mod:`edge_agent.agent`; every time decision uses the injected clock.
"""

from __future__ import annotations

import asyncio
from collections import deque
from datetime import datetime

import aiomqtt

from edge_agent.config import AgentConfig
from edge_agent.core import AgentCore
from edge_agent.messages import agent_status, as_historical
from edge_agent.outbox_queue import OutboxRow
from edge_agent.store import Store
from protocols import AgentState, DeadLetter, RuleCountdown, Topics, encode
from protocols.clock import Clock


class UplinkPublisher:
    """The uplink's publishing side for one agent, and its counters."""

    def __init__(self, config: AgentConfig, core: AgentCore, topics: Topics, clock: Clock) -> None:
        self.config = config
        self.core = core
        self.topics = topics
        self.clock = clock
        self.warehouse_id = config.agent.warehouse_id
        self.status_topic = topics.agent_status(self.warehouse_id, config.agent.agent_id)
        self.wake = asyncio.Event()  # set when there is something to publish
        self.deadletters: deque[DeadLetter] = deque()
        self.countdowns: dict[tuple[str, str], RuleCountdown] = {}
        self.last_heartbeat: datetime | None = None  # ts of the last online status sent
        self.heartbeat_due = False
        self.published = 0
        self.events_published = 0
        self.deadletters_published = 0
        self.deadletters_dropped = 0
        self.states_resent = 0

    # -- what the core produced, kept for the next drain ---------------------------
    def keep(self, deadletters: list[DeadLetter], countdowns: list[RuleCountdown]) -> None:
        for letter in deadletters:
            if len(self.deadletters) >= self.config.agent.deadletter_queue_max:
                self.deadletters.popleft()  # a junk flood keeps only the newest letters
                self.deadletters_dropped += 1
            self.deadletters.append(letter)
        for cd in countdowns:
            self.countdowns[(cd.zone, cd.rule)] = cd
        if deadletters or countdowns:
            self.wake.set()

    def check_heartbeat(self, now: datetime, *, connected: bool) -> None:
        # Driven by ticks on the injected clock: a hung loop sends none, and a replay on a
        # ManualClock heartbeats in event time like the coordinator judges it.
        every = self.config.agent.heartbeat_s
        last = self.last_heartbeat
        due = last is not None and (now - last).total_seconds() >= every
        if every > 0 and connected and due:
            self.heartbeat_due = True
            self.wake.set()

    # -- status (birth, will, heartbeat) -------------------------------------------
    def status(
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
        )  # fmt: skip

    async def publish_online(self, client: aiomqtt.Client, session: int) -> None:
        """Birth and heartbeat: the retained online status of this session, fresh ``ts``."""
        now = self.clock.now()
        self.heartbeat_due = False
        await client.publish(
            self.status_topic,
            self.status(AgentState.ONLINE, session, ts=now),
            qos=1,
            retain=True,
        )
        self.last_heartbeat = now

    # -- the drain ---------------------------------------------------------------------
    async def drain_outbox(self, client: aiomqtt.Client, store: Store) -> None:
        replay_upto = store.outbox_max_seq()
        # Current state first, every session: the newest event of each breaker, retained,
        # with its original seq, whether or not it was published (and acknowledged) before.
        current = store.current_rows()
        for row in current:
            await self._publish_row(client, store, row, historical=False)
            self.states_resent += 1
        # those still queued were just sent: not again as historical
        store.delete_outbox_seqs(row.seq for row in current)
        last_live = replay_upto
        while True:
            self.wake.clear()
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
                await self.wake.wait()

    async def _publish_row(
        self, client: aiomqtt.Client, store: Store, row: OutboxRow, *, historical: bool
    ) -> None:
        payload = as_historical(row.kind, row.payload) if historical else row.payload
        retain = row.retain and not historical
        await client.publish(row.topic, payload.encode(), qos=row.qos, retain=retain)
        if row.id:
            store.delete_outbox(row.id)
        self.published += 1
        if row.kind == "breaker":
            self.events_published += 1

    async def _drain_best_effort(self, client: aiomqtt.Client) -> None:
        """Heartbeat, then QoS 0 extras: countdowns (latest only, retained) and dead letters."""
        if self.heartbeat_due:
            await self.publish_online(client, self.core.session_seq)
        if self.countdowns:
            countdowns, self.countdowns = self.countdowns, {}
            for (zone, rule), countdown in countdowns.items():
                await client.publish(
                    self.topics.countdown(self.warehouse_id, zone, rule),
                    encode(countdown),
                    qos=0,
                    retain=True,
                )
                self.published += 1
        topic = self.topics.deadletter(self.warehouse_id)
        for _ in range(min(200, len(self.deadletters))):
            letter = self.deadletters.popleft()
            await client.publish(topic, encode(letter), qos=0)
            self.deadletters_published += 1
            self.published += 1
        if self.deadletters:
            self.wake.set()  # more to send; let live events interleave first
