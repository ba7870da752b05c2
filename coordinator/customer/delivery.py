"""Delivering customer notices (outbox kind ``customer``) by their route.

- ``webhook``: POST the notice (order number, script, text, times) to the channel's URL;
  no personal data leaves (the channel knows its own buyer).
- ``wechat_subscribe``: the WeChat subscribe-message body (``touser`` = the buyer's
  openid, ``template_id``, ``page``, ``data`` with ``character_string1`` order number,
  ``phrase2`` status, ``time3`` local time, ``thing4`` the text cut to 20 characters),
  POSTed to the configured URL; WeChat answers ``{"errcode": 0}`` on success.
- ``sms``: ``{"phone_numbers": [...], "signature", "template_code", "text", "params"}`` to
  the customer SMS gateway; the number is read from the contact at sending time, and a
  masked number or an erased contact is a permanent failure (never sent to).

Any 2xx (and WeChat's errcode 0) is the receiver's acknowledgement: the outbox's
``sent_at`` is when the reply reached the channel (the first-response metric ends there).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import httpx

from coordinator.customer.config import CustomerConfig
from coordinator.customer.store import contact_of, facts_of
from coordinator.db import Database
from coordinator.errors import NotificationError
from coordinator.ops.notify.dispatcher import HttpJsonAdapter, check_wecom
from coordinator.ops.notify.outbox import Notification

WECHAT_THING_MAX = 20  # a subscribe message's "thing" value holds at most 20 characters


class CustomerAdapter:
    """The dispatcher's adapter for kind ``customer`` (registered by the customer service)."""

    def __init__(self, client: httpx.AsyncClient, config: CustomerConfig,
                 open_db: Callable[[], Database]) -> None:
        self.client = client
        self.config = config
        self._open_db = open_db
        self._db: Database | None = None

    def _lookup(self, order_id: str) -> tuple[str | None, str | None, bool]:
        """(phone, openid, masked) of the order's buyer, read now."""
        if self._db is None:
            self._db = self._open_db()
        contact = contact_of(self._db, order_id)
        facts = facts_of(self._db, order_id)
        openid = facts.customer_id if facts is not None else None
        if contact is None:
            return None, openid, False
        if contact.erased:
            return None, None, False
        return contact.phone, openid, contact.masked

    def close(self) -> None:
        if self._db is not None:
            self._db.conn.close()
            self._db = None

    async def deliver(self, notification: Notification) -> None:
        p = notification.payload
        route = p.get("route")
        channel_route = self.config.route_of(str(p.get("channel")))
        if route == "webhook":
            url = channel_route.url
            if not url:
                message = f"no webhook url for channel {p.get('channel')}"
                raise NotificationError(message)
            body: dict[str, Any] = {k: p[k] for k in ("channel", "order_no", "script", "status",
                                      "status_label", "text", "at", "at_local") if k in p}
            await HttpJsonAdapter(self.client, url, headers=dict(channel_route.headers)
                                  ).deliver(_with(notification, body))
            return
        phone, openid, masked = await asyncio.to_thread(self._lookup, str(p.get("order_id")))
        if route == "wechat_subscribe":
            if not channel_route.url or openid is None:
                raise NotificationError("no WeChat openid or subscribe url for this order")
            body = {
                "touser": openid, "template_id": channel_route.template_id,
                "page": f"{channel_route.page}?order_no={p.get('order_no')}",
                "miniprogram_state": "formal", "lang": "zh_CN",
                "data": {"character_string1": {"value": p.get("order_no")},
                         "phrase2": {"value": str(p.get("status_label", ""))[:5]},
                         "time3": {"value": p.get("at_local")},
                         "thing4": {"value": str(p.get("text", ""))[:WECHAT_THING_MAX]}},
            }
            await HttpJsonAdapter(self.client, channel_route.url, check=check_wecom
                                  ).deliver(_with(notification, body))
            return
        if route == "sms":
            sms = self.config.sms
            if not sms.url:
                raise NotificationError("customer.sms.url is not configured")
            if phone is None or masked:
                # a masked/virtual number cannot take an SMS; an erased one must not
                raise NotificationError("no usable phone number for this order (masked or "
                                        "erased)")
            headers = {"Authorization": f"Bearer {sms.api_key}"} if sms.api_key else {}
            body = {"phone_numbers": [phone], "signature": sms.signature,
                    "template_code": p.get("script"),
                    "text": f"【{sms.signature}】{p.get('text', '')}",
                    "params": {"order_no": p.get("order_no")}}
            await HttpJsonAdapter(self.client, sms.url, headers=headers
                                  ).deliver(_with(notification, body))
            return
        message = f"unknown customer route {route!r}"
        raise NotificationError(message)


def _with(notification: Notification, body: dict[str, Any]) -> Notification:
    """The same notification (id, dedupe key for Idempotency-Key) with the wire body."""
    return Notification(
        id=notification.id, kind=notification.kind, dedupe_key=notification.dedupe_key,
        incident_id=notification.incident_id, payload=body, status=notification.status,
        attempts=notification.attempts, next_attempt_at=notification.next_attempt_at,
        last_error=notification.last_error, created_at=notification.created_at,
        sent_at=notification.sent_at)
