"""The security counters on /metrics: refused logins and credentials, boundary refusals,
and gateway messages refused or held, scraped from a real uvicorn."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from benchmarks.reroute import seed_orders_at
from coordinator.auth.roles import Role
from coordinator.db import open_database
from coordinator.gateways import gate
from coordinator.ops.app import create_app_with_ops
from coordinator.ops.config import NotifyConfig
from coordinator.serving import serve_in_thread
from protocols import Topics
from protocols.clock import ManualClock
from tests.auth import ADMIN, add_login, headers_for
from tests.coordinator.ops.factories import agent_status, breaker_event
from tests.coordinator.ops.helpers import ops_config, settings_for

INC_A = "a" * 32
INC_B = "b" * 32


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def _gateway_story(path: Path, now: datetime) -> None:
    """Through the gateway check, on the app's database: two refusals and one hold."""
    db = open_database(path)
    try:
        def screen(message: object) -> str:
            verdict = gate.screen(db, message, now,  # type: ignore[arg-type]
                                  max_skew=timedelta(minutes=5), notify=NotifyConfig())
            return verdict.outcome.value

        assert screen(breaker_event(seq=1, warehouse="WH-03", agent="gw-rogue",
                                    at=now)) == "refuse"
        assert screen(breaker_event(seq=2, warehouse="WH-99", agent="gw-WH-02", at=now,
                                    incarnation=INC_A)) == "refuse"
        # the registered gateway's first incarnation is adopted, a second one is held
        assert screen(agent_status(online=True, session_seq=1, warehouse="WH-02",
                                   agent="gw-WH-02", at=now, incarnation=INC_A)) == "apply"
        assert screen(agent_status(online=True, session_seq=1, warehouse="WH-02",
                                   agent="gw-WH-02", at=now, incarnation=INC_B)) == "hold"
    finally:
        db.conn.close()


def test_security_refusals_are_counted_on_metrics(tmp_path: Path) -> None:
    path = tmp_path / "coordinator.sqlite"
    now = datetime.now(UTC)
    db = open_database(path)
    seed_orders_at(db, "WH-02", 1, now, stock_boost=10)  # registers gw-WH-0N
    db.conn.close()
    add_login(path, "clerk", Role.VIEWER)
    viewer = headers_for(path, Role.VIEWER)
    config = ops_config(tmp_path).model_copy(update={"subscribe_mqtt": False})
    app = create_app_with_ops(settings_for(path, "mqtt://127.0.0.1:1", Topics("bwsec")),
                              clock=ManualClock(now), config=config)
    with serve_in_thread(app) as url, httpx.Client(base_url=url, timeout=15) as http:
        before = samples(http.get("/metrics", headers=ADMIN).text)
        assert before[("breakwater_auth_failures_total", (("kind", "login_failed"),))] == 0
        assert before[("breakwater_gateway_messages_held", ())] == 0

        for _ in range(2):
            assert http.post("/auth/login", json={"username": "clerk",
                                                  "password": "wrong"}).status_code == 401
        assert http.get("/orders").status_code == 401
        assert http.post("/orders/retry", json={}, headers=viewer).status_code == 403
        assert http.get("/alerts", params={"limit": "many"},
                        headers=ADMIN).status_code == 422
        _gateway_story(path, now)

        after = samples(http.get("/metrics", headers=ADMIN).text)
    auth = {k[1][0][1]: v for k, v in after.items() if k[0] == "breakwater_auth_failures_total"}
    assert auth == {"login_failed": 2, "unauthenticated": 1, "forbidden": 1, "login_locked": 0}
    assert after[("breakwater_requests_refused_total", (("reason", "invalid"),))] == 1
    gateway = {tuple(v for _, v in k[1]): n for k, n in after.items()
               if k[0] == "breakwater_gateway_messages_total"}
    # labels sorted by name: kind, outcome, reason
    assert gateway == {("breaker", "refuse", "unregistered_agent"): 1,
                       ("breaker", "refuse", "unknown_warehouse"): 1,
                       ("status", "hold", "new_incarnation"): 1}
    assert after[("breakwater_gateway_messages_held", ())] == 1
