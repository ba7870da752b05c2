"""A loopback fake of AMap's geocoding web service (its documented response shape)."""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any
from urllib.parse import parse_qs, urlparse


@dataclass
class FakeAmap:
    """``places``: address -> geocode entry (as AMap sends it); others get ``count: 0``.
    ``fail``: answer every request with HTTP 500."""

    places: dict[str, dict[str, Any]] = field(default_factory=dict)
    fail: bool = False
    queries: list[dict[str, str]] = field(default_factory=list)
    _server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self._server is not None
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}/v3/geocode/geo"

    def __enter__(self) -> FakeAmap:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                query = {k: v[0] for k, v in parse_qs(urlparse(self.path).query).items()}
                fake.queries.append(query)
                if fake.fail:
                    self.send_response(500)
                    self.end_headers()
                    return
                if query.get("key") != "test-amap-key":
                    answer: dict[str, Any] = {"status": "0", "info": "INVALID_USER_KEY",
                                              "infocode": "10001"}
                else:
                    entry = fake.places.get(query.get("address", ""))
                    answer = {"status": "1", "info": "OK", "infocode": "10000",
                              "count": "1" if entry else "0",
                              "geocodes": [entry] if entry else []}
                data = json.dumps(answer, ensure_ascii=False).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json;charset=UTF-8")
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


def amap_entry(formatted: str, district: str, location: str, level: str) -> dict[str, Any]:
    """One ``geocodes`` item as AMap documents it (empty fields come as [])."""
    return {"formatted_address": formatted, "country": "中国", "province": "浙江省",
            "citycode": "0571", "city": "杭州市", "district": district, "township": [],
            "neighborhood": {"name": [], "type": []}, "building": {"name": [], "type": []},
            "adcode": "330106", "street": [], "number": [], "location": location,
            "level": level}
