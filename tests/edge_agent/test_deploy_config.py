"""The recommended production mosquitto.conf is accepted by Mosquitto and says what it must."""

from __future__ import annotations

import re
import subprocess
import tempfile
from pathlib import Path

import pytest

from simulators.brokers import find_mosquitto, free_port, wait_for_port

CONF = Path(__file__).resolve().parents[2] / "deploy" / "mosquitto.conf"


def settings() -> dict[str, str]:
    pairs = (line.split(None, 1) for line in CONF.read_text().splitlines())
    return {p[0]: p[1].strip() for p in pairs if len(p) == 2 and not p[0].startswith("#")}


def test_queue_and_persistence_are_set_deliberately() -> None:
    conf = settings()
    assert conf["persistence"] == "true"
    assert int(conf["max_queued_messages"]) > 1000
    assert int(conf["max_inflight_messages"]) >= 20
    assert conf["allow_anonymous"] == "false"
    assert conf["acl_file"].endswith("mosquitto.acl")
    text = CONF.read_text()
    assert re.search(r"default max_queued_messages is 1000", text)
    assert "SILENTLY DROPS" in text and "QoS 1" in text


@pytest.mark.skipif(find_mosquitto() is None, reason="no mosquitto binary")
def test_mosquitto_starts_with_the_recommended_config() -> None:
    # Not pytest's tmp_path: mosquitto run as root drops to its own user, which cannot
    # enter pytest's private directories.
    with tempfile.TemporaryDirectory(prefix="bw-deploy-conf-") as tmp:
        Path(tmp).chmod(0o777)
        check_config(Path(tmp))


def check_config(tmp_path: Path) -> None:
    port = free_port()
    text = CONF.read_text()
    text = text.replace("listener 1883 127.0.0.1", f"listener {port} 127.0.0.1")
    text = text.replace("/var/lib/mosquitto/", f"{tmp_path}/")
    # the generated password and ACL files are exercised by
    # tests/coordinator/gateways/test_broker_auth.py with a real Mosquitto
    text = text.replace("password_file /etc/mosquitto/breakwater/mosquitto.passwd", "")
    text = text.replace("acl_file /etc/mosquitto/breakwater/mosquitto.acl", "")
    text = text.replace("allow_anonymous false", "allow_anonymous true")
    text = text.replace("log_dest syslog", "log_dest stderr")
    config = tmp_path / "mosquitto.conf"
    config.write_text(text)
    binary = find_mosquitto()
    assert binary is not None
    proc = subprocess.Popen([binary, "-c", str(config)], stderr=subprocess.PIPE)
    try:
        wait_for_port("127.0.0.1", port, timeout=10)
        assert proc.poll() is None
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=10)
    assert b"Error" not in err
