"""TLS settings of [local_mqtt] and [uplink_mqtt]: checked at load, errors name the field."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import tomli_w

from edge_agent.config import config_from_dict, load_config
from edge_agent.errors import ConfigError
from protocols import Topics
from tests.edge_agent.conftest import config_dict
from tests.simulators.tls_pki import Pki, make_pki

TOPICS = Topics("bwtls")
PLAIN = "mqtt://127.0.0.1:1883"
TLS = "mqtts://mq.example.com"


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return make_pki(tmp_path / "pki")


def raw(tmp_path: Path, **uplink: Any) -> dict[str, Any]:
    data = config_dict(tmp_path, PLAIN, TLS, TOPICS)
    data["uplink_mqtt"].update(uplink)
    return data


def refused(data: dict[str, Any]) -> ConfigError:
    with pytest.raises(ConfigError) as caught:
        config_from_dict(data, source="gw.toml")
    return caught.value


def test_mqtts_uplink_defaults_to_port_8883_and_the_system_trust_store(tmp_path: Path) -> None:
    config = config_from_dict(raw(tmp_path))
    uplink = config.uplink_mqtt
    assert (uplink.host, uplink.port, uplink.tls) == ("mq.example.com", 8883, True)
    assert uplink.ca_file is None
    assert uplink.tls_context() is not None
    assert config.local_mqtt.tls_context() is None


def test_ca_and_client_certificate_are_accepted(tmp_path: Path, pki: Pki) -> None:
    config = config_from_dict(
        raw(tmp_path, ca_file=str(pki.ca_file), cert_file=str(pki.client_cert),
            key_file=str(pki.client_key), username="gw-t", password="s3cret")
    )
    assert config.uplink_mqtt.cert_file == str(pki.client_cert)
    assert config.uplink_mqtt.tls_context() is not None


def test_missing_ca_file_is_named(tmp_path: Path) -> None:
    error = refused(raw(tmp_path, ca_file=str(tmp_path / "nope.pem")))
    assert error.field == "uplink_mqtt.ca_file"
    assert "no such file" in str(error) and "gw.toml" in str(error)


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file")
def test_unreadable_key_file_is_named(tmp_path: Path, pki: Pki) -> None:
    pki.client_key.chmod(0)
    error = refused(raw(tmp_path, cert_file=str(pki.client_cert), key_file=str(pki.client_key)))
    assert error.field == "uplink_mqtt.key_file"
    assert "not readable" in str(error)


def test_ca_file_that_is_a_folder_is_named(tmp_path: Path) -> None:
    error = refused(raw(tmp_path, ca_file=str(tmp_path)))
    assert error.field == "uplink_mqtt.ca_file"
    assert "not a file" in str(error)


def test_ca_file_that_is_not_a_certificate_is_named(tmp_path: Path) -> None:
    junk = tmp_path / "ca.pem"
    junk.write_text("hello\n")
    error = refused(raw(tmp_path, ca_file=str(junk)))
    assert error.field == "uplink_mqtt.ca_file"
    assert "not a PEM CA certificate" in str(error)


def test_client_certificate_without_key_is_refused(tmp_path: Path, pki: Pki) -> None:
    error = refused(raw(tmp_path, cert_file=str(pki.client_cert)))
    assert error.field == "uplink_mqtt.key_file"
    assert "required with cert_file" in str(error)


def test_key_without_client_certificate_is_refused(tmp_path: Path, pki: Pki) -> None:
    error = refused(raw(tmp_path, key_file=str(pki.client_key)))
    assert error.field == "uplink_mqtt.key_file"
    assert "needs cert_file" in str(error)


def test_key_of_another_certificate_is_refused(tmp_path: Path, pki: Pki) -> None:
    error = refused(raw(tmp_path, cert_file=str(pki.client_cert), key_file=str(pki.server_key)))
    assert error.field == "uplink_mqtt.key_file"
    assert "matching private key" in str(error)


@pytest.mark.parametrize("key", ["ca_file", "cert_file", "key_file"])
def test_tls_option_on_a_plain_url_is_refused(tmp_path: Path, pki: Pki, key: str) -> None:
    data = raw(tmp_path, url=PLAIN, **{key: str(pki.ca_file)})
    error = refused(data)
    assert error.field == f"uplink_mqtt.{key}"
    assert "only for mqtts:// URLs" in str(error)


def test_local_broker_takes_the_same_tls_keys(tmp_path: Path, pki: Pki) -> None:
    data = raw(tmp_path)
    data["local_mqtt"].update(url="mqtts://127.0.0.1", ca_file=str(tmp_path / "nope.pem"))
    assert refused(data).field == "local_mqtt.ca_file"
    data["local_mqtt"]["ca_file"] = str(pki.ca_file)
    assert config_from_dict(data).local_mqtt.port == 8883


def test_bad_url_scheme_is_named(tmp_path: Path) -> None:
    error = refused(raw(tmp_path, url="https://mq.example.com"))
    assert error.field == "uplink_mqtt.url"
    assert "mqtts://host:port" in str(error)


def test_relative_tls_paths_are_resolved_against_the_config_file(
    tmp_path: Path, pki: Pki
) -> None:
    folder = tmp_path / "gateway"
    folder.mkdir()
    (folder / "certs").mkdir()
    (folder / "certs" / "ca.pem").write_bytes(pki.ca_file.read_bytes())
    data = raw(folder, ca_file="certs/ca.pem")
    path = folder / "gw.toml"
    path.write_text(tomli_w.dumps(data))
    config = load_config(path)
    assert config.uplink_mqtt.ca_file == str(folder / "certs" / "ca.pem")
    with pytest.raises(ConfigError) as caught:
        load_config(_write(tmp_path / "other.toml", raw(folder, ca_file="ca.pem")))
    assert caught.value.field == "uplink_mqtt.ca_file"


def _write(path: Path, data: dict[str, Any]) -> Path:
    path.write_text(tomli_w.dumps(data))
    return path
