"""The embedded amqtt broker keeps what the demo relies on: retained messages and the
QoS 1 queue of a persistent session that logged in with a username."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import aiomqtt
import pytest

from simulators.brokers import EmbeddedBroker


@pytest.fixture
def embedded() -> Iterator[EmbeddedBroker]:
    broker = EmbeddedBroker()
    broker.start()
    try:
        yield broker
    finally:
        broker.close()


async def _collect(
    client: aiomqtt.Client, count: int, wait_s: float = 3.0
) -> list[tuple[str, bytes]]:
    got: list[tuple[str, bytes]] = []
    try:
        async with asyncio.timeout(wait_s):
            async for message in client.messages:
                assert isinstance(message.payload, bytes)
                got.append((str(message.topic), message.payload))
                if len(got) == count:
                    break
    except TimeoutError:
        pass
    return got


async def _offline_round_trip(port: int, username: str | None) -> list[tuple[str, bytes]]:
    """Subscribe with a persistent session, go away, publish, come back: what arrives?"""
    async with aiomqtt.Client(
        "127.0.0.1", port, identifier="sub-agent", clean_session=False, username=username
    ) as sub:
        await sub.subscribe("bw/queued", qos=1)
    async with aiomqtt.Client("127.0.0.1", port, identifier="pub", username="publisher") as pub:
        await pub.publish("bw/queued", b"while-offline", qos=1)
        await pub.publish("bw/retained", b"state", qos=1, retain=True)
    await asyncio.sleep(0.2)
    async with aiomqtt.Client(
        "127.0.0.1", port, identifier="sub-agent", clean_session=False, username=username
    ) as sub:
        await sub.subscribe("bw/retained", qos=1)
        return await _collect(sub, 2, wait_s=2.0 if username else 1.0)


async def test_persistent_session_with_username_gets_queued_and_retained(
    embedded: EmbeddedBroker,
) -> None:
    got = await _offline_round_trip(embedded.port, "agent")
    assert ("bw/queued", b"while-offline") in got
    assert ("bw/retained", b"state") in got


async def test_anonymous_session_gets_retained_but_no_queue(embedded: EmbeddedBroker) -> None:
    # amqtt keeps no queue for anonymous sessions; we document this, so pin it.
    got = await _offline_round_trip(embedded.port, None)
    assert got == [("bw/retained", b"state")]


async def test_restart_keeps_the_port(embedded: EmbeddedBroker) -> None:
    port = embedded.port
    embedded.restart()
    assert embedded.running and embedded.port == port
    async with aiomqtt.Client("127.0.0.1", port, username="x") as client:
        await client.publish("bw/after-restart", b"1", qos=1)
