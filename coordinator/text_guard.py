"""NUL characters are refused at the HTTP boundary, naming where they were.

PostgreSQL's text types cannot hold U+0000: a name, id or username carrying one (JSON
``"\\u0000"``, or ``%00`` in a path or query) failed deep in the store with a driver error
and answered 500 (found by fuzzing the API on PostgreSQL). SQLite stores it, so the same
request behaved differently on the two backends. This ASGI middleware refuses it on both,
before any route or store sees it: 422 in the shape of every other (``field`` names the
place, ``body.0.name``, ``query.warehouse_id``, ``path``), counted as an invalid request.

Cheap on the hot path: a JSON body is only parsed here when its bytes contain the escape
``\\u0000`` at all (:mod:`protocols.text`, shared with the wire payloads' decoder).
Bulk imports (``/import``, streamed CSV and xlsx) are left to their own row checks.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from urllib.parse import parse_qsl

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from coordinator.body_limits import IMPORT_PREFIX
from protocols.text import MESSAGE, NUL, nul_in_json


class TextGuardMiddleware:
    def __init__(self, app: ASGIApp, on_reject: Callable[[], None] | None = None) -> None:
        self.app = app
        self.on_reject = on_reject

    async def __call__(self, scope: Scope, receive: Receive,
                       send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        where = _nul_in_address(scope)
        if where is not None:
            await self._reject(send, where)
            return
        path: str = scope["path"]
        if path == IMPORT_PREFIX or path.startswith(IMPORT_PREFIX + "/") \
                or not _is_json(scope):
            await self.app(scope, receive, send)
            return
        # read the whole body (its size is already bounded by the body-limit middleware
        # around this one), look at it, then hand the route the same messages
        messages: list[Message] = []
        body = bytearray()
        while True:
            message = await receive()
            messages.append(message)
            if message["type"] != "http.request":
                break
            body += message.get("body", b"")
            if not message.get("more_body", False):
                break
        inside = nul_in_json(body)  # None for invalid JSON: the route's parser answers
        if inside is not None:
            await self._reject(send, f"body.{inside}" if inside else "body")
            return
        replay = iter(messages)

        async def replayed() -> Message:
            message = next(replay, None)
            return message if message is not None else await receive()

        await self.app(scope, replayed, send)

    async def _reject(self, send: Send, where: str) -> None:
        if self.on_reject is not None:
            self.on_reject()
        body = json.dumps({"detail": f"{where}: {MESSAGE}", "field": where}).encode()
        await send({"type": "http.response.start", "status": 422,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})


def _nul_in_address(scope: Scope) -> str | None:
    if NUL in scope["path"]:
        return "path"
    query: bytes = scope.get("query_string", b"")
    if b"%00" in query or b"\x00" in query:
        for name, value in parse_qsl(query.decode("latin-1"), keep_blank_values=True):
            if NUL in name or NUL in value:
                return f"query.{name.replace(NUL, '?')}"
    return None


def _is_json(scope: Scope) -> bool:
    """As FastAPI decides: a JSON media type, or none at all (it parses JSON then)."""
    for name, value in scope.get("headers", ()):
        if name == b"content-type":
            media = value.split(b";", 1)[0].strip().lower()
            return bool(media == b"application/json" or media.endswith(b"+json"))
    return True
