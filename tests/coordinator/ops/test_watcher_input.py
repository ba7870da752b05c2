"""The watcher's parsing boundary: junk never raises, every message is accepted or counted."""

from __future__ import annotations

import asyncio
import json

from hypothesis import given, settings
from hypothesis import strategies as st

from coordinator.ops.config import MqttConfig
from coordinator.ops.watcher import OpsMessage, Watcher
from protocols import Topics, encode
from tests.coordinator.ops.factories import agent_status, breaker_event

TOPICS = Topics("bwjunk")


class Recorder:
    def __init__(self) -> None:
        self.accepted: list[OpsMessage] = []
        self.rejected: list[str] = []

    async def accept(self, message: OpsMessage, received: float) -> None:
        self.accepted.append(message)

    async def reject(self, topic: str, error: str) -> None:
        self.rejected.append(error)


def watcher() -> tuple[Watcher, Recorder]:
    sink = Recorder()
    return Watcher("mqtt://127.0.0.1:1", TOPICS, MqttConfig(), sink), sink


topic = st.sampled_from([
    TOPICS.breaker("wh-cc-2", "cold_chain"),
    TOPICS.agent_status("wh-cc-2", "gw-cc-2"),
    TOPICS.tracking("sf-express"),
    "bwjunk/v1/wh/wh-cc-2/telemetry/z1",
    "elsewhere/v1/wh/x/breaker/y",
])
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner,
                                                                 max_size=6),
    max_leaves=12,
)
valid = encode(breaker_event(seq=3))
mutations = st.builds(
    lambda key, value: json.dumps({**json.loads(valid), key: value}).encode(),
    st.sampled_from(sorted(json.loads(valid))), json_values)
payload = st.binary(max_size=200) | json_values.map(lambda v: json.dumps(v).encode()) | mutations


@settings(max_examples=300, deadline=None)
@given(topic, payload)
def test_any_payload_is_either_accepted_or_counted_never_raised(t: str, raw: bytes) -> None:
    w, sink = watcher()
    asyncio.run(w.handle(t, raw, 0.0))
    if raw:
        assert len(sink.accepted) + len(sink.rejected) == 1
        assert w.stats.bad_payloads == len(sink.rejected)


def test_rejection_names_the_field_and_a_topic_payload_mismatch() -> None:
    w, sink = watcher()
    bad = json.loads(valid)
    bad["seq"] = -1
    asyncio.run(w.handle(TOPICS.breaker("wh-cc-2", "cold_chain"), json.dumps(bad), 0.0))
    asyncio.run(w.handle(TOPICS.agent_status("wh-cc-2", "someone-else"),
                         encode(agent_status(online=True, session_seq=1)), 0.0))
    assert "BreakerEvent.seq" in sink.rejected[0]
    assert "agent_id" in sink.rejected[1]
    assert sink.accepted == []


def test_a_nul_in_any_text_of_a_message_is_refused_naming_the_field() -> None:
    # PostgreSQL cannot store U+0000: refused at the boundary, before any store sees it
    w, sink = watcher()
    tracking = {"shipment_id": "SF\u0000X", "carrier": "sf-express", "warehouse_id": "WH-01",
                "status": "picked_up", "ts": "2026-11-30T10:00:00Z"}
    asyncio.run(w.handle(TOPICS.tracking("sf-express"), json.dumps(tracking), 0.0))
    event = json.loads(valid)
    event["detail"] = "door\u0000open"
    asyncio.run(w.handle(TOPICS.breaker("wh-cc-2", "cold_chain"), json.dumps(event), 0.0))
    assert sink.accepted == [] and w.stats.bad_payloads == 2
    assert "TrackingUpdate.shipment_id: text must not contain NUL" in sink.rejected[0]
    assert "BreakerEvent.detail: text must not contain NUL" in sink.rejected[1]
