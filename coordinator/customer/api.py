"""HTTP endpoints of the customer side: inquiries, payment events, an order's customer
contact (masked by role) and its nearest on-duty staff.

Every write is all-or-nothing: an unknown order, a malformed phone or an impossible
payment is a 4xx naming the field, and nothing is recorded.
"""

from __future__ import annotations

import uuid
from typing import Any, Literal

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic_core import to_json

from coordinator import auth, ledger
from coordinator.api_models import InvalidRequest, Problem
from coordinator.customer import store
from coordinator.customer.contacts import fallback_contact, nearest_contacts, within
from coordinator.customer.messages import (
    NODE_LABELS,
    inquiry_notice,
    inquiry_reply,
    local,
)
from coordinator.customer.service import CustomerService
from coordinator.db import write_transaction
from coordinator.errors import NotFound
from coordinator.ledger import AWAITING_PAYMENT
from coordinator.ops.notify import outbox
from coordinator.personal import (
    PhoneNumber,
    mask_address,
    mask_name,
    may_see_phone,
    normalise_phone,
    phone_for,
)
from coordinator.retry import retry_waiting
from coordinator.roster_api import staff_view
from coordinator.roster_store import on_duty_of, staff
from coordinator.settings import Settings
from coordinator.web import request_db, request_now, request_role
from protocols.models import EventDatetime
from protocols.orders import Channel
from protocols.timestamps import stamp

router = APIRouter(tags=["customer"])
# the channels' integration tokens and customer service answer customers; reading an
# order's customer or nearby staff is open to every role, masked by role
ANSWER = auth.requires({auth.Role.CUSTOMER_SERVICE, auth.Role.INTEGRATION})
PAYMENT = auth.requires({auth.Role.INTEGRATION})
READ = auth.requires(auth.ANY_ROLE)


def customer_service(request: Request) -> CustomerService:
    service = getattr(request.app.state, "customer", None)
    if not isinstance(service, CustomerService):
        raise HTTPException(503, "the customer service is not running")
    return service


def _missing(field: str, message: str) -> JSONResponse:
    return JSONResponse(status_code=404, content={"detail": message, "field": field})


class InquiryIn(BaseModel):
    """A customer's question as the channel forwards it."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    channel: Channel
    channel_order_id: str | None = Field(default=None, min_length=1, max_length=64)
    phone: PhoneNumber | None = None
    question: str = Field(default="", max_length=1000)
    asked_at: EventDatetime | None = Field(
        default=None, description="the inquiry's own timestamp at the channel (default: now)")
    inquiry_id: str | None = Field(default=None, min_length=1, max_length=64,
                                   pattern=r"^[A-Za-z0-9_.:\-]+$",
                                   description="the channel's id of the question")

    @model_validator(mode="after")
    def _which(self) -> InquiryIn:
        if self.channel_order_id is None and self.phone is None:
            raise ValueError("give channel_order_id or phone")
        return self


class PaymentIn(BaseModel):
    """A payment event from the channel (or the payment provider's callback)."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    channel: Channel
    channel_order_id: str = Field(min_length=1, max_length=64)
    status: Literal["paid"] = "paid"
    paid_at: EventDatetime | None = None
    payment_ref: str | None = Field(default=None, max_length=128)


@router.post("/inquiries", summary="Answer a customer's 'where is my order' at once",
             dependencies=[ANSWER],
             responses={404: {"model": Problem}, 422: {"model": InvalidRequest}})
def post_inquiry(request: Request, body: InquiryIn) -> Any:
    """Finds the order by the channel's order number, or the customer's most recent
    orders by phone, answers with status, node times and ETA, records the inquiry and
    queues the same reply to the channel (its acknowledgement ends the first-response
    time)."""
    service = customer_service(request)
    db = request_db(request)
    now = request_now(request)
    asked = body.asked_at if body.asked_at is not None else now
    phone_key = normalise_phone(body.phone) if body.phone is not None else None
    if body.channel_order_id is not None:
        found = store.order_by_channel_number(db, body.channel, body.channel_order_id)
        if found is None:
            return _missing("channel_order_id",
                            f"no {body.channel} order {body.channel_order_id!r}")
        orders = [found]
    else:
        assert phone_key is not None  # the model requires one of the two
        orders = store.orders_by_phone(db, phone_key, service.config.inquiry_max_orders)
        if not orders:
            return _missing("phone", "no orders for this phone number")
    inquiry_id = body.inquiry_id or f"q_{uuid.uuid4().hex[:20]}"
    nodes_of = store.nodes_of(db, [o.order_id for o in orders])
    with_nodes = [(o, nodes_of[o.order_id]) for o in orders]
    route = service.config.route_of(body.channel).route
    text = inquiry_reply(with_nodes, service.config, service.templates, service.tz,
                         channel=body.channel, sms=route == "sms")
    notice = (inquiry_notice(inquiry_id, text, orders[0], body.channel, route, now, service.tz)
              if route != "none" else None)
    with write_transaction(db):
        if store.inquiry_exists(db, inquiry_id):
            raise HTTPException(409, f"inquiry {inquiry_id} was already answered")
        store.record_inquiry(db, {
            "id": inquiry_id, "channel": body.channel.value,
            "channel_order_id": body.channel_order_id, "phone_key": phone_key,
            "question": body.question, "asked_at": stamp(asked), "received_at": stamp(now),
            "order_ids": ",".join(o.order_id for o in orders), "reply": text,
            "dedupe_key": notice.dedupe_key if notice is not None else None})
        if notice is not None:
            outbox.queue(db, [notice], now)
    service.wake_dispatcher()
    tz = service.tz
    # serialised here, once: FastAPI would walk the answer through jsonable_encoder first
    return Response(to_json({
        "inquiry_id": inquiry_id, "reply": text, "route": route,
        "orders": [{
            "order_no": o.channel_order_id, "order_id": o.order_id, "status": o.status,
            "status_label": NODE_LABELS.get(o.status, o.status),
            "eta": o.eta, "eta_local": local(o.eta, tz) if o.eta else None,
            "nodes": [{"node": k, "label": NODE_LABELS.get(k, k), "at": at,
                       "at_local": local(at, tz)} for k, at in nodes],
        } for o, nodes in with_nodes],
    }), media_type="application/json")


@router.post("/payments", summary="A payment event: the order is paid (deadlines stop)",
             dependencies=[PAYMENT],
             responses={404: {"model": Problem}, 409: {"model": Problem},
                        422: {"model": InvalidRequest}})
def post_payment(request: Request, body: PaymentIn) -> Any:
    db = request_db(request)
    now = request_now(request)
    at = body.paid_at if body.paid_at is not None else now
    found = store.order_by_channel_number(db, body.channel, body.channel_order_id)
    if found is None:
        return _missing("channel_order_id", f"no {body.channel} order {body.channel_order_id!r}")
    with write_transaction(db):
        payment = store.payment_of(db, found.order_id)
        if payment is None or payment["paid_at"] is not None:
            # paid at intake, or this event is a repeat: nothing changes
            return {"order_id": found.order_id, "paid": True, "changed": False,
                    "status": found.status}
        if payment["cancelled_at"] is not None:
            raise HTTPException(409, f"order {found.order_id} was cancelled unpaid at "
                                     f"{payment['cancelled_at']}")
        store.mark_paid(db, found.order_id, at, body.payment_ref)
        before = ledger.record_payment(db, found.order_id, at,
                                       {"payment_ref": body.payment_ref})
    status = before
    if before == AWAITING_PAYMENT:
        # it held no stock while unpaid: now it is a waiting order like any other
        settings: Settings = request.app.state.settings
        placed = retry_waiting(db, now=now, config=settings.allocation,
                               order_ids=[found.order_id], trigger="paid",
                               limit=settings.intake.retry_limit)
        status = "allocated" if placed.placed else "unallocated"
    return {"order_id": found.order_id, "paid": True, "changed": True, "paid_at": stamp(at),
            "status": status}


@router.get("/orders/{order_id}/customer", dependencies=[READ],
            summary="The order's customer contact (masked for roles that do not call)",
            responses={404: {"model": Problem}})
def get_customer(request: Request, order_id: str) -> dict[str, Any]:
    db = request_db(request)
    if store.facts_of(db, order_id) is None:
        raise HTTPException(404, str(NotFound("order", order_id)))
    contact = store.contact_of(db, order_id)
    payment = store.payment_of(db, order_id)
    out: dict[str, Any] = {"order_id": order_id, "contact": None,
                           "paid": payment is None or payment["paid_at"] is not None,
                           "payment": payment}
    if contact is not None:
        whole = may_see_phone(request_role(request))
        out["contact"] = {
            "phone": phone_for(request_role(request), contact.phone),
            "name": contact.name if whole or contact.name is None else mask_name(contact.name),
            "address": (contact.address if whole or contact.address is None
                        else mask_address(contact.address)),
            "consent": contact.consent, "masked_by_channel": contact.masked,
            "erased": contact.erased}
    return out


@router.get("/orders/{order_id}/contacts", dependencies=[READ],
            summary="On-duty staff of active warehouses near the delivery address",
            responses={404: {"model": Problem}})
def get_contacts(request: Request, order_id: str) -> dict[str, Any]:
    service = customer_service(request)
    db = request_db(request)
    facts = store.facts_of(db, order_id)
    if facts is None:
        raise HTTPException(404, str(NotFound("order", order_id)))
    now = request_now(request)
    radius = service.config.contacts_radius_km
    points = store.warehouse_points(db)
    near = within(points, facts.lat, facts.lon, radius)
    on_duty: dict[str, list[Any]] = {}
    for member in on_duty_of(db, [p.id for p, _ in near], now, service.tz):
        on_duty.setdefault(member.warehouse_id, []).append(member)
    found = nearest_contacts(near, on_duty)
    fallback = False
    if not found and facts.warehouse_id is not None:
        fallback = True
        own = [p for p in points if p.id == facts.warehouse_id]
        members = (on_duty_of(db, [facts.warehouse_id], now, service.tz)
                   or staff(db, warehouse_ids=[facts.warehouse_id], active_only=True))
        found = [fallback_contact(p, facts.lat, facts.lon, members) for p in own]
    role = request_role(request)
    return {
        "order_id": order_id, "radius_km": radius, "fallback": fallback, "at": stamp(now),
        "warehouses": [{
            "warehouse_id": n.warehouse.id, "name": n.warehouse.name,
            "distance_km": round(n.distance_km, 3), "active": n.warehouse.active,
            "staff": [staff_view(m, role) for m in n.staff]} for n in found],
    }

