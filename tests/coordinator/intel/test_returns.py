"""Return reasons through the real API and store: classify, correct, retrain, root causes,
the page; bad input names the field and writes nothing."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from coordinator.app import create_app
from coordinator.auth import Role
from coordinator.catalog import import_file
from coordinator.db import open_database, write_transaction
from coordinator.intel import api as intel_api
from coordinator.intel import returns, returns_store
from coordinator.intel.classifier import (
    FEATURES_VERSION,
    LEXICON_WEIGHT,
    REASONS,
    Example,
    Model,
    features,
)
from coordinator.region import SAMPLE_DIR, SAMPLE_FILES
from coordinator.serving import serve_in_thread
from coordinator.settings import Settings
from protocols.clock import ManualClock
from tests.auth import ADMIN, add_login, headers_for
from tests.browser import Browser

NOW = datetime(2026, 11, 24, 2, 17, tzinfo=UTC)


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    path = tmp_path_factory.mktemp("returns") / "coordinator.sqlite"
    db = open_database(path)
    for name in SAMPLE_FILES:
        import_file(db, SAMPLE_DIR / f"{name}.csv", NOW)
    db.conn.close()
    app = create_app(Settings(db_path=str(path)), clock=ManualClock(NOW),
                     extra_routers=[intel_api.router])
    with serve_in_thread(app) as url:
        yield url, path


def _order(http: httpx.Client, ref: str, sku: str = "SKU-0001") -> str:
    r = http.post("/orders", json={"channel": "wechat_mini", "channel_order_id": ref,
                                   "store_id": "HZ-S001", "lat": 30.26, "lon": 120.16,
                                   "lines": [{"sku_id": sku, "qty": 1}]})
    assert r.status_code == 201, r.text
    order_id: str = r.json()["order_id"]
    return order_id


def test_a_return_is_classified_with_confidence_and_model_version(
        live: tuple[str, Path]) -> None:
    url, _ = live
    with httpx.Client(base_url=url, headers=ADMIN, timeout=15) as http:
        order = _order(http, "RET-1")
        r = http.post("/returns", json={"order_id": order, "text": "猫不吃这个口味",
                                        "carrier": "ZTO"})
        assert r.status_code == 201, r.text
        body = r.json()
    assert body["reason"] == "taste_mismatch" and body["reason_zh"] == "口味不符"
    assert 0 < body["confidence"] <= 1 and body["model_version"] >= 1
    assert body["warehouse_id"] and body["sku_id"] == "SKU-0001"


def test_a_correction_is_stored_with_its_actor_and_retraining_learns_it(
        live: tuple[str, Path]) -> None:
    url, path = live
    service = headers_for(path, Role.CUSTOMER_SERVICE, name="客服小王")
    odd = "主子嫌弃这一袋的颗粒太硬了咬不动"  # no lexicon word: hard for the seed model
    with httpx.Client(base_url=url, headers=ADMIN, timeout=15) as http:
        order = _order(http, "RET-2")
        first = http.post("/returns", json={"order_id": order, "text": odd}).json()
        wanted = "taste_mismatch" if first["reason"] != "taste_mismatch" else "quality_defect"
        r = http.post(f"/returns/{first['id']}/correction", json={"reason": wanted},
                      headers=service)
        assert r.status_code == 200, r.text
        corrected = r.json()
        assert corrected["reason"] == wanted and corrected["predicted"] == first["reason"]
        assert corrected["corrections"][0]["actor"] == "token:客服小王"
        trained = http.post("/returns/retrain").json()
        assert trained["version"] > first["model_version"] and trained["corrections"] >= 1
        again = http.post("/returns", json={"order_id": order, "text": odd}).json()
        assert again["model_version"] == trained["version"]
        assert http.get(f"/returns/{first['id']}").json()["corrections"][0][
            "used_in_version"] == trained["version"]
    assert again["reason"] == wanted  # learned from one correction


def test_root_causes_group_current_labels_by_warehouse_sku_and_carrier(
        live: tuple[str, Path]) -> None:
    url, _ = live
    with httpx.Client(base_url=url, headers=ADMIN, timeout=15) as http:
        order = _order(http, "RET-3", sku="SKU-0002")
        for text in ("快递盒压扁了，饼干全碎", "箱子被压塌了"):
            assert http.post("/returns", json={"order_id": order, "text": text,
                                               "carrier": "YTO-ROOT"}).status_code == 201
        by_carrier = http.get("/returns/root-causes", params={"by": "carrier"}).json()
        by_sku = http.get("/returns/root-causes", params={"by": "sku"}).json()
    row = next(r for r in by_carrier if r["carrier"] == "YTO-ROOT")
    assert row == {"carrier": "YTO-ROOT", "returns": 2, "top_reason": "damaged_in_transit",
                   "reasons": {"damaged_in_transit": 2}}
    assert any(r["sku"] == "SKU-0002" for r in by_sku)


@pytest.mark.parametrize(("path", "body", "status", "field"), [
    ("/returns", {"order_id": "NO-SUCH", "text": "少件"}, 404, None),
    ("/returns", {"order_id": "x", "text": ""}, 422, "body.text"),
    ("/returns", {"order_id": "x", "text": "少件", "kind": "refund"}, 422, "body.kind"),
])
def test_bad_returns_are_refused_and_nothing_is_written(
        live: tuple[str, Path], path: str, body: dict[str, str], status: int,
        field: str | None) -> None:
    url, db_path = live
    db = open_database(db_path, migrate=False)
    before = db.execute("SELECT count(*) FROM return_requests").fetchone()[0]
    with httpx.Client(base_url=url, headers=ADMIN, timeout=15) as http:
        r = http.post(path, json=body)
    assert r.status_code == status, r.text
    if field:
        assert r.json()["field"] == field
    else:
        assert "NO-SUCH" in r.json()["detail"]
    assert db.execute("SELECT count(*) FROM return_requests").fetchone()[0] == before


def test_a_correction_to_a_reason_outside_the_pool_names_the_field(
        live: tuple[str, Path]) -> None:
    url, _ = live
    with httpx.Client(base_url=url, headers=ADMIN, timeout=15) as http:
        order = _order(http, "RET-4")
        made = http.post("/returns", json={"order_id": order, "text": "少发了一袋"}).json()
        r = http.post(f"/returns/{made['id']}/correction",
                      json={"reason": "bad_vibes"})
        assert r.status_code == 422 and r.json()["field"] == "reason"
        r = http.post("/returns/999999/correction", json={"reason": "other"})
        assert r.status_code == 404
        assert http.get(f"/returns/{made['id']}").json()["corrections"] == []


def test_the_page_lists_returns_escaped_with_a_reason_picker(live: tuple[str, Path]) -> None:
    url, _ = live
    with httpx.Client(base_url=url, headers=ADMIN, timeout=15) as http:
        order = _order(http, "RET-5")
        http.post("/returns", json={"order_id": order, "text": "<script>x()</script>发错货"})
        page = http.get("/dashboard/returns").text
    assert "<script>x()</script>" not in page and "&lt;script&gt;" in page
    assert 'class="reason"' in page and 'id="root-carrier"' in page


def test_features_ignore_punctuation_and_fold_digits() -> None:
    assert features("少了 2 袋！") == features("少了3袋")


def test_a_negated_cue_is_no_evidence_for_its_reason_but_a_negative_phrase_is() -> None:
    fine = features("东西没坏也没过期，就是想退")
    assert "!near_expiry" in fine and "@near_expiry" not in fine
    assert "@changed_mind" in fine
    assert "@quality_defect" not in features("不是质量问题")
    assert "@taste_mismatch" in features("不合口味")  # 不 is part of the cue here
    assert "@missing_item" in features("赠品没收到")
    assert features("过期了", negation=False)["@near_expiry"] == LEXICON_WEIGHT


def test_a_model_counted_with_older_features_is_retrained_before_it_classifies(
        tmp_path: Path) -> None:
    db = open_database(tmp_path / "old.sqlite")
    old = Model.train([Example("少发一袋", "missing_item")]).to_params()
    del old["features_version"]  # as versions stored by the previous release
    with write_transaction(db):
        returns_store.add_model(db, at=NOW, examples=1, corrections=0, trigger="seed",
                                params=old)
    current = returns.current_model(db, NOW)
    assert current.version == 2 and current.model.features_version == FEATURES_VERSION
    assert returns.current_model(db, NOW).version == 2  # once
    assert db.execute("SELECT trigger FROM return_models WHERE version = 2").fetchone()[
        0] == "features"


def test_training_rejects_a_reason_outside_the_pool() -> None:
    with pytest.raises(ValueError, match="not in the pool"):
        Model.train([Example("x", "bad")])


def test_model_round_trips_through_its_params() -> None:
    model = Model.train([Example(text, reason) for reason, text in
                         (("late_delivery", "送太慢了"), ("missing_item", "少发一袋"))])
    again = Model.from_params(model.to_params())
    assert again.scores("太慢") == model.scores("太慢")
    assert set(model.scores("太慢")) <= set(REASONS)


def test_one_click_on_the_page_corrects_a_label_under_the_persons_login(
        live: tuple[str, Path], tmp_path: Path) -> None:
    url, path = live
    with httpx.Client(base_url=url, headers=ADMIN, timeout=15) as http:
        order = _order(http, "RET-CLICK")
        made = http.post("/returns", json={"order_id": order, "text": "少发了一袋猫粮"}).json()
    assert made["reason"] == "missing_item"
    password = add_login(path, "kefu-li", Role.CUSTOMER_SERVICE)
    with Browser(tmp_path) as browser:
        browser.login(url, "kefu-li", password)
        browser.goto(f"{url}/dashboard/returns")
        return_id = made["id"]
        row = f'tr[data-return-id="{return_id}"]'
        # what choosing another entry of the row's list does: one change, saved at once
        browser.evaluate(f"""(() => {{
            const select = document.querySelector('{row} select.reason');
            select.value = 'wrong_item';
            select.dispatchEvent(new Event('change')); return true; }})()""")
        saved = browser.wait_for(f"document.querySelector('{row} .saved').textContent")
    assert saved == "已纠正 saved"
    with httpx.Client(base_url=url, headers=ADMIN, timeout=15) as http:
        stored = http.get(f"/returns/{made['id']}").json()
    assert stored["reason"] == "wrong_item"
    assert stored["corrections"][-1]["actor"] == "user:kefu-li"
