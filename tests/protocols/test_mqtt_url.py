"""Broker URLs and the client TLS context: defaults, and errors that name the file."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest

from protocols import MqttAddress, MqttUrlError, TlsFileError, client_tls_context, parse_mqtt_url
from tests.simulators.tls_pki import make_pki


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("mqtt://broker", MqttAddress("broker", 1883, tls=False)),
        ("tcp://10.0.0.5:1884", MqttAddress("10.0.0.5", 1884, tls=False)),
        ("mqtts://mq.example.com", MqttAddress("mq.example.com", 8883, tls=True)),
        ("MQTTS://mq.example.com:443", MqttAddress("mq.example.com", 443, tls=True)),
    ],
)
def test_url_gives_host_port_and_tls_with_the_scheme_default_port(
    url: str, expected: MqttAddress
) -> None:
    assert parse_mqtt_url(url) == expected


@pytest.mark.parametrize(
    "url", ["http://broker:1883", "mqtts://", "broker:1883", "mqtt://broker:99999", "ssl://b"]
)
def test_url_that_is_not_mqtt_or_mqtts_is_refused(url: str) -> None:
    with pytest.raises(MqttUrlError):
        parse_mqtt_url(url)


def test_context_verifies_the_broker_certificate_and_host_name(tmp_path: Path) -> None:
    pki = make_pki(tmp_path)
    for context in (client_tls_context(), client_tls_context(str(pki.ca_file))):
        assert context.verify_mode is ssl.CERT_REQUIRED
        assert context.check_hostname
        assert context.minimum_version >= ssl.TLSVersion.TLSv1_2


def test_missing_ca_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(TlsFileError, match="no such file") as caught:
        client_tls_context(str(tmp_path / "nope.pem"))
    assert caught.value.field == "ca_file"


def test_ca_file_that_is_not_pem_is_named(tmp_path: Path) -> None:
    junk = tmp_path / "ca.pem"
    junk.write_text("not a certificate\n")
    with pytest.raises(TlsFileError, match="not a PEM CA certificate") as caught:
        client_tls_context(str(junk))
    assert caught.value.field == "ca_file"


def test_cert_without_key_is_refused(tmp_path: Path) -> None:
    pki = make_pki(tmp_path)
    with pytest.raises(TlsFileError, match="both or neither") as caught:
        client_tls_context(cert_file=str(pki.client_cert))
    assert caught.value.field == "key_file"
    with pytest.raises(TlsFileError, match="both or neither") as caught:
        client_tls_context(key_file=str(pki.client_key))
    assert caught.value.field == "cert_file"


def test_key_that_does_not_match_the_certificate_is_refused(tmp_path: Path) -> None:
    pki = make_pki(tmp_path)
    with pytest.raises(TlsFileError, match="matching private key") as caught:
        client_tls_context(cert_file=str(pki.client_cert), key_file=str(pki.server_key))
    assert caught.value.field == "cert_file"


def test_encrypted_key_fails_instead_of_prompting_for_a_passphrase(tmp_path: Path) -> None:
    from cryptography.hazmat.primitives import serialization

    pki = make_pki(tmp_path)
    key = serialization.load_pem_private_key(pki.client_key.read_bytes(), password=None)
    locked = tmp_path / "locked.key"
    locked.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"secret"),
        )
    )
    with pytest.raises(TlsFileError, match="unencrypted"):
        client_tls_context(cert_file=str(pki.client_cert), key_file=str(locked))
