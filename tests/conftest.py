"""Shared fixtures: a private MQTT broker and a private PostgreSQL for the session, and
per-test topic roots and databases."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest

from protocols import Topics
from simulators.brokers import Broker, start_test_broker
from simulators.nats_cluster import NatsCluster, find_nats_server
from simulators.pg_server import PostgresServer, start_postgres
from tests.auth import ADMIN_TOKEN


@pytest.fixture(scope="session", autouse=True)
def admin_token() -> Iterator[str]:
    """Every coordinator a test starts knows this admin token (``tests.auth.ADMIN``);
    subprocesses (the demo, scenario runs) inherit it."""
    previous = os.environ.get("BREAKWATER_ADMIN_TOKEN")
    os.environ["BREAKWATER_ADMIN_TOKEN"] = ADMIN_TOKEN
    try:
        yield ADMIN_TOKEN
    finally:
        if previous is None:
            os.environ.pop("BREAKWATER_ADMIN_TOKEN", None)
        else:
            os.environ["BREAKWATER_ADMIN_TOKEN"] = previous


@pytest.fixture(scope="session")
def mqtt_broker() -> Iterator[Broker]:
    """A private broker (Mosquitto when installed) on a free loopback port.

    Fault tests may ``stop()`` and ``start()`` it; they must leave it running.
    """
    broker = start_test_broker()
    try:
        yield broker
    finally:
        broker.close()


@pytest.fixture
def broker(mqtt_broker: Broker) -> Broker:
    if not mqtt_broker.running:
        mqtt_broker.start()
    return mqtt_broker


@pytest.fixture
def topics() -> Topics:
    """A topic tree unique to this test, so retained messages never leak between tests."""
    return Topics(f"bwtest-{uuid.uuid4().hex[:12]}")


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """A private PostgreSQL for the session (see simulators/pg_server.py). Skips with the reason
    when it cannot run here, unless BREAKWATER_REQUIRE_POSTGRES=1 (CI): then it fails."""
    server = start_postgres()
    if isinstance(server, str):
        if os.environ.get("BREAKWATER_REQUIRE_POSTGRES") == "1":
            pytest.fail(server)
        pytest.skip(server)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> Iterator[str]:
    """A fresh empty database on the private server, for this test only (dropped after)."""
    url = postgres_server.create_database()
    yield url
    postgres_server.drop_database(url)


@pytest.fixture(scope="session")
def nats_cluster_session() -> Iterator[NatsCluster]:
    if find_nats_server() is None:
        pytest.skip("needs nats-server (apt-get install nats-server; .ci/run installs it)")
    cluster = NatsCluster()
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.close()


@pytest.fixture
def nats_cluster(nats_cluster_session: NatsCluster) -> NatsCluster:
    """A private 3-node NATS cluster (JetStream + MQTT) on free loopback ports. Node-loss
    tests may ``kill(i)`` nodes; the next test gets them back."""
    for index, node in enumerate(nats_cluster_session.nodes):
        if not node.running:
            nats_cluster_session.start_node(index)
    return nats_cluster_session
