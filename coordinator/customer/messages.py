"""What the customer is told, and through which route (pure: no I/O).

A customer notice goes into the ops outbox as kind ``customer``. Its payload carries the
rendered text, the route and the order, never the phone number or the WeChat openid: the
delivery adapter (:mod:`coordinator.customer.delivery`) reads those from the contact at
sending time, so an erased contact is never sent to and the outbox holds no personal
data. Dedupe keys: ``customer:<order>:<node>`` (once per node per order),
``inquiry:<id>``, ``unpaid:<order>:reminder|cancelled``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from coordinator.customer.config import CustomerConfig
from coordinator.customer.store import OrderFacts
from coordinator.customer.templates import pick, render
from coordinator.ledger import TIMELINE_LABELS
from coordinator.ops.notify.outbox import OutgoingNotice
from protocols.timestamps import stamp

NODE_LABELS = {**TIMELINE_LABELS, "delayed": "配送延迟"}


def local(text_or_time: str | datetime | None, tz: ZoneInfo) -> str:
    """``11-24 10:17``: the wall clock the customer reads (empty: 待定)."""
    if text_or_time is None:
        return "待定"
    moment = (datetime.fromisoformat(text_or_time) if isinstance(text_or_time, str)
              else text_or_time)
    return f"{moment.astimezone(tz):%m-%d %H:%M}"


def values_of(order: OrderFacts, config: CustomerConfig, tz: ZoneInfo, *, at: datetime,
              extra: Mapping[str, str] | None = None) -> dict[str, str]:
    return {
        "order_no": order.channel_order_id,
        "status": NODE_LABELS.get(order.status, order.status),
        "time": local(at, tz),
        "eta": local(order.eta, tz),
        "warehouse": order.warehouse_name or "",
        "store": order.store_name or "",
        "tracking_link": config.tracking_url.replace("{order_no}", order.channel_order_id),
        **(extra or {}),
    }


def customer_notice(script: str, order: OrderFacts, config: CustomerConfig,
                    templates: Mapping[str, Mapping[str, str]], tz: ZoneInfo, *,
                    at: datetime, dedupe_key: str, extra: Mapping[str, str] | None = None,
                    route: str | None = None) -> OutgoingNotice | None:
    """The notice of ``script`` for ``order`` by its channel's route (None: no route)."""
    chosen = route or config.route_of(order.channel).route
    if chosen == "none":
        return None
    text = render(pick(templates, script, order.channel, sms=chosen == "sms"),
                  values_of(order, config, tz, at=at, extra=extra))
    payload: dict[str, Any] = {
        "route": chosen, "channel": order.channel, "order_id": order.order_id,
        "order_no": order.channel_order_id, "script": script,
        "status": order.status, "status_label": NODE_LABELS.get(order.status, order.status),
        "text": text, "at": stamp(at), "at_local": local(at, tz),
    }
    return OutgoingNotice("customer", dedupe_key, payload)


def store_reminder(order: OrderFacts, config: CustomerConfig,
                   templates: Mapping[str, Mapping[str, str]], tz: ZoneInfo, *,
                   at: datetime, minutes: int) -> OutgoingNotice:
    """One WeCom message to the store about an unpaid order (the ops robot's text shape)."""
    text = render(pick(templates, "unpaid_store_reminder", order.channel),
                  values_of(order, config, tz, at=at, extra={"minutes": str(minutes)}))
    return OutgoingNotice("wecom", f"unpaid:{order.order_id}:store",
                          {"msgtype": "text", "text": {"content": text}})


def timeline_text(nodes: Sequence[tuple[str, str]], tz: ZoneInfo) -> str:
    """``已接单 11-24 10:17；已分仓 11-24 10:17``: the order's nodes as a customer reads them."""
    return "；".join(f"{NODE_LABELS.get(kind, kind)} {local(at, tz)}" for kind, at in nodes)


def inquiry_reply(orders: Sequence[tuple[OrderFacts, Sequence[tuple[str, str]]]],
                  config: CustomerConfig, templates: Mapping[str, Mapping[str, str]],
                  tz: ZoneInfo, *, channel: str, sms: bool) -> str:
    """One reply covering each order (most recent first): status, its time, ETA, nodes."""
    texts = []
    for facts, nodes in orders:
        last = nodes[-1][1] if nodes else facts.received_at
        texts.append(render(
            pick(templates, "inquiry_reply", channel, sms=sms),
            values_of(facts, config, tz, at=datetime.fromisoformat(last),
                      extra={"timeline": timeline_text(nodes, tz)})))
    return "\n".join(texts)


def inquiry_notice(inquiry_id: str, text: str, first: OrderFacts, channel: str, route: str,
                   at: datetime, tz: ZoneInfo) -> OutgoingNotice:
    payload: dict[str, Any] = {
        "route": route, "channel": channel, "order_id": first.order_id,
        "order_no": first.channel_order_id, "script": "inquiry_reply",
        "inquiry_id": inquiry_id, "status": first.status,
        "status_label": NODE_LABELS.get(first.status, first.status),
        "text": text, "at": stamp(at), "at_local": local(at, tz),
    }
    return OutgoingNotice("customer", f"inquiry:{inquiry_id}", payload)
