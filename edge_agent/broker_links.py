"""The agent's two broker connections, each a loop that reconnects through its broker list
with backoff (:class:`~protocols.reconnect.BrokerRotation`) until cancelled.

- :class:`SensorLink`: the gateway's local sensor broker. Subscribes to every sensor
  topic (and to commands signed on site when they cannot arrive over the uplink) and hands
  each message to the agent; the hot path.
- :class:`UplinkLink`: the uplink broker. A persistent session with a last will; per
  session it subscribes to commands, publishes the birth and drains the outbox
  (:mod:`edge_agent.uplink_publisher`), and bumps the session number once per established
  session (Sparkplug's bdSeq).

They move bytes only: what a message means is the agent's (:mod:`edge_agent.agent`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

import aiomqtt

from edge_agent.config import AgentConfig
from edge_agent.core import AgentCore
from edge_agent.mqtt_io import (
    broker_address,
    cancel_and_wait,
    client_kwargs,
    log_connect_failure,
    owned_queue,
    reraise_if_cancelling,
)
from edge_agent.store import Store
from edge_agent.uplink_publisher import UplinkPublisher
from protocols import AgentState, Topics
from protocols.clock import Clock
from protocols.mqtt_url import parse_mqtt_url
from protocols.reconnect import BrokerRotation

log = logging.getLogger("edge_agent")

SENSOR_BATCH = 256  # queued sensor messages handled per turn of the event loop


class SensorLink:
    """``command_filter``: also subscribed to (commands a technician signs on site and
    publishes here: no coordinator or uplink needed), or None."""

    def __init__(self, config: AgentConfig, subscriptions: list[str],
                 command_filter: str | None, take: Callable[[aiomqtt.Message], None],
                 clock: Clock) -> None:
        self.section = config.local_mqtt
        self.client_id = f"{config.agent.agent_id}-sensors"
        self.subscriptions = subscriptions
        self.command_filter = command_filter
        self.take = take
        self.clock = clock
        self.connected = False

    async def run(self) -> None:
        section = self.section
        rotation = BrokerRotation(section.broker_urls, section.backoff())
        attempt = rotation.first()
        kwargs = client_kwargs(section, self.client_id)
        subscriptions = self.subscriptions
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
                    if self.command_filter is not None:
                        await client.subscribe(self.command_filter, qos=1)
                    log.info("sensor broker %s connected", attempt.url)
                    rotation.connected(self.clock.now())
                    self.connected = True
                    queue = queues[0]
                    take = self.take
                    # The iterator waits (and notices a lost connection); whatever else is
                    # already queued is taken without a task per message, in bounded batches
                    # so the uplink and tick tasks still get their turn.
                    async for message in client.messages:
                        take(message)
                        for _ in range(min(queue.qsize(), SENSOR_BATCH)):
                            take(queue.get_nowait())
            except aiomqtt.MqttError as exc:
                reraise_if_cancelling(exc)
                self.connected = False
                failed = attempt.url
                attempt = rotation.failed(self.clock.now())
                log_connect_failure("sensor broker", section, failed, exc, attempt)


class UplinkLink:
    """``store``: the agent's open state store (the session number and the outbox);
    ``take_command``: each message on the command topics, with its topic."""

    def __init__(self, config: AgentConfig, core: AgentCore, publisher: UplinkPublisher,
                 topics: Topics, store: Callable[[], Store | None],
                 take_command: Callable[[str, bytes], None], clock: Clock) -> None:
        self.section = config.uplink_mqtt
        self.agent_id = config.agent.agent_id
        self.warehouse_id = config.agent.warehouse_id
        self.core = core
        self.publisher = publisher
        self.topics = topics
        self.store = store
        self.take_command = take_command
        self.clock = clock
        self.connected = False
        self.broker: str | None = None  # host:port of the current (or last) session

    async def run(self) -> None:
        section = self.section
        # One rotation for the life of the loop: 2,000 gateways losing one broker together
        # come back spread over the jitter window, not in lockstep.
        rotation = BrokerRotation(section.broker_urls, section.backoff())
        attempt = rotation.first()
        status_topic = self.publisher.status_topic
        kwargs = client_kwargs(section, f"{self.agent_id}-uplink")
        used = False  # the current session_seq has been used by an established session
        while True:
            store = self.store()
            assert store is not None
            if used:
                # once per established session, not per attempt (Sparkplug's bdSeq)
                self.core.session_seq = store.bump_session()
                used = False
            session = self.core.session_seq
            will = aiomqtt.Will(
                status_topic,
                self.publisher.status(AgentState.OFFLINE, session),
                qos=1,
                retain=True,
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
                        await self._session(client, attempt.url, session, store)
                    except asyncio.CancelledError:
                        # Say goodbye so receivers need not wait for the keepalive to expire.
                        with contextlib.suppress(Exception):
                            await asyncio.wait_for(
                                client.publish(
                                    status_topic,
                                    self.publisher.status(
                                        AgentState.OFFLINE, session, graceful=True
                                    ),
                                    qos=1,
                                    retain=True,
                                ),
                                1.0,
                            )
                        raise
            except aiomqtt.MqttError as exc:
                reraise_if_cancelling(exc)
                self.connected = False
                failed = attempt.url
                attempt = rotation.failed(self.clock.now())
                log_connect_failure("uplink", section, failed, exc, attempt)
            finally:
                self.connected = False

    async def _session(self, client: aiomqtt.Client, url: str, session: int,
                       store: Store) -> None:
        await client.subscribe(self.topics.command_filter(self.warehouse_id), qos=1)
        await self.publisher.publish_online(client, session)
        self.connected = True
        address = parse_mqtt_url(url)
        self.broker = f"{address.host}:{address.port}"
        log.info("uplink %s connected (session %d)", url, session)
        reader = asyncio.create_task(self._read_commands(client))
        writer = asyncio.create_task(self.publisher.drain_outbox(client, store))
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
            self.take_command(message.topic.value, payload)
