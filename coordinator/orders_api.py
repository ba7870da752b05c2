"""HTTP endpoints of orders: intake (any channel's payload, one or a batch), listing, status
events, retrying waiting orders, and the decision trace (why here, why not warehouse X)."""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Collection, Sequence
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

import psycopg
from fastapi import APIRouter, Body, HTTPException, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ValidationError

from coordinator import auth, ledger, queries
from coordinator.api_models import (
    BatchResult,
    InvalidRequest,
    OrderPayload,
    OrderResult,
    Problem,
    RetryRequest,
    StatusEvent,
)
from coordinator.engine import CandidateTrace, why_not
from coordinator.engine import Decision as EngineDecision
from coordinator.errors import Conflict, NotFound, StoreError
from coordinator.group_commit import GroupCommitter
from coordinator.retry import RetryResult, retry_waiting
from coordinator.settings import Settings
from coordinator.trace_names import Names
from coordinator.validation_errors import field_path, invalid, unknown_reference
from coordinator.web import count, request_db, request_now
from protocols.geo import great_circle_km
from protocols.orders import DouyinOrder, MeituanOrder, OrderIn, WechatMiniOrder, normalise

# the last instant a datetime holds, as channel timestamps (Unix ms) count it
# (exact: through timestamp() the float rounds up, past the end)
_MAX_EPOCH_MS = (datetime.max.replace(tzinfo=UTC) - datetime(1970, 1, 1, tzinfo=UTC)
                 ) // timedelta(milliseconds=1)

log = logging.getLogger(__name__)

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


def run_retry(request: Request, trigger: str, order_ids: Sequence[str] | None = None,
              limit: int | None = None, sku_ids: Collection[str] | None = None) -> RetryResult:
    settings: Settings = request.app.state.settings
    result = retry_waiting(request_db(request), now=request_now(request),
                           config=settings.allocation, order_ids=order_ids, sku_ids=sku_ids,
                           trigger=trigger,
                           limit=limit if limit is not None else settings.intake.retry_limit)
    count(request, "orders_retry_placed", len(result.placed))
    return result


def retry_after_write(request: Request, trigger: str,
                       sku_ids: Collection[str] | None = None) -> dict[str, Any]:
    """Retry waiting orders after a write that already committed: a failure here must not
    turn that write's answer into an error (a client would repeat a done cancel)."""
    try:
        return run_retry(request, trigger, sku_ids=sku_ids).summary()
    except (StoreError, sqlite3.Error, psycopg.Error) as exc:
        log.warning("retry of waiting orders after a write failed: %s", exc)
        count(request, "retry_failures")
        return {"error": f"retry of waiting orders failed: {exc}"}


def _not_found(exc: NotFound) -> HTTPException:
    return HTTPException(status_code=404, detail=str(exc))


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
            return invalid(field_path((where, *first["loc"])), first["msg"])
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


def _check_order_scope(request: Request, caller: auth.Identity, order_id: str) -> None:
    """403 when the order belongs to a store and warehouse outside the caller's scope
    (an unknown order answers as before: 404 further on)."""
    if caller.scope.unlimited:
        return
    owner = queries.order_owner(request_db(request), order_id)
    if owner is not None and not caller.scope.sees_order(*owner):
        raise auth.forbid(request, f"order {order_id!r} is outside your scope")


def orders_router() -> APIRouter:
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
            count(request, "orders_rejected")
            return orders
        for number, order in enumerate(orders):
            if not caller.scope.covers_store(order.store_id or ""):
                raise auth.forbid(request, f"{'body' if single else f'body.{number}'}"
                                           f".store: {order.store_id!r} is outside your scope")
        intake: GroupCommitter = request.app.state.intake
        try:
            outcomes = await intake.submit_async(orders)
        except NotFound as exc:
            count(request, "orders_rejected")
            return unknown_reference(exc)
        created = [o for o in outcomes if o.created]
        if created:
            request.app.state.live.publish("orders")
        count(request, "orders_created", len(created))
        count(request, "orders_skewed", sum(1 for o in created if o.skewed))
        count(request, "orders_unallocated", sum(1 for o in created if o.status == "unallocated"))
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
        return queries.list_orders(request_db(request), status=status, warehouse_id=warehouse_id,
                                   limit=limit, scope=caller.scope)

    @router.post("/orders/retry", tags=["operations"],
                 dependencies=[auth.requires({auth.Role.OPERATOR})],
                 summary="Allocate waiting orders (unallocated, needs_attention) that now fit")
    def retry_orders(request: Request, body: RetryRequest | None = None) -> dict[str, Any]:
        """Runs by itself after stock or warehouses change (catalog writes, a breaker
        clearing, a resume); this is for an operator who fixed something else. Orders that
        still fit nowhere stay waiting and nothing is written for them."""
        chosen = body if body is not None else RetryRequest()
        result = run_retry(request, "operator", chosen.order_ids, chosen.limit)
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
            return queries.get_order(request_db(request), order_id)
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
        at = event.at or request_now(request)
        try:
            status = ledger.record_status_event(request_db(request), order_id, event.kind, at,
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
            lines = queries.get_order(request_db(request), order_id)["lines"]
            skus = {line["sku_id"] for line in lines}
            out["retried"] = retry_after_write(request, "cancel_freed_stock", sku_ids=skus)
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
        db = request_db(request)
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
