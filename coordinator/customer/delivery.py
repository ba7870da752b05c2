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

Each delivery (the contact lookup and the POST) runs in one worker thread through
:class:`~coordinator.customer.poster.KeepAlivePoster`, not on the event loop through
httpx: a quarter of the CPU per POST, and the loop keeps answering inquiries meanwhile.
A URL the environment sends through a proxy goes through the dispatcher's httpx client.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import threading
import urllib.request
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
from pydantic_core import to_json

from coordinator.customer.config import CustomerConfig
from coordinator.customer.poster import KeepAlivePoster, proxied
from coordinator.customer.store import contact_of, facts_of
from coordinator.db import Database
from coordinator.errors import NotificationError
from coordinator.ops.notify.channels import HttpJsonAdapter
from coordinator.ops.notify.outbox import Notification
from coordinator.reconnect import ReconnectingDatabase
from coordinator.redact import header_secrets, redact, safe_url, url_secrets

WECHAT_THING_MAX = 20  # a subscribe message's "thing" value holds at most 20 characters
WEBHOOK_FIELDS = ("channel", "order_no", "script", "status", "status_label", "text", "at",
                  "at_local")
Check = Callable[[int, bytes], str | None]  # (status, body) -> why it is no acknowledgement
Prepared = tuple[str, dict[str, Any], Mapping[str, str], Check | None]  # url, body, headers


class CustomerAdapter:
    """The dispatcher's adapter for kind ``customer`` (registered by the customer service)."""

    def __init__(self, client: httpx.AsyncClient, config: CustomerConfig,
                 open_db: Callable[[], Database], *, timeout_s: float = 5.0,
                 concurrency: int = 8) -> None:
        self.client = client
        self.config = config
        # the delivery threads' lookups (one at a time), replaced when the server ended it
        self._conn = ReconnectingDatabase(open_db, "customer delivery lookups")
        self.poster = KeepAlivePoster(timeout_s, max_idle_per_origin=concurrency)
        # the dispatcher runs at most ``concurrency`` deliveries at once
        self._executor = ThreadPoolExecutor(max_workers=concurrency,
                                            thread_name_prefix="customer-post")
        self._lookup_lock = threading.Lock()  # delivery threads share one connection
        # the environment is read once: reading it per delivery cost more than the POST
        self._proxies = urllib.request.getproxies()
        self._proxied: dict[str, bool] = {}
        self._closed = False

    def _lookup(self, order_id: str) -> tuple[str | None, str | None, bool]:
        """(phone, openid, masked) of the order's buyer, read now."""
        db = self._conn.get()
        contact = contact_of(db, order_id)
        facts = facts_of(db, order_id)
        openid = facts.customer_id if facts is not None else None
        if contact is None:
            return None, openid, False
        if contact.erased:
            return None, None, False
        return contact.phone, openid, contact.masked

    def close(self) -> None:
        self._closed = True
        self._executor.shutdown(wait=True)
        self.poster.close()
        self._conn.close()

    async def deliver(self, notification: Notification) -> None:
        route = notification.payload.get("route")
        if route not in ("webhook", "wechat_subscribe", "sms"):
            message = f"unknown customer route {route!r}"
            raise NotificationError(message)
        # one worker thread does the lookup and the POST: one hop off the loop
        try:
            left = await asyncio.get_running_loop().run_in_executor(
                self._executor, self._send, notification)
        except RuntimeError:
            if not self._closed:
                raise
            # the customer side stopped before the dispatcher: an attempt, retried later
            raise NotificationError("customer delivery is stopping") from None
        if left is not None:  # the environment's proxy: httpx speaks to it
            url, body, headers, check = left
            await HttpJsonAdapter(self.client, url, headers=dict(headers),
                                  check=_httpx_check(check)).deliver(_with(notification, body))

    def _send(self, notification: Notification) -> Prepared | None:
        """Deliver by the poster (worker thread), or hand back what httpx is to send
        when a proxy is in the way."""
        prepared = self._prepare(notification)
        url = prepared[0]
        via_proxy = self._proxied.get(url)
        if via_proxy is None:
            via_proxy = self._proxied[url] = proxied(url, self._proxies)
        if via_proxy:
            return prepared
        self._post(notification.dedupe_key, *prepared)
        return None

    def _prepare(self, notification: Notification) -> Prepared:
        """(url, wire body, headers, acknowledgement check) by the notice's route; the
        buyer's phone or openid is read from the contact now (worker thread)."""
        p = notification.payload
        route = p["route"]
        channel_route = self.config.route_of(str(p.get("channel")))
        if route == "webhook":
            if not channel_route.url:
                message = f"no webhook url for channel {p.get('channel')}"
                raise NotificationError(message)
            body = {k: p[k] for k in WEBHOOK_FIELDS if k in p}
            return channel_route.url, body, channel_route.headers, None
        phone, openid, masked = self._lookup_serialised(str(p.get("order_id")))
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
            return channel_route.url, body, {}, wechat_acknowledged
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
        return sms.url, body, headers, None

    def _lookup_serialised(self, order_id: str) -> tuple[str | None, str | None, bool]:
        with self._lookup_lock:
            return self._lookup(order_id)

    def _post(self, key: str, url: str, body: dict[str, Any], headers: Mapping[str, str],
              check: Check | None) -> None:
        """One POST (worker thread); :class:`NotificationError` unless acknowledged. The
        error text carries no secret of the URL or the headers."""
        secrets = [*url_secrets(url), *header_secrets(headers)]
        try:
            answer = self.poster.post_json(url, to_json(body),
                                           {"Idempotency-Key": key, **headers})
        except (OSError, http.client.HTTPException, ValueError) as exc:
            message = f"POST {safe_url(url)}: {type(exc).__name__}: {exc}"
            raise NotificationError(redact(message, secrets)) from None
        if not answer.ok:
            message = f"POST {safe_url(url)}: HTTP {answer.status} {answer.text()}"
            raise NotificationError(redact(message, secrets))
        refused = check(answer.status, answer.body) if check is not None else None
        if refused is not None:
            raise NotificationError(redact(refused, secrets))


def wechat_acknowledged(status: int, body: bytes) -> str | None:
    """WeChat answers HTTP 200 with ``{"errcode": 0, ...}`` when it took the message."""
    try:
        answer: Any = json.loads(body)
    except ValueError:
        return f"WeChat answered non-JSON: {body[:200].decode('utf-8', 'replace')}"
    if not isinstance(answer, dict) or answer.get("errcode") != 0:
        return f"WeChat refused: {answer!r}"[:300]
    return None


def _httpx_check(check: Check | None) -> Callable[[httpx.Response], None] | None:
    """The same acknowledgement rule for an answer that came through httpx."""
    if check is None:
        return None

    def run(response: httpx.Response) -> None:
        refused = check(response.status_code, response.content)
        if refused is not None:
            raise NotificationError(refused)

    return run


def _with(notification: Notification, body: dict[str, Any]) -> Notification:
    """The same notification (id, dedupe key for Idempotency-Key) with the wire body."""
    return Notification(
        id=notification.id, kind=notification.kind, dedupe_key=notification.dedupe_key,
        incident_id=notification.incident_id, payload=body, status=notification.status,
        attempts=notification.attempts, next_attempt_at=notification.next_attempt_at,
        last_error=notification.last_error, created_at=notification.created_at,
        sent_at=notification.sent_at)
