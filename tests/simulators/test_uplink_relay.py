"""The uplink relay the replays cut: a real dropped connection and refused reconnects while
cut, the same port again when restored, in front of Mosquitto and the embedded broker."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import aiomqtt
import pytest

from simulators.brokers import Broker, EmbeddedBroker
from simulators.uplink_relay import UplinkRelay


@pytest.fixture(params=["test-broker", "embedded"])
async def target(request: pytest.FixtureRequest, broker: Broker) -> AsyncIterator[Broker]:
    if request.param == "test-broker":
        yield broker
        return
    embedded = EmbeddedBroker()
    embedded.start()
    try:
        yield embedded
    finally:
        embedded.close()


async def _first(client: aiomqtt.Client, wait_s: float = 5.0) -> bytes:
    async with asyncio.timeout(wait_s):
        async for message in client.messages:
            assert isinstance(message.payload, bytes)
            return message.payload
    raise AssertionError("no message")


@pytest.mark.broker
async def test_a_cut_drops_the_uplink_and_refuses_it_until_restored(target: Broker) -> None:
    topic = f"bwtest-{uuid.uuid4().hex[:8]}/relay"
    relay = UplinkRelay(target.host, target.port)
    await relay.start()
    try:
        async with aiomqtt.Client(
            target.host, target.port, identifier=f"sub-{uuid.uuid4().hex[:8]}", username="sub"
        ) as subscriber:
            await subscriber.subscribe(topic, qos=1)
            through = aiomqtt.Client(
                relay.host, relay.port, identifier=f"gw-{uuid.uuid4().hex[:8]}", username="gw"
            )
            async with through:
                await through.publish(topic, b"before", qos=1)
                assert await _first(subscriber) == b"before"
                await relay.cut()
                assert not relay.up and relay.cuts == 1
                with pytest.raises(aiomqtt.MqttError):
                    async with asyncio.timeout(5):
                        await through.publish(topic, b"lost", qos=1)
                        # a publish may still reach the socket buffer; the next read fails
                        async for _ in through.messages:
                            pass
            with pytest.raises(aiomqtt.MqttError):
                async with aiomqtt.Client(relay.host, relay.port, identifier="refused"):
                    pass
            await relay.restore()
            port = relay.port
            async with aiomqtt.Client(
                relay.host, port, identifier=f"gw2-{uuid.uuid4().hex[:8]}", username="gw"
            ) as again:
                await again.publish(topic, b"after", qos=1)
                assert await _first(subscriber) == b"after"
            assert relay.connections == 2 and relay.port == port
    finally:
        await relay.close()
