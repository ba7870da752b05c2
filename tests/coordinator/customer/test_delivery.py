"""Customer deliveries over kept-alive connections (coordinator.customer.poster) against
the real loopback receiver (simulators.receiver): a connection is reused while the receiver
keeps it, one the receiver closed is replaced (the POST is not lost), failures are errors
without secrets."""

from __future__ import annotations

import base64
import json
import socket

import httpx
import pytest

from coordinator.customer.config import CustomerConfig
from coordinator.customer.delivery import CustomerAdapter
from coordinator.customer.poster import KeepAlivePoster, proxied
from coordinator.db import Database
from coordinator.errors import NotificationError
from coordinator.ops.notify.outbox import Notification
from simulators.receiver import Receiver

SECRET = "tok-5ecret-abcdef"


def test_one_connection_carries_many_posts_while_the_receiver_keeps_it() -> None:
    poster = KeepAlivePoster(5.0)
    with Receiver(keep_alive=True) as receiver:
        for i in range(5):
            answer = poster.post_json(receiver.url + "/hook?x=1",
                                      json.dumps({"n": i}).encode(),
                                      {"Idempotency-Key": f"k{i}"})
            assert answer.ok and json.loads(answer.body) == {"errcode": 0, "errmsg": "ok"}
    poster.close()
    assert [r.body["n"] for r in receiver.accepted()] == [0, 1, 2, 3, 4]
    assert poster.opened == 1 and receiver.connections == 1
    headers = [r.headers for r in receiver.accepted()]
    assert headers[0]["Content-Type"] == "application/json"
    assert [h["Idempotency-Key"] for h in headers] == ["k0", "k1", "k2", "k3", "k4"]


def test_a_connection_the_receiver_dropped_is_replaced_and_the_post_arrives() -> None:
    poster = KeepAlivePoster(5.0)
    with Receiver(keep_alive=True, drop_on_request=2) as receiver:
        answers = [poster.post_json(receiver.url, json.dumps({"n": i}).encode(), {})
                   for i in range(3)]
    poster.close()
    assert all(a.ok for a in answers)
    # every connection is dropped on its second POST, which goes again on a fresh one:
    # 0 and (dropped) 1 on the first, 1 and (dropped) 2 on the second, 2 on the third
    assert [r.body["n"] for r in receiver.requests] == [0, 1, 2]
    assert poster.opened == receiver.connections == 3


def test_user_info_in_the_url_is_sent_as_basic_credentials() -> None:
    poster = KeepAlivePoster(5.0)
    with Receiver(keep_alive=True) as receiver:
        assert poster.post_json(receiver.url.replace("http://", "http://bw:p%40ss@"),
                                b"{}", {}).ok
    poster.close()
    expected = "Basic " + base64.b64encode(b"bw:p@ss").decode()
    assert receiver.requests[0].headers["Authorization"] == expected


def test_transport_failures_raise_and_a_silent_receiver_times_out() -> None:
    poster = KeepAlivePoster(0.3)
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    with pytest.raises(ConnectionRefusedError):
        poster.post_json(f"http://127.0.0.1:{port}/", b"{}", {})
    with socket.socket() as silent:  # accepts (backlog) and never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)
        with pytest.raises(TimeoutError):
            poster.post_json(f"http://127.0.0.1:{silent.getsockname()[1]}/", b"{}", {})
    with pytest.raises(ValueError, match="not an http"):
        poster.post_json("ftp://example.cn/x", b"{}", {})


def test_a_proxy_from_the_environment_is_left_to_httpx() -> None:
    assert not proxied("http://hook.example.cn/x", {})
    assert not proxied("http://hook.example.cn/x", {"https": "http://proxy:3128"})
    assert proxied("http://hook.example.cn/x", {"http": "http://proxy:3128"})
    assert proxied("https://hook.example.cn/x", {"all": "socks5://proxy:1080"})


def _notice(key: str, route: str = "webhook") -> Notification:
    return Notification(
        id=1, kind="customer", dedupe_key=key, incident_id=None,
        payload={"route": route, "channel": "meituan", "order_id": "o_1", "order_no": "MT-1",
                 "script": "inquiry_reply", "status": "allocated", "status_label": "已分仓",
                 "text": "您好", "at": "2026-11-24T02:17:00Z", "at_local": "11-24 10:17"},
        status="pending", attempts=0, next_attempt_at="2026-11-24T02:17:00Z",
        last_error=None, created_at="2026-11-24T02:17:00Z", sent_at=None)


def _no_db() -> Database:
    raise AssertionError("a webhook delivery reads no contact")


async def test_the_adapter_delivers_a_webhook_and_names_a_refusal_without_its_secrets(
        ) -> None:
    with Receiver(fail_first=1, echo_request=True) as receiver:
        config = CustomerConfig.model_validate({"channels": {"meituan": {
            "route": "webhook", "url": f"{receiver.url}/mt?access_token={SECRET}",
            "headers": {"Authorization": f"Bearer {SECRET}"}}}})
        client = httpx.AsyncClient()  # for proxied URLs only: none here
        adapter = CustomerAdapter(client, config, _no_db)
        try:
            with pytest.raises(NotificationError) as refused:
                await adapter.deliver(_notice("inquiry:q1"))
            await adapter.deliver(_notice("inquiry:q1"))
            with pytest.raises(NotificationError, match="unknown customer route"):
                await adapter.deliver(_notice("inquiry:q2", route="carrier_pigeon"))
        finally:
            adapter.close()
            await client.aclose()
    text = str(refused.value)
    assert "HTTP 500" in text and "/mt" in text and SECRET not in text
    delivered = [r for r in receiver.accepted() if r.path.startswith("/mt?")]
    assert len(delivered) == 1 and delivered[0].body["text"] == "您好"
    assert delivered[0].headers["Idempotency-Key"] == "inquiry:q1"
    assert "order_id" not in delivered[0].body  # the channel gets its own number only
