"""HTTP endpoints of the intel module: order-history import, the health report (JSON and
the dashboard page), return reasons (classify, correct, retrain, root causes, page).

Each endpoint takes the database connection of its own thread (:mod:`coordinator.web`)
inside a thread-pool function, like the core API; content types and uploads are read by
the helpers every import endpoint shares (:mod:`coordinator.imports`).
"""

from __future__ import annotations

import json
from collections import Counter
from typing import IO, Annotated, Any, Literal

from fastapi import APIRouter, HTTPException, Path, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse
from prometheus_client import Counter as PromCounter
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from coordinator import auth
from coordinator.errors import ImportFileError, NotFound
from coordinator.imports import ImportFormat, detect_format, form_file, media_type, spool
from coordinator.intel import (
    addresses,
    heal_store,
    history,
    report,
    report_html,
    returns,
    returns_html,
    returns_store,
)
from coordinator.intel.classifier import REASONS
from coordinator.intel.config import IntelConfig
from coordinator.intel.service import IntelService
from coordinator.settings import Settings
from coordinator.validation_errors import invalid
from coordinator.web import request_db, request_now

router = APIRouter(tags=["intel"], dependencies=[auth.requires(auth.ANY_ROLE)])
CUSTOMER_FACING = [auth.requires({auth.Role.CUSTOMER_SERVICE, auth.Role.OPERATOR,
                                  auth.Role.INTEGRATION})]
OPERATE = [auth.requires({auth.Role.OPERATOR})]


def config_of(request: Request) -> IntelConfig:
    settings: Settings = request.app.state.settings
    return IntelConfig.of(settings)


def count(request: Request, key: str, n: int = 1) -> None:
    """In ``/stats`` (app.state.counters) and ``/metrics`` (``breakwater_intel_events``)."""
    counters: Counter[str] = request.app.state.counters
    with request.app.state.counters_lock:
        counters[key] += n
    events: PromCounter | None = getattr(request.app.state, "intel_events", None)
    if events is not None and n:
        events.labels(key).inc(n)


def _refused(request: Request, exc: ImportFileError) -> JSONResponse:
    """A whole import refused: counted, 422 naming the field (413 for an oversized body,
    415 for a content type that is not an import format, as the catalogue imports do)."""
    count(request, "history_import_refused")
    answer = invalid(exc.field, exc.message)
    answer.status_code = {"body": 413, "content-type": 415}.get(exc.field, 422)
    return answer


def _parse_mapping(text: str) -> dict[str, str]:
    try:
        raw = json.loads(text)
    # ValueError: JSONDecodeError, an integer of over 4300 digits; RecursionError: nested
    # too deeply (both were 500s, found by fuzzing the import)
    except (ValueError, RecursionError) as exc:
        raise ImportFileError("mapping", f"not JSON: {exc}") from exc
    return history.check_mapping(raw)


@router.post(
    "/import/orders",
    summary="Import past orders (xlsx, CSV, JSON, JSON lines) into the order history",
    openapi_extra={"requestBody": {"content": {
        "text/csv": {"schema": {"type": "string"}},
        "application/x-ndjson": {"schema": {"type": "string"}},
        "application/json": {"schema": {"type": "array", "items": {"type": "object"}}},
        "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet": {
            "schema": {"type": "string", "format": "binary"}},
        "multipart/form-data": {"schema": {"type": "object", "properties": {
            "file": {"type": "string", "format": "binary"}}}},
    }, "required": True}},
    dependencies=[auth.requires({auth.Role.INTEGRATION})],
)
async def import_orders(
    request: Request,
    format: Annotated[str | None, Query(description="csv, json, jsonl or xlsx "
                                        "(default: from the content type)")] = None,
    mapping: Annotated[str | None, Query(description='JSON {"export header": "field"} '
                                         "on top of the usual Chinese headers")] = None,
) -> Any:
    """History only: nothing is reserved or allocated. Good rows are kept and bad rows
    listed by row and column; a wrong file type or a missing required column is a 422
    naming it (415 for a content type that is no import format), with nothing written."""
    config = config_of(request)
    ctype = media_type(request.headers.get("content-type"))
    form = None
    try:
        columns = _parse_mapping(mapping) if mapping else None
        if ctype == "multipart/form-data":  # a browser upload: the file field "file"
            form = await request.form()
            upload = form_file(form)
            if (upload.size or 0) > config.import_max_bytes:
                raise ImportFileError("body", f"larger than the {config.import_max_bytes} "
                                      "byte import limit")
            fmt = detect_format(name=upload.filename or "upload", explicit=format)
            body: IO[bytes] = upload.file
        else:
            fmt = detect_format(content_type=ctype, explicit=format)
            body = await spool(request.stream(), limit=config.import_max_bytes)
    except ImportFileError as exc:
        if form is not None:
            await form.close()
        return _refused(request, exc)
    try:
        with body:
            import_id, result = await run_in_threadpool(_import, request, body, fmt, columns)
    except ImportFileError as exc:
        return _refused(request, exc)
    finally:
        if form is not None:
            await form.close()  # uploads are spooled temporary files
    count(request, "history_rows_imported", result.rows_written)
    count(request, "history_rows_rejected", result.rows_rejected)
    return {"import_id": import_id, **result.as_dict()}


def _import(request: Request, body: IO[bytes], fmt: ImportFormat,
            columns: dict[str, str] | None) -> tuple[str, Any]:
    return history.import_history(request_db(request), body, fmt=fmt, mapping=columns)


def _report(request: Request, days: int | None) -> Any:
    return report.build(request_db(request), config_of(request).report, days=days)


@router.get("/report/health", summary="The order health report (radar and figures) as JSON")
async def health_json(request: Request,
                      days: Annotated[int | None, Query(ge=1, le=366)] = None) -> Any:
    built = await run_in_threadpool(_report, request, days)
    return built.as_dict()


@router.get("/dashboard/health", response_class=HTMLResponse,
            summary="The order health report page (the same self-contained HTML as the file)")
async def health_page(request: Request,
                      days: Annotated[int | None, Query(ge=1, le=366)] = None) -> HTMLResponse:
    built = await run_in_threadpool(_report, request, days)
    return HTMLResponse(report_html.render(built))


# -- return reasons -----------------------------------------------------------------------
class ReturnIn(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    order_id: str = Field(min_length=1, max_length=64)
    kind: Literal["return", "exchange"] = "return"
    text: str = Field(min_length=1, max_length=2000, description="the customer's own words")
    sku_id: str | None = Field(default=None, min_length=1, max_length=64)
    carrier: str | None = Field(default=None, min_length=1, max_length=64)


class CorrectionIn(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    reason: str = Field(description="one of the pool: " + ", ".join(REASONS))


def _return_call(request: Request, call: Any) -> Any:
    try:
        return call(request_db(request), request_now(request))
    except NotFound as exc:
        count(request, "returns_refused")
        return JSONResponse(status_code=404, content={"detail": str(exc)})
    except returns.UnknownReason as exc:
        count(request, "returns_refused")
        return invalid(exc.field, str(exc))


@router.post("/returns", status_code=201, summary="Classify a return or exchange request",
             dependencies=CUSTOMER_FACING)
def post_return(request: Request, body: ReturnIn) -> Any:
    """The reason from the pool with a confidence and the model version; an unknown
    order is a 404 naming it, with nothing written."""
    out = _return_call(request, lambda db, now: returns.classify(
        db, order_id=body.order_id, kind=body.kind, text=body.text, sku_id=body.sku_id,
        carrier=body.carrier, now=now))
    if not isinstance(out, JSONResponse):
        count(request, "returns_classified")
    return out


@router.get("/returns", summary="Recent return requests with their current reason")
def list_returns(request: Request,
                 limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> Any:
    return returns_store.recent(request_db(request), limit)


@router.get("/returns/reasons", summary="The reason pool (code and Chinese label)")
def reason_pool() -> dict[str, str]:
    return dict(REASONS)


@router.get("/returns/root-causes", summary="Returns by warehouse, SKU or carrier and reason")
def root_causes(request: Request, by: Literal["warehouse", "sku", "carrier"] = "warehouse"
                ) -> Any:
    return returns_store.root_causes(request_db(request), by)


@router.get("/returns/{return_id}", summary="One return request with its corrections")
def get_return(request: Request, return_id: Annotated[int, Path(ge=1, le=2**62)]) -> Any:
    return _return_call(request, lambda db, now: returns_store.get(db, return_id))


@router.post("/returns/{return_id}/correction",
             summary="Correct a return's reason (stored with who made it; used to retrain)",
             dependencies=CUSTOMER_FACING)
def correct_return(request: Request, return_id: Annotated[int, Path(ge=1, le=2**62)],
                   body: CorrectionIn, caller: auth.Caller) -> Any:
    """Who corrected is the authenticated caller (``user:name`` / ``token:name``)."""
    out = _return_call(request, lambda db, now: returns.correct(
        db, return_id, reason=body.reason, actor=caller.actor, now=now))
    if not isinstance(out, JSONResponse):
        count(request, "returns_corrected")
    return out


@router.post("/returns/retrain", summary="Retrain the classifier with every correction now",
             dependencies=OPERATE)
def retrain(request: Request) -> dict[str, Any]:
    trained = returns.retrain(request_db(request), request_now(request), trigger="on_demand")
    count(request, "returns_retrained")
    return {"version": trained.version, "examples": trained.examples,
            "corrections": trained.corrections, "trained_at": trained.trained_at}


@router.get("/dashboard/returns", response_class=HTMLResponse,
            summary="Return reasons page: recent returns, one-click correction, root causes")
def returns_page(request: Request) -> HTMLResponse:
    db = request_db(request)
    tables = {by: returns_store.root_causes(db, by) for by in ("warehouse", "sku", "carrier")}
    return HTMLResponse(returns_html.render(returns_store.recent(db, 200), tables))


# -- self-healing ------------------------------------------------------------------------
class AddressIn(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    address: str = Field(min_length=1, max_length=500, description="delivery address text")


def _service(request: Request) -> IntelService:
    service: IntelService | None = getattr(request.app.state, "intel", None)
    if service is None:
        raise HTTPException(status_code=503, detail="the intel service is not running")
    return service


@router.post("/orders/{order_id}/address",
             summary="Check an order's delivery address; correct it through the geocoders",
             dependencies=CUSTOMER_FACING)
def check_order_address(request: Request, order_id: str, body: AddressIn) -> Any:
    """``as_given``, ``corrected`` (original and corrected kept in the timeline) or
    ``failed`` (an alert for a person). Counts in the self-healing rate."""
    service = _service(request)
    try:
        out = addresses.check_address(
            request_db(request), service.geocoders, order_id=order_id, address=body.address,
            city=service.config.geocoder.region, now=request_now(request))
    except NotFound as exc:
        return JSONResponse(status_code=404, content={"detail": str(exc)})
    count(request, f"address_{out['outcome']}")
    return out


@router.get("/orders/{order_id}/address", summary="The order's checked delivery address")
def get_order_address(request: Request, order_id: str) -> Any:
    try:
        return addresses.current_address(request_db(request), order_id)
    except NotFound as exc:
        return JSONResponse(status_code=404, content={"detail": str(exc)})


@router.post("/parcels/check-stuck",
             summary="Hand stuck parcels to the backup carrier now (also runs on schedule)",
             dependencies=OPERATE)
def check_stuck(request: Request) -> Any:
    result = _service(request).tick()
    count(request, "parcels_handed_over",
          sum(1 for h in result["handovers"] if h["outcome"] == "handed_over"))
    return result


@router.get("/parcels/handovers", summary="Parcels handed (or not) to the backup carrier")
def handovers(request: Request,
              limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> Any:
    return heal_store.recent_handovers(request_db(request), limit)
