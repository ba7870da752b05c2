"""Secrets never leave: WeCom and the SMS gateway fail (and echo what they were sent), and
neither the WeCom key nor the SMS API key shows in any API answer, log line or dashboard
text. The WeCom URL and SMS key come from the environment, not the settings file."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from benchmarks.reroute import seed_orders_at
from coordinator.db import open_database
from coordinator.ops.runner import ops_config_of
from coordinator.settings import Settings
from protocols import Topics
from protocols.clock import SystemClock
from simulators.brokers import Broker
from simulators.receiver import Receiver
from tests.auth import ADMIN
from tests.coordinator.ops.app_server import ops_app, serving
from tests.coordinator.ops.helpers import read, wait_for

pytestmark = pytest.mark.broker
WECOM_KEY = "693a91f6-7xxx-4bc4-97a0-0ec2sifa5aaa"
SMS_KEY = "sms-api-key-5f0c9a7e2b3d4c1a"


@pytest.fixture
def gateway() -> Iterator[Receiver]:
    with Receiver(fail_first=100, fail_status=500, echo_request=True) as receiver:
        yield receiver


async def test_a_failing_wecom_and_sms_never_show_their_keys(
        broker: Broker, topics: Topics, tmp_path: Path, gateway: Receiver,
        caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "coordinator.sqlite"
    db = open_database(path)
    seed_orders_at(db, "WH-02", 5, datetime.now(UTC), stock_boost=100)
    db.conn.close()
    key_file = tmp_path / "sms.key"
    key_file.write_text(SMS_KEY + "\n")
    settings = Settings.parse({
        "db_path": str(path), "mqtt_url": broker.url, "topic_root": topics.root,
        "ops": {"tick_interval_s": 0.05,
                "notify": {"franchisee": {"jsonl_path": str(tmp_path / "f.jsonl")},
                           "wecom": {"enabled": True},
                           "sms": {"enabled": True, "url": gateway.url + "/sms",
                                   "phone_numbers": ["13800000000"]},
                           "dispatcher": {"poll_interval_s": 0.05, "backoff_base_s": 0.05,
                                          "max_attempts": 2}}}})
    # in the process environment: every part of the app that reads [ops] sees them
    monkeypatch.setenv("BREAKWATER_WECOM_URL",
                       f"{gateway.url}/cgi-bin/webhook/send?key={WECOM_KEY}")
    monkeypatch.setenv("BREAKWATER_SMS_API_KEY_FILE", str(key_file))
    config = ops_config_of(settings)
    assert config.notify.sms.api_key == SMS_KEY
    caplog.set_level(logging.INFO)
    app = ops_app(settings, config, SystemClock())  # retries wait real (short) backoffs
    async with serving(app) as url, httpx.AsyncClient(base_url=url, headers=ADMIN,
                                                      timeout=15) as http:
        paused = await http.post("/warehouses/WH-02/pause", json={"reason": "roof leak"})
        assert paused.status_code == 200
        await wait_for(lambda: read(path, "SELECT count(*) FROM ops_notifications WHERE kind "
                                         "IN ('wecom', 'sms') AND status = 'failed'") == [(2,)],
                      what="WeCom and SMS dead after their attempts")
        answers = [(await http.get(p)).text for p in (
            "/notifications", "/notifications?status=failed", "/dashboard/state", "/",
            "/stats", "/metrics", "/metrics/summary", "/security/events")]
        failed = (await http.get("/notifications", params={"status": "failed"})).json()
    # the gateways really were sent the keys, and really echoed them back
    assert any(WECOM_KEY in r.path for r in gateway.requests)
    assert any(SMS_KEY in r.headers.get("Authorization", "") for r in gateway.requests)
    assert all("***" in n["last_error"] for n in failed)
    logged = "\n".join(record.getMessage() for record in caplog.records)
    assert "failed" in logged or "dead" in logged
    for text in (*answers, logged):
        assert WECOM_KEY not in text
        assert SMS_KEY not in text
