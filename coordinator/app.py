"""The coordinator's HTTP API (FastAPI). Build it with :func:`create_app`; nothing at import.

Endpoints are plain ``def`` functions: FastAPI runs them in its thread pool and each takes
the SQLite connection of its own thread from :class:`Connections` (``app.state.connections``)
inside the endpoint body, so a connection is never shared by two threads at once.

Extending (the ops package does this): pass ``extra_routers`` (included as they are) and
``lifespan_hooks``: callables ``hook(app) -> async context manager`` entered, in order, once
the database is open and left in reverse order at shutdown; background tasks (MQTT, the
notification outbox) live there. ``app.state`` holds ``settings``, ``clock``,
``connections`` (per-thread SQLite), ``intake`` (the group-commit order writer) and
``counters``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
import threading
from collections import Counter
from collections.abc import AsyncIterator, Callable, Collection, Iterable, Sequence
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, FastAPI, HTTPException, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationError,
    field_validator,
)
from pydantic.json_schema import models_json_schema
from starlette.concurrency import run_in_threadpool

from coordinator import auth, ledger, observability, queries, security_metrics
from coordinator.auth.config import auth_config_of
from coordinator.body_limits import BodyLimitMiddleware
from coordinator.catalog import (
    InventoryIn,
    Kind,
    SkuIn,
    StoreIn,
    WarehouseIn,
    get_row,
    list_rows,
    read_rows,
    upsert,
)
from coordinator.coalesce import Coalescer
from coordinator.db import Database, WalCheckpointer, open_database
from coordinator.engine import CandidateTrace, why_not
from coordinator.engine import Decision as EngineDecision
from coordinator.errors import Conflict, ImportFileError, NotFound, StoreError
from coordinator.imports import ImportFormat, detect_format, form_file, media_type
from coordinator.intake import GroupCommitter
from coordinator.live import hub_for
from coordinator.observability import Metrics
from coordinator.postgres import is_postgres_url
from coordinator.retry import RetryResult, retry_waiting
from coordinator.settings import Settings
from coordinator.trace_names import Names
from protocols.clock import Clock, SystemClock
from protocols.geo import great_circle_km
from protocols.orders import DouyinOrder, MeituanOrder, OrderIn, WechatMiniOrder, normalise

LifespanHook = Callable[[FastAPI], AbstractAsyncContextManager[Any]]

# SQLite's INTEGER is 64-bit: a larger number in a query (an offset, an id) raised
# OverflowError in the driver, a 500 instead of a 422 naming the parameter
SQLITE_INT_MAX = 2**63 - 1
# the last instant a datetime holds, as channel timestamps (Unix ms) count it
# (exact: through timestamp() the float rounds up, past the end)
_MAX_EPOCH_MS = (datetime.max.replace(tzinfo=UTC) - datetime(1970, 1, 1, tzinfo=UTC)
                 ) // timedelta(milliseconds=1)

log = logging.getLogger(__name__)


def in_utc_range(moment: datetime) -> bool:
    """Whether an aware datetime has a UTC form: every stamp is stored in UTC, and
    ``0001-01-01T00:00+01:00`` or ``9999-12-31T23:59-01:00`` have none (OverflowError)."""
    try:
        moment.astimezone(UTC)
    except OverflowError:
        return False
    return True


def invalid(field: str, message: str, **extra: Any) -> JSONResponse:
    """A 422 shaped like the validation handler's, for input the models let through."""
    return JSONResponse(status_code=422,
                        content={"detail": f"{field}: {message}", "field": field, **extra})


class Connections:
    """One database connection per thread, all closed at shutdown."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._local = threading.local()
        self._all: list[Database] = []
        self._lock = threading.Lock()

    def get(self) -> Database:
        db: Database | None = getattr(self._local, "db", None)
        if db is None:
            # requests never run a WAL checkpoint (an fsync) themselves: the app's
            # checkpointer thread does, so no request pays for one
            db = open_database(self.path, migrate=False, autocheckpoint=False)
            self._local.db = db
            with self._lock:
                self._all.append(db)
        return db

    def close(self) -> None:
        with self._lock:
            for db in self._all:
                db.conn.close()
            self._all.clear()
        self._local = threading.local()


# -- request and response models ------------------------------------------------------
def _payload_tag(value: Any) -> str | None:
    """Which model a body item is: the normalised shape has ``channel_order_id``."""
    if isinstance(value, dict):
        if "channel_order_id" in value:
            return "normalised"
        channel = value.get("channel")
        return channel if channel in ("wechat_mini", "meituan", "douyin") else "normalised"
    if isinstance(value, BaseModel):
        return "normalised" if isinstance(value, OrderIn) else str(getattr(value, "channel", ""))
    return None


OrderPayload = Annotated[
    Annotated[OrderIn, Tag("normalised")]
    | Annotated[WechatMiniOrder, Tag("wechat_mini")]
    | Annotated[MeituanOrder, Tag("meituan")]
    | Annotated[DouyinOrder, Tag("douyin")],
    Discriminator(
        _payload_tag,
        custom_error_type="order_payload",
        custom_error_message="expected an order object (a channel payload or a normalised order)",
    ),
]


class OrderResult(BaseModel):
    order_id: str
    channel: str
    channel_order_id: str
    created: bool = Field(description="false: this (channel, channel_order_id) already existed")
    status: str
    warehouse_id: str | None
    tier: int
    eta: str | None
    reason: str | None
    skewed: bool = Field(description="client clock differs from ours by more than the threshold")


class BatchResult(BaseModel):
    results: list[OrderResult]
    created: int
    duplicates: int


class StatusEvent(BaseModel):
    model_config = ConfigDict(extra="forbid")
    kind: Literal["shipped", "in_transit", "delivered", "cancelled"]
    at: AwareDatetime | None = Field(default=None, description="event time; default: now")
    detail: dict[str, Any] = Field(default_factory=dict)

    @field_validator("at")
    @classmethod
    def _has_utc_form(cls, value: datetime | None) -> datetime | None:
        if value is not None and not in_utc_range(value):
            raise ValueError("must fall between years 1 and 9999 in UTC")
        return value


class RetryRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    order_ids: list[str] | None = Field(
        default=None, max_length=10_000,
        description="retry only these (those not waiting are ignored); default: every one",
    )
    limit: int = Field(default=1000, ge=1, le=10_000,
                       description="most orders tried, highest tier then oldest first")


class Problem(BaseModel):
    detail: str
    field: str | None = None


class FieldError(BaseModel):
    field: str
    msg: str
    type: str


class InvalidRequest(BaseModel):
    """Every 422: what is wrong with the request and where (``body.0.goods.1.num``,
    ``query.limit``, ``row 3.on_hand``, or the kind of an unknown reference)."""

    detail: str
    field: str
    errors: list[FieldError] = Field(default_factory=list,
                                     description="each invalid field (the first 20)")
    value: str | None = Field(default=None, description="the unknown id, for a reference")


_ORDER_EXAMPLES = {
    "wechat_mini": {
        "summary": "WeChat mini-program checkout",
        "value": {"channel": "wechat_mini", "out_trade_no": "WX1001", "store_code": "HZ-S001",
                  "goods": [{"sku_id": "SKU-0001", "num": 2}],
                  "address": {"latitude": 30.27, "longitude": 120.15},
                  "submit_time_ms": 1764000000000},
    },
    "meituan": {
        "summary": "Meituan push",
        "value": {"channel": "meituan", "wm_order_id_view": "MT2001", "app_poi_code": "HZ-S002",
                  "detail": [{"app_food_code": "SKU-0002", "quantity": 1}],
                  "latitude": 30.29, "longitude": 120.16},
    },
    "normalised": {
        "summary": "Normalised order (any channel)",
        "value": {"channel": "douyin", "channel_order_id": "DY3001", "store_id": "HZ-S003",
                  "lines": [{"sku_id": "SKU-0003", "qty": 1}], "lat": 30.25, "lon": 120.12},
    },
}


# -- helpers ------------------------------------------------------------------------
def _db(request: Request) -> Database:
    connections: Connections = request.app.state.connections
    return connections.get()


def _now(request: Request) -> datetime:
    clock: Clock = request.app.state.clock
    return clock.now()


def _count(request: Request, key: str, n: int = 1) -> None:
    counters: Counter[str] = request.app.state.counters
    with request.app.state.counters_lock:
        counters[key] += n


def _retry(request: Request, trigger: str, order_ids: Sequence[str] | None = None,
           limit: int | None = None, sku_ids: Collection[str] | None = None) -> RetryResult:
    settings: Settings = request.app.state.settings
    result = retry_waiting(_db(request), now=_now(request), config=settings.allocation,
                           order_ids=order_ids, sku_ids=sku_ids, trigger=trigger,
                           limit=limit if limit is not None else settings.intake.retry_limit)
    _count(request, "orders_retry_placed", len(result.placed))
    return result


def _retry_after_write(request: Request, trigger: str,
                       sku_ids: Collection[str] | None = None) -> dict[str, Any]:
    """Retry waiting orders after a write that already committed: a failure here must not
    turn that write's answer into an error (a client would repeat a done cancel)."""
    try:
        return _retry(request, trigger, sku_ids=sku_ids).summary()
    except (StoreError, sqlite3.Error) as exc:
        log.warning("retry of waiting orders after a write failed: %s", exc)
        _count(request, "retry_failures")
        return {"error": f"retry of waiting orders failed: {exc}"}


def _not_found(exc: NotFound) -> HTTPException:
    return HTTPException(status_code=404, detail=str(exc))


def _unknown_reference(exc: NotFound) -> JSONResponse:
    """An unknown SKU/store/warehouse named inside a body: the body is what is wrong."""
    return JSONResponse(status_code=422,
                        content={"detail": str(exc), "field": exc.kind, "value": exc.ident})


# the channels' Unix timestamps and their unit (ms per count)
_EPOCH_FIELDS: dict[type[BaseModel], tuple[tuple[str, int], ...]] = {
    WechatMiniOrder: (("submit_time_ms", 1),),
    MeituanOrder: (("ctime", 1000),),
    DouyinOrder: (("create_time", 1000), ("submit_ms", 1)),
}


def _normalise_all(items: Sequence[BaseModel], single: bool) -> list[OrderIn] | JSONResponse:
    """Every payload as an :class:`OrderIn`, or the 422 of the first that cannot be one.

    A channel payload can be valid as sent and still make no order (neither store nor
    customer), or carry a timestamp past the calendar's end: both were 500s."""
    orders = []
    for number, item in enumerate(items):
        where = "body" if single else f"body.{number}"
        for name, unit_ms in _EPOCH_FIELDS.get(type(item), ()):
            value = getattr(item, name)
            if value is not None and value * unit_ms > _MAX_EPOCH_MS:
                return invalid(f"{where}.{name}", "a time after the year 9999")
        try:
            orders.append(normalise(item))  # type: ignore[arg-type]
        except ValidationError as exc:
            first = exc.errors()[0]
            return invalid(_field_path((where, *first["loc"])), first["msg"])
    return orders


def _decision_view(row: dict[str, Any], names: Names) -> dict[str, Any]:
    candidates = ledger.trace_candidates(row["trace"])
    lines = []
    for c in candidates:
        c["name"] = names.warehouses.get(c["warehouse_id"])
        head = f"{c['warehouse_id']} {c['name'] or ''} ({c['distance_km']} km)".replace("  ", " ")
        why = names.named(c["why"] or "")
        if c["chosen"]:
            lines.append(f"{head}: CHOSEN, score {c['score']}, reservation rate "
                         f"{c['reservation_rate']:.0%}, stock depth {c['stock_depth']}x")
        elif c["dropped_by"] == "ranking":
            lines.append(f"{head}: feasible but {why} (score {c['score']})")
        else:
            lines.append(f"{head}: dropped by {c['dropped_by']}: {why}")
    if row["outcome"] != "allocated":
        lines.append(f"not allocated: {names.named(row['reason'] or '')}")
    return {
        "kind": row["kind"], "decided_at": row["decided_at"], "incident_id": row["incident_id"],
        "rule_set_version": row["rule_set_version"], "outcome": row["outcome"],
        "warehouse_ids": row["warehouse_ids"], "reason": row["reason"], "tier": row["tier"],
        "need_cold_chain": row["need_cold_chain"], "examined": row["trace"].get("examined"),
        "farthest_examined_km": row["trace"].get("farthest_examined_km"),
        "candidates": candidates, "explanation": lines,
    }


def _as_decision(row: dict[str, Any]) -> EngineDecision:
    trace = row["trace"]
    return EngineDecision(
        order_id=row["order_id"], tier=row["tier"], need_cold_chain=row["need_cold_chain"],
        rule_set_version=row["rule_set_version"],
        candidates=tuple(CandidateTrace(**c) for c in ledger.trace_candidates(trace)),
        examined=trace.get("examined", 0),
        farthest_examined_km=trace.get("farthest_examined_km", 0.0),
        omitted=trace.get("omitted", 0),
    )


# -- routers ------------------------------------------------------------------------
def _orders_router() -> APIRouter:
    router = APIRouter(tags=["orders"], dependencies=[auth.requires(auth.ANY_ROLE)])

    @router.post(
        "/orders",
        response_model=OrderResult | BatchResult,
        responses={
            200: {"description": "a batch, or one order already stored (`created: false`)"},
            201: {"model": OrderResult, "description": "one new order, stored and allocated"},
            422: {"model": InvalidRequest,
                  "description": "invalid body (with the field path) or unknown SKU/store"},
            503: {"model": Problem, "description": "the database cannot take the write"},
        },
        summary="Submit one order or a batch (any channel's payload); idempotent",
        dependencies=[auth.requires({auth.Role.INTEGRATION}, scoped=True)],
    )
    async def post_orders(
        request: Request,
        caller: auth.Caller,
        body: Annotated[
            OrderPayload | list[OrderPayload],
            Body(openapi_examples=_ORDER_EXAMPLES),
        ],
    ) -> Any:
        """Store and allocate orders. The same (channel, channel order id) twice returns the
        first result with ``created: false``. Unknown SKUs or stores reject the whole body.

        Async on purpose: it only validates and hands the orders to the intake writer
        thread (group commit), so no worker thread sits waiting for the commit."""
        settings: Settings = request.app.state.settings
        single = not isinstance(body, list)
        items = [body] if not isinstance(body, list) else body
        if not items:
            return JSONResponse(status_code=422, content={"detail": "empty batch",
                                                          "field": "body"})
        if len(items) > settings.intake.max_batch:
            return JSONResponse(status_code=422, content={
                "detail": f"batch of {len(items)} exceeds intake.max_batch "
                          f"{settings.intake.max_batch}", "field": "body"})
        orders = _normalise_all(items, single)
        if isinstance(orders, JSONResponse):
            _count(request, "orders_rejected")
            return orders
        for number, order in enumerate(orders):
            if not caller.scope.covers_store(order.store_id or ""):
                raise auth.forbid(request, f"{'body' if single else f'body.{number}'}"
                                           f".store: {order.store_id!r} is outside your scope")
        intake: GroupCommitter = request.app.state.intake
        try:
            outcomes = await intake.submit_async(orders)
        except NotFound as exc:
            _count(request, "orders_rejected")
            return _unknown_reference(exc)
        created = [o for o in outcomes if o.created]
        if created:
            request.app.state.live.publish("orders")
        _count(request, "orders_created", len(created))
        _count(request, "orders_skewed", sum(1 for o in created if o.skewed))
        _count(request, "orders_unallocated", sum(1 for o in created if o.status == "unallocated"))
        results = [OrderResult.model_validate(o, from_attributes=True) for o in outcomes]
        if single:
            return JSONResponse(status_code=201 if results[0].created else 200,
                                content=results[0].model_dump())
        return BatchResult(results=results, created=len(created),
                           duplicates=len(results) - len(created))

    @router.get("/orders", summary="List orders (newest first)",
                dependencies=[auth.requires(auth.ANY_ROLE, scoped=True)])
    def list_orders(
        request: Request,
        caller: auth.Caller,
        status: str | None = None,
        warehouse_id: str | None = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    ) -> list[dict[str, Any]]:
        return queries.list_orders(_db(request), status=status, warehouse_id=warehouse_id,
                                   limit=limit, scope=caller.scope)

    @router.post("/orders/retry", tags=["operations"],
                 dependencies=[auth.requires({auth.Role.OPERATOR})],
                 summary="Allocate waiting orders (unallocated, needs_attention) that now fit")
    def retry_orders(request: Request, body: RetryRequest | None = None) -> dict[str, Any]:
        """Runs by itself after stock or warehouses change (catalog writes, a breaker
        clearing, a resume); this is for an operator who fixed something else. Orders that
        still fit nowhere stay waiting and nothing is written for them."""
        chosen = body if body is not None else RetryRequest()
        result = _retry(request, "operator", chosen.order_ids, chosen.limit)
        return {**result.summary(),
                "placed_orders": [{"order_id": p.order_id, "previous_status": p.previous_status,
                                   "warehouse_id": p.warehouse_id, "distance_km": p.distance_km,
                                   "eta": p.eta, "tier": p.tier} for p in result.placed],
                "waiting_orders": [{"order_id": w.order_id, "status": w.status,
                                    "reason": w.reason} for w in result.waiting]}

    @router.get("/orders/{order_id}", summary="Status and timeline of an order",
                responses={404: {"model": Problem}},
                dependencies=[auth.requires(auth.ANY_ROLE, scoped=True)])
    def get_order(request: Request, order_id: str, caller: auth.Caller) -> dict[str, Any]:
        """Timeline kinds: received, allocated (已分仓), rerouted, shipped (已出库),
        in_transit (在途), delivered (已送达), unallocated, needs_attention, cancelled."""
        _check_order_scope(request, caller, order_id)
        try:
            return queries.get_order(_db(request), order_id)
        except NotFound as exc:
            raise _not_found(exc) from exc

    @router.post("/orders/{order_id}/events", summary="Warehouse or courier status update",
                 responses={404: {"model": Problem}, 409: {"model": Problem}},
                 dependencies=[auth.requires({auth.Role.INTEGRATION, auth.Role.OPERATOR,
                                              auth.Role.CUSTOMER_SERVICE}, scoped=True)])
    def post_event(request: Request, order_id: str, event: StatusEvent,
                   caller: auth.Caller) -> dict[str, Any]:
        """Allowed: allocated -> shipped | cancelled; shipped -> in_transit | delivered;
        in_transit -> in_transit | delivered; unallocated/needs_attention -> cancelled.
        Anything else is 409."""
        _check_order_scope(request, caller, order_id)
        at = event.at or _now(request)
        try:
            status = ledger.record_status_event(_db(request), order_id, event.kind, at,
                                               event.detail)
        except NotFound as exc:
            raise _not_found(exc) from exc
        except Conflict as exc:
            raise HTTPException(status_code=409, detail=str(exc)) from exc
        out: dict[str, Any] = {"order_id": order_id, "status": status}
        request.app.state.live.publish("orders")
        settings: Settings = request.app.state.settings
        if status == "cancelled" and settings.intake.retry_on_change:
            # the stock it held is free again: a waiting order of those SKUs may fit now
            skus = {line["sku_id"] for line in queries.get_order(_db(request), order_id)["lines"]}
            out["retried"] = _retry_after_write(request, "cancel_freed_stock", sku_ids=skus)
        return out

    @router.get("/orders/{order_id}/decision",
                summary="Why the order went where it went (and why not warehouse X)",
                responses={404: {"model": Problem}},
                dependencies=[auth.requires(auth.ANY_ROLE, scoped=True)])
    def get_decision(
        request: Request,
        order_id: str,
        caller: auth.Caller,
        why_not_warehouse: Annotated[str | None, Query(alias="why_not")] = None,
    ) -> dict[str, Any]:
        _check_order_scope(request, caller, order_id)
        db = _db(request)
        rows = queries.decisions_of(db, order_id)
        if not queries.order_exists(db, order_id):
            raise _not_found(NotFound("order", order_id))
        names = Names(queries.warehouse_names(db), queries.sku_names_of_order(db, order_id))
        out: dict[str, Any] = {"order_id": order_id,
                               "decisions": [_decision_view(r, names) for r in rows]}
        if why_not_warehouse is not None:
            try:
                wh = queries.get_warehouse(db, why_not_warehouse)
            except NotFound as exc:
                raise _not_found(exc) from exc
            lat, lon = queries.order_position(db, order_id)
            distance = round(great_circle_km(lat, lon, wh["lat"], wh["lon"]), 3)
            # every decision of the order: it may have been allocated there, then
            # rerouted away; the latest answer first, the whole history beside it
            history = [{"decision": n, "kind": r["kind"], "decided_at": r["decided_at"],
                        "answer": names.named(why_not(_as_decision(r), why_not_warehouse,
                                                      distance))}
                       for n, r in enumerate(rows, 1)]
            answer = history[-1]["answer"] if history else "no allocation decision recorded yet"
            out["why_not"] = {"warehouse_id": why_not_warehouse, "name": wh["name"],
                              "distance_km": distance, "answer": answer, "history": history}
        return out

    return router


def _catalog_router() -> APIRouter:
    router = APIRouter(tags=["catalog"], dependencies=[auth.requires(auth.ANY_ROLE)])
    models: dict[Kind, type[BaseModel]] = {
        Kind.WAREHOUSES: WarehouseIn, Kind.SKUS: SkuIn, Kind.STORES: StoreIn,
        Kind.INVENTORY: InventoryIn,
    }

    def _upsert(request: Request, kind: Kind, rows: Sequence[BaseModel]
                ) -> dict[str, Any] | JSONResponse:
        try:
            written = upsert(_db(request), kind, rows, _now(request))
        except NotFound as exc:
            return _unknown_reference(exc)
        except Conflict as exc:
            raise HTTPException(status_code=409, detail=str(exc)) from exc
        out: dict[str, Any] = {"kind": kind.value, "written": written}
        settings: Settings = request.app.state.settings
        # new stock or a new/changed warehouse may fit orders that are waiting
        if written and settings.intake.retry_on_change:
            if kind is Kind.INVENTORY:  # only orders that ask for one of these SKUs
                skus = {row.sku_id for row in rows if isinstance(row, InventoryIn)}
                out["retried"] = _retry_after_write(request, "inventory_change", sku_ids=skus)
            elif kind is Kind.SKUS:  # e.g. no longer cold chain: more warehouses qualify
                skus = {row.id for row in rows if isinstance(row, SkuIn)}
                out["retried"] = _retry_after_write(request, "sku_change", sku_ids=skus)
            elif kind is Kind.WAREHOUSES:
                out["retried"] = _retry_after_write(request, "warehouse_change")
        return out

    for kind, model in models.items():
        _add_kind_routes(router, kind, model, _upsert)

    @router.post(
        "/import/{kind}",
        summary="Bulk import an export: CSV, JSON, JSON lines or xlsx (all rows or none)",
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
        raw, fmt = upload
        try:  # the one import reader (coordinator.imports), as for the order history
            rows = await run_in_threadpool(read_rows, raw, kind, fmt)
        except ImportFileError as exc:
            return JSONResponse(status_code=422, content={"detail": str(exc),
                                                          "field": exc.field})
        return await run_in_threadpool(_upsert, request, kind, rows)

    @router.get("/alerts", tags=["operations"], summary="Recent alerts (unallocated, stuck)")
    def alerts(
        request: Request,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
        open_only: Annotated[bool, Query(alias="open")] = False,
    ) -> list[dict[str, Any]]:
        """``open``: the alert's order still waits (unallocated or needs attention); false
        once it was placed or cancelled; null for an alert about no order. ``?open=true``
        lists only the open ones."""
        return queries.recent_alerts(_db(request), limit=limit, open_only=open_only)

    @router.get("/stats", tags=["operations"], summary="Order counts and intake counters")
    def stats(request: Request) -> dict[str, Any]:
        db = _db(request)
        by_status = queries.orders_by_status(db)
        with request.app.state.counters_lock:
            counters = dict(request.app.state.counters)
        checkpointer: WalCheckpointer | None = request.app.state.checkpointer
        return {"orders_by_status": by_status, "orders_skewed_total": queries.skew_count(db),
                "counters": counters,
                "wal_checkpointer": checkpointer.health() if checkpointer else None}

    @router.get("/healthz", tags=["operations"], dependencies=[auth.public()])
    def healthz(request: Request) -> dict[str, str]:
        queries.ping(_db(request))
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
        return list_rows(_db(request), kind, limit=limit, offset=offset,
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
            return _get_by_id(_db(request), kind, item_id)

        router.add_api_route(path + "/{item_id}", get_one, methods=["GET"],
                             summary=f"One of {kind.value}",
                             responses={404: {"model": Problem}})


_IMPORT_TYPES = {
    "text/csv": ImportFormat.CSV, "application/csv": ImportFormat.CSV,
    "application/json": ImportFormat.JSON, "application/x-ndjson": ImportFormat.JSONL,
    "application/jsonl": ImportFormat.JSONL,
    "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet": ImportFormat.XLSX,
}


async def _import_body(request: Request) -> tuple[bytes, ImportFormat] | JSONResponse:
    """The file of an import and its format, or a 415 naming what is accepted."""
    ctype = media_type(request.headers.get("content-type"))
    if ctype in _IMPORT_TYPES:
        return await request.body(), _IMPORT_TYPES[ctype]
    if ctype == "multipart/form-data":
        form = await request.form()
        try:
            try:
                upload = form_file(form)
            except ImportFileError as exc:
                return invalid(exc.field, exc.message)
            name = upload.filename or ""
            try:  # the format from the file's suffix; a name without one is read as CSV
                fmt = detect_format(name=name) if Path(name).suffix else ImportFormat.CSV
            except ImportFileError as exc:
                return invalid("body.file", exc.message)
            return await upload.read(), fmt
        finally:
            await form.close()  # uploads are spooled temporary files
    _count(request, "imports_refused_content_type")
    return JSONResponse(status_code=415, content={
        "detail": f"content-type {ctype or '(none)'} is not accepted: send text/csv, "
                  "application/json, application/x-ndjson, the xlsx type or "
                  "multipart/form-data", "field": "content-type"})


def _check_order_scope(request: Request, caller: auth.Identity, order_id: str) -> None:
    """403 when the order belongs to a store and warehouse outside the caller's scope
    (an unknown order answers as before: 404 further on)."""
    if caller.scope.unlimited:
        return
    owner = queries.order_owner(_db(request), order_id)
    if owner is not None and not caller.scope.sees_order(*owner):
        raise auth.forbid(request, f"order {order_id!r} is outside your scope")


def _get_by_id(db: Database, kind: Kind, item_id: str) -> dict[str, Any]:
    row = get_row(db, kind, item_id)
    if row is None:
        message = f"unknown {kind.value.rstrip('s')} {item_id!r}"
        raise HTTPException(status_code=404, detail=message)
    return row


# -- validation errors ------------------------------------------------------------------
def _is_label(part: Any) -> bool:
    """Union bookkeeping in a pydantic location (``tagged-union[...]``, ``WarehouseIn``)."""
    return isinstance(part, str) and (
        "[" in part or part in _MODEL_LABELS or part in ("wechat_mini", "meituan", "douyin",
                                                         "normalised")
    )


_MODEL_LABELS = {"OrderIn", "WechatMiniOrder", "MeituanOrder", "DouyinOrder", "WarehouseIn",
                 "SkuIn", "StoreIn", "InventoryIn", "StaffIn"}


def _field_path(loc: Iterable[Any]) -> str:
    """``body.0.goods.1.num``: the path of the bad field, without union labels."""
    return ".".join(str(p) for p in loc if not _is_label(p))


def _relevant_errors(errors: Sequence[Any], body: Any) -> list[Any]:
    """A body may be one object or a list: keep the errors of the shape that was sent."""
    def branch(err: Any) -> str:
        loc = err.get("loc", ())
        second = loc[1] if len(loc) > 1 else ""
        return "list" if isinstance(second, str) and second.startswith("list[") else "one"

    wanted = "list" if isinstance(body, list) else "one"
    kept = [e for e in errors if branch(e) == wanted]
    return kept or list(errors)


_SCHEMAS = "#/components/schemas/"


def _document_invalid_requests(spec: dict[str, Any]) -> None:
    """FastAPI documents each 422 as its own ``HTTPValidationError`` (``detail`` a list),
    but every 422 here is an :class:`InvalidRequest` (``detail`` a string, ``field``):
    clients and contract tests read the spec, so it says what is sent."""
    schemas = spec.setdefault("components", {}).setdefault("schemas", {})
    _, top = models_json_schema([(InvalidRequest, "serialization")],
                                ref_template=_SCHEMAS + "{model}")
    schemas.update(top.get("$defs", {}))
    for operations in spec.get("paths", {}).values():
        for operation in operations.values():
            answer = operation.get("responses", {}).get("422", {})
            for media in answer.get("content", {}).values():
                if media.get("schema", {}).get("$ref") == _SCHEMAS + "HTTPValidationError":
                    media["schema"] = {"$ref": _SCHEMAS + "InvalidRequest"}
    schemas.pop("HTTPValidationError", None)
    if _SCHEMAS + "ValidationError" not in json.dumps(spec):
        schemas.pop("ValidationError", None)


# -- the app --------------------------------------------------------------------------
def create_app(
    settings: Settings | None = None,
    *,
    clock: Clock | None = None,
    extra_routers: Iterable[APIRouter] = (),
    lifespan_hooks: Sequence[LifespanHook] = (),
) -> FastAPI:
    """Build the API. The database is opened (and migrated) when the app starts."""
    chosen = settings if settings is not None else Settings.load()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        open_database(chosen.db_path).conn.close()  # create and migrate once, at start
        # per app, never process-wide: tests and benchmarks run many apps in one process
        app.state.metrics = Metrics()
        # in-process on SQLite; through LISTEN/NOTIFY on PostgreSQL (several instances)
        app.state.live = hub_for(chosen.db_path, asyncio.get_running_loop())
        connections = Connections(chosen.db_path)
        app.state.connections = connections
        security_metrics.install(app)  # auth and gateway refusals on /metrics
        app.state.reads = Coalescer()  # identical reads in flight share one computation
        await auth.bootstrap(app)
        # SQLite's WAL is folded back on a thread of its own; PostgreSQL does that itself
        checkpointer = None if is_postgres_url(chosen.db_path) else WalCheckpointer(
            chosen.db_path)
        if checkpointer is not None:
            checkpointer.start()
        app.state.checkpointer = checkpointer
        # the intake writer commits most: it must not checkpoint inside its commits either
        intake = GroupCommitter(
            lambda: open_database(chosen.db_path, migrate=False, autocheckpoint=False),
            chosen, app.state.clock,
        )
        intake.start()
        app.state.intake = intake
        # No process-wide tuning here (sys.setswitchinterval, gc.freeze): measured on the
        # shared build machine, neither changed the HTTP p99 nor the event loop's stalls
        # beside a busy intake thread beyond the noise (docs/coordinator.md), and both
        # would change every other thread of a process that merely hosts the app.
        try:
            async with AsyncExitStack() as stack:
                for hook in lifespan_hooks:
                    await stack.enter_async_context(hook(app))
                yield
        finally:
            app.state.live.close()
            intake.stop()
            if checkpointer is not None:
                checkpointer.stop()
            connections.close()

    app = FastAPI(
        docs_url=None, redoc_url=None, openapi_url=None,  # served behind a login (auth)
        title="Breakwater coordinator",
        version="0.1.0",
        summary="Order intake, three-layer allocation with decision traces, and rerouting.",
        lifespan=lifespan,
    )
    app.state.settings = chosen
    app.state.clock = clock if clock is not None else SystemClock()
    app.state.counters = Counter()
    app.state.counters_lock = threading.Lock()
    app.state.auth_config = auth_config_of(chosen)

    def body_too_large() -> None:
        with app.state.counters_lock:
            app.state.counters["requests_body_too_large"] += 1

    app.add_middleware(BodyLimitMiddleware, limits=chosen.limits, on_reject=body_too_large)

    @app.exception_handler(RequestValidationError)
    async def invalid_body(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = _relevant_errors(exc.errors(), exc.body)
        first = errors[0] if errors else {"loc": ("body",), "msg": "invalid"}
        field = _field_path(first.get("loc", ()))
        _count(request, "requests_invalid")
        return JSONResponse(status_code=422, content={
            "detail": f"{field}: {first.get('msg')}", "field": field,
            "errors": [{"field": _field_path(e.get("loc", ())), "msg": e.get("msg"),
                        "type": e.get("type")} for e in errors[:20]],
        })

    @app.exception_handler(StoreError)
    async def store_failed(request: Request, exc: StoreError) -> JSONResponse:
        return JSONResponse(status_code=503, content={"detail": str(exc)})

    # extensions first: they may claim a path the core's templates also match
    # (``POST /import/orders`` before ``POST /import/{kind}``)
    for router in extra_routers:
        app.include_router(router)
    app.include_router(_orders_router())
    app.include_router(_catalog_router())
    observability.install(app)

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            _document_invalid_requests(FastAPI.openapi(app))  # cached in app.openapi_schema
        return FastAPI.openapi(app)

    app.openapi = openapi  # type: ignore[method-assign]
    auth.install(app)  # last: it checks that every route included above declares its roles
    return app
