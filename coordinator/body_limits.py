"""Request body limits: a body over its limit gets 413 with a message naming the limit.

One ASGI middleware in front of every route. A declared ``Content-Length`` over the limit
is refused before anything is read; a chunked body is counted as it arrives and cut off
at the limit (the route sees a disconnected client, and its answer is replaced by the
413), so a 19 MB upload never reaches a parser nor the intake writer.

Limits (``[limits]`` in the settings): ``max_body_bytes`` for every route, and
``max_import_bytes`` for the bulk import routes (paths under ``/import``), which stream
their file in chunks.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from coordinator.settings import LimitsConfig

Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[MutableMapping[str, Any], Receive, Send], Awaitable[None]]

IMPORT_PREFIX = "/import"

class BodyLimitMiddleware:
    def __init__(self, app: ASGIApp, limits: LimitsConfig,
                 on_reject: Callable[[], None] | None = None) -> None:
        self.app = app
        self.limits = limits
        self.on_reject = on_reject

    def limit_for(self, path: str) -> tuple[int, str]:
        if path == IMPORT_PREFIX or path.startswith(IMPORT_PREFIX + "/"):
            return self.limits.max_import_bytes, "limits.max_import_bytes"
        return self.limits.max_body_bytes, "limits.max_body_bytes"

    async def __call__(self, scope: MutableMapping[str, Any], receive: Receive,
                       send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit, setting = self.limit_for(scope["path"])
        declared = _content_length(scope)
        if declared is not None and declared > limit:
            await self._reject(scope, send, limit, setting)
            return
        received = 0
        over = False
        started = False

        async def counted() -> Message:
            nonlocal received, over
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    over = True  # the route reads a disconnect and stops reading
                    await _drain(receive, message, limit)
                    return {"type": "http.disconnect"}
            return message

        async def guarded(message: Message) -> None:
            nonlocal started
            if over and not started:
                return  # the route's answer to a cut-off body is replaced below
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted, guarded)
        except Exception:
            if not over:
                raise
        if over and not started:
            await self._reject(scope, send, limit, setting)

    async def _reject(self, scope: MutableMapping[str, Any], send: Send, limit: int,
                      setting: str) -> None:
        if self.on_reject is not None:
            self.on_reject()
        body = json.dumps({
            "detail": (f"request body too large: {scope['method']} {scope['path']} takes at "
                       f"most {limit} bytes ({setting})"),
            "field": "body", "limit_bytes": limit,
        }).encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(body)).encode()),
                                (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body})


async def _drain(receive: Receive, message: Message, limit: int) -> None:
    """Read (and drop) the rest of a cut-off body, up to as much again as the limit, so a
    client still sending gets the 413 instead of a reset connection; past that the
    connection is closed on it."""
    drained = 0
    while message.get("more_body", False) and drained <= limit:
        message = await receive()
        if message["type"] != "http.request":
            return
        drained += len(message.get("body", b""))


def _content_length(scope: MutableMapping[str, Any]) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None
