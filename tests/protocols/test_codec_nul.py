"""NUL characters in wire payloads: refused by the one decoder, naming the field, whatever
the nesting; the six characters ``\\u0000`` as text are no NUL."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from protocols import TrackingUpdate, decode
from protocols.errors import PayloadError
from protocols.text import nul_in_json, nul_path

UPDATE = {"shipment_id": "SF1", "carrier": "sf-express", "warehouse_id": "WH-01",
          "status": "picked_up", "ts": "2026-11-30T10:00:00Z"}


def test_a_nul_names_its_field_and_escaped_text_passes() -> None:
    with pytest.raises(PayloadError) as caught:
        decode(TrackingUpdate, json.dumps({**UPDATE, "order_id": "o\u0000"}))
    assert caught.value.field == "order_id"
    assert decode(TrackingUpdate, json.dumps({**UPDATE, "order_id": "o\\u0000"})).order_id \
        == "o\\u0000"


JSON = st.recursive(st.none() | st.integers() | st.text(max_size=5),
                    lambda inner: st.lists(inner, max_size=3)
                    | st.dictionaries(st.text(max_size=4), inner, max_size=3), max_leaves=8)


@given(JSON)
def test_a_path_is_found_exactly_when_some_text_holds_a_nul(value: Any) -> None:
    where = nul_in_json(json.dumps(value))
    assert where == nul_path(value)
    assert (where is not None) == _holds_nul(value)


def _holds_nul(value: Any) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_holds_nul(k) or _holds_nul(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_holds_nul(v) for v in value)
    return False


@pytest.mark.parametrize("field", ["order_id", "shipment_id"])
def test_a_lone_surrogate_in_a_tracking_update_names_its_field(field: str) -> None:
    # The MQTT decoder's JSON parser refuses one already; HTTP bodies are parsed by the
    # standard library's, which lets it through into the model: refused there, naming it
    with pytest.raises(PayloadError):
        decode(TrackingUpdate, json.dumps({**UPDATE, field: "SF\ud800"}))
    with pytest.raises(ValidationError) as caught:
        TrackingUpdate.model_validate(json.loads(json.dumps({**UPDATE, field: "SF\ud800"})))
    assert caught.value.errors()[0]["loc"] == (field,)
    assert decode(TrackingUpdate, json.dumps({**UPDATE, field: "顺丰SF1"})).model_dump()[field] \
        == "顺丰SF1"
