"""The optional ``incarnation`` of agent payloads: v1 payloads without it stay valid,
junk is refused naming the field."""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Callable
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocols import AgentStatus, BreakerEvent, PayloadError, TelemetrySummary, decode, encode
from protocols.models import INCARNATION_PATTERN

NOW = datetime(2026, 11, 24, 2, 17, tzinfo=UTC)
Build = Callable[..., dict[str, object]]
Model = type[BreakerEvent] | type[AgentStatus] | type[TelemetrySummary]


def event(**changes: object) -> dict[str, object]:
    base: dict[str, object] = {
        "warehouse_id": "wh-cc-2", "agent_id": "gw-cc-2", "breaker": "cold_chain",
        "state": "ok", "open": False, "reason": "started", "since": NOW.isoformat(),
        "seq": 1, "session_seq": 1, "event_time": NOW.isoformat(),
        "published_at": NOW.isoformat(),
    }
    base.update(changes)
    return base


def status(**changes: object) -> dict[str, object]:
    base: dict[str, object] = {"warehouse_id": "wh-cc-2", "agent_id": "gw-cc-2",
                               "state": "online", "session_seq": 1, "ts": NOW.isoformat()}
    base.update(changes)
    return base


def summary(**changes: object) -> dict[str, object]:
    base: dict[str, object] = {
        "warehouse_id": "wh-cc-2", "agent_id": "gw-cc-2", "zone": "cold_room_2",
        "metric": "temperature_c", "window_start": NOW.isoformat(),
        "window_end": "2026-11-24T02:18:00+00:00", "count": 1, "min": 4.0, "mean": 4.0,
        "max": 4.0, "last": 4.0, "seq": 7,
    }
    base.update(changes)
    return base


BUILDERS: list[tuple[Model, Build]] = [
    (BreakerEvent, event), (AgentStatus, status), (TelemetrySummary, summary)]


@pytest.mark.parametrize(("model", "build"), BUILDERS)
def test_v1_payload_without_incarnation_is_still_valid(model: Model,
                                                       build: Build) -> None:
    decoded = decode(model, json.dumps(build()))
    assert decoded.incarnation is None
    assert b"incarnation" not in encode(decoded)


@pytest.mark.parametrize(("model", "build"), BUILDERS)
def test_uuid_hex_incarnation_round_trips(model: Model,
                                          build: Build) -> None:
    for incarnation in (uuid.uuid4().hex, str(uuid.uuid4())):
        decoded = decode(model, json.dumps(build(incarnation=incarnation)))
        assert decode(model, encode(decoded)).incarnation == incarnation


junk = st.one_of(
    st.text(max_size=80).filter(lambda s: re.fullmatch(INCARNATION_PATTERN, s) is None),
    st.integers(), st.floats(allow_nan=False), st.booleans(), st.lists(st.integers()),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
    st.text(alphabet="0123456789abcdef", min_size=65, max_size=90),
    st.text(alphabet="0123456789abcdef", min_size=1, max_size=7),
    st.text(alphabet="0123456789ABCDEF", min_size=8, max_size=64).filter(
        lambda s: any(c.isupper() for c in s)),
)


@given(junk, st.sampled_from(BUILDERS))
def test_bad_incarnation_is_refused_naming_the_field(
        bad: object, target: tuple[Model, Build]) -> None:
    model, build = target
    with pytest.raises(PayloadError) as err:
        decode(model, json.dumps(build(incarnation=bad)))
    assert err.value.field == "incarnation"
