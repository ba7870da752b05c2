"""Broker URLs and client TLS, shared by the edge agent and the coordinator.

``mqtt://host[:1883]`` (or ``tcp://``) is plain TCP; ``mqtts://host[:8883]`` is TLS with
the broker's certificate verified (against ``ca_file`` or the system trust store) and its
host name checked. There is deliberately no switch that turns verification off.
"""

from __future__ import annotations

import os
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from protocols.errors import ProtocolError

PLAIN_SCHEMES = ("mqtt", "tcp")
TLS_SCHEMES = ("mqtts",)
DEFAULT_PORT = 1883
DEFAULT_TLS_PORT = 8883

TlsField = Literal["ca_file", "cert_file", "key_file"]


class MqttUrlError(ProtocolError, ValueError):
    """A broker URL that is not ``mqtt://host[:port]`` or ``mqtts://host[:port]``."""


class TlsFileError(ProtocolError, ValueError):
    """A CA, certificate or key file that cannot be used; ``field`` names which one."""

    def __init__(self, message: str, *, field: TlsField) -> None:
        self.field = field
        super().__init__(message)


@dataclass(frozen=True, slots=True)
class MqttAddress:
    host: str
    port: int
    tls: bool


def parse_mqtt_url(url: str) -> MqttAddress:
    """Host, port (1883, or 8883 for ``mqtts``) and whether the connection uses TLS."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in PLAIN_SCHEMES + TLS_SCHEMES or not parts.hostname:
        message = f"{url!r} must look like mqtt://host:port or mqtts://host:port"
        raise MqttUrlError(message)
    try:
        port = parts.port
    except ValueError as exc:
        message = f"bad port in {url!r}"
        raise MqttUrlError(message) from exc
    tls = scheme in TLS_SCHEMES
    return MqttAddress(parts.hostname, port or (DEFAULT_TLS_PORT if tls else DEFAULT_PORT), tls)


def check_readable(path: str, field: TlsField) -> str:
    """``path`` if it is a readable file; else :class:`TlsFileError` naming ``field``."""
    file = Path(path)
    if not file.exists():
        message = f"{path}: no such file"
        raise TlsFileError(message, field=field)
    if not file.is_file():
        message = f"{path}: not a file"
        raise TlsFileError(message, field=field)
    if not os.access(file, os.R_OK):
        message = f"{path}: not readable by this user"
        raise TlsFileError(message, field=field)
    return path


def check_tls_setting(field: TlsField, path: str | None,
                      earlier: Mapping[str, Any]) -> str | None:
    """One of ``ca_file``/``cert_file``/``key_file`` of an MQTT config, with the fields
    validated before it (``earlier``): readable, a usable CA, and a client certificate only
    together with its matching key (checked on ``key_file``, the last of the three)."""
    if path is not None:
        path = check_readable(path, field)
    # the contexts built here are thrown away: the client builds its own when it starts
    if field == "ca_file" and path is not None:
        client_tls_context(ca_file=path)
    if field == "key_file" and "cert_file" in earlier:
        cert_file = earlier["cert_file"]
        if cert_file is not None and path is None:
            raise ValueError("required with cert_file (give both or neither)")
        if cert_file is None and path is not None:
            raise ValueError("needs cert_file (give both or neither)")
        if cert_file is not None:
            client_tls_context(cert_file=cert_file, key_file=path)
    return path


class _ClosingSSLSocket(ssl.SSLSocket):
    """Closes itself when the handshake fails. paho-mqtt (2.1) leaves the socket of a
    failed handshake to the garbage collector, so an agent retrying against a broker it
    cannot verify would hold a file descriptor per attempt until a collection."""

    def do_handshake(self, block: bool = False) -> None:
        try:
            super().do_handshake(block)
        except BaseException:
            self.close()
            raise


def client_tls_context(
    ca_file: str | None = None, cert_file: str | None = None, key_file: str | None = None
) -> ssl.SSLContext:
    """A client context that verifies the broker (certificate chain and host name).

    ``ca_file`` None trusts the system store. ``cert_file`` and ``key_file`` (both or
    neither) present a client certificate for brokers that require one. Raises
    :class:`TlsFileError` naming the file that could not be loaded.
    """
    if (cert_file is None) != (key_file is None):
        missing: TlsField = "key_file" if key_file is None else "cert_file"
        message = "cert_file and key_file go together: give both or neither"
        raise TlsFileError(message, field=missing)
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.sslsocket_class = _ClosingSSLSocket
    if ca_file is not None:
        try:
            context.load_verify_locations(cafile=check_readable(ca_file, "ca_file"))
        except (ssl.SSLError, OSError) as exc:
            message = f"{ca_file}: not a PEM CA certificate ({exc})"
            raise TlsFileError(message, field="ca_file") from exc
    if cert_file is not None and key_file is not None:
        check_readable(cert_file, "cert_file")
        check_readable(key_file, "key_file")
        try:
            # A callback, not None: OpenSSL would otherwise prompt on the terminal for
            # an encrypted key's passphrase and hang a service.
            context.load_cert_chain(cert_file, key_file, password=_no_passphrase)
        except (ssl.SSLError, OSError) as exc:
            message = (
                f"{cert_file} with {key_file}: not a PEM certificate and its matching "
                f"private key, unencrypted ({exc})"
            )
            raise TlsFileError(message, field="cert_file") from exc
    return context


def _no_passphrase() -> str:
    return ""
