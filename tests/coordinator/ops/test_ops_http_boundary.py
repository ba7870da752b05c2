"""Ops endpoints given input that once made a 500 (found by fuzzing the API against its
OpenAPI spec): a 422 naming the field, nothing stored, and the ops service keeps going."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from coordinator.api_models import SQLITE_INT_MAX
from coordinator.catalog import import_file
from coordinator.db import open_database
from coordinator.region import SAMPLE_DIR, SAMPLE_FILES
from coordinator.serving import serve_in_thread
from protocols import Topics
from protocols.clock import ManualClock
from simulators.brokers import Broker
from tests.auth import ADMIN
from tests.coordinator.ops.app_server import ops_app
from tests.coordinator.ops.helpers import ops_config, read, settings_for

NOW = datetime(2026, 11, 24, 2, 17, tzinfo=UTC)
PROPERTY = settings(max_examples=60, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow,
                                           HealthCheck.function_scoped_fixture])
# any time with any offset, often within a day of the calendar's ends (no UTC form there)
AWARE = st.builds(
    lambda moment, minutes: moment.replace(tzinfo=timezone(timedelta(minutes=minutes))),
    st.datetimes() | st.datetimes(max_value=datetime(1, 1, 2))
    | st.datetimes(min_value=datetime(9999, 12, 31)),
    st.integers(min_value=-23 * 60 - 59, max_value=23 * 60 + 59))


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def db_path(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> str:
    """The sample region on each backend (a SQLite path or a PostgreSQL URL)."""
    path = str(tmp_path_factory.mktemp("ops-boundary") / "coordinator.sqlite")
    if request.param == "postgresql":
        path = request.getfixturevalue("postgres_server").create_database()
    db = open_database(path)
    for name in SAMPLE_FILES:
        import_file(db, SAMPLE_DIR / f"{name}.csv", NOW)
    db.conn.close()
    return path


@pytest.fixture(scope="module")
def http(mqtt_broker: Broker, db_path: str,
         tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    """The coordinator with the ops side wired in, under a real uvicorn."""
    if not mqtt_broker.running:
        mqtt_broker.start()
    topics = Topics("bwtest-ops-boundary")
    config = ops_config(tmp_path_factory.mktemp("ops-boundary-notify"))
    app = ops_app(settings_for(db_path, mqtt_broker.url, topics), config, ManualClock(NOW))
    with serve_in_thread(app) as url, \
            httpx.Client(base_url=url, headers=ADMIN, timeout=10) as client:
        yield client


def _update(shipment: str, ts: str) -> dict[str, object]:
    return {"shipment_id": shipment, "carrier": "sf-express", "warehouse_id": "WH-01",
            "status": "in_transit", "ts": ts}


def _assert_invalid(response: httpx.Response, field: str) -> None:
    assert response.status_code == 422, response.text
    problem = response.json()
    assert problem["field"] == field and problem["detail"].startswith(field)


@pytest.mark.parametrize("ts", ["0001-01-01T00:00:00+01:00", "0001-01-01T05:00:00+05:01"])
def test_tracking_time_without_a_utc_form_is_a_422_and_ops_keeps_going(
        http: httpx.Client, db_path: str, ts: str) -> None:
    _assert_invalid(http.post("/tracking", json=_update("SF-ANCIENT", ts)), "body.ts")
    assert read(db_path, "SELECT 1 FROM ops_shipments WHERE shipment_id = 'SF-ANCIENT'") == []
    fine = http.post("/tracking", json=_update("SF-FINE", NOW.isoformat()))
    assert fine.status_code == 202, fine.text


@pytest.mark.parametrize("field", ["shipment_id", "order_id"])
def test_a_tracking_id_with_a_lone_surrogate_is_a_422_naming_it(
        http: httpx.Client, field: str) -> None:
    # the standard library's JSON parser (FastAPI's) lets "\ud800" through; no driver
    # can store it (it was a 202 that kept nothing, found by fuzzing)
    body = {**_update("SF-SURROGATE", NOW.isoformat()), field: "SF-\ud800"}
    answer = http.post("/tracking", content=json.dumps(body),
                       headers={"Content-Type": "application/json"})
    _assert_invalid(answer, f"body.{field}")


@PROPERTY
@given(ts=AWARE)
def test_any_tracking_time_is_accepted_or_a_422_never_a_500(http: httpx.Client,
                                                            ts: datetime) -> None:
    answer = http.post("/tracking", json=_update("SF-PROP", ts.isoformat()))
    assert answer.status_code in (202, 422), answer.text
    if answer.status_code == 422:
        _assert_invalid(answer, "body.ts")


def test_notification_id_past_sqlite_integers_is_a_422(http: httpx.Client) -> None:
    path = "/notifications/{}/retry"
    _assert_invalid(http.post(path.format(SQLITE_INT_MAX + 1)), "path.notification_id")
    assert http.post(path.format(SQLITE_INT_MAX)).status_code == 404


@PROPERTY
@given(notification_id=st.integers(min_value=-(2**70), max_value=2**70)
       | st.integers(min_value=2**62, max_value=2**70))
def test_any_notification_id_is_not_found_or_a_422(http: httpx.Client,
                                                   notification_id: int) -> None:
    answer = http.post(f"/notifications/{notification_id}/retry")
    assert answer.status_code in (404, 422), answer.text
    if answer.status_code == 422:
        _assert_invalid(answer, "path.notification_id")
