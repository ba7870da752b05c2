"""AgentStatus.heartbeat_s: optional (older agents omit it), positive and finite if given."""

from __future__ import annotations

import json

import pytest

from protocols import AgentStatus, PayloadError, decode

BIRTH = {"v": 1, "warehouse_id": "wh-1", "agent_id": "gw-1", "state": "online",
         "session_seq": 3, "ts": "2026-01-15T02:00:00Z"}


def test_status_without_heartbeat_is_still_valid() -> None:
    assert decode(AgentStatus, json.dumps(BIRTH)).heartbeat_s is None


def test_heartbeat_interval_round_trips() -> None:
    assert decode(AgentStatus, json.dumps({**BIRTH, "heartbeat_s": 30})).heartbeat_s == 30


@pytest.mark.parametrize("bad", [0, -5, "soon", 1e9])
def test_bad_heartbeat_interval_is_refused_naming_the_field(bad: object) -> None:
    with pytest.raises(PayloadError) as caught:
        decode(AgentStatus, json.dumps({**BIRTH, "heartbeat_s": bad}))
    assert caught.value.field == "heartbeat_s"


def test_nan_heartbeat_is_refused() -> None:
    with pytest.raises(PayloadError):
        decode(AgentStatus, '{"v":1,"warehouse_id":"wh-1","agent_id":"gw-1","state":"online",'
                            '"session_seq":3,"ts":"2026-01-15T02:00:00Z","heartbeat_s":NaN}')
