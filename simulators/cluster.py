"""``scripts/cluster``: a local production-like topology from installed packages.

- a Mosquitto broker (persistence on) on a free loopback port,
- two coordinator instances (``python -m coordinator serve``) on one database with the
  ops lease and the shared inbox (``[ops.cluster] enabled = true``),
- HAProxy in front of both (round robin, health-checked on ``/healthz``): clients use
  one address and never notice which instance answers or which one leads.

The database is PostgreSQL (``--db postgresql``, the default: a private server from the
installed binaries, ``simulators.pg_server``, durability off as for tests), which is what
instances on several hosts share; ``--db sqlite`` puts both on one SQLite file instead
(one host only). ``deploy/compose.yaml`` describes the same topology with container
images and the same commands.

    scripts/cluster [--workdir DIR] [--port 8080] [--db postgresql|sqlite] [--hold]

Prints one JSON line (``{"proxy": ..., "mqtt": ..., "coordinators": {...}, "pids": [...]}``)
when everything serves; with ``--hold`` it then waits for Ctrl-C or SIGTERM and stops
everything it started.
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager, suppress
from pathlib import Path

from simulators.brokers import BrokerError, MosquittoBroker, free_port, wait_for_port
from simulators.coordinators import HOST, CoordinatorProcess, coordinators, seed_command
from simulators.pg_server import start_postgres

COORDINATOR_CONFIG = Path(__file__).resolve().parents[1] / "deploy" / "cluster" / "coordinator.toml"

HAPROXY_CANDIDATES = ("haproxy", "/usr/sbin/haproxy")


def find_haproxy() -> str | None:
    for candidate in HAPROXY_CANDIDATES:
        found = shutil.which(candidate)
        if found:
            return found
    return None


def haproxy_config(bind: str, servers: Sequence[tuple[str, str]]) -> str:
    """Round robin over the instances (``name``, ``host:port``); one that fails two
    health checks is taken out. ``deploy/cluster/haproxy.cfg`` is this with the compose
    service names."""
    lines = "\n".join(f"    server {name} {address} check inter 1s fall 2 rise 1"
                      for name, address in servers)
    return (
        "global\n    maxconn 4096\n"
        "defaults\n    mode http\n    timeout connect 2s\n    timeout client 30s\n"
        "    timeout server 30s\n    retries 2\n    option redispatch\n"
        # the client's address reaches the coordinators (its login limit per address);
        # they trust the header from the proxy only (``trusted_proxies``)
        "    option forwardfor\n"
        f"frontend breakwater\n    bind {bind}\n    default_backend coordinators\n"
        "backend coordinators\n    balance roundrobin\n    option httpchk GET /healthz\n"
        f"{lines}\n"
    )


def haproxy_command(binary: str, config: str) -> list[str]:
    # -db: stay in the foreground, so stopping this process stops the proxy
    return [binary, "-db", "-f", config]


@contextmanager
def haproxy(port: int, backends: Sequence[CoordinatorProcess],
            workdir: Path) -> Iterator[subprocess.Popen[bytes]]:
    binary = find_haproxy()
    if binary is None:
        raise BrokerError("no haproxy binary found (apt-get install haproxy)")
    config = workdir / "haproxy.cfg"
    servers = [(b.name, f"{HOST}:{b.port}") for b in backends]
    config.write_text(haproxy_config(f"{HOST}:{port}", servers), encoding="utf-8")
    with (workdir / "haproxy.log").open("wb") as log:
        proc = subprocess.Popen(haproxy_command(binary, str(config)), stdout=log,
                                stderr=subprocess.STDOUT)
    try:
        wait_for_port(HOST, port, timeout=15)
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def seed_sample(db: str) -> None:
    """The shipped sample region, loaded with the coordinator's own CLI."""
    subprocess.run(seed_command(sys.executable, db), check=True, stdout=subprocess.DEVNULL)


def database(stack: ExitStack, backend: str, workdir: Path) -> str:
    """Where both instances keep their data: a database on a private PostgreSQL (stopped
    with ``stack``) or a SQLite file in ``workdir``."""
    if backend == "sqlite":
        return str(workdir / "coordinator.sqlite")
    server = start_postgres()
    if isinstance(server, str):
        message = f"{server} (or run with --db sqlite)"
        raise BrokerError(message)
    stack.callback(server.stop)
    return server.create_database(prefix="breakwater")


@contextmanager
def cluster(workdir: Path, port: int | None = None,
            backend: str = "postgresql") -> Iterator[dict[str, object]]:
    """Start the topology; yield what ``scripts/cluster`` prints."""
    with ExitStack() as stack:
        db = database(stack, backend, workdir)
        seed_sample(db)
        broker = stack.enter_context(MosquittoBroker())
        running = stack.enter_context(coordinators(
            db, [broker.url], "breakwater", workdir, names=("a", "b"), prefix="coord",
            config=COORDINATOR_CONFIG))
        proxy_port = port or free_port()
        proxy = stack.enter_context(haproxy(proxy_port, list(running.values()), workdir))
        pids = [p.proc.pid for p in running.values()] + [proxy.pid]
        yield {
            "proxy": f"http://{HOST}:{proxy_port}", "mqtt": broker.url, "database": db,
            "coordinators": {p.instance: p.url for p in running.values()}, "pids": pids,
        }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scripts/cluster", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", type=Path, help="keep files here (default: a temp dir)")
    parser.add_argument("--port", type=int, help="the proxy's port (default: a free one)")
    parser.add_argument("--db", choices=("postgresql", "sqlite"), default="postgresql",
                        help="the shared database: a private PostgreSQL (default) or one "
                             "SQLite file (both instances on this host)")
    parser.add_argument("--hold", action="store_true", help="serve until Ctrl-C / SIGTERM")
    args = parser.parse_args(argv)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with ExitStack() as stack:
        workdir = args.workdir
        if workdir is None:
            workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bw-cluster-")))
        workdir.mkdir(parents=True, exist_ok=True)
        info = stack.enter_context(cluster(workdir, args.port, args.db))
        print(json.dumps(info), flush=True)
        if args.hold:
            with suppress(KeyboardInterrupt):
                stop.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
