"""What routers outside :mod:`coordinator.app` need from a request: its database
connection, the app's clock, the caller's role, the region's time zone."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

from fastapi import Request

from coordinator import auth
from coordinator.app import Connections
from coordinator.db import Database
from coordinator.ops.runner import ops_config_of
from coordinator.settings import Settings
from protocols.clock import Clock


def request_db(request: Request) -> Database:
    connections: Connections = request.app.state.connections
    return connections.get()


def request_now(request: Request) -> datetime:
    clock: Clock = request.app.state.clock
    return clock.now()


def request_role(request: Request) -> str | None:
    """The caller's role as the trust layer authenticated it (``None`` on a public route:
    every personal field is then masked)."""
    identity = getattr(request.state, "identity", None)
    return identity.role.value if isinstance(identity, auth.Identity) else None


def region_tz(settings: Settings) -> ZoneInfo:
    """The region's wall clock, the one people read notices in (``ops.notify.timezone``)."""
    return ZoneInfo(ops_config_of(settings).notify.timezone)
