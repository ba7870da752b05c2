"""The agent's ingest boundary without a broker: junk of any shape never stops it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge_agent.agent import EdgeAgent
from protocols import SensorReading, Topics, encode
from protocols.clock import ManualClock
from tests.edge_agent.conftest import SENSOR, WH, make_config

T0 = datetime(2026, 1, 15, 2, 0, tzinfo=UTC)
TOPICS = Topics("bwtest-ingest")
NATIVE = TOPICS.sensor(WH, SENSOR)
Z2M = f"z2m-{TOPICS.root}/cr2_z2m"

junk = st.one_of(
    st.binary(max_size=120),
    st.sampled_from(
        [
            b"{",
            b"null",
            b'{"temperature": NaN}',
            b'{"temperature": 1e999}',
            b'{"v":1,"sensor_id":"cr2_t1","ts":"2026-01-15T02:00:00Z","temperature_c":-273}',
            b'{"v":1,"sensor_id":"cr2_t1","ts":"2026-01-15T02:00:00Z"}',
            b'{"v":2,"sensor_id":"cr2_t1","ts":"2026-01-15T02:00:00Z","temperature_c":5}',
            b'{"v":1,"sensor_id":"cr2_t1","ts":"2026-01-15T02:00:00","temperature_c":5}',
        ]
    ),
)


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    bursts=st.lists(
        st.lists(st.tuples(st.sampled_from([NATIVE, Z2M, "other/topic"]), junk), max_size=20),
        min_size=12,
        max_size=12,
    )
)
def test_property_junk_between_valid_readings_never_delays_the_trip(
    tmp_path_factory: object, bursts: list[list[tuple[str, bytes]]]
) -> None:
    tmp_path: Path = tmp_path_factory.mktemp("ingest")  # type: ignore[attr-defined]
    clock = ManualClock(T0)
    config = make_config(tmp_path, "mqtt://127.0.0.1:1", "mqtt://127.0.0.1:1", TOPICS)
    agent = EdgeAgent(config, clock=clock, topics=TOPICS)
    valid = 0
    tripped_at = None
    for i, burst in enumerate(bursts):  # reading i at t = 30 i: 5 °C first, then 9 °C
        for topic, payload in burst:
            agent.handle_sensor_message(topic, payload)
        value = 5.0 if i == 0 else 9.0
        reading = SensorReading(sensor_id=SENSOR, ts=clock.now(), temperature_c=value)
        agent.handle_sensor_message(NATIVE, encode(reading))
        valid += 1
        if tripped_at is None and agent.breaker_states()["cold_chain"] == ("tripped", True):
            tripped_at = clock.now()
        clock.advance(30)
    stats = agent.stats
    total = sum(len(b) for b in bursts) + valid
    assert stats.readings_accepted + sum(stats.readings_rejected.values()) == total
    assert stats.readings_accepted >= valid
    # junk that happens to be a valid Zigbee2MQTT reading may add to the zone, never delay:
    # the first bad native reading is at t=30, so the trip is at t=330 at the latest
    assert tripped_at is not None and tripped_at <= T0 + timedelta(seconds=330)
