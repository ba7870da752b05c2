"""The uplink over real TLS: a private Mosquitto with a TLS listener and trustme
certificates. Sensors stay on the plain session broker; only the uplink is mqtts://."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import aiomqtt
import pytest

from edge_agent.agent import EdgeAgent
from edge_agent.config import AgentConfig
from protocols import BreakerEvent, Topics, client_tls_context
from protocols.clock import ManualClock
from simulators.brokers import Broker, MosquittoBroker
from tests.edge_agent.conftest import (
    WH,
    SensorPublisher,
    cancel_and_wait,
    config_dict,
    wait_until,
)
from tests.simulators.tls_pki import Pki, make_pki, tls_broker

pytestmark = pytest.mark.broker
T0 = datetime(2026, 3, 2, 4, 0, tzinfo=UTC)


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return make_pki(tmp_path / "pki")


def tls_config(
    tmp_path: Path, local: Broker, uplink: MosquittoBroker, topics: Topics, **tls: Path
) -> AgentConfig:
    # A short rule (3 readings over 60 s) so a trip takes three readings, not ten.
    raw = config_dict(tmp_path, local.url, uplink.url, topics, for_s=60)
    raw["uplink_mqtt"].update({key: str(path) for key, path in tls.items()})
    raw["uplink_mqtt"]["password"] = "over-tls-only"
    return AgentConfig.model_validate(raw)


@contextlib.asynccontextmanager
async def tls_subscriber(
    broker: MosquittoBroker, pki: Pki, topic_filter: str
) -> AsyncIterator[list[BreakerEvent]]:
    """Everything published on ``topic_filter``, read over verified (mutual) TLS."""
    context = client_tls_context(str(pki.ca_file), str(pki.client_cert), str(pki.client_key))
    got: list[BreakerEvent] = []
    subscribed = asyncio.Event()

    async def read() -> None:
        async with aiomqtt.Client(broker.host, broker.port, tls_context=context) as client:
            await client.subscribe(topic_filter, qos=1)
            subscribed.set()
            async for message in client.messages:
                assert isinstance(message.payload, bytes)
                got.append(BreakerEvent.model_validate_json(message.payload))

    task = asyncio.create_task(read())
    try:
        await asyncio.wait_for(subscribed.wait(), 10)
        yield got
    finally:
        await cancel_and_wait(task)


@contextlib.asynccontextmanager
async def started(agent: EdgeAgent) -> AsyncIterator[asyncio.Task[None]]:
    task = asyncio.create_task(agent.run())
    try:
        yield task
    finally:
        await cancel_and_wait(task)


async def trip(pub: SensorPublisher, agent: EdgeAgent, clock: ManualClock, topics: Topics) -> None:
    """9 °C at t = 0, 30, 60: held 60 s with 3 readings, the cold_chain breaker trips."""
    await wait_until(lambda: agent.stats.sensors_connected, what="sensor broker")
    for _ in range(3):
        before = agent.stats.readings_accepted
        await pub.native(topics, clock.now(), 9.0)
        await wait_until(lambda b=before: agent.stats.readings_accepted > b, what="reading")
        clock.advance(30)
    assert agent.breaker_states()["cold_chain"] == ("tripped", True)


async def test_trip_reaches_a_tls_subscriber_through_a_verified_mqtts_uplink(
    tmp_path: Path, broker: Broker, topics: Topics, pki: Pki
) -> None:
    clock = ManualClock(T0)
    with tls_broker(pki) as uplink:
        assert uplink.url.startswith("mqtts://")
        config = tls_config(tmp_path, broker, uplink, topics, ca_file=pki.ca_file)
        agent = EdgeAgent(config, clock=clock, topics=topics)
        async with (
            tls_subscriber(uplink, pki, topics.breaker(WH, "cold_chain")) as events,
            SensorPublisher(broker.url) as pub,
            started(agent),
        ):
            await wait_until(lambda: agent.stats.uplink_connected, what="uplink over TLS")
            await trip(pub, agent, clock, topics)
            await wait_until(lambda: any(e.open for e in events), what="trip over TLS")
            await wait_until(lambda: agent.stats.outbox_depth == 0, what="outbox drained")
    assert events[-1].breaker == "cold_chain" and events[-1].agent_id == config.agent.agent_id


async def test_wrong_ca_keeps_the_trip_in_the_outbox_until_the_right_ca_delivers_it(
    tmp_path: Path, broker: Broker, topics: Topics, pki: Pki, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    clock = ManualClock(T0)
    with tls_broker(pki) as uplink:
        async with tls_subscriber(uplink, pki, topics.breaker(WH, "cold_chain")) as events:
            wrong = tls_config(tmp_path, broker, uplink, topics, ca_file=pki.other_ca_file)
            agent = EdgeAgent(wrong, clock=clock, topics=topics)
            async with SensorPublisher(broker.url) as pub, started(agent):
                await trip(pub, agent, clock, topics)
                await wait_until(
                    lambda: any("TLS failed" in r.getMessage() for r in caplog.records),
                    what="the TLS error in the log",
                )
                assert agent.stats.outbox_depth >= 1
                assert not agent.stats.uplink_connected
            failure = next(r for r in caplog.records if "TLS failed" in r.getMessage())
            assert failure.levelno == logging.ERROR
            assert "CERTIFICATE_VERIFY_FAILED" in failure.getMessage()
            assert str(pki.other_ca_file) in failure.getMessage()
            assert events == []

            # The operator fixes ca_file and restarts: the event waited in the state db.
            right = tls_config(tmp_path, broker, uplink, topics, ca_file=pki.ca_file)
            agent = EdgeAgent(right, clock=clock, topics=topics)
            async with started(agent):
                await wait_until(lambda: any(e.open for e in events), what="the late trip")
                await wait_until(lambda: agent.stats.outbox_depth == 0, what="outbox drained")
    # Live first (the breaker's current state, retained), then the backlog as history.
    assert (events[0].open, events[0].historical) == (True, False)
    assert all(e.historical for e in events[1:])


async def test_mutual_tls_broker_admits_the_client_certificate_and_refuses_none(
    tmp_path: Path, broker: Broker, topics: Topics, pki: Pki, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    with tls_broker(pki, require_certificate=True) as uplink:
        with_cert = tls_config(
            tmp_path / "a", broker, uplink, topics,
            ca_file=pki.ca_file, cert_file=pki.client_cert, key_file=pki.client_key,
        )
        agent = EdgeAgent(with_cert, clock=ManualClock(T0), topics=topics)
        async with started(agent):
            await wait_until(lambda: agent.stats.uplink_connected, what="mutual TLS uplink")

        without = tls_config(tmp_path / "b", broker, uplink, topics, ca_file=pki.ca_file)
        agent = EdgeAgent(without, clock=ManualClock(T0), topics=topics)
        async with started(agent):
            # The broker answers a missing certificate with a TLS alert (paho logs it).
            await wait_until(
                lambda: any("alert" in r.getMessage().lower() for r in caplog.records),
                what="the refusal",
            )
            assert not agent.stats.uplink_connected
