"""An open-loop HTTP load generator and a coordinator in its own process (benchmarks).

Requests leave on schedule whether or not earlier ones finished, and each latency is
measured from when its request was due, so a server that falls behind shows it.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class Connection:
    """A keep-alive HTTP/1.1 connection speaking just enough to send JSON.

    A hand-rolled client on purpose: the load generator shares two cores with the server,
    and a full client library would spend more CPU per request than the server does.
    """

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    async def send(self, request: bytes) -> int:
        status, _ = await self.exchange(request)
        return status

    async def exchange(self, request: bytes) -> tuple[int, bytes]:
        """The response's status and body."""
        self.writer.write(request)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        length = 0
        for line in head.split(b"\r\n"):
            if line[:15].lower() == b"content-length:":
                length = int(line[15:])
        return status, await self.reader.readexactly(length)

    @classmethod
    async def open(cls, host: str, port: int) -> Connection:
        reader, writer = await asyncio.open_connection(host, port)
        return cls(reader, writer)


def request_bytes(host: str, method: str, path: str, body: object | None = None, *,
                  token: str | None = None) -> bytes:
    """One HTTP/1.1 request (JSON body when given; a bearer ``token`` when given)."""
    auth = f"Authorization: Bearer {token}\r\n" if token else ""
    if body is None:
        return f"{method} {path} HTTP/1.1\r\nHost: {host}\r\n{auth}\r\n".encode()
    payload = json.dumps(body).encode()
    return (f"{method} {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
            f"{auth}Content-Length: {len(payload)}\r\n\r\n").encode() + payload


async def steady_load(host: str, port: int, requests: Sequence[bytes], rate: float, *,
                      warm: Sequence[bytes] = (), ok: tuple[int, ...] = (200, 201)
                      ) -> list[float]:
    """Send ``requests`` at ``rate`` per second; latencies in ms (from when each was due).
    ``warm`` requests open the connections and warm caches first (not measured)."""
    idle: list[Connection] = []
    latencies: list[float] = []
    errors = 0

    async def connection() -> Connection:
        if idle:
            return idle.pop()
        return await Connection.open(host, port)

    opened = [await connection() for _ in range(max(8, len(warm)))]
    for conn, request in zip(opened, warm, strict=False):
        await conn.send(request)
    idle.extend(opened)

    async def one(request: bytes, due: float) -> None:
        nonlocal errors
        conn = await connection()
        try:
            status = await conn.send(request)
        except (asyncio.IncompleteReadError, ConnectionError):
            # the server closed a connection that sat idle past its keep-alive timeout
            # before reading this request: send it again on a fresh one (the time counts)
            conn.writer.close()
            conn = await Connection.open(host, port)
            status = await conn.send(request)
        # measured from when the request was due: a late send counts against us
        latencies.append((time.perf_counter() - due) * 1000)
        if status not in ok:
            errors += 1
        idle.append(conn)

    tasks = []
    start = time.perf_counter()
    for i, request in enumerate(requests):
        due = start + i / rate
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(request, due)))
    await asyncio.gather(*tasks)
    for conn in idle:
        conn.writer.close()
    if errors:
        message = f"{errors} HTTP requests failed"
        raise RuntimeError(message)
    return latencies


def percentiles(latencies: list[float]) -> tuple[float, float]:
    """(p50, p99) of ``latencies``."""
    ordered = sorted(latencies)
    return (statistics.median(ordered),
            ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))])


@dataclass(frozen=True)
class Served:
    port: int
    pid: int

    def cpu_s(self) -> float:
        """CPU seconds (user + system) the server process has used so far."""
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        ticks = os.sysconf("SC_CLK_TCK")
        return (int(fields[11]) + int(fields[12])) / ticks


@contextmanager
def coordinator_process(db: Path, *, config: Path | None = None) -> Iterator[Served]:
    """``python -m coordinator serve`` on a free loopback port."""
    port = free_port()
    env = {**os.environ, "BREAKWATER_DB": str(db)}
    if config is not None:
        env["BREAKWATER_CONFIG"] = str(config)
    server = subprocess.Popen(
        [sys.executable, "-m", "coordinator", "serve", "--host", "127.0.0.1", "--port",
         str(port)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                err = server.stderr.read().decode() if server.stderr else ""
                message = f"coordinator did not start: {err[-500:]}"
                raise RuntimeError(message)
            time.sleep(0.05)
        yield Served(port, server.pid)
    finally:
        server.terminate()
        server.wait(timeout=10)
