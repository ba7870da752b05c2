"""The MQTT shell: subscribe, decode, hand over; reconnect with backoff. Nothing else.

Subscribes with QoS 1 to every warehouse's breaker, agent-status and telemetry topics and
to the courier tracking topics, under a client id stable per instance with
``clean_session=False`` so QoS 1 messages published while the coordinator was away wait at
the broker. Given several broker URLs (one cluster), it moves to the next on every failure
with full-jitter backoff (:mod:`protocols.reconnect`), so coordinators and gateways do not
return in lockstep after a broker restart. Retained
breaker and status messages arrive again on every (re)subscribe; the tracker drops
what it already processed. A payload that does not decode is counted and logged with
the field it broke, and the loop goes on. A sink that raises while handling a message is
retried ``handle_attempts`` times with doubling waits (in order: the next message waits),
then the message is dropped and counted; a sink failure never ends the loop.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import aiomqtt

from coordinator.errors import ConfigError
from coordinator.ops.config import MqttConfig
from protocols import (
    AgentStatus,
    AuditRecord,
    BreakerEvent,
    PayloadError,
    TelemetrySummary,
    TopicError,
    Topics,
    TrackingUpdate,
    decode,
)
from protocols.clock import Clock, SystemClock
from protocols.mqtt_url import (
    MqttAddress,
    MqttUrlError,
    TlsFileError,
    client_tls_context,
    parse_mqtt_url,
)
from protocols.reconnect import BrokerRotation, Random

log = logging.getLogger(__name__)

OpsMessage = BreakerEvent | AgentStatus | TrackingUpdate | TelemetrySummary | AuditRecord

# aiomqtt passes on only the text of a connect error; these mark certificate failures.
_TLS_FAILURE_MARKS = ("SSL", "certificate", "CERTIFICATE", "tlsv", "TLSV")


class MessageSink(Protocol):
    async def accept(self, message: OpsMessage, received: float) -> None:
        """Process one decoded message (``received`` is ``time.perf_counter()``)."""
        ...

    async def reject(self, topic: str, error: str) -> None:
        """Count a payload that could not be used."""
        ...


BatchMessage = BreakerEvent | AgentStatus | TrackingUpdate
# Messages taken from the client's queue at once (when that many are waiting).
BURST_MAX = 500


@runtime_checkable
class BatchSink(Protocol):
    async def accept_batch(self, messages: list[BatchMessage], received: float) -> int:
        """Process the leading messages in order; return how many (the watcher hands the
        rest over one at a time, with its retries). Raising means none was processed."""
        ...


@dataclass
class WatcherStats:
    received: int = 0
    bad_payloads: int = 0
    connects: int = 0
    connection_errors: int = 0
    broker: str | None = None  # host:port connected to (no credentials), None while down
    handle_failures: int = 0  # sink calls that raised
    dropped: int = 0  # messages given up after every attempt failed
    last_errors: list[str] = field(default_factory=list)


def _parse(url: str) -> MqttAddress:
    try:
        return parse_mqtt_url(url)
    except MqttUrlError as exc:
        message = f"mqtt_url: {exc}"
        raise ConfigError(message) from exc


def tls_context_for(url: str, config: MqttConfig) -> ssl.SSLContext | None:
    """The client TLS context for an ``mqtts://`` URL, None for a plain one.

    Raises :class:`ConfigError` naming the field: TLS files with a plain URL, or a file
    that can no longer be loaded."""
    address = _parse(url)
    if not address.tls:
        if config.tls_files:
            name = next(iter(config.tls_files))
            message = f"ops.mqtt.{name}: only for mqtts:// URLs (mqtt_url is {url!r})"
            raise ConfigError(message)
        return None
    try:
        return client_tls_context(config.ca_file, config.cert_file, config.key_file)
    except TlsFileError as exc:
        message = f"ops.mqtt.{exc.field}: {exc}"
        raise ConfigError(message) from exc


class Watcher:
    def __init__(
        self,
        urls: str | Sequence[str],
        topics: Topics,
        config: MqttConfig,
        sink: MessageSink,
        *,
        instance: str = "default",
        clock: Clock | None = None,
        rng: Random | None = None,
    ) -> None:
        """``urls``: one broker URL or several of one cluster; ``instance`` names this
        coordinator instance (its client id unless ``config.client_id`` is set)."""
        self.urls: tuple[str, ...] = (urls,) if isinstance(urls, str) else tuple(urls)
        self.addresses = {url: _parse(url) for url in self.urls}
        # Built once: every reconnect reuses them instead of reading the PEM files again.
        self.tls_contexts = {url: tls_context_for(url, config) for url in self.urls}
        self.rotation = BrokerRotation(self.urls, config.backoff(), rng=rng)
        self.client_id = config.client_id_for(instance)
        self.clock: Clock = clock or SystemClock()
        self.topics = topics
        self.config = config
        self.sink = sink
        self.stats = WatcherStats()
        self.connected = asyncio.Event()
        self._client: aiomqtt.Client | None = None

    def filters(self) -> list[str]:
        t = self.topics
        return [t.breaker_filter(), t.agent_status_filter(), t.tracking_filter(),
                t.telemetry_filter(), t.audit_filter()]

    async def run(self) -> None:
        """Receive until cancelled; on :class:`aiomqtt.MqttError` move to the next broker
        after a jittered wait."""
        attempt = self.rotation.first()
        while True:
            await asyncio.sleep(attempt.delay_s)
            url = attempt.url
            address = self.addresses[url]
            try:
                async with aiomqtt.Client(
                    address.host, address.port,
                    identifier=self.client_id,
                    clean_session=False,
                    username=self.config.username,
                    password=self.config.password,
                    keepalive=self.config.keepalive_s,
                    tls_context=self.tls_contexts[url],
                ) as client:
                    for topic_filter in self.filters():
                        await client.subscribe(topic_filter, qos=1)
                    self._client = client
                    self.rotation.connected(self.clock.now())
                    self.stats.connects += 1
                    self.stats.broker = _shown(address)
                    self.connected.set()
                    log.info("ops watcher subscribed on %s as %s", _shown(address),
                             self.client_id)
                    async for message in client.messages:
                        received = time.perf_counter()
                        burst = [message]
                        # A storm piles messages up in the client's queue (acknowledged
                        # already: QoS 1 is acknowledged on receipt). Taken together, a
                        # batch sink applies them in one transaction instead of one each.
                        while len(burst) < BURST_MAX and len(client.messages) > 0:
                            burst.append(await anext(client.messages))
                        await self.handle_burst([(str(m.topic), _raw(m)) for m in burst],
                                                received)
            except aiomqtt.MqttError as exc:
                self._client = None
                self.connected.clear()
                self.stats.broker = None
                task = asyncio.current_task()
                if task is not None and task.cancelling():
                    # aiomqtt may turn our cancellation into an MqttError on its way out
                    # of the context manager: stopping wins over reconnecting.
                    raise asyncio.CancelledError from exc
                self.stats.connection_errors += 1
                attempt = self.rotation.failed(self.clock.now())
                self._log_failure(url, exc, attempt.url, attempt.delay_s)

    async def publish(self, topic: str, payload: bytes) -> None:
        """QoS 1 on the watcher's own connection: the coordinator's broker user, the only
        one the generated ACL lets publish commands. Raises ConnectionError when down."""
        client = self._client
        if client is None:
            raise ConnectionError("the coordinator is not connected to the broker")
        try:
            await client.publish(topic, payload, qos=1)
        except aiomqtt.MqttError as exc:
            message = f"publish to the broker failed: {exc}"
            raise ConnectionError(message) from exc

    def _log_failure(self, url: str, exc: aiomqtt.MqttError, following: str,
                     delay: float) -> None:
        text = str(exc)
        shown, next_shown = _shown(self.addresses[url]), _shown(self.addresses[following])
        if self.tls_contexts[url] is not None and any(m in text for m in _TLS_FAILURE_MARKS):
            # A wrong CA or a refused client certificate will not heal by retrying.
            log.error(
                "ops watcher: TLS to %s failed: %s (check ops.mqtt ca_file=%s, cert_file=%s);"
                " trying %s in %.1f s",
                shown, text, self.config.ca_file or "<system trust store>",
                self.config.cert_file, next_shown, delay,
            )
        else:
            log.warning("ops watcher lost the broker %s (%s); trying %s in %.1f s",
                        shown, exc, next_shown, delay)

    async def handle(self, topic: str, raw: bytes | bytearray | str, received: float) -> None:
        """Parse one message and hand it to the sink; never raises for bad input."""
        await self.handle_burst([(topic, raw)], received)

    async def handle_burst(self, items: Sequence[tuple[str, bytes | bytearray | str]],
                           received: float) -> None:
        """Parse messages and hand them over in order: runs of breaker events, statuses
        and tracking updates together to a :class:`BatchSink`, the rest one by one."""
        run: list[tuple[str, BatchMessage]] = []
        batching = isinstance(self.sink, BatchSink)
        for topic, raw in items:
            message = await self._decode(topic, raw)
            if message is None:
                continue
            if batching and isinstance(message, BatchMessage):
                run.append((topic, message))
                continue
            await self._deliver_run(run, received)
            run = []
            await self._deliver(topic, message, received)
        await self._deliver_run(run, received)

    async def _deliver_run(self, run: list[tuple[str, BatchMessage]], received: float) -> None:
        done = 0
        if len(run) > 1 and isinstance(self.sink, BatchSink):
            try:
                done = await self.sink.accept_batch([m for _, m in run], received)
            except Exception:  # none of them was applied: one at a time, with retries
                self.stats.handle_failures += 1
                log.warning("handling %d messages together failed; one at a time now",
                            len(run), exc_info=True)
        for topic, message in run[done:]:
            await self._deliver(topic, message, received)

    async def _decode(self, topic: str, raw: bytes | bytearray | str) -> OpsMessage | None:
        """The message, or None (counted and logged) when there is none to use."""
        self.stats.received += 1
        if len(raw) == 0:
            return None  # a cleared retained message
        try:
            parsed = self.topics.parse(topic)
            message: OpsMessage
            if parsed.kind == "breaker":
                message = decode(BreakerEvent, raw)
                _same(parsed.warehouse, message.warehouse_id, "warehouse_id")
                _same(parsed.breaker, message.breaker, "breaker")
            elif parsed.kind == "agent_status":
                message = decode(AgentStatus, raw)
                _same(parsed.warehouse, message.warehouse_id, "warehouse_id")
                _same(parsed.agent, message.agent_id, "agent_id")
            elif parsed.kind == "telemetry":
                message = decode(TelemetrySummary, raw)
                _same(parsed.warehouse, message.warehouse_id, "warehouse_id")
                _same(parsed.zone, message.zone, "zone")
            elif parsed.kind == "audit":
                message = decode(AuditRecord, raw)
                _same(parsed.warehouse, message.warehouse_id, "warehouse_id")
            elif parsed.kind == "tracking":
                message = decode(TrackingUpdate, raw)
                _same(parsed.carrier, message.carrier, "carrier")
            else:
                raise TopicError(f"topic {topic!r} is not one the coordinator handles")
        except (PayloadError, TopicError) as exc:
            await self._reject(topic, str(exc))
            return None
        return message

    async def _deliver(self, topic: str, message: OpsMessage, received: float) -> None:
        delay = self.config.handle_retry_s
        attempts = self.config.handle_attempts
        for attempt in range(1, attempts + 1):
            try:
                await self.sink.accept(message, received)
                return
            except Exception as exc:  # the store failing must not end the subscription
                self.stats.handle_failures += 1
                if attempt == attempts:
                    self.stats.dropped += 1
                    self._remember(topic, f"dropped after {attempts} attempts: {exc!r}")
                    log.exception("dropped %s on %s after %d failed attempts",
                                  type(message).__name__, topic, attempts)
                    return
                log.warning("handling %s on %s failed (%r); retrying in %.2f s",
                            type(message).__name__, topic, exc, delay)
                await asyncio.sleep(delay)
                delay *= 2

    async def _reject(self, topic: str, error: str) -> None:
        self.stats.bad_payloads += 1
        self._remember(topic, error)
        log.warning("bad payload on %s: %s", topic, error)
        try:
            await self.sink.reject(topic, error)
        except Exception:  # counting junk must not end the subscription either
            self.stats.handle_failures += 1
            log.exception("could not count the bad payload on %s", topic)

    def _remember(self, topic: str, error: str) -> None:
        self.stats.last_errors = [*self.stats.last_errors[-9:], f"{topic}: {error}"]


def _raw(message: aiomqtt.Message) -> bytes | bytearray | str:
    payload = message.payload
    return payload if isinstance(payload, bytes | bytearray | str) else b""


def _shown(address: MqttAddress) -> str:
    """A broker as logs and responses show it: never a user or password from its URL."""
    return f"{address.host}:{address.port}"


def _same(in_topic: str | None, in_payload: str, name: str) -> None:
    if in_topic != in_payload:
        message = f"{name}: payload says {in_payload!r} but the topic says {in_topic!r}"
        raise PayloadError(message, field=name)
