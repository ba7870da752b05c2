"""The agent's command boundary without a broker: any payload on a command topic is
either audited (applied or refused) or dead-lettered naming the field; never raised."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge_agent.agent import EdgeAgent
from protocols import BreakerCommand, CommandKind, Topics, encode
from protocols.clock import ManualClock
from tests.edge_agent.conftest import WH, make_config

T0 = datetime(2026, 1, 15, 2, 0, tzinfo=UTC)
TOPICS = Topics("bwtest-commands")

valid = json.loads(
    encode(
        BreakerCommand(
            command_id="cmd-1",
            command=CommandKind.FORCE_TRIPPED,
            actor="ops-li",
            reason="ice on the dock",
            issued_at=T0,
            expires_at=T0 + timedelta(minutes=10),
        )
    )
)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=10), inner,
                                                                max_size=4),
    max_leaves=8,
)
mutated = st.builds(
    lambda key, value: json.dumps({**valid, key: value}).encode(),
    st.sampled_from(sorted(valid)),
    json_values,
)
payloads = st.binary(max_size=200) | json_values.map(lambda v: json.dumps(v).encode()) | mutated


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    commands=st.lists(
        st.tuples(st.sampled_from(["cold_chain", "no_such_breaker"]), payloads),
        min_size=1,
        max_size=8,
    )
)
def test_property_any_command_payload_is_audited_or_dead_lettered(
    tmp_path_factory: object, commands: list[tuple[str, bytes]]
) -> None:
    tmp_path: Path = tmp_path_factory.mktemp("commands")  # type: ignore[attr-defined]
    config = make_config(tmp_path, "mqtt://127.0.0.1:1", "mqtt://127.0.0.1:1", TOPICS)
    agent = EdgeAgent(config, clock=ManualClock(T0), topics=TOPICS)
    agent.breaker_states()  # opens the store
    for breaker, payload in commands:
        agent.handle_command(breaker, payload, TOPICS.command(WH, breaker))
    rejected = agent.stats.readings_rejected.get("command", 0)
    # Every command either produced an audit record in the outbox or a dead letter.
    assert rejected + _audits(agent) == len(commands)
    assert len(agent.publisher.deadletters) == rejected  # the queue the uplink drains
    for letter in agent.publisher.deadletters:
        assert letter.field  # names the field (or "$" for the whole payload)


def _audits(agent: EdgeAgent) -> int:
    store = agent._store  # the outbox is what the uplink will publish
    assert store is not None
    rows = store.outbox_rows(after_seq=0, limit=10_000)
    return sum(1 for row in rows if row.kind == "audit")


def test_an_agent_without_a_key_refuses_every_command_unless_a_bench_allows_them(
        tmp_path: Path) -> None:
    # closed by default: with no key and no unsigned_commands, anyone who could publish
    # on the cmd topic would otherwise hold the breaker
    for allowed in (False, True):
        config = make_config(tmp_path / str(allowed), "mqtt://127.0.0.1:1",
                             "mqtt://127.0.0.1:1", TOPICS)
        config = config.model_copy(update={"agent": config.agent.model_copy(
            update={"unsigned_commands": allowed})})
        agent = EdgeAgent(config, clock=ManualClock(T0), topics=TOPICS)
        agent.handle_command("cold_chain", json.dumps(valid).encode())
        assert agent.breaker_states()["cold_chain"][1] is allowed  # forced open, or not
        outcome = "applied" if allowed else "refused_unsigned"
        assert dict(agent.stats.commands) == {outcome: 1}
        assert agent._store is not None
        agent._store.close()
