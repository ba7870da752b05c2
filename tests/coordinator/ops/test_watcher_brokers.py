"""The watcher with a list of brokers (it moves on when one dies) and per-instance client
ids (two coordinators on one broker both stay subscribed)."""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import AsyncIterator, Iterator

import aiomqtt
import pytest

from coordinator.ops.config import MqttConfig
from coordinator.ops.watcher import OpsMessage, Watcher
from protocols import BreakerEvent, Topics, encode
from simulators.brokers import Broker, MosquittoBroker, find_mosquitto, free_port
from tests.coordinator.ops.factories import breaker_event
from tests.coordinator.ops.helpers import wait_for

pytestmark = [
    pytest.mark.broker,
    pytest.mark.skipif(find_mosquitto() is None, reason="needs the mosquitto binary"),
]
FAST = MqttConfig(reconnect_min_s=0.05, reconnect_max_s=0.5)


class Sink:
    def __init__(self) -> None:
        self.accepted: list[OpsMessage] = []

    async def accept(self, message: OpsMessage, received: float) -> None:
        self.accepted.append(message)

    async def reject(self, topic: str, error: str) -> None:
        raise AssertionError(f"rejected {topic}: {error}")

    def seqs(self) -> list[int]:
        return [m.seq for m in self.accepted if isinstance(m, BreakerEvent)]


@pytest.fixture
def second_broker() -> Iterator[MosquittoBroker]:
    with MosquittoBroker() as extra:
        yield extra


@contextlib.asynccontextmanager
async def running(watcher: Watcher) -> AsyncIterator[Watcher]:
    task = asyncio.create_task(watcher.run())
    try:
        await asyncio.wait_for(watcher.connected.wait(), 10)
        yield watcher
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def publish(broker: Broker, topics: Topics, seq: int) -> None:
    async with aiomqtt.Client(broker.host, broker.port) as agent:
        await agent.publish(topics.breaker("wh-cc-2", "cold_chain"),
                            encode(breaker_event(seq=seq)), qos=1)


async def test_a_dead_broker_in_the_list_is_passed_over(broker: Broker, topics: Topics) -> None:
    dead = f"mqtt://127.0.0.1:{free_port()}"
    config = FAST.model_copy(update={"client_id": f"dead-first-{topics.root}"})
    sink = Sink()
    watcher = Watcher([dead, broker.url], topics, config, sink, rng=random.Random(3).random)
    async with running(watcher):
        assert watcher.stats.broker == f"{broker.host}:{broker.port}"
        await publish(broker, topics, seq=1)
        await wait_for(lambda: sink.seqs() == [1], what="the event through the live broker")


async def test_losing_the_connected_broker_moves_the_watcher_to_the_next(
    broker: Broker, second_broker: MosquittoBroker, topics: Topics
) -> None:
    config = FAST.model_copy(update={"client_id": f"moves-{topics.root}"})
    sink = Sink()
    brokers: dict[str, Broker] = {
        f"{b.host}:{b.port}": b for b in (broker, second_broker)}
    watcher = Watcher([broker.url, second_broker.url], topics, config, sink)
    async with running(watcher):
        first = watcher.stats.broker
        assert first is not None
        brokers[first].stop()
        try:
            await wait_for(lambda: watcher.stats.broker not in (None, first),
                           what="the watcher on the other broker")
            other = brokers[str(watcher.stats.broker)]
            await publish(other, topics, seq=2)
            await wait_for(lambda: sink.seqs() == [2], what="the event through the other broker")
            assert watcher.stats.connection_errors >= 1
        finally:
            brokers[first].start()


async def test_two_instances_on_one_broker_keep_their_own_sessions(
    broker: Broker, topics: Topics
) -> None:
    # same config, no explicit client id: the instance names keep the ids apart, so
    # neither takes the other's session (the broker would disconnect one in a loop)
    sinks = Sink(), Sink()
    watchers = [
        Watcher(broker.url, topics, FAST, sink, instance=f"{topics.root}-{name}")
        for name, sink in zip("ab", sinks, strict=True)
    ]
    assert watchers[0].client_id != watchers[1].client_id
    async with running(watchers[0]), running(watchers[1]):
        await publish(broker, topics, seq=3)
        await wait_for(lambda: all(s.seqs() == [3] for s in sinks), what="both instances")
        await asyncio.sleep(0.3)  # a session takeover would show up as a reconnect
        assert [w.stats.connects for w in watchers] == [1, 1]


def test_the_client_id_names_the_instance_unless_configured() -> None:
    assert MqttConfig().client_id_for("hz-1-8080") == "breakwater-coordinator-ops-hz-1-8080"
    assert MqttConfig(client_id="ops-x").client_id_for("hz-1-8080") == "ops-x"
