"""The gateway's wall clock stepped (NTP setting right a clock that booted on a bad RTC,
or a person changing it): a hot cold room still trips, a cold one never trips from the
jump alone, and a real silence still trips. Back, the core finds the step itself (time
never goes back); forward, the shell finds it against a monotonic clock."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from edge_agent.agent import EdgeAgent
from edge_agent.clock_steps import StepWatch
from edge_agent.config import AgentConfig
from edge_agent.core import AgentCore
from edge_agent.core_io import Saved
from protocols import BreakerCommand, CommandKind, SensorReading, Topics, encode
from protocols.clock import ManualClock
from tests.edge_agent.conftest import SENSOR, WH, config_dict

T = datetime(2026, 1, 15, 2, 0, tzinfo=UTC)
WRONG = datetime(2038, 1, 19, 3, 0, tzinfo=UTC)  # a gateway that booted on a bad RTC
TOPICS = Topics("bwtest-clocksteps")
NATIVE = TOPICS.sensor(WH, SENSOR)


def _config(tmp_path: Path) -> AgentConfig:
    raw: dict[str, Any] = config_dict(tmp_path, "mqtt://127.0.0.1:1", "mqtt://127.0.0.1:1",
                                      TOPICS)
    raw["sensors"] = raw["sensors"][:1]  # the native probe alone (max_gap_s 120)
    return AgentConfig.model_validate(raw)


def _reading(value: float, at: datetime) -> bytes:
    return encode(SensorReading(sensor_id=SENSOR, ts=at, temperature_c=value))


def _state(agent: EdgeAgent) -> str:
    return agent.breaker_states()["cold_chain"][0]


class _Steady:
    """A monotonic clock the test moves: real time passing, apart from the wall clock."""

    def __init__(self) -> None:
        self.value = 1000.0

    def __call__(self) -> float:
        return self.value


def test_a_clock_stepped_back_from_2038_still_trips_a_hot_room(tmp_path: Path) -> None:
    core = AgentCore(_config(tmp_path), TOPICS)
    core.start(WRONG, Saved({}, {}, None, 0, 1, "abcdef12"))
    core.ingest(NATIVE, _reading(4.0, WRONG), WRONG)
    for i in range(0, 600, 30):  # NTP steps the clock back; 12 °C for 10 min
        now = T + timedelta(seconds=i)
        core.ingest(NATIVE, _reading(12.0, now), now)
        core.tick(now)
    assert core.breakers["cold_chain"].state.value == "tripped"
    assert core.counters.notices.get("clock_step") == 1
    assert not core.counters.drops  # no reading dropped as out of order


def test_a_gateway_restarted_after_its_clock_stepped_back_trips_a_hot_room(
        tmp_path: Path) -> None:
    config = _config(tmp_path)
    first = EdgeAgent(config, clock=ManualClock(WRONG), topics=TOPICS)
    first.handle_sensor_message(NATIVE, _reading(4.0, WRONG))
    assert first._store is not None
    first._store.close()
    clock = ManualClock(T)  # the next boot: NTP has set the clock right
    agent = EdgeAgent(config, clock=clock, topics=TOPICS)
    for _ in range(12):
        agent.handle_sensor_message(NATIVE, _reading(12.0, clock.now()))
        agent._tick()
        clock.advance(30)
    assert _state(agent) == "tripped"
    assert agent.stats.notices.get("clock_step") == 1


def _cold_agent(tmp_path: Path) -> tuple[EdgeAgent, ManualClock, _Steady]:
    clock, steady = ManualClock(T), _Steady()
    agent = EdgeAgent(_config(tmp_path), clock=clock, topics=TOPICS, steady=steady)
    for _ in range(12):  # 4 °C every 10 s: ok
        agent.handle_sensor_message(NATIVE, _reading(4.0, clock.now()))
        agent._tick()
        clock.advance(10)
        steady.value += 10
    assert _state(agent) == "ok"
    return agent, clock, steady


def test_a_clock_stepped_forward_two_hours_does_not_trip_a_cold_room(tmp_path: Path) -> None:
    agent, clock, steady = _cold_agent(tmp_path)
    clock.advance(7200)  # NTP steps +2 h while one second passes
    steady.value += 1
    agent._tick()
    assert _state(agent) == "ok"  # not silent: the jump is not two hours of silence
    assert agent.stats.notices.get("clock_step") == 1
    for _ in range(6):
        agent.handle_sensor_message(NATIVE, _reading(4.0, clock.now()))
        agent._tick()
        clock.advance(10)
        steady.value += 10
    assert _state(agent) == "ok"


def test_a_forward_step_just_after_a_look_does_not_trip_a_cold_room(tmp_path: Path) -> None:
    # the watch takes a look at most every 0.5 s; a tick with the stepped time sooner
    # than that after a reading must not reach the core untold (it tripped as silent)
    agent, clock, steady = _cold_agent(tmp_path)
    agent.handle_sensor_message(NATIVE, _reading(4.0, clock.now()))
    clock.advance(7200)
    steady.value += 0.2
    agent._tick()
    assert _state(agent) == "ok"
    assert agent.stats.notices.get("clock_step") == 1


def test_two_hours_of_real_silence_still_trips(tmp_path: Path) -> None:
    # the control: the same two hours, passed on both clocks, is a power-cut silence
    agent, clock, steady = _cold_agent(tmp_path)
    for _ in range(120):
        clock.advance(60)
        steady.value += 60
        agent._tick()
    assert _state(agent) == "tripped"
    assert "clock_step" not in agent.stats.notices


@given(st.lists(st.floats(min_value=0.001, max_value=3600), min_size=1, max_size=30),
       st.floats(min_value=31, max_value=1e8), st.integers(min_value=0, max_value=29),
       st.booleans())
def test_a_step_watch_reports_exactly_the_steps_beyond_its_tolerance(
        gaps: list[float], jump: float, where: int, back: bool) -> None:
    watch = StepWatch(tolerance_s=30)
    wall, steady = T, 0.0
    assert watch.observe(wall, steady) is None
    found: list[float] = []
    for i, gap in enumerate(gaps):
        steady += gap
        wall += timedelta(seconds=gap)
        if i == where:
            wall += timedelta(seconds=-jump if back else jump)
        step = watch.observe(wall, steady)
        if step is not None:
            found.append(step)
    expected = [-jump if back else jump] if where < len(gaps) else []
    assert [round(s, 3) for s in found] == [round(e, 3) for e in expected]


def test_an_override_set_on_a_wrong_clock_keeps_the_time_it_had_left_after_the_step(
        tmp_path: Path) -> None:
    core = AgentCore(_config(tmp_path), TOPICS)  # unsigned commands: a bench, no key
    core.start(WRONG, Saved({}, {}, None, 0, 1, "abcdef12"))
    inhibit = BreakerCommand(command_id="c-1", command=CommandKind.INHIBIT, actor="local:li",
                             reason="defrost", issued_at=WRONG,
                             expires_at=WRONG + timedelta(hours=1))
    core.command("cold_chain", encode(inhibit), WRONG + timedelta(minutes=10))
    breaker = core.breakers["cold_chain"]
    assert breaker.override_expires_at == WRONG + timedelta(hours=1)
    core.tick(T)  # NTP steps the clock back: 50 minutes were left
    assert breaker.override_expires_at == T + timedelta(minutes=50)
    core.tick(T + timedelta(minutes=51))
    assert breaker.override_expires_at is None  # expired, not held until 2038
