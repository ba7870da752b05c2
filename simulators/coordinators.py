"""Real coordinator processes (``python -m coordinator serve``) for tests, benchmarks and
``scripts/cluster``: one instance, or several sharing one database under the ops lease.

Each instance gets a free loopback port, its own instance name (its MQTT client id and
lease holder name) and a log file; stopping sends SIGCONT first, so a test that paused
one (SIGSTOP) never leaves it behind.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from simulators.brokers import BrokerError, free_port, wait_for_port

HOST = "127.0.0.1"


@dataclass
class CoordinatorProcess:
    name: str
    instance: str
    port: int
    proc: subprocess.Popen[bytes]
    log_path: Path

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def kill(self) -> None:
        """SIGKILL: a crash in the middle of whatever it was doing."""
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def pause(self) -> None:
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        self.proc.send_signal(signal.SIGCONT)

    def stop(self, timeout: float = 15.0) -> None:
        if self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGCONT)  # a stopped process cannot handle TERM
        self.proc.terminate()
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def write_config(workdir: Path, *, cluster: bool, lease_ttl_s: float = 2.0,
                 renew_interval_s: float = 0.25, tick_interval_s: float = 0.2) -> Path:
    """A settings file: the ops lease on or off, fast ticks, notices to a JSONL file."""
    path = workdir / "coordinator.toml"
    path.write_text(
        f"[ops]\ntick_interval_s = {tick_interval_s}\nagent_offline_grace_s = 3600\n"
        f"[ops.cluster]\nenabled = {json.dumps(cluster)}\nlease_ttl_s = {lease_ttl_s}\n"
        f"renew_interval_s = {renew_interval_s}\n"
        "[ops.mqtt]\nreconnect_max_s = 1.0\n"
        # a short claim lease: notices claimed by a killed leader go out again within
        # seconds (the production default, 60 s, covers slow HTTP receivers)
        "[ops.notify.dispatcher]\npoll_interval_s = 0.1\nclaim_lease_s = 4.0\n"
        f"[ops.notify.franchisee]\njsonl_path = {json.dumps(str(workdir / 'franchisee.jsonl'))}\n",
        encoding="utf-8")
    return path


def serve_command(python: str, config: str) -> list[str]:
    """How every coordinator instance is started (``deploy/compose.yaml`` says the same)."""
    return [python, "-m", "coordinator", "--config", config, "serve"]


def seed_command(python: str, db: str) -> list[str]:
    """How the shipped sample region is loaded (``deploy/compose.yaml`` says the same)."""
    return [python, "-m", "coordinator", "seed-sample", "--db", db]


def _wait_until_serving(process: CoordinatorProcess, timeout: float) -> None:
    """Its port answers; a process that exits first (e.g. its startup failed) is reported
    at once with the end of its log instead of after the whole timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.proc.poll() is not None:
            tail = process.log_path.read_text(encoding="utf-8", errors="replace")[-2000:]
            message = (f"coordinator {process.name} exited with {process.proc.returncode} "
                       f"before serving; its log ends:\n{tail}")
            raise CoordinatorError(message)
        with contextlib.suppress(BrokerError):
            wait_for_port(HOST, process.port, timeout=0.5)
            return
    message = f"coordinator {process.name}: nothing listens on port {process.port} after {timeout}s"
    raise CoordinatorError(message)


class CoordinatorError(RuntimeError):
    """A coordinator process did not come up."""


@contextmanager
def coordinators(db: str, mqtt_urls: Sequence[str], topic_root: str, workdir: Path, *,
                 names: Sequence[str] = ("a", "b"), cluster: bool = True,
                 lease_ttl_s: float = 2.0, env: Mapping[str, str] | None = None,
                 prefix: str | None = None, config: Path | None = None,
                 ) -> Iterator[dict[str, CoordinatorProcess]]:
    """Start one coordinator process per name on ``db`` (working directory ``workdir``);
    stop them all on exit. Instance names are ``<prefix>-<name>`` (default prefix: the end
    of the topic root). ``config``: a settings file to use instead of a generated one."""
    if config is None:
        config = write_config(workdir, cluster=cluster, lease_ttl_s=lease_ttl_s)
    running: dict[str, CoordinatorProcess] = {}
    try:
        for name in names:
            port = free_port()
            instance = f"{prefix or topic_root[-6:]}-{name}"
            log_path = workdir / f"coordinator-{name}.log"
            environment = {
                **os.environ, **(env or {}), "BREAKWATER_DB": db,
                "MQTT_URL": ",".join(mqtt_urls), "BREAKWATER_TOPIC_ROOT": topic_root,
                "BREAKWATER_HOST": HOST, "BREAKWATER_PORT": str(port),
                "BREAKWATER_INSTANCE": instance,
            }
            with log_path.open("wb") as log:
                proc = subprocess.Popen(serve_command(sys.executable, str(config)),
                                        env=environment, stdout=log, stderr=subprocess.STDOUT,
                                        cwd=workdir)
            running[name] = CoordinatorProcess(name, instance, port, proc, log_path)
        for process in running.values():
            _wait_until_serving(process, timeout=60)
        yield running
    finally:
        for process in running.values():
            process.stop()
