"""Test certificates (trustme) and TLS Mosquitto brokers, shared by the TLS tests."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import trustme

from simulators.brokers import BrokerTls, MosquittoBroker, find_mosquitto


@dataclass(frozen=True)
class Pki:
    """PEM files: the test CA, a server cert for 127.0.0.1/localhost, a client cert from
    the same CA, and an unrelated CA (the "wrong CA")."""

    ca_file: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    other_ca_file: Path

    def broker_tls(self, *, require_certificate: bool = False) -> BrokerTls:
        return BrokerTls(self.ca_file, self.server_cert, self.server_key, require_certificate)


def make_pki(folder: Path) -> Pki:
    folder.mkdir(parents=True, exist_ok=True)
    ca, other = trustme.CA(), trustme.CA()
    server = ca.issue_cert("127.0.0.1", "localhost")
    client = ca.issue_cert("gw-t.clients.breakwater.test")
    pki = Pki(
        ca_file=folder / "ca.pem",
        server_cert=folder / "server.crt",
        server_key=folder / "server.key",
        client_cert=folder / "client.crt",
        client_key=folder / "client.key",
        other_ca_file=folder / "other-ca.pem",
    )
    ca.cert_pem.write_to_path(str(pki.ca_file))
    other.cert_pem.write_to_path(str(pki.other_ca_file))
    server.cert_chain_pems[0].write_to_path(str(pki.server_cert))
    server.private_key_pem.write_to_path(str(pki.server_key))
    client.cert_chain_pems[0].write_to_path(str(pki.client_cert))
    client.private_key_pem.write_to_path(str(pki.client_key))
    return pki


@contextlib.contextmanager
def tls_broker(pki: Pki, *, require_certificate: bool = False) -> Iterator[MosquittoBroker]:
    """A private Mosquitto whose one listener is TLS; skips where Mosquitto is missing
    (the embedded amqtt broker has no TLS option here)."""
    if find_mosquitto() is None:
        pytest.skip("TLS tests need the mosquitto binary")
    with MosquittoBroker(tls=pki.broker_tls(require_certificate=require_certificate)) as broker:
        yield broker
