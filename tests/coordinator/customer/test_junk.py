"""Junk at the customer side's HTTP boundary: never a 500, a 4xx names the field, and
nothing is written by a refused request."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from coordinator.serving import serve_in_thread
from protocols.clock import ManualClock
from simulators.receiver import Receiver
from tests.auth import ADMIN
from tests.coordinator.ops.helpers import read

from .harness import NOW, customer_app, seed

PROPERTY = settings(max_examples=80, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow,
                                           HealthCheck.function_scoped_fixture])
JSON = st.recursive(
    st.none() | st.booleans() | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner,
                                                                max_size=3),
    max_leaves=8)
FIELDS = ["channel", "channel_order_id", "phone", "question", "asked_at", "inquiry_id",
          "status", "paid_at", "payment_ref", "id", "warehouse_id", "name", "role",
          "on_duty", "active"]


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[httpx.Client, Path]]:
    tmp = tmp_path_factory.mktemp("junk")
    path = tmp / "junk.sqlite"
    seed(path)
    with Receiver() as receiver:
        app = customer_app(path, tmp, receiver, ManualClock(NOW))
        with serve_in_thread(app) as url, httpx.Client(base_url=url, timeout=10,
                                                            headers=ADMIN) as http:
            yield http, path


def _written(path: Path) -> tuple[Any, ...]:
    return tuple(read(path, f"SELECT count(*) FROM {table}")[0][0] for table in (
        "customer_inquiries", "customer_payments", "staff", "ops_notifications"))


@PROPERTY
@given(st.sampled_from(["/inquiries", "/payments", "/staff"]),
       st.dictionaries(st.sampled_from(FIELDS), JSON, max_size=6) | JSON)
def test_junk_is_refused_by_name_and_writes_nothing(
        site: tuple[httpx.Client, Path], path: str, body: Any) -> None:
    http, db_path = site
    before = _written(db_path)
    answer = http.post(path, json=body)
    assert answer.status_code < 500, answer.text
    if answer.status_code >= 400:
        problem = answer.json()
        assert isinstance(problem["detail"], str) and problem["detail"]
        if answer.status_code == 422:
            assert problem["field"]
        assert _written(db_path) == before
