"""People's logins, sessions, CSRF, content types of imports, and token management,
through a real uvicorn."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest

from coordinator.app import create_app
from coordinator.auth.roles import Role, Scope
from coordinator.auth.store import (
    ensure_bootstrap_token,
    identify_token,
    list_tokens,
    revoke_token,
)
from coordinator.db import open_database
from coordinator.serving import serve_in_thread
from coordinator.settings import Settings
from protocols.clock import ManualClock
from tests.auth import ADMIN, NOW, bearer, headers_for
from tests.coordinator.auth.conftest import PASSWORD, Site

pytestmark = pytest.mark.broker


def _login(http: httpx.Client, username: str = "alice") -> str:
    answer = http.post("/auth/login", json={"username": username, "password": PASSWORD})
    assert answer.status_code == 200, answer.text
    csrf: str = answer.json()["csrf_token"]
    return csrf


def test_login_sets_a_strict_httponly_session_and_the_audit_names_the_person(
        site: Site) -> None:
    with httpx.Client(base_url=site.url, timeout=15) as http:
        wrong = http.post("/auth/login", json={"username": "alice", "password": "guess"})
        assert wrong.status_code == 401 and "bw_session" not in wrong.cookies
        nobody = http.post("/auth/login", json={"username": "mallory", "password": "guess"})
        assert nobody.status_code == 401 and nobody.json() == wrong.json()
        answer = http.post("/auth/login", json={"username": "alice", "password": PASSWORD})
        cookies = answer.headers.get_list("set-cookie")
        session = next(c for c in cookies if c.startswith("bw_session="))
        assert "HttpOnly" in session and "SameSite=strict" in session
        assert http.get("/auth/me").json()["actor"] == "user:alice"
        csrf = answer.json()["csrf_token"]
        # a cookie alone does not change anything: the page must also send the token
        refused = http.post("/warehouses/WH-03/pause", json={"reason": "no token"})
        assert refused.status_code == 403 and "CSRF" in refused.text
        paused = http.post("/warehouses/WH-03/pause", json={"reason": "roof leak"},
                           headers={"X-CSRF-Token": csrf})
        assert paused.status_code == 200, paused.text
        resumed = http.post("/warehouses/WH-03/resume", json={"reason": "fixed"},
                            headers={"X-CSRF-Token": csrf})
        assert resumed.status_code == 200
        audit = http.get("/warehouses/WH-03/audit").json()
        assert {a["actor"] for a in audit if a["action"] in ("pause", "resume")} == {
            "user:alice"}
        assert http.post("/auth/logout", headers={"X-CSRF-Token": csrf}).status_code == 200
    # the cookie of a closed session is worth nothing, even sent again by hand
    with httpx.Client(base_url=site.url, timeout=15,
                      cookies={"bw_session": answer.cookies["bw_session"]}) as replay:
        assert replay.get("/auth/me").status_code == 401


def test_a_cross_site_form_post_and_a_text_plain_import_are_refused(site: Site) -> None:
    csv_body = "id,name,cold_chain\nSKU-XSITE,forged,0\n"
    with httpx.Client(base_url=site.url, timeout=15) as http:
        csrf = _login(http)
        # what a hostile page can make the operator's browser send without a preflight:
        # a form post (cookie attached, no header) and a text/plain body
        form = http.post("/warehouses/WH-03/pause", data={"reason": "forged"})
        assert form.status_code == 403
        plain = http.post("/import/skus", content=csv_body,
                          headers={"Content-Type": "text/plain", "X-CSRF-Token": csrf})
        assert plain.status_code in (403, 415)  # alice is an operator: no imports at all
    with httpx.Client(base_url=site.url, headers=ADMIN, timeout=15) as admin:
        plain = admin.post("/import/skus", content=csv_body,
                           headers={"Content-Type": "text/plain"})
        assert plain.status_code == 415 and plain.json()["field"] == "content-type"
        assert admin.get("/skus/SKU-XSITE").status_code == 404
        as_csv = admin.post("/import/skus", content=csv_body,
                            headers={"Content-Type": "text/csv"})
        assert as_csv.status_code == 200 and as_csv.json()["written"] == 1


def test_a_multipart_import_from_a_logged_in_page_needs_the_csrf_field(site: Site) -> None:
    integrator = "integrator-1"
    with httpx.Client(base_url=site.url, headers=ADMIN, timeout=15) as admin:
        made = admin.post("/auth/users", json={"username": integrator, "password": PASSWORD,
                                               "role": "integration"})
        assert made.status_code == 201, made.text
    files = {"file": ("skus.csv", b"id,name,cold_chain\nSKU-FORM,by form,0\n", "text/csv")}
    with httpx.Client(base_url=site.url, timeout=15) as http:
        csrf = _login(http, integrator)
        without = http.post("/import/skus", files=files)
        assert without.status_code == 403
        with_field = http.post("/import/skus", files=files, data={"csrf_token": csrf})
        assert with_field.status_code == 200, with_field.text
        assert with_field.json()["written"] == 1


def test_tokens_are_shown_once_stored_hashed_and_revocable(site: Site) -> None:
    with httpx.Client(base_url=site.url, headers=ADMIN, timeout=15) as admin:
        made = admin.post("/auth/tokens", json={"name": "meituan-sync", "role": "integration",
                                                "scope": {"stores": ["HZ-S001"]}})
        assert made.status_code == 201
        secret = made.json()["token"]
        listed = admin.get("/auth/tokens").text
        assert secret not in listed and "meituan-sync" in listed
        stored = open_database(site.db_path, migrate=False)
        try:
            dump = "\n".join(stored.conn.iterdump())
        finally:
            stored.conn.close()
        assert secret not in dump
        with httpx.Client(base_url=site.url, headers=bearer(secret), timeout=15) as channel:
            assert channel.get("/auth/me").json()["scope"]["stores"] == ["HZ-S001"]
            assert admin.delete(f"/auth/tokens/{made.json()['id']}").status_code == 200
            assert channel.get("/auth/me").status_code == 401
        # a viewer cannot make itself a token
        viewer = headers_for(site.db_path, Role.VIEWER)
        assert admin.post("/auth/tokens", headers=viewer, json={
            "name": "x", "role": "admin"}).status_code == 403


def test_any_coordinator_on_the_database_accepts_a_session(site: Site) -> None:
    with httpx.Client(base_url=site.url, timeout=15) as http:
        _login(http)
        cookie = http.cookies["bw_session"]
    other = create_app(Settings(db_path=str(site.db_path)), clock=ManualClock(NOW))
    with serve_in_thread(other) as url, httpx.Client(
            base_url=url, cookies={"bw_session": cookie}, timeout=15) as second:
        assert second.get("/auth/me").json()["actor"] == "user:alice"


def test_a_browser_without_a_session_is_sent_to_the_login_page(site: Site) -> None:
    with httpx.Client(base_url=site.url, timeout=15) as http:
        page = http.get("/", headers={"Accept": "text/html"})
        assert page.status_code == 303 and page.headers["location"] == "/login?next=%2F"
        assert "password" in http.get("/login").text


def test_a_franchisee_sees_only_their_stores_orders(site: Site) -> None:
    with httpx.Client(base_url=site.url, timeout=15) as http:
        _login(http, "franchisee-1")
        orders = http.get("/orders").json()
        assert orders and {o["store_id"] for o in orders} == {site.order_store}
        assert http.get("/notifications").status_code == 200
        assert http.get("/stats").status_code == 403


def test_the_bootstrap_admin_token_rotates_with_the_environment(tmp_path: object) -> None:
    db = open_database(str(tmp_path) + "/boot.sqlite")  # type: ignore[operator]
    first = "bw_first-bootstrap-admin-token-0123456789"
    second = "bw_second-bootstrap-admin-token-0123456789"
    ensure_bootstrap_token(db, first, NOW)
    ensure_bootstrap_token(db, first, NOW)  # the same again: nothing new
    assert (identity := identify_token(db, first)) is not None
    assert identity.role is Role.ADMIN and identity.scope == Scope()
    ensure_bootstrap_token(db, second, NOW)
    assert identify_token(db, first) is None and identify_token(db, second) is not None
    assert db.execute("SELECT count(*) FROM auth_tokens").fetchone()[0] == 2


def test_a_token_revoked_by_another_instance_is_refused_within_the_cache_time(
        tmp_path: Path) -> None:
    path = tmp_path / "cache.sqlite"
    token = headers_for(path, Role.VIEWER)
    settings = Settings.parse({"db_path": str(path), "auth": {"token_cache_s": 0.3}})
    with serve_in_thread(create_app(settings, clock=ManualClock(NOW))) as url, \
            httpx.Client(base_url=url, headers=token, timeout=15) as http:
        assert http.get("/auth/me").status_code == 200  # now cached
        db = open_database(path)  # another instance (or the CLI) revokes it
        [info] = [t for t in list_tokens(db) if t.name == "test"]
        revoke_token(db, info.id, NOW)
        db.conn.close()
        time.sleep(0.4)  # the cache time: a fraction of a second here, 2 s by default
        assert http.get("/auth/me").status_code == 401
