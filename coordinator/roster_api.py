"""HTTP endpoints of the staff roster (:mod:`coordinator.roster`).

Phone numbers are shown whole only to roles that call people (:mod:`coordinator.personal`);
the role is the caller's, as the trust layer authenticated it.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from coordinator import auth
from coordinator.api_models import InvalidRequest, in_utc_range
from coordinator.errors import ImportFileError, NotFound
from coordinator.imports import detect_format
from coordinator.personal import phone_for
from coordinator.roster import StaffIn, StaffMember
from coordinator.roster_store import on_duty_of, parse_staff, staff, upsert_staff
from coordinator.validation_errors import invalid
from coordinator.web import region_tz, request_db, request_now, request_role

# anyone signed in may read the roster (phones masked by role); operators and the HR
# system's integration token maintain it
router = APIRouter(tags=["staff"], dependencies=[auth.requires(auth.ANY_ROLE)])
MAINTAIN = auth.requires({auth.Role.OPERATOR, auth.Role.INTEGRATION})


def staff_view(member: StaffMember, role: str | None) -> dict[str, Any]:
    return {"id": member.id, "warehouse_id": member.warehouse_id, "name": member.name,
            "role": member.role, "phone": phone_for(role, member.phone),
            "on_duty": member.on_duty, "active": member.active}


def _write(request: Request, rows: list[StaffIn]) -> dict[str, Any] | JSONResponse:
    try:
        written = upsert_staff(request_db(request), rows, request_now(request))
    except NotFound as exc:
        return JSONResponse(status_code=422, content={
            "detail": str(exc), "field": "warehouse_id", "value": exc.ident})
    return {"kind": "staff", "written": written}


@router.get("/staff", summary="The staff roster (phones masked for roles that do not call)")
def list_staff(request: Request, warehouse_id: str | None = None,
               active: bool | None = None) -> list[dict[str, Any]]:
    members = staff(request_db(request),
                    warehouse_ids=None if warehouse_id is None else [warehouse_id],
                    active_only=bool(active))
    role = request_role(request)
    return [staff_view(m, role) for m in members]


@router.post("/staff", summary="Create or update roster rows (one object or a list)",
             dependencies=[MAINTAIN],
             response_model=dict[str, Any],
             responses={422: {"model": InvalidRequest}})
def post_staff(request: Request, body: StaffIn | list[StaffIn]
               ) -> dict[str, Any] | JSONResponse:
    return _write(request, body if isinstance(body, list) else [body])


@router.post(
    "/staff/import", summary="Import a roster export (CSV, JSON, xlsx; all rows or none)",
    dependencies=[MAINTAIN],
    responses={422: {"model": InvalidRequest}},
    openapi_extra={"requestBody": {"content": {
        "text/csv": {"schema": {"type": "string"}},
        "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet": {
            "schema": {"type": "string", "format": "binary"}},
        "application/json": {"schema": {"type": "array", "items": {"type": "object"}}},
    }, "required": True}},
)
async def import_staff(request: Request) -> Any:
    """Columns: id, warehouse_id, name, role, phone, on_duty (``08:00-20:00``), active."""
    raw = await request.body()
    try:
        fmt = detect_format(content_type=request.headers.get("content-type"))
        rows = await run_in_threadpool(parse_staff, raw, fmt=fmt)
    except ImportFileError as exc:
        return JSONResponse(status_code=422, content={"detail": str(exc), "field": exc.field})
    return await run_in_threadpool(_write, request, rows)


@router.get("/staff/on-duty", summary="Who is on duty at a warehouse at an instant (default now)")
def staff_on_duty(
    request: Request,
    warehouse_id: Annotated[list[str], Query(min_length=1, max_length=100)],
    at: datetime | None = None,
) -> Any:
    if at is not None and (at.tzinfo is None or not in_utc_range(at)):
        return invalid("at", "needs a time zone (e.g. 2026-11-24T02:17:00Z)")
    moment = at if at is not None else request_now(request)
    members = on_duty_of(request_db(request), warehouse_id, moment, region_tz(request.app))
    role = request_role(request)
    return [staff_view(m, role) for m in members]
