"""MQTT brokers to run beside Breakwater: a private Mosquitto process, or amqtt in-process.

Tests, benchmarks and the demo start their own broker on a free loopback port so that
they never depend on (or disturb) a broker installed on the machine.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

MOSQUITTO_CANDIDATES = ("mosquitto", "/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto")


class BrokerError(RuntimeError):
    """A broker could not be started or stopped."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_for_port(host: str, port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.2):
            return
        time.sleep(0.02)
    raise BrokerError(f"nothing is listening on {host}:{port} after {timeout}s")


def find_mosquitto() -> str | None:
    for candidate in MOSQUITTO_CANDIDATES:
        found = shutil.which(candidate)
        if found:
            return found
    return None


@dataclass(frozen=True, slots=True)
class BrokerTls:
    """PEM files for a TLS listener. ``ca_file`` verifies client certificates, which
    ``require_certificate`` makes mandatory (mutual TLS)."""

    ca_file: Path
    cert_file: Path
    key_file: Path
    require_certificate: bool = False


class MosquittoBroker:
    """A private ``mosquitto`` process on a free loopback port.

    ``stop()`` and ``start()`` keep the port and the persistence file, so fault tests can
    take the broker away mid-incident and bring it back with sessions intact. With
    ``tls`` its one listener speaks TLS only (``url`` is then ``mqtts://``).
    """

    host = "127.0.0.1"

    def __init__(
        self,
        port: int | None = None,
        *,
        max_queued_messages: int = 100_000,
        persistence: bool = True,
        binary: str | None = None,
        tls: BrokerTls | None = None,
        autosave_interval_s: int = 1,
        auth: tuple[Path, Path] | None = None,
    ) -> None:
        """``auth``: a password file and an ACL file (``mqtt-auth`` output); then
        anonymous clients are refused."""
        found = binary or find_mosquitto()
        if found is None:
            raise BrokerError("no mosquitto binary found (apt-get install mosquitto)")
        self.binary = found
        self.port = port or free_port()
        self._dir = Path(tempfile.mkdtemp(prefix="bw-mosquitto-"))
        # Run as root, mosquitto drops to the "mosquitto" user, which must be able to
        # write its persistence file and log here.
        self._dir.chmod(0o777)
        self.config_path = self._dir / "mosquitto.conf"
        self.log_path = self._dir / "mosquitto.log"
        lines = [
            f"listener {self.port} 127.0.0.1",
            f"allow_anonymous {'false' if auth is not None else 'true'}",
            f"max_queued_messages {max_queued_messages}",
            "max_inflight_messages 100",
            f"persistence {'true' if persistence else 'false'}",
            f"persistence_location {self._dir}/",
            # how often it saves its state to disk; a long interval leaves acknowledged
            # messages only in memory, for tests that kill it before it saves
            f"autosave_interval {autosave_interval_s}",
            f"log_dest file {self.log_path}",
            "log_type error",
            "log_type warning",
        ]
        self.tls = tls
        if tls is not None:
            lines += self._tls_lines(tls)
        if auth is not None:  # copied next to the config: mosquitto's user must read them
            for name, source in zip(("password_file", "acl_file"), auth, strict=True):
                target = self._dir / source.name
                shutil.copyfile(source, target)
                target.chmod(0o644)
                lines.append(f"{name} {target}")
        self.config_path.write_text("\n".join(lines) + "\n")
        self._proc: subprocess.Popen[bytes] | None = None

    def _tls_lines(self, tls: BrokerTls) -> list[str]:
        # Copies, readable by all: the "mosquitto" user it drops to may not be able to
        # read the originals (pytest's tmp_path is private to root).
        lines = []
        for key, source in (
            ("cafile", tls.ca_file), ("certfile", tls.cert_file), ("keyfile", tls.key_file),
        ):
            copy = self._dir / f"tls-{key}.pem"
            shutil.copyfile(source, copy)
            copy.chmod(0o644)
            lines.append(f"{key} {copy}")
        lines.append(f"require_certificate {'true' if tls.require_certificate else 'false'}")
        return lines

    @property
    def url(self) -> str:
        scheme = "mqtts" if self.tls is not None else "mqtt"
        return f"{scheme}://{self.host}:{self.port}"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> None:
        if self.running:
            return
        self._proc = subprocess.Popen(
            [self.binary, "-c", str(self.config_path)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        try:
            wait_for_port(self.host, self.port)
        except BrokerError as exc:
            self.stop()
            log = self.log_path.read_text() if self.log_path.exists() else ""
            raise BrokerError(f"mosquitto did not start on port {self.port}: {log}") from exc

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        proc.terminate()  # SIGTERM: mosquitto saves its persistence file first
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
        if proc.stderr is not None:
            proc.stderr.close()

    def restart(self) -> None:
        self.stop()
        self.start()

    def kill(self) -> None:
        """SIGKILL: a crash, losing whatever it had not yet saved to disk."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        proc.kill()
        proc.wait(timeout=5)
        if proc.stderr is not None:
            proc.stderr.close()

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self._dir, ignore_errors=True)

    def __enter__(self) -> MosquittoBroker:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


@functools.cache
def _username_auth_plugin() -> type[Any]:
    """Build the auth plugin class lazily so importing this module never imports amqtt."""
    from amqtt.plugins.base import BaseAuthPlugin

    class UsernameSessionAuthPlugin(BaseAuthPlugin):  # type: ignore[misc]
        """Accept every client; only clients without a username count as anonymous.

        amqtt 0.12 keeps offline QoS 1/2 messages only for sessions with
        ``is_anonymous == False`` (``Broker._run_broadcast``), and its session monitor
        deletes disconnected anonymous sessions within a second. Its stock
        ``AnonymousAuthPlugin`` with ``allow_anonymous: true`` marks *every* session
        anonymous, username or not, so no persistent session ever got its queue.
        """

        async def authenticate(self, *, session: Any) -> bool:
            session.is_anonymous = not session.username
            return True

    return UsernameSessionAuthPlugin


def amqtt_config(host: str, port: int) -> dict[str, Any]:
    """amqtt settings for Breakwater.

    amqtt keeps offline QoS 1 messages only for clients that log in with a username
    (``clean_session=False`` and a username), so every Breakwater client sets one. Clients
    without a username still connect, with sessions that are not kept. See
    ``UsernameSessionAuthPlugin`` for why the stock anonymous plugin cannot be used.
    Sessions and queues live in memory: they survive a client reconnect, not a broker
    restart.
    """
    return {
        "listeners": {"default": {"type": "tcp", "bind": f"{host}:{port}"}},
        "plugins": {f"{__name__}.UsernameSessionAuthPlugin": {}},
    }


def __getattr__(name: str) -> Any:
    # amqtt loads plugins by dotted path; resolve the class on first use only.
    if name == "UsernameSessionAuthPlugin":
        return _username_auth_plugin()
    raise AttributeError(name)


class EmbeddedBroker:
    """amqtt running in its own thread and event loop, for machines without Mosquitto."""

    host = "127.0.0.1"

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._broker: Any = None

    @property
    def url(self) -> str:
        return f"mqtt://{self.host}:{self.port}"

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        if self.running:
            return
        ready = threading.Event()
        errors: list[BaseException] = []

        def run() -> None:
            from amqtt.broker import Broker

            loop = asyncio.new_event_loop()
            self._loop = loop
            asyncio.set_event_loop(loop)
            try:
                self._broker = Broker(amqtt_config(self.host, self.port), loop=loop)
                loop.run_until_complete(self._broker.start())
            except BaseException as exc:  # reported to the starting thread
                errors.append(exc)
                ready.set()
                loop.close()
                return
            ready.set()
            loop.run_forever()
            loop.run_until_complete(self._broker.shutdown())
            loop.close()

        self._thread = threading.Thread(target=run, name="amqtt-broker", daemon=True)
        self._thread.start()
        if not ready.wait(15):
            raise BrokerError(f"embedded broker did not start on port {self.port} within 15 s")
        if errors:
            raise BrokerError(f"embedded broker failed to start: {errors[0]}") from errors[0]
        # No wait_for_port probe here: Broker.start() returned, so the listener is up, and
        # a probe connection only makes amqtt log a spurious "No data" error.

    def stop(self) -> None:
        if self._loop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=10)
        self._thread = None
        self._loop = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def close(self) -> None:
        self.stop()

    def __enter__(self) -> EmbeddedBroker:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


Broker = MosquittoBroker | EmbeddedBroker


def start_test_broker() -> Broker:
    """A private Mosquitto if the binary exists, else the embedded amqtt broker."""
    broker: Broker
    broker = MosquittoBroker() if find_mosquitto() else EmbeddedBroker()
    broker.start()
    return broker
