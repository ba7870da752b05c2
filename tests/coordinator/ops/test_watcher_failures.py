"""A sink (the store behind it) that raises: the watcher retries in order, then drops and
counts; it never ends the subscription."""

from __future__ import annotations

import asyncio
import contextlib

import aiomqtt
import pytest

from coordinator.ops.config import MqttConfig
from coordinator.ops.watcher import OpsMessage, Watcher
from protocols import BreakerEvent, Topics, encode
from simulators.brokers import Broker
from tests.coordinator.ops.factories import breaker_event

FAST = MqttConfig(handle_attempts=3, handle_retry_s=0.001, reconnect_min_s=0.05)


class FlakySink:
    """Raises (like a locked database) for the first ``failures`` calls of each kind."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.accept_calls = 0
        self.reject_calls = 0
        self.accepted: list[OpsMessage] = []

    async def accept(self, message: OpsMessage, received: float) -> None:
        self.accept_calls += 1
        if self.accept_calls <= self.failures:
            raise RuntimeError("database is locked")
        self.accepted.append(message)

    async def reject(self, topic: str, error: str) -> None:
        self.reject_calls += 1
        if self.reject_calls <= self.failures:
            raise RuntimeError("database is locked")


def topic(topics: Topics) -> str:
    return topics.breaker("wh-cc-2", "cold_chain")


async def test_message_is_retried_until_the_store_recovers() -> None:
    topics = Topics("bwflaky")
    sink = FlakySink(failures=2)
    watcher = Watcher("mqtt://127.0.0.1:1", topics, FAST, sink)
    await watcher.handle(topic(topics), encode(breaker_event(seq=1)), 0.0)
    assert [m.seq for m in sink.accepted if isinstance(m, BreakerEvent)] == [1]
    assert (watcher.stats.handle_failures, watcher.stats.dropped) == (2, 0)


async def test_message_is_dropped_and_counted_after_every_attempt_failed() -> None:
    topics = Topics("bwflaky")
    sink = FlakySink(failures=3)
    watcher = Watcher("mqtt://127.0.0.1:1", topics, FAST, sink)
    await watcher.handle(topic(topics), encode(breaker_event(seq=1)), 0.0)
    assert sink.accepted == []
    assert (watcher.stats.handle_failures, watcher.stats.dropped) == (3, 1)
    assert "dropped after 3 attempts" in watcher.stats.last_errors[-1]
    await watcher.handle(topic(topics), encode(breaker_event(seq=2)), 0.0)
    assert [m.seq for m in sink.accepted if isinstance(m, BreakerEvent)] == [2]


async def test_failure_to_count_junk_does_not_raise() -> None:
    topics = Topics("bwflaky")
    sink = FlakySink(failures=1)
    watcher = Watcher("mqtt://127.0.0.1:1", topics, FAST, sink)
    await watcher.handle(topic(topics), b"{not json", 0.0)
    assert (watcher.stats.bad_payloads, watcher.stats.handle_failures) == (1, 1)


@pytest.mark.broker
async def test_subscription_survives_a_failing_store_through_the_broker(
        broker: Broker, topics: Topics) -> None:
    sink = FlakySink(failures=4)  # counting the junk fails; seq 1 fails 3 times (dropped)
    config = FAST.model_copy(update={"client_id": f"flaky-{topics.root}"})
    watcher = Watcher(broker.url, topics, config, sink)
    task = asyncio.create_task(watcher.run())
    try:
        await asyncio.wait_for(watcher.connected.wait(), 10)
        async with aiomqtt.Client(broker.host, broker.port) as agent:
            await agent.publish(topic(topics), b"junk", qos=1)
            await agent.publish(topic(topics), encode(breaker_event(seq=1)), qos=1)
            await agent.publish(topic(topics), encode(breaker_event(seq=2)), qos=1)
        async with asyncio.timeout(10):
            while not sink.accepted:  # noqa: ASYNC110 - the watcher's task fills it
                await asyncio.sleep(0.01)
        assert [m.seq for m in sink.accepted if isinstance(m, BreakerEvent)] == [2]
        assert (watcher.stats.bad_payloads, watcher.stats.dropped) == (1, 1)
        assert not task.done()
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
