"""A real uvicorn on 127.0.0.1 serving the coordinator app with the ops side wired in."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import uvicorn
from fastapi import FastAPI

from coordinator.ops.app import create_app_with_ops
from coordinator.ops.config import OpsConfig
from coordinator.serving import SHUTDOWN_GRACE_S
from coordinator.settings import Settings
from protocols.clock import Clock


def ops_app(settings: Settings, config: OpsConfig, clock: Clock) -> FastAPI:
    """The real coordinator app (coord's create_app) with the ops side wired in."""
    return create_app_with_ops(settings, clock=clock, config=config)


@asynccontextmanager
async def serving(app: FastAPI) -> AsyncIterator[str]:
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning",
                                           lifespan="on",
                                           timeout_graceful_shutdown=SHUTDOWN_GRACE_S))
    task = asyncio.create_task(server.serve())
    try:
        async with asyncio.timeout(10):
            while not server.started:  # noqa: ASYNC110 - uvicorn exposes only a flag
                await asyncio.sleep(0.01)
        port = server.servers[0].sockets[0].getsockname()[1]
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task
