"""A person in a real browser: logs in on the login page, pauses a warehouse from the page
(the request carries the session cookie and the CSRF token the page reads), and the audit
names them."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from tests.auth import ADMIN
from tests.browser import Browser
from tests.coordinator.auth.conftest import PASSWORD, Site

pytestmark = pytest.mark.broker

PAUSE_FROM_PAGE = """fetch('/warehouses/WH-06/pause', {method: 'POST',
    headers: {'Content-Type': 'application/json',
              'X-CSRF-Token': document.cookie.match(/bw_csrf=([^;]+)/)[1]},
    body: JSON.stringify({reason: 'pump failure seen on camera'})}).then(r => r.status)"""


def test_a_logged_in_operator_pauses_from_the_browser_and_is_audited(
        site: Site, tmp_path: Path) -> None:
    with Browser(tmp_path) as browser:
        browser.goto(f"{site.url}/")  # no session yet: sent to the login page
        assert browser.evaluate("location.pathname") == "/login"
        browser.login(site.url, "alice", PASSWORD)
        assert browser.evaluate("location.pathname") == "/"
        # the session cookie is out of the page's reach; the CSRF token is not
        assert "bw_session" not in browser.evaluate("document.cookie")
        assert browser.evaluate(PAUSE_FROM_PAGE) == 200
        forged = browser.evaluate(PAUSE_FROM_PAGE.replace(
            "document.cookie.match(/bw_csrf=([^;]+)/)[1]", "'forged'"))
        assert forged == 403
    with httpx.Client(base_url=site.url, headers=ADMIN, timeout=15) as http:
        audit = http.get("/warehouses/WH-06/audit").json()
        http.post("/warehouses/WH-06/resume", json={"reason": "test over"})
    pause = next(a for a in audit if a["action"] == "pause")
    assert pause["actor"] == "user:alice"
    assert pause["reason"] == "pump failure seen on camera"
