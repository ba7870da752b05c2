"""HTTP endpoints of the ops side. The app includes :data:`router` and puts the running
:class:`~coordinator.ops.runner.OpsService` at ``app.state.ops``.

Writes (switches, tracking, a notification retry) go through the ops service's single
thread, in arrival order with the breaker events. Reads of stored state (metrics, the
audit trail, the outbox) never queue there: they are plain ``def`` endpoints that run on
a worker thread with that thread's own connection (``app.state.connections``), so a
flood of ``GET /metrics`` cannot delay a reroute.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request
from pydantic import BaseModel, ConfigDict, Field

from coordinator import auth, catalog
from coordinator.api_models import SQLITE_INT_MAX, InvalidRequest
from coordinator.coalesce import Coalescer
from coordinator.db import Database
from coordinator.errors import NotFound
from coordinator.ops import incident_store, metrics
from coordinator.ops.handler import HandleResult, OpsCore
from coordinator.ops.notify import outbox
from coordinator.ops.runner import OpsService
from protocols import TrackingUpdate

router = APIRouter(tags=["operations"], dependencies=[auth.requires(auth.ANY_ROLE)])
OPERATE = auth.requires({auth.Role.OPERATOR}, scoped=True)
WAREHOUSE_READ = auth.requires(auth.ANY_ROLE, scoped=True)


def ops_service(request: Request) -> OpsService:
    service = getattr(request.app.state, "ops", None)
    if not isinstance(service, OpsService):
        raise HTTPException(503, "the ops service is not running")
    return service


Ops = Annotated[OpsService, Depends(ops_service)]


def read_connection(request: Request) -> Database:
    """The calling thread's own connection: reads never wait on the ops thread. Taken
    inside the endpoint's body, never as a dependency: FastAPI may run a dependency on
    another worker thread than its endpoint, and that thread's connection would then be
    used by two threads at once (a CI run saw a query read another's rows)."""
    db: Database = request.app.state.connections.get()
    return db


def _summary(request: Request, db: Database) -> dict[str, Any]:
    """The metrics summary; identical requests in flight share one computation."""
    reads: Coalescer = request.app.state.reads
    return reads.run("metrics.summary", lambda: metrics.summary(db))


class SwitchRequest(BaseModel):
    """The actor is the authenticated caller, never a field of the body."""

    model_config = ConfigDict(extra="forbid")

    reason: str = Field(min_length=1, max_length=500)


def _result(warehouse_id: str, result: HandleResult, core_state: dict[str, Any]
            ) -> dict[str, Any]:
    return {
        "warehouse_id": warehouse_id,
        **core_state,
        "incidents": [
            {"incident_id": r.incident_id, "moved": r.moved, "needs_attention": r.stuck,
             "notifications_queued": r.queued}
            for r in result.rerouted
        ],
        "transitions": [type(t).__name__ for t in result.transitions],
    }


def availability_view(core: OpsCore, warehouse_id: str) -> dict[str, Any]:
    tracker = core.tracker
    return {
        "available": tracker.available(warehouse_id),
        "incident_id": tracker.incident(warehouse_id),
        "open_breakers": [
            {"breaker": b.breaker, "state": b.state.value, "episode_id": b.episode_id,
             "reason": b.reason, "since": b.since.isoformat(), "agent_id": b.agent_id}
            for b in tracker.open_breakers(warehouse_id)
        ],
        "holds": [{"hold": h.name, "reason": h.reason, "since": h.since.isoformat()}
                  for h in tracker.holds(warehouse_id)],
        "agents": [
            {"agent_id": a.agent_id, "online": a.online, "session_seq": a.session_seq,
             "incarnation": a.incarnation,
             "last_seen": a.last_seen.isoformat()}
            for a in tracker.state.agents.values() if a.warehouse_id == warehouse_id
        ],
    }


def _in_scope(request: Request, caller: auth.Identity, warehouse_id: str) -> None:
    if not caller.scope.covers_warehouse(warehouse_id):
        raise auth.forbid(request, f"warehouse {warehouse_id!r} is outside your scope")


async def _switch(ops: OpsService, warehouse_id: str, body: SwitchRequest,
                  pause: bool, request: Request, caller: auth.Identity) -> dict[str, Any]:
    _in_scope(request, caller, warehouse_id)
    try:
        if pause:
            result = await ops.pause(warehouse_id, actor=caller.actor, reason=body.reason)
        else:
            result = await ops.resume(warehouse_id, actor=caller.actor, reason=body.reason)
    except NotFound as exc:
        raise HTTPException(404, str(exc)) from exc
    now_state = await ops.call(lambda core: availability_view(core, warehouse_id))
    return _result(warehouse_id, result, now_state)


@router.post("/warehouses/{warehouse_id}/pause", dependencies=[OPERATE])
async def pause_warehouse(warehouse_id: str, body: SwitchRequest, ops: Ops, request: Request,
                          caller: auth.Caller) -> dict[str, Any]:
    """Operator pause: the warehouse stops taking orders and its unshipped orders move."""
    return await _switch(ops, warehouse_id, body, True, request, caller)


@router.post("/warehouses/{warehouse_id}/resume", dependencies=[OPERATE])
async def resume_warehouse(warehouse_id: str, body: SwitchRequest, ops: Ops, request: Request,
                           caller: auth.Caller) -> dict[str, Any]:
    """Lift an operator pause (other causes, e.g. a tripped breaker, still hold)."""
    return await _switch(ops, warehouse_id, body, False, request, caller)


@router.get("/warehouses/{warehouse_id}/availability", dependencies=[WAREHOUSE_READ])
async def warehouse_availability(warehouse_id: str, ops: Ops, request: Request,
                                 caller: auth.Caller) -> dict[str, Any]:
    """Why a warehouse is (un)available: open breakers, holds, agents."""
    _in_scope(request, caller, warehouse_id)

    def known_view(core: OpsCore) -> dict[str, Any] | None:
        # the tracker knows no unknown warehouse: it would call it available
        if not catalog.warehouse_exists(core.db, warehouse_id):
            return None
        return availability_view(core, warehouse_id)

    view = await ops.call(known_view)
    if view is None:
        raise HTTPException(404, f"unknown warehouse {warehouse_id}")
    return {"warehouse_id": warehouse_id, **view}


@router.get("/warehouses/{warehouse_id}/audit", dependencies=[WAREHOUSE_READ])
def warehouse_audit(warehouse_id: str, request: Request,
                    caller: auth.Caller) -> list[dict[str, Any]]:
    """Every pause, resume and availability change of a warehouse, oldest first."""
    _in_scope(request, caller, warehouse_id)
    db = read_connection(request)
    if not catalog.warehouse_exists(db, warehouse_id):
        raise HTTPException(404, f"unknown warehouse {warehouse_id}")
    return incident_store.audit_trail(db, warehouse_id)


@router.post("/tracking", status_code=202, response_model=dict[str, Any],
             responses={422: {"model": InvalidRequest}},
             dependencies=[auth.requires({auth.Role.INTEGRATION})])
async def post_tracking(update: TrackingUpdate, ops: Ops) -> Any:
    """A courier's tracking update for one shipment (same model as the MQTT topic)."""
    result = await ops.handle(update)
    return {"accepted": True, "shipment_id": update.shipment_id,
            "transitions": [type(t).__name__ for t in result.transitions]}


@router.get("/notifications", dependencies=[auth.requires(auth.ANY_ROLE, scoped=True)])
def list_notifications(
    request: Request,
    ops: Ops,
    caller: auth.Caller,
    status: Literal["pending", "sent", "failed"] | None = None,
    kind: Literal["franchisee", "wecom", "sms", "webhook"] | None = None,
    incident_id: str | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[dict[str, Any]]:
    """The outbox; ``status=failed`` lists dead notifications (retry with POST .../retry).
    A credential scoped to some stores sees only those stores' franchisee notices."""
    stores = None if caller.scope.unlimited else sorted(caller.scope.stores or ())
    found = outbox.listing(read_connection(request), status=status, kind=kind,
                           incident_id=incident_id, limit=limit, stores=stores)
    return [n.as_json() for n in found]


@router.post("/notifications/{notification_id}/retry",
             dependencies=[auth.requires({auth.Role.OPERATOR})])
async def retry_notification(
    notification_id: Annotated[int, Path(ge=1, le=SQLITE_INT_MAX)], ops: Ops
) -> dict[str, Any]:
    now = ops.clock.now()

    def retry(core: OpsCore) -> bool:
        with core.db.atomic():
            return outbox.retry(core.db, notification_id, now)

    if not await ops.call(retry):
        raise HTTPException(404, f"no failed notification {notification_id}")
    ops.dispatcher.wake()
    return {"id": notification_id, "status": "pending"}


@router.get("/metrics/summary")
def metrics_summary(request: Request, ops: Ops) -> dict[str, Any]:
    """First response time, status transparency, self-healing rate, counters."""
    db = read_connection(request)
    data = dict(_summary(request, db))  # shared with other requests: copied before adding
    data["watcher"] = {"received": ops.watcher.stats.received,
                       "bad_payloads": ops.watcher.stats.bad_payloads,
                       "connects": ops.watcher.stats.connects,
                       "broker": ops.watcher.stats.broker}
    if ops.leadership is not None:
        data["cluster"] = ops.leadership.status(db)
    return data
