"""A private 3-node NATS cluster with JetStream and MQTT, for tests and benchmarks.

Why NATS: it is a clustered MQTT 3.1.1 broker that runs here from a Debian package
(``nats-server``), so broker-node loss is shown on a real cluster rather than on a
simulation. Each node gets its own client, cluster-route, MQTT and monitoring ports on
127.0.0.1 (free ports, never the defaults) and its own JetStream store directory. MQTT
sessions, QoS 1 messages and retained messages live in JetStream streams replicated on
all three nodes, so a client that loses its node reconnects to another one and finds its
persistent session there.

``kill(i)`` is a SIGKILL (a crashed node: no goodbye to clients or routes); ``start(i)``
brings node ``i`` back on the same ports with its store, so it rejoins the cluster.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from simulators.brokers import BrokerError, free_port, wait_for_port

NATS_CANDIDATES = ("nats-server", "/usr/sbin/nats-server", "/usr/bin/nats-server")
HOST = "127.0.0.1"


def find_nats_server() -> str | None:
    for candidate in NATS_CANDIDATES:
        found = shutil.which(candidate)
        if found:
            return found
    return None


@dataclass
class NatsNode:
    name: str
    client_port: int
    cluster_port: int
    mqtt_port: int
    config_path: Path
    log_path: Path
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        """The node's MQTT URL."""
        return f"mqtt://{HOST}:{self.mqtt_port}"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


class NatsCluster:
    """``nodes`` nats-server processes forming one cluster (JetStream + MQTT each)."""

    host = HOST

    def __init__(self, nodes: int = 3, *, binary: str | None = None,
                 name: str = "breakwater") -> None:
        found = binary or find_nats_server()
        if found is None:
            raise BrokerError("no nats-server binary found (apt-get install nats-server)")
        self.binary = found
        self._dir = Path(tempfile.mkdtemp(prefix="bw-nats-"))
        self.nodes = [
            NatsNode(
                name=f"n{i + 1}", client_port=free_port(), cluster_port=free_port(),
                mqtt_port=free_port(), config_path=self._dir / f"n{i + 1}.conf",
                log_path=self._dir / f"n{i + 1}.log",
            )
            for i in range(nodes)
        ]
        routes = ", ".join(f"nats-route://{HOST}:{n.cluster_port}" for n in self.nodes)
        for node in self.nodes:
            store = self._dir / f"{node.name}-js"
            node.config_path.write_text(
                f"server_name: {node.name}\n"
                f"listen: {HOST}:{node.client_port}\n"
                # small limits: many test clusters may run on one machine over a day
                f"jetstream {{ store_dir: {json.dumps(str(store))}, "
                "max_memory_store: 64MB, max_file_store: 512MB }\n"
                f"cluster {{ name: {name}, listen: {HOST}:{node.cluster_port}, "
                f"routes: [{routes}] }}\n"
                # ack_wait: a QoS 1 message not acknowledged is redelivered after this
                f"mqtt {{ listen: {HOST}:{node.mqtt_port}, ack_wait: 5s }}\n"
            )

    @property
    def urls(self) -> list[str]:
        """Every node's MQTT URL, in node order."""
        return [node.url for node in self.nodes]

    def start(self, timeout: float = 60.0, *, ready: bool = True) -> None:
        """Start every node that is not running; return when each serves MQTT sessions
        (``ready``) or only listens (a storm measurement: its clients are the probe)."""
        for index, node in enumerate(self.nodes):
            if not node.running:
                self._spawn(index)
        if ready:
            self.wait_ready(timeout)
        else:
            for node in self.nodes:
                wait_for_port(HOST, node.mqtt_port, timeout=timeout)

    def start_node(self, index: int, timeout: float = 60.0) -> None:
        """Bring node ``index`` back (same ports and store); return when it serves MQTT."""
        if not self.nodes[index].running:
            self._spawn(index)
        self.wait_ready(timeout, only=index)

    def _spawn(self, index: int) -> None:
        node = self.nodes[index]
        with node.log_path.open("ab") as log:
            node.proc = subprocess.Popen(
                [self.binary, "-c", str(node.config_path)],
                stdout=subprocess.DEVNULL, stderr=log,
            )

    def kill(self, index: int) -> None:
        """SIGKILL node ``index``: a crash, not a shutdown."""
        node = self.nodes[index]
        proc, node.proc = node.proc, None
        if proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)

    def stop(self) -> None:
        for node in self.nodes:
            proc, node.proc = node.proc, None
            if proc is None:
                continue
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self._dir, ignore_errors=True)

    def wait_ready(self, timeout: float = 60.0, only: int | None = None) -> None:
        """A persistent-session QoS 1 subscription succeeds through each running node (or
        node ``only``). That needs the JetStream meta leader (a quorum) and the account's
        replicated MQTT streams, which the first session creates (seconds on 2 cores):
        paid here, not inside a test's timeout or a measurement."""
        deadline = time.monotonic() + timeout
        for index, node in enumerate(self.nodes):
            if not node.running or (only is not None and index != only):
                continue
            wait_for_port(HOST, node.mqtt_port, timeout=max(0.1, deadline - time.monotonic()))
            while True:
                try:
                    _subscribe_once(node, f"bw-ready-{node.name}")
                    break
                except (OSError, RuntimeError) as exc:
                    if not node.running:
                        message = f"nats {node.name} exited: {self.log_tail(node)}"
                        raise BrokerError(message) from exc
                    if time.monotonic() > deadline:
                        message = (f"nats {node.name} serves no MQTT session after {timeout}s"
                                   f" ({exc}): {self.log_tail(node)}")
                        raise BrokerError(message) from exc
                    time.sleep(0.2)

    def log_tail(self, node: NatsNode, lines: int = 5) -> str:
        if not node.log_path.exists():
            return ""
        return " | ".join(node.log_path.read_text(errors="replace").splitlines()[-lines:])

    def __enter__(self) -> NatsCluster:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


def _subscribe_once(node: NatsNode, client_id: str) -> None:
    """Connect with a persistent session, subscribe at QoS 1, then remove the session."""
    for clean in (False, True):  # the clean reconnect deletes the persistent session
        acked = threading.Event()
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id,
                             clean_session=clean)
        client.on_subscribe = _setter(acked)
        try:
            client.connect(HOST, node.mqtt_port, keepalive=10)
            client.loop_start()
            client.subscribe("breakwater-ready/#", qos=1)
            if not acked.wait(4):
                raise RuntimeError("no SUBACK within 4 s")
        finally:
            client.disconnect()
            client.loop_stop()


def _setter(event: threading.Event) -> Callable[..., None]:
    def on_subscribe(*_args: object) -> None:
        event.set()
    return on_subscribe


def node_of_port(cluster: NatsCluster, port: int) -> int:
    """The index of the node whose MQTT listener is ``port``."""
    for index, node in enumerate(cluster.nodes):
        if node.mqtt_port == port:
            return index
    raise KeyError(port)
