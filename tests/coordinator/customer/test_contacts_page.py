"""The dashboard's order view in headless Chromium: a viewer opens an order, clicks the
contacts button, and sees the nearest on-duty warehouse staff with masked phones."""

from __future__ import annotations

from pathlib import Path

import httpx

from coordinator.auth.roles import Role
from coordinator.serving import serve_in_thread
from protocols.clock import ManualClock
from simulators.receiver import Receiver
from tests.auth import ADMIN, add_login
from tests.browser import console_errors, login, screenshot, wait_until, webdriver

from .harness import NOW, customer_app, wechat_order

VIEWER = "viewer-zhao"


def test_a_viewer_clicks_contacts_and_sees_the_on_duty_staff_nearby_masked(
        customer_sqlite: str, tmp_path: Path, receiver: Receiver) -> None:
    from selenium.webdriver.common.by import By

    password = add_login(customer_sqlite, VIEWER, Role.VIEWER)
    # 10:17 in Hangzhou: WH-06's day shift (徐涛) is on duty, the night shift is not
    app = customer_app(customer_sqlite, tmp_path, receiver, ManualClock(NOW))
    with serve_in_thread(app) as url:
        with httpx.Client(base_url=url, headers=ADMIN, timeout=15) as http:
            placed = http.post("/orders", json=wechat_order("WX-PAGE-1"))
            assert placed.status_code == 201, placed.text
            order_id = placed.json()["order_id"]
        with webdriver(tmp_path) as driver:
            login(driver, url, VIEWER, password)
            driver.get(f"{url}/dashboard?order={order_id}&lang=en")
            wait_until(driver, lambda d: d.find_elements(By.ID, "contacts-button"),
                       what="the order with its contacts button")
            assert driver.find_element(By.ID, "contacts").text == ""  # nothing until asked
            driver.find_element(By.ID, "contacts-button").click()
            items = wait_until(driver, lambda d: d.find_elements(By.CSS_SELECTOR,
                                                                 "#contacts li"),
                               what="the nearby staff")
            texts = [item.text for item in items]
            phones = [a.get_attribute("href") for a in driver.find_elements(
                By.CSS_SELECTOR, "#contacts li a")]
            driver.execute_script(
                "document.getElementById('contacts').scrollIntoView({block: 'center'})")
            screenshot(driver, "order-contacts.png")
            page = driver.page_source
            assert console_errors(driver) == []
    # one warehouse within 3 km with someone on duty: WH-06 (0.7 km), its day shift
    assert len(texts) == 1
    assert "(WH-06, 0." in texts[0] and "徐涛 仓管" in texts[0]
    assert texts[0].endswith("139****0601")
    assert phones == ["tel:139****0601"]
    # a viewer never gets the whole number, nor the night shift who is off duty
    assert "13900000601" not in page and "孙丽" not in page
