"""The files ``python -m coordinator mqtt-auth`` writes, loaded by a real Mosquitto:
nobody is anonymous, a gateway speaks only for its own warehouse and reads only its own
commands, the coordinator hears everything legitimate, and a trip still reroutes."""

from __future__ import annotations

import asyncio
import base64
import shutil
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import aiomqtt
import pytest

from benchmarks.reroute import seed_orders_at
from coordinator.__main__ import main as coordinator_cli
from coordinator.db import open_database
from coordinator.gateways.broker_auth import COORDINATOR_USER, mosquitto_hash
from coordinator.ops.runner import OpsService
from protocols import BreakerCommand, Topics, encode
from protocols.clock import ManualClock
from simulators.brokers import MosquittoBroker, find_mosquitto
from tests.coordinator.ops.factories import breaker_event
from tests.coordinator.ops.helpers import counter, ops_config, settings_for, wait_for

ROOT = "bwauth"
TOPICS = Topics(ROOT)


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Path]]:
    if find_mosquitto() is None:
        pytest.skip("no mosquitto binary")
    work = tmp_path_factory.mktemp("mqtt-auth")
    db_path = work / "coordinator.sqlite"
    db = open_database(db_path)
    seed_orders_at(db, "WH-02", 20, datetime.now(UTC), stock_boost=100)  # gw-WH-0N
    db.conn.close()
    settings = work / "settings.toml"
    settings.write_text(f'topic_root = "{ROOT}"\n')
    out = work / "auth"
    assert coordinator_cli(["--config", str(settings), "mqtt-auth", "--out", str(out),
                            "--db", str(db_path)]) == 0
    yield db_path, out


@pytest.fixture(scope="module")
def secured(generated: tuple[Path, Path]) -> Iterator[MosquittoBroker]:
    _, out = generated
    broker = MosquittoBroker(auth=(out / "mosquitto.passwd", out / "mosquitto.acl"))
    broker.start()
    try:
        yield broker
    finally:
        broker.close()


def password(out: Path, user: str) -> str:
    return (out / "credentials" / f"{user}.password").read_text().strip()


def client(broker: MosquittoBroker, out: Path | None, user: str | None,
           **extra: object) -> aiomqtt.Client:
    secret = password(out, user) if out is not None and user is not None else None
    return aiomqtt.Client(broker.host, broker.port, username=user, password=secret,
                          **extra)  # type: ignore[arg-type]


def test_the_hash_is_exactly_what_mosquitto_passwd_writes(tmp_path: Path) -> None:
    tool = shutil.which("mosquitto_passwd")
    if tool is None:
        pytest.skip("no mosquitto_passwd")
    passwd = tmp_path / "passwd"
    passwd.write_text("")
    subprocess.run([tool, "-b", str(passwd), "gw-x", "s3cret pass"], check=True,
                   capture_output=True, timeout=30)
    theirs = passwd.read_text().strip().split(":", 1)[1]
    _, _, iterations, salt, _ = theirs.split("$")
    assert mosquitto_hash("s3cret pass", salt=base64.b64decode(salt),
                          iterations=int(iterations)) == theirs


@pytest.mark.broker
async def test_anonymous_and_wrong_passwords_are_refused(
        secured: MosquittoBroker, generated: tuple[Path, Path]) -> None:
    _, out = generated
    with pytest.raises(aiomqtt.MqttError):
        async with client(secured, None, None):
            pass
    with pytest.raises(aiomqtt.MqttError):
        async with aiomqtt.Client(secured.host, secured.port, username="gw-WH-02",
                                  password="guessed"):
            pass
    async with client(secured, out, "gw-WH-02"):
        pass  # the real password works


@pytest.mark.broker
async def test_a_gateway_speaks_only_for_its_own_warehouse_and_reads_only_its_commands(
        secured: MosquittoBroker, generated: tuple[Path, Path]) -> None:
    _, out = generated
    now = datetime.now(UTC)
    heard: list[str] = []
    async with client(secured, out, COORDINATOR_USER) as coordinator, \
            client(secured, out, "gw-WH-01") as gateway_a, \
            client(secured, out, "gw-WH-02") as gateway_b:
        await coordinator.subscribe(TOPICS.breaker_filter(), qos=1)
        await gateway_a.subscribe(TOPICS.command_filter("WH-01"), qos=1)
        await gateway_a.subscribe(TOPICS.command_filter("WH-02"), qos=1)  # not its own
        # B forges a trip for A's warehouse, then sends its own
        await gateway_b.publish(TOPICS.breaker("WH-01", "cold_chain"), encode(breaker_event(
            seq=1, warehouse="WH-01", agent="gw-WH-02", at=now)), qos=1)
        await gateway_b.publish(TOPICS.breaker("WH-02", "cold_chain"), encode(breaker_event(
            seq=2, warehouse="WH-02", agent="gw-WH-02", at=now)), qos=1)
        # a gateway may not command anyone; the coordinator may
        command = BreakerCommand(command_id="c1", command="ack", actor="ops", reason="test",
                                 issued_at=now)
        await gateway_b.publish(TOPICS.command("WH-01", "cold_chain"), encode(command), qos=1)
        await coordinator.publish(TOPICS.command("WH-02", "cold_chain"), encode(command),
                                  qos=1)
        await coordinator.publish(TOPICS.command("WH-01", "cold_chain"), encode(command),
                                  qos=1)
        async with asyncio.timeout(5):
            async for message in coordinator.messages:
                heard.append(str(message.topic))
                break
        received: list[str] = []
        async with asyncio.timeout(5):
            async for message in gateway_a.messages:
                received.append(str(message.topic))
                break
        with pytest.raises(TimeoutError):  # nothing more arrives for either
            async with asyncio.timeout(1):
                async for message in gateway_a.messages:
                    received.append(str(message.topic))
    assert heard == [TOPICS.breaker("WH-02", "cold_chain")]
    assert received == [TOPICS.command("WH-01", "cold_chain")]  # from the coordinator only


@pytest.mark.broker
async def test_an_end_to_end_trip_still_reroutes_through_the_secured_broker(
        secured: MosquittoBroker, generated: tuple[Path, Path], tmp_path: Path) -> None:
    db_path, out = generated
    clock = ManualClock(datetime.now(UTC))
    config = ops_config(tmp_path)
    config = config.model_copy(update={"mqtt": config.mqtt.model_copy(update={
        "username": COORDINATOR_USER, "password": password(out, COORDINATOR_USER)})})
    async with OpsService(settings_for(db_path, secured.url, TOPICS), config, clock) as ops:
        await asyncio.wait_for(ops.watcher.connected.wait(), 10)
        async with client(secured, out, "gw-WH-02") as gateway:
            await gateway.publish(TOPICS.breaker("WH-02", "humidity"), encode(breaker_event(
                seq=10, warehouse="WH-02", agent="gw-WH-02", breaker="humidity",
                at=clock.now())), qos=1)
        await wait_for(lambda: counter(db_path, "reroutes") >= 1, what="the reroute")
    assert counter(db_path, "orders_rerouted") == 20


def test_the_nats_authorization_is_accepted_by_nats_server(
        generated: tuple[Path, Path], tmp_path: Path) -> None:
    server = shutil.which("nats-server")
    if server is None:
        pytest.skip("no nats-server binary")
    _, out = generated
    shutil.copyfile(out / "nats-auth.conf", tmp_path / "nats-auth.conf")
    conf = tmp_path / "nats.conf"
    conf.write_text(f"listen: 127.0.0.1:-1\nserver_name: t\njetstream {{ store_dir: "
                    f"{tmp_path / 'js'} }}\nmqtt {{ listen: 127.0.0.1:-1 }}\n"
                    "include nats-auth.conf\n")
    done = subprocess.run([server, "-c", str(conf), "-t"], capture_output=True, text=True,
                          timeout=30, check=False)
    assert done.returncode == 0, done.stderr
    text = (out / "nats-auth.conf").read_text()
    assert '"bwauth.v1.wh.WH-02.breaker.*"' in text and "$2b$" in text
