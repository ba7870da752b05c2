"""A loopback TCP relay in front of a broker that can be cut like a gateway's WAN link
(replays with uplink outages, their tests). A byte relay, not a broker: it works the same
in front of Mosquitto and the embedded amqtt broker (:mod:`simulators.brokers`)."""

from __future__ import annotations

import asyncio
import contextlib

from simulators.brokers import BrokerError, free_port


async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(OSError):
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()


class UplinkRelay:
    """A loopback TCP port forwarding to a broker, that can be cut like a gateway's WAN link.

    Replays point the ``uplink_mqtt`` of an agent whose site has uplink outages here,
    while its sensors stay on the broker directly. ``cut()`` stops listening and drops
    every relayed connection at both ends: the agent loses its uplink mid-session (and
    its reconnects are refused), the broker sees the client go and publishes its last
    will. ``restore()`` listens again on the same port. Being a plain byte relay it works
    the same in front of Mosquitto and the embedded amqtt broker, and the agent's events
    reach the very broker the coordinator reads. Runs in the caller's event loop.
    """

    host = "127.0.0.1"

    def __init__(self, target_host: str, target_port: int, *, port: int | None = None) -> None:
        self.target = (target_host, target_port)
        self.port = port or free_port()
        self.connections = 0  # relayed connections accepted so far
        self.cuts = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._handlers: set[asyncio.Task[None]] = set()

    @property
    def url(self) -> str:
        return f"mqtt://{self.host}:{self.port}"

    @property
    def up(self) -> bool:
        return self._server is not None

    async def start(self) -> None:
        if self._server is not None:
            return
        try:
            # reuse_address (the asyncio default on POSIX) lets a restore rebind the port
            # while the dropped connections sit in TIME_WAIT.
            self._server = await asyncio.start_server(self._accept, self.host, self.port)
        except OSError as exc:
            message = f"uplink relay cannot listen on {self.host}:{self.port}: {exc}"
            raise BrokerError(message) from exc

    async def restore(self) -> None:
        await self.start()

    async def cut(self) -> None:
        """Stop listening and drop every relayed connection, both ends, at once."""
        server, self._server = self._server, None
        if server is None:
            return
        self.cuts += 1
        server.close()
        await self._drop_all()

    async def close(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()
        await self._drop_all()

    async def _drop_all(self) -> None:
        for writer in list(self._writers):
            writer.transport.abort()  # no FIN handshake, no flushing: the link is gone
        handlers = list(self._handlers)
        if handlers:
            await asyncio.wait(handlers, timeout=5)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        self._writers.add(writer)
        upstream: asyncio.StreamWriter | None = None
        try:
            try:
                up_reader, upstream = await asyncio.open_connection(*self.target)
            except OSError:
                return  # broker away: the agent sees a dropped connection and retries
            self._writers.add(upstream)
            if self._server is None:
                return  # cut while connecting upstream
            self.connections += 1
            pumps = [
                asyncio.create_task(_pump(reader, upstream)),
                asyncio.create_task(_pump(up_reader, writer)),
            ]
            try:
                await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for pump in pumps:
                    pump.cancel()
                await asyncio.wait(pumps)
        finally:
            for end in (writer, upstream):
                if end is not None:
                    self._writers.discard(end)
                    end.transport.abort()
            self._handlers.discard(task)
