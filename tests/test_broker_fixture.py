"""The private broker the suite runs on: reachable, retains, survives a restart."""

from __future__ import annotations

import asyncio

import aiomqtt

from protocols import Topics
from simulators.brokers import Broker


async def test_private_broker_keeps_retained_and_queued_messages_across_restart(
    broker: Broker, topics: Topics
) -> None:
    topic = topics.deadletter("wh-1")
    async with aiomqtt.Client(broker.host, broker.port, identifier="fx-sub",
                              clean_session=False, username="bw") as sub:
        await sub.subscribe(topic, qos=1)
    async with aiomqtt.Client(broker.host, broker.port) as pub:
        await pub.publish(topic, b"queued", qos=1)
        await pub.publish(topic + "x", b"kept", qos=1, retain=True)
    broker.restart()
    async with aiomqtt.Client(broker.host, broker.port, identifier="fx-sub",
                              clean_session=False, username="bw") as sub:
        await sub.subscribe(topic + "x", qos=1)
        got: list[bytes] = []

        async def read() -> None:
            async for message in sub.messages:
                got.append(bytes(message.payload))  # type: ignore[arg-type]
                if len(got) == 2:
                    return

        await asyncio.wait_for(read(), 5)
    assert sorted(got) == [b"kept", b"queued"]
