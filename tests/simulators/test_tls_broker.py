"""MosquittoBroker with a TLS listener: verified clients get in, plain TCP does not."""

from __future__ import annotations

from pathlib import Path

import aiomqtt
import pytest

from protocols import client_tls_context
from tests.simulators.tls_pki import make_pki, tls_broker

pytestmark = pytest.mark.broker


async def test_tls_broker_speaks_mqtts_to_a_verifying_client_and_survives_restart(
    tmp_path: Path,
) -> None:
    pki = make_pki(tmp_path)
    context = client_tls_context(str(pki.ca_file))
    with tls_broker(pki) as broker:
        assert broker.url == f"mqtts://127.0.0.1:{broker.port}"
        for _ in range(2):
            async with aiomqtt.Client(broker.host, broker.port, tls_context=context) as client:
                await client.publish("bwtls/check", b"1", qos=1)
            broker.restart()


async def test_tls_broker_refuses_a_plain_tcp_client(tmp_path: Path) -> None:
    with tls_broker(make_pki(tmp_path)) as broker, pytest.raises(aiomqtt.MqttError):
        async with aiomqtt.Client(broker.host, broker.port, timeout=2):
            pass
