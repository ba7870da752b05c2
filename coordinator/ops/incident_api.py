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

from fastapi import APIRouter, HTTPException, Path, Request
from fastapi.responses import HTMLResponse
from pydantic import BaseModel, ConfigDict, Field

from coordinator import auth
from coordinator.dashboard import static_bytes
from coordinator.db import Database
from coordinator.errors import NotFound
from coordinator.incident_view import incident_view
from coordinator.ops import incident_log
from coordinator.ops.api import Ops
from coordinator.ops.handler import OpsCore

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
        if not incident_log.incident_known(core.db, incident_id):
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
