"""Login rate limiting: failures per username and per source address lock it out for a
while, counted in the database (both backends) so every coordinator instance sees them;
time is the app's clock (a manual one here), so nothing sleeps."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from coordinator.app import create_app
from coordinator.auth.roles import Role, Scope
from coordinator.auth.store import add_user
from coordinator.auth.throttle import LoginThrottle
from coordinator.db import Database, open_database
from coordinator.serving import serve_in_thread
from coordinator.settings import ConfigError, Settings
from protocols.clock import ManualClock
from tests.auth import ADMIN, NOW

PASSWORD = "correct horse battery staple"
WINDOW = timedelta(minutes=15)


@pytest.fixture
def db(db_target: str) -> Iterator[Database]:
    database = open_database(db_target)
    try:
        yield database
    finally:
        database.conn.close()


def _throttle(per_user: int = 3, per_address: int = 10) -> LoginThrottle:
    return LoginThrottle(max_per_user=per_user, max_per_address=per_address, window=WINDOW,
                         lockout=timedelta(minutes=10))


def test_a_username_is_locked_after_its_failures_and_free_again_after_the_lockout(
        db: Database) -> None:
    t = _throttle()
    assert t.failed(db, "alice", "10.0.0.1", NOW) == []
    assert t.failed(db, "alice", "10.0.0.2", NOW) == []
    assert t.locked(db, "alice", "10.0.0.3", NOW) is None
    assert t.failed(db, "alice", "10.0.0.3", NOW + timedelta(seconds=5)) == ["user"]
    locked = t.locked(db, "alice", "10.0.0.9", NOW + timedelta(seconds=65))
    assert locked is not None and locked.by == "user"
    assert locked.retry_after_s(NOW + timedelta(seconds=65)) == 540
    assert locked.message(NOW + timedelta(seconds=65)) == (
        "too many failed logins for this username; try again in 540 s")
    assert t.locked(db, "bob", "10.0.0.9", NOW + timedelta(seconds=65)) is None
    # the lockout ends; the failures that caused it are forgotten with it
    after = NOW + timedelta(minutes=10, seconds=5)
    assert t.locked(db, "alice", "10.0.0.1", after) is None
    assert t.failed(db, "alice", "10.0.0.1", after) == []
    assert t.failed(db, "alice", "10.0.0.1", after) == []


def test_failures_outside_the_window_do_not_add_up(db: Database) -> None:
    t = _throttle()
    t.failed(db, "alice", "a", NOW)
    t.failed(db, "alice", "a", NOW + timedelta(minutes=10))
    # the first failure is 15 min old now: two in the window, no lockout
    assert t.failed(db, "alice", "a", NOW + WINDOW) == []
    assert t.locked(db, "alice", "a", NOW + WINDOW) is None


def test_an_address_trying_many_usernames_is_locked_and_a_success_clears_only_the_user(
        db: Database) -> None:
    t = _throttle(per_user=3, per_address=4)
    t.failed(db, "alice", "6.6.6.6", NOW)
    t.failed(db, "alice", "6.6.6.6", NOW)
    t.succeeded(db, "alice")
    assert t.failed(db, "alice", "6.6.6.6", NOW) == []  # alice starts again from one
    assert t.failed(db, "bob", "6.6.6.6", NOW) == ["address"]  # four from that address
    locked = t.locked(db, "carol", "6.6.6.6", NOW)
    assert locked is not None and locked.by == "address"
    assert locked.message(NOW) == "too many failed logins for this address; try again in 600 s"
    assert t.locked(db, "carol", "7.7.7.7", NOW) is None


def test_a_flood_of_made_up_usernames_holds_at_most_one_window_of_rows(db: Database) -> None:
    t = _throttle(per_user=2, per_address=10_000)
    for n in range(200):
        t.failed(db, f"u{n}", "a", NOW + timedelta(seconds=n))
    later = NOW + WINDOW + timedelta(seconds=150)
    t.failed(db, "late", "b", later)
    # failures 0..150 s fell out of the window; 151..199 s and the late one remain
    rows = db.execute("SELECT COUNT(*) FROM auth_login_failures").fetchone()[0]
    assert rows == 2 * (199 - 150) + 2


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


def test_guesses_spread_over_two_instances_and_a_restart_still_lock_out(
        postgres_url: str) -> None:
    db = open_database(postgres_url)
    add_user(db, username="alice", password=PASSWORD, role=Role.OPERATOR, scope=Scope(),
             now=NOW)
    db.conn.close()
    clock = ManualClock(NOW)
    settings = Settings(db_path=postgres_url, sections={"auth": {
        "login_max_failures_per_user": 4, "login_lockout_s": 300}})

    def guess(url: str, password: str = "guess") -> int:
        return httpx.post(f"{url}/auth/login", timeout=15,
                          json={"username": "alice", "password": password}).status_code

    with serve_in_thread(create_app(settings, clock=clock)) as one, \
            serve_in_thread(create_app(settings, clock=clock)) as other:
        # two guesses on each instance (as a proxy alternating between them would send)
        assert [guess(one), guess(other), guess(one)] == [401, 401, 401]
        assert guess(other) == 401  # the fourth failure, wherever it lands, locks alice
        assert (guess(one, PASSWORD), guess(other, PASSWORD)) == (429, 429)
    # a coordinator restarted meanwhile still refuses
    with serve_in_thread(create_app(settings, clock=clock)) as restarted:
        assert guess(restarted, PASSWORD) == 429
        clock.advance(301)
        assert guess(restarted, PASSWORD) == 200


@pytest.mark.parametrize("trusted", [("127.0.0.1",), ()], ids=["behind-proxy", "direct"])
def test_the_address_limit_uses_x_forwarded_for_only_from_a_trusted_proxy(
        tmp_path: Path, trusted: tuple[str, ...]) -> None:
    path = tmp_path / "coordinator.sqlite"
    open_database(path).conn.close()
    settings = Settings(db_path=str(path), trusted_proxies=trusted, sections={"auth": {
        "login_max_failures_per_address": 2, "login_max_failures_per_user": 100}})
    with serve_in_thread(create_app(settings, clock=ManualClock(NOW))) as url, \
            httpx.Client(base_url=url, timeout=15) as http:
        def login(user: str, client: str) -> int:
            return http.post("/auth/login", headers={"X-Forwarded-For": client},
                             json={"username": user, "password": "guess"}).status_code

        assert [login("a", "203.0.113.5"), login("b", "203.0.113.5")] == [401, 401]
        if trusted:
            # the proxy's clients are told apart: the guesser is locked, another is not
            assert (login("c", "203.0.113.5"), login("c", "198.51.100.7")) == (429, 401)
        else:
            # a header from an untrusted peer is ignored: naming a new address each time
            # does not slip past the limit of the real peer
            assert (login("c", "198.51.100.7"), login("d", "192.0.2.1")) == (429, 429)


def test_a_trusted_proxy_that_is_not_an_address_fails_at_start() -> None:
    with pytest.raises(ConfigError, match=r"trusted_proxies.*entry 2 \('proxy\.lan'\)"):
        Settings.parse({"trusted_proxies": "10.0.0.1, proxy.lan"})
