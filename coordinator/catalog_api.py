"""HTTP endpoints of the catalogue (warehouses, SKUs, stores, inventory: one object or a
list, and bulk imports of an export), and of the operators' alerts, stats and health."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, Annotated, Any

from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData

from coordinator import auth, queries
from coordinator.api_models import SQLITE_INT_MAX, Problem
from coordinator.catalog import (
    InventoryIn,
    Kind,
    SkuIn,
    StoreIn,
    WarehouseIn,
    get_row,
    import_source,
    list_rows,
    upsert,
)
from coordinator.db import Database, WalCheckpointer
from coordinator.errors import Conflict, ImportFileError, NotFound
from coordinator.imports import ImportFormat, detect_format, form_file, media_type, spool
from coordinator.orders_api import retry_after_write
from coordinator.retry import SKU_FILTER_MAX
from coordinator.settings import Settings
from coordinator.validation_errors import invalid, unknown_reference
from coordinator.web import count, request_db, request_now


def catalog_router() -> APIRouter:
    router = APIRouter(tags=["catalog"], dependencies=[auth.requires(auth.ANY_ROLE)])
    models: dict[Kind, type[BaseModel]] = {
        Kind.WAREHOUSES: WarehouseIn, Kind.SKUS: SkuIn, Kind.STORES: StoreIn,
        Kind.INVENTORY: InventoryIn,
    }

    def _upsert(request: Request, kind: Kind, rows: Sequence[BaseModel]
                ) -> dict[str, Any] | JSONResponse:
        try:
            written = upsert(request_db(request), kind, rows, request_now(request))
        except NotFound as exc:
            return unknown_reference(exc)
        except Conflict as exc:
            raise HTTPException(status_code=409, detail=str(exc)) from exc
        out: dict[str, Any] = {"kind": kind.value, "written": written}
        settings: Settings = request.app.state.settings
        # new stock or a new/changed warehouse may fit orders that are waiting
        if written and settings.intake.retry_on_change:
            if kind is Kind.INVENTORY:  # only orders that ask for one of these SKUs
                skus = {row.sku_id for row in rows if isinstance(row, InventoryIn)}
                out["retried"] = retry_after_write(request, "inventory_change", sku_ids=skus)
            elif kind is Kind.SKUS:  # e.g. no longer cold chain: more warehouses qualify
                skus = {row.id for row in rows if isinstance(row, SkuIn)}
                out["retried"] = retry_after_write(request, "sku_change", sku_ids=skus)
            elif kind is Kind.WAREHOUSES:
                out["retried"] = retry_after_write(request, "warehouse_change")
        return out

    for kind, model in models.items():
        _add_kind_routes(router, kind, model, _upsert)

    @router.post(
        "/import/{kind}",
        summary="Bulk import an export: CSV, JSON, JSON lines or xlsx (a bad row writes nothing)",
        openapi_extra={"requestBody": {"content": {
            "text/csv": {"schema": {"type": "string"}},
            "application/json": {"schema": {"type": "array", "items": {"type": "object"}}},
            "application/x-ndjson": {"schema": {"type": "string"}},
            "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet": {
                "schema": {"type": "string", "format": "binary"}},
            "multipart/form-data": {"schema": {"type": "object", "properties": {
                "file": {"type": "string", "format": "binary"},
                "csrf_token": {"type": "string"}}}},
        }, "required": True}},
        dependencies=[auth.requires({auth.Role.INTEGRATION})],
        responses={415: {"model": Problem}},
    )
    async def import_rows(request: Request, kind: Kind) -> Any:
        """Read by the one import reader: CSV needs a header row (UTF-8 or GBK, as Excel
        saves it); JSON is a list of objects; JSON lines; xlsx (first sheet). A bad row
        rejects the file: 422 with ``field`` = ``row N.column``, the row as the export
        shows it (the CSV/xlsx header is row 1). Only ``text/csv``, ``application/json``,
        ``application/x-ndjson``, the xlsx type or a multipart upload (field ``file``,
        format from its suffix; from a logged-in page also ``csrf_token``) are taken:
        ``text/plain`` and form posts are what another site's page can send without the
        browser asking first."""
        upload = await _import_body(request)
        if isinstance(upload, JSONResponse):
            return upload
        body, fmt, form = upload
        try:  # the one import reader (coordinator.imports), as for the order history
            with body:
                return await run_in_threadpool(_import_streamed, request, kind, body, fmt)
        except ImportFileError as exc:
            return JSONResponse(status_code=422, content={"detail": str(exc),
                                                          "field": exc.field})
        finally:
            if form is not None:
                await form.close()

    def _import_streamed(request: Request, kind: Kind, body: IO[bytes],
                         fmt: ImportFormat) -> dict[str, Any] | JSONResponse:
        """Validated in full, then written chunk by chunk (catalog.import_source): one
        chunk of rows in memory at a time, however large the file."""
        try:
            done = import_source(request_db(request), kind, body, fmt, request_now(request),
                                 keep_skus=SKU_FILTER_MAX)
        except NotFound as exc:
            return unknown_reference(exc)
        except Conflict as exc:
            raise HTTPException(status_code=409, detail=str(exc)) from exc
        out: dict[str, Any] = {"kind": kind.value, "written": done.written}
        settings: Settings = request.app.state.settings
        if done.written and settings.intake.retry_on_change:
            if kind in (Kind.INVENTORY, Kind.SKUS):  # only orders asking for these SKUs
                trigger = "inventory_change" if kind is Kind.INVENTORY else "sku_change"
                out["retried"] = retry_after_write(request, trigger, sku_ids=done.skus)
            elif kind is Kind.WAREHOUSES:
                out["retried"] = retry_after_write(request, "warehouse_change")
        return out

    @router.get("/alerts", tags=["operations"], summary="Recent alerts (unallocated, stuck)")
    def alerts(
        request: Request,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
        open_only: Annotated[bool, Query(alias="open")] = False,
    ) -> list[dict[str, Any]]:
        """``open``: the alert's order still waits (unallocated or needs attention); false
        once it was placed or cancelled; null for an alert about no order. ``?open=true``
        lists only the open ones."""
        return queries.recent_alerts(request_db(request), limit=limit, open_only=open_only)

    @router.get("/stats", tags=["operations"], summary="Order counts and intake counters")
    def stats(request: Request) -> dict[str, Any]:
        db = request_db(request)
        by_status = queries.orders_by_status(db)
        with request.app.state.counters_lock:
            counters = dict(request.app.state.counters)
        checkpointer: WalCheckpointer | None = request.app.state.checkpointer
        return {"orders_by_status": by_status, "orders_skewed_total": queries.skew_count(db),
                "counters": counters,
                "wal_checkpointer": checkpointer.health() if checkpointer else None}

    @router.get("/healthz", tags=["operations"], dependencies=[auth.public()])
    def healthz(request: Request) -> dict[str, str]:
        queries.ping(request_db(request))
        return {"status": "ok"}

    return router


def _add_kind_routes(
    router: APIRouter,
    kind: Kind,
    model: type[BaseModel],
    do_upsert: Callable[[Request, Kind, Sequence[BaseModel]], dict[str, Any] | JSONResponse],
) -> None:
    path = f"/{kind.value}"

    def list_kind(
        request: Request,
        limit: Annotated[int, Query(ge=1, le=10_000)] = 1000,
        offset: Annotated[int, Query(ge=0, le=SQLITE_INT_MAX)] = 0,
        warehouse_id: str | None = None,
        sku_id: str | None = None,
    ) -> list[dict[str, Any]]:
        return list_rows(request_db(request), kind, limit=limit, offset=offset,
                         warehouse_id=warehouse_id, sku_id=sku_id)

    def upsert_kind(request: Request, body: Any) -> Any:
        rows = body if isinstance(body, list) else [body]
        return do_upsert(request, kind, rows)

    router.add_api_route(path, list_kind, methods=["GET"], summary=f"List {kind.value}")
    writers = [auth.requires({auth.Role.INTEGRATION})]
    # the body type is the model (or a list of it), so FastAPI validates and documents it
    upsert_kind.__annotations__["body"] = model | list[model]  # type: ignore[valid-type]
    for method in ("POST", "PUT"):
        router.add_api_route(path, upsert_kind, methods=[method], response_model=dict[str, Any],
                             dependencies=writers,
                             name=f"upsert_{kind.value}_{method.lower()}",
                             summary=f"Create or update {kind.value} (one object or a list)")
    if kind is not Kind.INVENTORY:
        def get_one(request: Request, item_id: str) -> dict[str, Any]:
            return _get_by_id(request_db(request), kind, item_id)

        router.add_api_route(path + "/{item_id}", get_one, methods=["GET"],
                             summary=f"One of {kind.value}",
                             responses={404: {"model": Problem}})


_IMPORT_TYPES = {
    "text/csv": ImportFormat.CSV, "application/csv": ImportFormat.CSV,
    "application/json": ImportFormat.JSON, "application/x-ndjson": ImportFormat.JSONL,
    "application/jsonl": ImportFormat.JSONL,
    "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet": ImportFormat.XLSX,
}


async def _import_body(request: Request
                       ) -> tuple[IO[bytes], ImportFormat, FormData | None] | JSONResponse:
    """The file of an import (a spooled temporary file, never the whole body in memory),
    its format and the form to close after it (uploads are spooled files of their own),
    or a 415 naming what is accepted."""
    ctype = media_type(request.headers.get("content-type"))
    if ctype in _IMPORT_TYPES:
        settings: Settings = request.app.state.settings
        try:
            body = await spool(request.stream(), limit=settings.limits.max_import_bytes)
        except ImportFileError as exc:
            return invalid(exc.field, exc.message)
        return body, _IMPORT_TYPES[ctype], None
    if ctype == "multipart/form-data":
        form = await request.form()
        try:
            upload = form_file(form)
            name = upload.filename or ""
            # the format from the file's suffix; a name without one is read as CSV
            fmt = detect_format(name=name) if Path(name).suffix else ImportFormat.CSV
        except ImportFileError as exc:
            await form.close()
            return invalid("body.file", exc.message)
        return upload.file, fmt, form
    count(request, "imports_refused_content_type")
    return JSONResponse(status_code=415, content={
        "detail": f"content-type {ctype or '(none)'} is not accepted: send text/csv, "
                  "application/json, application/x-ndjson, the xlsx type or "
                  "multipart/form-data", "field": "content-type"})


def _get_by_id(db: Database, kind: Kind, item_id: str) -> dict[str, Any]:
    row = get_row(db, kind, item_id)
    if row is None:
        message = f"unknown {kind.value.rstrip('s')} {item_id!r}"
        raise HTTPException(status_code=404, detail=message)
    return row
