"""Login rate limiting: failures per username and per source address lock it out for a
while; time is the app's clock (a manual one here), so nothing sleeps."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from coordinator.app import create_app
from coordinator.auth import throttle
from coordinator.auth.roles import Role, Scope
from coordinator.auth.store import add_user
from coordinator.auth.throttle import LoginThrottle
from coordinator.db import open_database
from coordinator.serving import serve_in_thread
from coordinator.settings import Settings
from protocols.clock import ManualClock
from tests.auth import ADMIN, NOW

PASSWORD = "correct horse battery staple"
WINDOW = timedelta(minutes=15)


def _throttle(per_user: int = 3, per_address: int = 10) -> LoginThrottle:
    return LoginThrottle(max_per_user=per_user, max_per_address=per_address, window=WINDOW,
                         lockout=timedelta(minutes=10))


def test_a_username_is_locked_after_its_failures_and_free_again_after_the_lockout() -> None:
    t = _throttle()
    assert t.failed("alice", "10.0.0.1", NOW) == []
    assert t.failed("alice", "10.0.0.2", NOW) == []
    assert t.locked("alice", "10.0.0.3", NOW) is None
    assert t.failed("alice", "10.0.0.3", NOW + timedelta(seconds=5)) == ["user"]
    locked = t.locked("alice", "10.0.0.9", NOW + timedelta(seconds=65))
    assert locked is not None and locked.by == "user"
    assert locked.retry_after_s(NOW + timedelta(seconds=65)) == 540
    assert locked.message(NOW + timedelta(seconds=65)) == (
        "too many failed logins for this username; try again in 540 s")
    assert t.locked("bob", "10.0.0.9", NOW + timedelta(seconds=65)) is None
    # the lockout ends; the failures that caused it are forgotten with it
    after = NOW + timedelta(minutes=10, seconds=5)
    assert t.locked("alice", "10.0.0.1", after) is None
    assert t.failed("alice", "10.0.0.1", after) == []


def test_failures_outside_the_window_do_not_add_up() -> None:
    t = _throttle()
    t.failed("alice", "a", NOW)
    t.failed("alice", "a", NOW + timedelta(minutes=10))
    # the first failure is 15 min old now: two in the window, no lockout
    assert t.failed("alice", "a", NOW + WINDOW) == []
    assert t.locked("alice", "a", NOW + WINDOW) is None


def test_an_address_trying_many_usernames_is_locked_and_a_success_clears_only_the_user(
        ) -> None:
    t = _throttle(per_user=3, per_address=4)
    t.failed("alice", "6.6.6.6", NOW)
    t.failed("alice", "6.6.6.6", NOW)
    t.succeeded("alice")
    assert t.failed("alice", "6.6.6.6", NOW) == []  # alice starts again from one
    assert t.failed("bob", "6.6.6.6", NOW) == ["address"]  # four from that address
    locked = t.locked("carol", "6.6.6.6", NOW)
    assert locked is not None and locked.by == "address"
    assert locked.message(NOW) == "too many failed logins for this address; try again in 600 s"
    assert t.locked("carol", "7.7.7.7", NOW) is None


def test_memory_is_bounded_by_forgetting_the_oldest_keys(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(throttle, "MAX_KEYS", 3)
    t = _throttle(per_user=2, per_address=1000)
    t.failed("u0", "a", NOW)
    for n in range(1, 4):
        t.failed(f"u{n}", "a", NOW)
    # u0 was forgotten (the oldest): its second failure is a first one again
    assert t.failed("u0", "a", NOW) == []
    assert t.failed("u3", "a", NOW) == ["user"]


def _metrics(http: httpx.Client) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(http.get("/metrics", headers=ADMIN).text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_login_is_refused_with_429_while_locked_and_counted(tmp_path: Path) -> None:
    path = tmp_path / "coordinator.sqlite"
    db = open_database(path)
    add_user(db, username="alice", password=PASSWORD, role=Role.OPERATOR, scope=Scope(),
             now=NOW)
    db.conn.close()
    clock = ManualClock(NOW)
    settings = Settings(db_path=str(path), sections={"auth": {
        "login_max_failures_per_user": 3, "login_lockout_s": 300}})
    with serve_in_thread(create_app(settings, clock=clock)) as url, \
            httpx.Client(base_url=url, timeout=15) as http:
        def login(password: str) -> httpx.Response:
            return http.post("/auth/login", json={"username": "alice", "password": password})

        assert [login("guess").status_code for _ in range(3)] == [401, 401, 401]
        clock.advance(60)
        locked = login(PASSWORD)  # even the right password: nothing is checked
        assert locked.status_code == 429 and "bw_session" not in locked.cookies
        assert locked.headers["retry-after"] == "240"
        assert locked.json() == {
            "detail": "too many failed logins for this username; try again in 240 s",
            "locked": "user", "retry_after_s": 240}
        figures = _metrics(http)
        assert figures[("breakwater_auth_failures_total", (("kind", "login_failed"),))] == 3
        assert figures[("breakwater_auth_failures_total", (("kind", "login_locked"),))] == 1
        assert figures[("breakwater_login_lockouts_total", (("by", "user"),))] == 1
        assert figures[("breakwater_login_lockouts_total", (("by", "address"),))] == 0
        clock.advance(240)
        assert login(PASSWORD).status_code == 200
        # a bad body is still a 422 naming the field, not a counted failure
        bad = http.post("/auth/login", json={"username": "alice"})
        assert bad.status_code == 422 and "password" in bad.text
        assert _metrics(http)[("breakwater_auth_failures_total",
                               (("kind", "login_failed"),))] == 3
