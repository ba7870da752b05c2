"""Channel payloads as the channels send them: Meituan's ``detail`` is a JSON string."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from protocols.orders import MeituanOrder, normalise

ITEMS = [{"app_food_code": "SKU-0001", "quantity": 2}, {"app_food_code": "SKU-0042",
                                                        "quantity": 1}]


def meituan(detail: object) -> dict[str, object]:
    return {"channel": "meituan", "wm_order_id_view": "MT-20260115-0001", "detail": detail,
            "app_poi_code": "HZ-S001",
            "latitude": 30.27, "longitude": 120.15, "ctime": 1768414620}


def test_detail_as_a_json_string_is_the_same_order_as_a_list() -> None:
    as_sent = normalise(MeituanOrder.model_validate(meituan(json.dumps(ITEMS))))
    as_list = normalise(MeituanOrder.model_validate(meituan(ITEMS)))
    assert as_sent == as_list
    assert [(line.sku_id, line.qty) for line in as_sent.lines] == [("SKU-0001", 2),
                                                                    ("SKU-0042", 1)]


@pytest.mark.parametrize(("detail", "says"), [
    ("[{\"app_food_code\": \"SKU-1\",", "not a JSON array of items"),
    ("{}", "detail"),
    ("[]", "detail"),
    ("[{\"app_food_code\": \"SKU-1\", \"quantity\": 0}]", "quantity"),
    ("x" * 100_001, "longer than"),
])
def test_a_bad_detail_string_is_refused_naming_the_field(detail: str, says: str) -> None:
    with pytest.raises(ValidationError) as caught:
        MeituanOrder.model_validate(meituan(detail))
    text = str(caught.value)
    assert "detail" in text and says in text


@settings(max_examples=100, deadline=None)
@given(st.text(max_size=200) | st.binary(max_size=200))
def test_any_detail_string_is_accepted_or_refused_never_raised_otherwise(raw: str | bytes) -> None:
    try:
        MeituanOrder.model_validate(meituan(raw))
    except ValidationError as exc:
        assert exc.errors()[0]["loc"][0] == "detail"
