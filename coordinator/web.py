"""What routers need from a request: its database connection, the app's clock, its
counters, the caller's role, the region's time zone."""

from __future__ import annotations

from collections import Counter
from datetime import datetime
from zoneinfo import ZoneInfo

from fastapi import FastAPI, Request

from coordinator import auth
from coordinator.connections import Connections
from coordinator.db import Database
from coordinator.ops.config import OpsConfig
from coordinator.settings import Settings
from protocols.clock import Clock


def request_db(request: Request) -> Database:
    connections: Connections = request.app.state.connections
    return connections.get()


def request_now(request: Request) -> datetime:
    clock: Clock = request.app.state.clock
    return clock.now()


def count(request: Request, key: str, n: int = 1) -> None:
    """Add ``n`` to one of the app's counters (``GET /stats``)."""
    counters: Counter[str] = request.app.state.counters
    with request.app.state.counters_lock:
        counters[key] += n


def request_role(request: Request) -> str | None:
    """The caller's role as the trust layer authenticated it (``None`` on a public route:
    every personal field is then masked)."""
    identity = getattr(request.state, "identity", None)
    return identity.role.value if isinstance(identity, auth.Identity) else None


def ops_config_in(app: FastAPI) -> OpsConfig:
    """The ops configuration the app runs with: the running ops service's (it may have
    been given one, with secrets from the environment), else the settings file's."""
    # imported here: the core routers use this module, and the core app runs without
    # loading the ops side (its MQTT watcher, notifiers) unless it is asked for
    from coordinator.ops.config import ops_config_of
    from coordinator.ops.runner import OpsService

    ops = getattr(app.state, "ops", None)
    if isinstance(ops, OpsService):
        return ops.config
    settings: Settings = app.state.settings
    return ops_config_of(settings)


def region_tz(app: FastAPI) -> ZoneInfo:
    """The region's wall clock, the one people read notices in (``ops.notify.timezone``)."""
    return ZoneInfo(ops_config_in(app).notify.timezone)
