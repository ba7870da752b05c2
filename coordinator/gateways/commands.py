"""Commands from the coordinator to a warehouse's gateways, each signed with that
gateway's own key (``protocols.command_auth``): an agent holding its key acts only on
commands signed for it, so broker credentials alone cannot command a warehouse."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta

from coordinator.db import Database
from coordinator.errors import Conflict
from coordinator.gateways import store
from protocols import BreakerCommand, CommandKind
from protocols.command_auth import sign_command


def signed_commands(db: Database, warehouse_id: str, breaker: str, kind: CommandKind, *,
                    actor: str, reason: str, now: datetime,
                    lasts: timedelta | None = None) -> list[BreakerCommand]:
    """One command per registered gateway of the warehouse, signed for it and for
    ``breaker``. ``lasts``: how long an override (inhibit, force_tripped) holds; the
    agent bounds it too."""
    gateways = store.list_gateways(db, warehouse_id)
    if not gateways:
        message = f"warehouse {warehouse_id!r} has no registered gateway to command"
        raise Conflict(message)
    out = []
    for gateway in gateways:
        command = BreakerCommand(
            command_id=uuid.uuid4().hex, command=kind, actor=actor, reason=reason,
            issued_at=now, expires_at=now + lasts if lasts is not None else None,
            agent_id=gateway.agent_id, breaker=breaker)
        # the key file's text is the key (as the agent reads it), not hex-decoded
        key = store.command_key(db, gateway.agent_id).encode("utf-8")
        out.append(sign_command(command, key))
    return out
