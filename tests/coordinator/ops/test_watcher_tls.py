"""The ops subscription over TLS (mqtts:// MQTT_URL, [ops.mqtt] ca_file/cert_file/key_file),
against a real Mosquitto TLS listener with trustme certificates."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from pathlib import Path

import aiomqtt
import pytest

from coordinator.errors import ConfigError
from coordinator.ops.config import MqttConfig
from coordinator.ops.runner import OpsService, ops_config_of
from coordinator.ops.watcher import OpsMessage, Watcher
from coordinator.settings import Settings
from protocols import BreakerEvent, Topics, client_tls_context, encode
from protocols.clock import ManualClock
from tests.coordinator.ops.factories import T0, breaker_event
from tests.coordinator.ops.helpers import ops_config, settings_for
from tests.simulators.tls_pki import Pki, make_pki, tls_broker


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return make_pki(tmp_path / "pki")


class Sink:
    def __init__(self) -> None:
        self.accepted: list[OpsMessage] = []

    async def accept(self, message: OpsMessage, received: float) -> None:
        self.accepted.append(message)

    async def reject(self, topic: str, error: str) -> None:
        raise AssertionError(f"rejected {topic}: {error}")


@pytest.mark.broker
async def test_watcher_receives_a_breaker_event_over_mutual_tls(
    pki: Pki, topics: Topics
) -> None:
    with tls_broker(pki, require_certificate=True) as broker:
        config = MqttConfig(
            client_id=f"ops-tls-{topics.root}", reconnect_min_s=0.05, ca_file=str(pki.ca_file),
            cert_file=str(pki.client_cert), key_file=str(pki.client_key),
        )
        sink = Sink()
        watcher = Watcher(broker.url, topics, config, sink)
        task = asyncio.create_task(watcher.run())
        try:
            await asyncio.wait_for(watcher.connected.wait(), 10)
            context = client_tls_context(
                str(pki.ca_file), str(pki.client_cert), str(pki.client_key)
            )
            async with aiomqtt.Client(broker.host, broker.port, tls_context=context) as agent:
                await agent.publish(
                    topics.breaker("wh-cc-2", "cold_chain"), encode(breaker_event(seq=7)),
                    qos=1,
                )
            async with asyncio.timeout(10):
                while not sink.accepted:  # noqa: ASYNC110 - the watcher's task fills it
                    await asyncio.sleep(0.01)
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    event = sink.accepted[0]
    assert isinstance(event, BreakerEvent)
    assert (event.warehouse_id, event.seq, event.open) == ("wh-cc-2", 7, True)


@pytest.mark.broker
async def test_ops_service_records_a_trip_arriving_over_mqtts(
    tmp_path: Path, pki: Pki, topics: Topics
) -> None:
    with tls_broker(pki) as broker:
        assert broker.url.startswith("mqtts://")
        settings = settings_for(tmp_path / "coordinator.sqlite", broker.url, topics)
        base = ops_config(tmp_path)
        config = base.model_copy(
            update={"mqtt": base.mqtt.model_copy(update={"ca_file": str(pki.ca_file)})}
        )
        results: list[object] = []
        async with OpsService(settings, config, ManualClock(T0)) as ops:
            ops.on_result = results.append
            await asyncio.wait_for(ops.watcher.connected.wait(), 10)
            context = client_tls_context(str(pki.ca_file))
            async with aiomqtt.Client(broker.host, broker.port, tls_context=context) as agent:
                await agent.publish(
                    topics.breaker("wh-cc-2", "cold_chain"), encode(breaker_event(seq=1)),
                    qos=1,
                )
            async with asyncio.timeout(10):
                while not results:  # noqa: ASYNC110 - the service's tasks fill it
                    await asyncio.sleep(0.01)
            assert ops.watcher.stats.received == 1
            assert ops.watcher.stats.bad_payloads == 0


@pytest.mark.broker
async def test_watcher_with_the_wrong_ca_logs_a_tls_error_and_keeps_retrying(
    pki: Pki, topics: Topics, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    with tls_broker(pki) as broker:
        config = MqttConfig(reconnect_min_s=0.05, ca_file=str(pki.other_ca_file))
        watcher = Watcher(broker.url, topics, config, Sink())
        task = asyncio.create_task(watcher.run())
        try:
            async with asyncio.timeout(10):
                while watcher.stats.connection_errors < 2:  # noqa: ASYNC110
                    await asyncio.sleep(0.01)
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    assert not watcher.connected.is_set()
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert errors and "CERTIFICATE_VERIFY_FAILED" in errors[0].getMessage()
    assert str(pki.other_ca_file) in errors[0].getMessage()


def test_mqtts_url_defaults_to_port_8883(topics: Topics) -> None:
    url = "mqtts://mq.example.com"
    watcher = Watcher(url, topics, MqttConfig(), Sink())
    assert (watcher.addresses[url].host, watcher.addresses[url].port) == ("mq.example.com", 8883)
    assert watcher.tls_contexts[url] is not None  # the system trust store
    plain = "mqtt://mq.example.com"
    assert Watcher(plain, topics, MqttConfig(), Sink()).tls_contexts[plain] is None


@pytest.mark.parametrize("key", ["ca_file", "cert_file", "key_file"])
def test_tls_option_with_a_plain_mqtt_url_is_refused_naming_the_field(
    tmp_path: Path, pki: Pki, topics: Topics, key: str
) -> None:
    files = {"ca_file": str(pki.ca_file)} if key == "ca_file" else {
        "cert_file": str(pki.client_cert), "key_file": str(pki.client_key)}
    settings = Settings(db_path=str(tmp_path / "c.sqlite"), mqtt_url="mqtt://mq:1883",
                        topic_root=topics.root)
    config = ops_config(tmp_path)
    config = config.model_copy(update={"mqtt": MqttConfig(**files)})
    with pytest.raises(ConfigError, match=r"ops\.mqtt\.(ca|cert)_file: only for mqtts://"):
        OpsService(settings, config)


def test_unknown_url_scheme_is_refused(topics: Topics) -> None:
    with pytest.raises(ConfigError, match=r"mqtt_url: .*mqtts://host:port"):
        Watcher("https://mq.example.com", topics, MqttConfig(), Sink())


def _ops(mqtt: dict[str, str]) -> Settings:
    return Settings.parse({"mqtt_url": "mqtts://mq.example.com", "ops": {"mqtt": mqtt}})


def test_missing_ca_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"ops\.mqtt\.ca_file: .*no such file"):
        ops_config_of(_ops({"ca_file": str(tmp_path / "nope.pem")}))


def test_client_certificate_without_key_is_named(pki: Pki) -> None:
    with pytest.raises(ConfigError, match=r"ops\.mqtt\.key_file: .*required with cert_file"):
        ops_config_of(_ops({"cert_file": str(pki.client_cert)}))


def test_key_without_client_certificate_is_named(pki: Pki) -> None:
    with pytest.raises(ConfigError, match=r"ops\.mqtt\.key_file: .*needs cert_file"):
        ops_config_of(_ops({"key_file": str(pki.client_key)}))


def test_mismatched_key_is_named(pki: Pki) -> None:
    with pytest.raises(ConfigError, match=r"ops\.mqtt\.key_file: .*matching private key"):
        ops_config_of(_ops({"cert_file": str(pki.client_cert), "key_file": str(pki.server_key)}))


def test_client_certificate_and_ca_are_accepted(pki: Pki) -> None:
    config = ops_config_of(_ops({"ca_file": str(pki.ca_file), "cert_file": str(pki.client_cert),
                                 "key_file": str(pki.client_key)}))
    assert config.mqtt.tls_files.keys() == {"ca_file", "cert_file", "key_file"}
