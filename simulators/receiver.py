"""The one loopback JSON HTTP fake of the tests and benchmarks: a real server on 127.0.0.1
that records every request (POST and GET), fails the first N per path, and answers the rest
with a WeCom-style ``ok`` or with what ``respond`` makes of the request (a map service's
geocoding answer, say). With ``keep_alive`` it speaks HTTP/1.1 and keeps connections open,
as a channel's gateway does, and can drop a connection on its Nth request without answering
(a receiver that timed the idle connection out). With ``journal`` it also appends each
request to a JSONL file a person can read: the demo's stand-in for the WeCom robot, the
SMS gateway and a webhook. Used by the ops, customer, gateway and intel tests, the inquiry
benchmark and the demo (here, not under tests/, so all of them can import it)."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import parse_qs, urlsplit


@dataclass
class Received:
    path: str  # as requested, query string included
    headers: dict[str, str]
    body: Any  # the JSON body (None for a GET)
    accepted: bool
    method: str = "POST"
    query: dict[str, str] = field(default_factory=dict)  # first value of each parameter


@dataclass
class Receiver:
    """``fail_first`` requests per path get ``fail_status`` (or a WeCom error body);
    ``respond``, when set, makes the JSON answer (HTTP 200) to every other request."""

    fail_first: int = 0
    fail_status: int = 500
    wecom_style: bool = False
    # a failing answer echoes what it was sent (path with query, Authorization), as some
    # gateways' error hints do: what a careless error message would then carry
    echo_request: bool = False
    respond: Callable[[Received], Any] | None = None
    # HTTP/1.1 with kept-alive connections (HTTP/1.0, one request a connection, without)
    keep_alive: bool = False
    # with keep_alive: each connection's Nth request (1-based) is read, not recorded and not
    # answered, and the connection is shut; 0 never drops
    drop_on_request: int = 0
    # each request appended as {"channel": the path's first part, "body": ...} (JSONL)
    journal: Path | None = None
    requests: list[Received] = field(default_factory=list)
    connections: int = 0  # connections accepted
    _server: ThreadingHTTPServer | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def url(self) -> str:
        assert self._server is not None
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def accepted(self, path: str | None = None) -> list[Received]:
        with self._lock:
            return [r for r in self.requests if r.accepted and (path is None or r.path == path)]

    def on(self, path: str) -> list[Received]:
        with self._lock:
            return [r for r in self.requests if r.path == path]

    def by_channel(self) -> dict[str, int]:
        """Requests per channel (the path's first part: ``/wecom`` -> ``wecom``)."""
        counts: dict[str, int] = {}
        with self._lock:
            for r in self.requests:
                counts[_channel(r.path)] = counts.get(_channel(r.path), 0) + 1
        return counts

    def _write_journal(self, received: Received) -> None:
        if self.journal is None:
            return
        self.journal.parent.mkdir(parents=True, exist_ok=True)
        entry = {"channel": _channel(received.path), "body": received.body}
        with self.journal.open("a", encoding="utf-8") as out:
            out.write(json.dumps(entry, ensure_ascii=False) + "\n")

    def start(self) -> Receiver:
        return self.__enter__()

    def close(self) -> None:
        self.__exit__(None, None, None)

    def __enter__(self) -> Receiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1" if receiver.keep_alive else "HTTP/1.0"
            served = 0  # requests on this connection

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def setup(self) -> None:
                super().setup()
                with receiver._lock:
                    receiver.connections += 1

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                raw = self.rfile.read(length)
                self.served += 1
                if receiver.drop_on_request and self.served == receiver.drop_on_request:
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                try:
                    body: Any = json.loads(raw or b"null")
                except ValueError:
                    body = raw.decode("utf-8", "replace")  # kept, as a gateway would log it
                self._answer("POST", body)

            def do_GET(self) -> None:
                self._answer("GET", None)

            def _answer(self, method: str, body: Any) -> None:
                query = {k: v[0] for k, v in parse_qs(urlsplit(self.path).query).items()}
                with receiver._lock:
                    seen = sum(1 for r in receiver.requests if r.path == self.path)
                    failing = seen < receiver.fail_first
                    status = 200
                    if failing and not receiver.wecom_style:
                        status = receiver.fail_status
                    received = Received(self.path, dict(self.headers.items()), body,
                                        accepted=not failing, method=method, query=query)
                    receiver.requests.append(received)
                    receiver._write_journal(received)
                answer: Any
                if receiver.wecom_style:
                    answer = ({"errcode": 45009, "errmsg": "api freq out of limit"} if failing
                              else {"errcode": 0, "errmsg": "ok"})
                elif not failing and receiver.respond is not None:
                    answer = receiver.respond(received)
                else:
                    # Success looks like the WeCom robot's answer; gateways ignore it.
                    answer = ({"errcode": 0, "errmsg": "ok"} if status == 200
                              else {"error": "unavailable"})
                if failing and receiver.echo_request:
                    answer["hint"] = (f"invalid request {self.path} "
                                      f"{self.headers.get('Authorization', '')}")
                data = json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        assert self._server is not None
        self._server.shutdown()
        self._server.server_close()


def _channel(path: str) -> str:
    return urlsplit(path).path.strip("/").split("/")[0]
