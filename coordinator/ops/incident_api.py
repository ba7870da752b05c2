"""HTTP for one incident: its story (JSON and page) and what people do about it.

- ``GET /incidents/{id}``: :func:`coordinator.incident_view.incident_view` as JSON.
- ``GET /dashboard/incidents/{id}``: the incident page (``static/incident.html``: timeline,
  tripping readings, a per-zone chart drawn with the vendored uPlot, the orders).
- ``POST /incidents/{id}/acknowledge``, ``/assign``, ``/comments`` (operators): audited
  with the authenticated caller; acknowledging stops escalation.

The page loads the vendored uPlot from ``/static/vendor/uplot/`` (see
:data:`coordinator.dashboard.STATIC_FILES`; no CDN: sites run offline).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import aiomqtt
from fastapi import APIRouter, Depends, HTTPException, Path, Request
from fastapi.responses import HTMLResponse
from pydantic import BaseModel, ConfigDict, Field
from sqlite_utils import Database

from coordinator import auth
from coordinator.app import invalid
from coordinator.dashboard import static_bytes
from coordinator.errors import NotFound
from coordinator.incident_view import incident_view
from coordinator.ops import commands, incident_log
from coordinator.ops.api import Ops
from coordinator.ops.handler import OpsCore
from protocols import CommandKind

router = APIRouter(tags=["incidents"], dependencies=[auth.requires(auth.ANY_ROLE)])
# acting on an incident is the on-duty operators' job
OPERATE = auth.requires({auth.Role.OPERATOR})

IncidentId = Annotated[str, Path(min_length=1, max_length=200)]


@router.get("/incidents/{incident_id}", summary="One incident as one story")
def get_incident(request: Request, incident_id: IncidentId) -> dict[str, Any]:
    """Timeline, tripping readings, chart series with the limit and trip/clear markers,
    destinations with counts, the incident's orders, notices and people's actions."""
    db: Database = request.app.state.connections.get()
    try:
        return incident_view(db, incident_id, request.app.state.clock.now())
    except NotFound as exc:
        raise HTTPException(404, str(exc)) from exc


@router.get("/dashboard/incidents/{incident_id}", response_class=HTMLResponse,
            summary="The incident page (HTML)")
def incident_page(incident_id: IncidentId) -> HTMLResponse:
    html = static_bytes("incident.html").decode("utf-8")
    return HTMLResponse(html, headers={"Cache-Control": "no-cache"})


class Acknowledge(BaseModel):
    model_config = ConfigDict(extra="forbid")
    note: str = Field(default="", max_length=500)


class Assign(BaseModel):
    model_config = ConfigDict(extra="forbid")
    assignee: str = Field(min_length=1, max_length=128)


class Comment(BaseModel):
    model_config = ConfigDict(extra="forbid")
    text: str = Field(min_length=1, max_length=2000)


async def _act(request: Request, ops: Ops, incident_id: str,
               action: Literal["acknowledged", "assigned", "commented"], actor: str,
               detail: dict[str, Any]) -> dict[str, Any]:
    now = ops.clock.now()

    def write(core: OpsCore) -> int:
        known = core.db.conn.execute(
            "SELECT 1 FROM ops_incidents WHERE incident_id = :i UNION "
            "SELECT 1 FROM incidents WHERE id = :i", {"i": incident_id}).fetchone()
        if known is None:
            raise NotFound("incident", incident_id)
        return incident_log.add_action(core.db, incident_id, action, actor, detail, now)

    try:
        action_id = await ops.call(write)
    except NotFound as exc:
        raise HTTPException(404, str(exc)) from exc
    request.app.state.live.publish("incidents")
    return {"id": action_id, "incident_id": incident_id, "action": action, "actor": actor,
            "detail": detail, "at": now.isoformat()}


@router.post("/incidents/{incident_id}/acknowledge", status_code=201,
             dependencies=[OPERATE])
async def acknowledge(request: Request, incident_id: IncidentId, caller: auth.Caller,
                      ops: Ops, body: Acknowledge | None = None) -> dict[str, Any]:
    """I have seen it and I am on it: stops escalation. Audited with who and when."""
    return await _act(request, ops, incident_id, "acknowledged", caller.actor,
                      {"note": body.note if body else ""})


@router.post("/incidents/{incident_id}/assign", status_code=201, dependencies=[OPERATE])
async def assign(request: Request, incident_id: IncidentId, body: Assign,
                 caller: auth.Caller, ops: Ops) -> dict[str, Any]:
    return await _act(request, ops, incident_id, "assigned", caller.actor,
                      {"assignee": body.assignee})


@router.post("/incidents/{incident_id}/comments", status_code=201, dependencies=[OPERATE])
async def comment(request: Request, incident_id: IncidentId, body: Comment,
                  caller: auth.Caller, ops: Ops) -> dict[str, Any]:
    return await _act(request, ops, incident_id, "commented", caller.actor,
                      {"text": body.text})


class CommandRequest(BaseModel):
    """A breaker command; the actor is the authenticated caller."""

    model_config = ConfigDict(extra="forbid")
    command: CommandKind
    reason: str = Field(min_length=1, max_length=500)
    minutes: float | None = Field(default=None, gt=0, description="inhibit / force_tripped: "
                                  "how long the override lasts")


def _warehouse_in_scope(request: Request, warehouse_id: str, caller: auth.Caller) -> None:
    # a dependency, so a caller outside the scope hears 403 before any body is judged
    if not caller.scope.covers_warehouse(warehouse_id):
        raise auth.forbid(request, f"warehouse {warehouse_id!r} is outside your scope")


@router.post("/warehouses/{warehouse_id}/breakers/{breaker}/commands", status_code=201,
             response_model=dict[str, Any],
             dependencies=[auth.requires({auth.Role.OPERATOR}, scoped=True),
                           Depends(_warehouse_in_scope)],
             responses={409: {"description": "no active gateway for the warehouse"},
                        503: {"description": "no broker connection: nothing was sent"}})
async def breaker_command(request: Request, warehouse_id: Annotated[str, Path(max_length=64)],
                          breaker: Annotated[str, Path(max_length=64)], body: CommandRequest,
                          caller: auth.Caller, ops: Ops) -> Any:
    """Inhibit, force open, release or acknowledge a breaker on the agent: a signed
    ``BreakerCommand`` to each gateway of the warehouse, audited, on the incident's
    timeline; the agent's audit record (applied / refused / expired) follows there."""
    try:
        sent = await ops.command(warehouse_id, breaker, body.command, actor=caller.actor,
                                 reason=body.reason, minutes=body.minutes)
    except commands.NoGateway as exc:
        raise HTTPException(409, str(exc)) from exc
    except ValueError as exc:
        field, _, message = str(exc).partition(": ")
        return invalid(f"body.{field}", message)
    except (ConnectionError, aiomqtt.MqttError) as exc:
        raise HTTPException(503, f"not sent: {exc}") from exc
    return {"warehouse_id": warehouse_id, "breaker": breaker, "actor": caller.actor,
            "commands": [{"command_id": p.command.command_id, "agent_id": p.command.agent_id,
                          "command": p.command.command.value,
                          "expires_at": p.command.expires_at.isoformat()
                          if p.command.expires_at else None} for p in sent]}
