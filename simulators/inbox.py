"""A loopback HTTP inbox that stands in for the WeCom robot, the SMS gateway and a webhook.

The demo points the coordinator's operations alerts at it, so alerts travel the real
HTTP path (JSON bodies in the documented formats, retries on failure) and land in a
JSONL file a person can read, instead of going nowhere.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any


class LocalInbox:
    """Accepts ``POST /<channel>`` with a JSON body and appends it to ``path`` (JSONL)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.received: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        inbox = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length)
                try:
                    body: Any = json.loads(raw or b"null")
                except ValueError:
                    body = raw.decode("utf-8", "replace")
                inbox._record({"channel": self.path.strip("/").split("?")[0], "body": body})
                reply = b'{"errcode":0,"errmsg":"ok"}'  # what the WeCom robot answers
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, format: str, *args: Any) -> None:
                """Quiet: the demo prints its own report."""

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def _record(self, entry: dict[str, Any]) -> None:
        with self._lock:
            self.received.append(entry)
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("a", encoding="utf-8") as out:
                out.write(json.dumps(entry, ensure_ascii=False) + "\n")

    def by_channel(self) -> dict[str, int]:
        with self._lock:
            counts: dict[str, int] = {}
            for entry in self.received:
                counts[entry["channel"]] = counts.get(entry["channel"], 0) + 1
            return counts

    def start(self) -> LocalInbox:
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="demo-inbox", daemon=True
        )
        self._thread.start()
        return self

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> LocalInbox:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
