"""HTTP side of the gateway registry and the security dead letters.

Registering, retiring and importing gateways is an admin's act; confirming a replaced
gateway's new incarnation is an operator's (the running ops service then applies what
that incarnation held back). Every change is audited under the caller's identity.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Path, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from coordinator import auth
from coordinator.db import Database
from coordinator.errors import Conflict, ImportFileError, NotFound
from coordinator.gateways import store
from coordinator.gateways.commands import signed_commands
from coordinator.ops import commands as command_log
from coordinator.ops.api import Ops
from protocols import CommandKind, TopicError, encode
from protocols.models import Ident

router = APIRouter(tags=["gateways"], dependencies=[auth.requires({auth.Role.OPERATOR})])
ADMIN = [auth.requires({auth.Role.ADMIN})]
AgentId = Annotated[str, Path(max_length=64)]


def _db(request: Request) -> Database:
    db: Database = request.app.state.connections.get()
    return db


def _now(request: Request) -> Any:
    return request.app.state.clock.now()


class GatewayRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    agent_id: Ident
    warehouse_id: Ident


class ActRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: str = Field(min_length=1, max_length=500)


@router.get("/gateways")
def list_gateways(request: Request, warehouse_id: str | None = None) -> list[dict[str, Any]]:
    """Registered gateways with their confirmed and pending incarnations (never a key)."""
    return [g.as_json() for g in store.list_gateways(_db(request), warehouse_id)]


@router.post("/gateways", status_code=201, dependencies=ADMIN,
             responses={404: {"description": "unknown warehouse"},
                        409: {"description": "registered for another warehouse"}})
def register_gateway(request: Request, body: GatewayRequest,
                     caller: auth.Caller) -> dict[str, Any]:
    try:
        return store.register(_db(request), body.agent_id, body.warehouse_id,
                              actor=caller.actor, now=_now(request)).as_json()
    except NotFound as exc:
        raise HTTPException(404, str(exc)) from exc
    except Conflict as exc:
        raise HTTPException(409, str(exc)) from exc


@router.post("/gateways/{agent_id}/retire", dependencies=ADMIN)
def retire_gateway(request: Request, agent_id: AgentId, body: ActRequest,
                   caller: auth.Caller) -> dict[str, str]:
    """A stolen or decommissioned gateway speaks for nobody from now on (its MQTT
    credentials go with the next ``mqtt-auth`` run)."""
    try:
        store.retire(_db(request), agent_id, actor=caller.actor, reason=body.reason,
                     now=_now(request))
    except NotFound as exc:
        raise HTTPException(404, str(exc)) from exc
    return {"agent_id": agent_id, "status": "retired"}


@router.post("/gateways/{agent_id}/confirm-incarnation",
             responses={409: {"description": "no new incarnation awaits confirmation"}})
async def confirm_incarnation(agent_id: AgentId, body: ActRequest, ops: Ops,
                              caller: auth.Caller) -> dict[str, Any]:
    """The gateway really was replaced (a re-imaged SD card): trust its new incarnation
    and apply the clears and statuses it held back."""
    try:
        result = await ops.confirm_incarnation(agent_id, actor=caller.actor,
                                               reason=body.reason)
    except NotFound as exc:
        raise HTTPException(404, str(exc)) from exc
    except Conflict as exc:
        raise HTTPException(409, str(exc)) from exc
    return {"agent_id": agent_id, "status": "confirmed",
            "transitions": [type(t).__name__ for t in result.transitions]}


@router.get("/gateways/{agent_id}/audit")
def gateway_audit(request: Request, agent_id: AgentId) -> list[dict[str, Any]]:
    return store.audit_of(_db(request), agent_id)


@router.post("/gateways/import", dependencies=ADMIN,
             openapi_extra={"requestBody": {"content": {"text/csv": {"schema": {
                 "type": "string"}}}, "required": True}})
async def import_gateways(request: Request, caller: auth.Caller) -> Any:
    """CSV ``agent_id,warehouse_id`` (exported with the catalogue); all rows or none."""
    if request.headers.get("content-type", "").split(";")[0].strip() != "text/csv":
        return JSONResponse(status_code=415, content={
            "detail": "send text/csv", "field": "content-type"})
    try:
        rows = store.parse_gateways((await request.body()).decode("utf-8-sig"))
        written = store.import_gateways(_db(request), rows, actor=caller.actor,
                                        now=_now(request))
    except UnicodeDecodeError:
        return JSONResponse(status_code=422, content={"detail": "body is not UTF-8",
                                                      "field": "body"})
    except ImportFileError as exc:
        return JSONResponse(status_code=422, content={"detail": str(exc),
                                                      "field": exc.field})
    except (NotFound, Conflict) as exc:
        return JSONResponse(status_code=422, content={"detail": str(exc), "field": "body"})
    return {"kind": "gateways", "written": written}


class CommandRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    command: CommandKind
    reason: str = Field(min_length=1, max_length=500)
    minutes: float | None = Field(default=None, gt=0, le=24 * 60,
                                  description="how long an inhibit / force_tripped holds")


@router.post("/warehouses/{warehouse_id}/breakers/{breaker}/commands", status_code=202,
             dependencies=[auth.requires({auth.Role.OPERATOR}, scoped=True)],
             responses={409: {"description": "no registered gateway"},
                        503: {"description": "not connected to the broker"}})
async def command_breaker(request: Request, warehouse_id: Annotated[str, Path(max_length=64)],
                          breaker: Annotated[str, Path(max_length=64)], body: CommandRequest,
                          ops: Ops, caller: auth.Caller) -> Any:
    """Sends the command to each of the warehouse's gateways, signed with its own key;
    the actor is the caller. What each agent did comes back on its audit topic."""
    if not caller.scope.covers_warehouse(warehouse_id):
        raise auth.forbid(request, f"warehouse {warehouse_id!r} is outside your scope")
    lasts = timedelta(minutes=body.minutes) if body.minutes is not None else None
    try:
        topic = ops.topics.command(warehouse_id, breaker)
        commands = signed_commands(_db(request), warehouse_id, breaker, body.command,
                                   actor=caller.actor, reason=body.reason,
                                   now=_now(request), lasts=lasts)
    except Conflict as exc:
        raise HTTPException(409, str(exc)) from exc
    except (ValueError, TopicError) as exc:  # a breaker name no topic level can carry
        return JSONResponse(status_code=422, content={"detail": str(exc), "field": "breaker"})
    try:
        for command in commands:
            await ops.watcher.publish(topic, encode(command))
    except ConnectionError as exc:
        raise HTTPException(503, str(exc)) from exc
    # on the warehouse's open incident's timeline; the agents' audit records follow there
    now = _now(request)
    await ops.call(lambda core: command_log.record_sent(core.db, warehouse_id, breaker,
                                                        commands, now))
    request.app.state.live.publish("incidents")
    return {"warehouse_id": warehouse_id, "breaker": breaker,
            "sent": [{"agent_id": c.agent_id, "command_id": c.command_id} for c in commands]}


security_router = APIRouter(tags=["gateways"], dependencies=[auth.requires(auth.ANY_ROLE)])


@security_router.get("/security/events")
def security_events(request: Request,
                    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
                    warehouse_id: str | None = None) -> list[dict[str, Any]]:
    """Refused, held and flagged gateway messages (the dead letters), newest first."""
    return store.security_events(_db(request), limit=limit, warehouse_id=warehouse_id)
