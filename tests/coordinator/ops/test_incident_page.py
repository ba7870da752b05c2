"""The incident as one story, through a real broker, a real uvicorn and headless Chromium:
telemetry and a trip published as an agent publishes them, the reroute, then the JSON view
and the page (timeline, tripping readings, chart with its limit line and trip marker,
destination counts), and acknowledge and pause done with the page's buttons, audited."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiomqtt
import httpx
import pytest

from benchmarks.reroute import seed_orders_at
from coordinator.auth.roles import Role
from coordinator.db import open_database
from coordinator.gateways import store as gateway_store
from coordinator.ops.app import create_app_with_ops
from coordinator.serving import serve_in_thread
from protocols import (
    AgentState,
    AgentStatus,
    AuditRecord,
    BreakerCommand,
    BreakerEvent,
    BreakerState,
    TelemetrySummary,
    Topics,
    TripLimit,
    TripValue,
    encode,
)
from protocols.command_auth import verify_command
from simulators.brokers import Broker
from tests.auth import ADMIN, add_login, headers_for
from tests.browser import console_errors, login, screenshot, wait_until, webdriver
from tests.coordinator.ops.helpers import ops_config, register_gateways, settings_for

WH = "WH-02"
EPISODE = "ep-freezing-rain-1"
ZONES = ("cold_room_1", "cold_room_2")
OPERATOR = "duty-lead-wang"


@dataclass(frozen=True)
class Story:
    url: str
    tripped_at: datetime
    moved: int
    workdir: Path
    topic_root: str
    target: str  # the database: a SQLite path or a PostgreSQL URL


def _summaries(now: datetime) -> list[TelemetrySummary]:
    out = []
    for minute in range(-60, 0):
        start = now + timedelta(minutes=minute)
        for zone in ZONES:
            hot = zone == "cold_room_1" and minute >= -8
            value = 9.5 if hot else 4.0 + (minute % 5) / 10
            out.append(TelemetrySummary(
                warehouse_id=WH, agent_id="gw-wh-02", zone=zone, metric="temperature_c",
                window_start=start, window_end=start + timedelta(minutes=1), count=6,
                min=value - 0.2, mean=value, max=value + 0.2, last=value, seq=minute + 60))
    return out


def _trip(now: datetime) -> BreakerEvent:
    readings = [TripValue(sensor_id="t-cr1-a", metric="temperature_c", value=9.1 + i / 10,
                          ts=now - timedelta(minutes=6) + timedelta(minutes=i))
                for i in range(6)]
    return BreakerEvent(
        warehouse_id=WH, agent_id="gw-wh-02", breaker="cold_chain", state=BreakerState.TRIPPED,
        previous_state=BreakerState.PENDING, open=True, zone="cold_room_1", rule="cold_max",
        reason="threshold_exceeded", values=readings,
        limit=TripLimit(metric="temperature_c", op="above", value=8.0, for_s=300),
        since=now, episode_id=EPISODE, seq=1, session_seq=1, event_time=now, published_at=now)


def _uplink_drop(now: datetime) -> list[AgentStatus]:
    return [AgentStatus(warehouse_id=WH, agent_id="gw-wh-02", state=state, session_seq=seq,
                        ts=now + timedelta(seconds=seq))
            for state, seq in ((AgentState.ONLINE, 1), (AgentState.OFFLINE, 1),
                               (AgentState.ONLINE, 2))]


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def story(request: pytest.FixtureRequest, mqtt_broker: Broker,
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[Story]:
    """The story on each backend (one per module and backend, shared by its tests)."""
    if not mqtt_broker.running:
        mqtt_broker.start()
    workdir = tmp_path_factory.mktemp("incident")
    path = str(workdir / "coordinator.sqlite")
    if request.param == "postgresql":
        path = request.getfixturevalue("postgres_server").create_database()
    now = datetime.now(UTC).replace(microsecond=0)
    db = open_database(path)
    held = seed_orders_at(db, WH, 30, now - timedelta(hours=1), stock_boost=100)
    db.conn.close()
    register_gateways(path, {"gw-wh-02": WH})
    add_login(path, OPERATOR, Role.OPERATOR)
    topics = Topics(f"bwtest-inc-{int(time.time() * 1000) % 10**9}")
    app = create_app_with_ops(settings_for(path, mqtt_broker.url, topics),
                              config=ops_config(workdir))

    async def publish(messages: list[tuple[str, bytes, bool]]) -> None:
        async with aiomqtt.Client(mqtt_broker.host, mqtt_broker.port) as agent:
            for topic, payload, retain in messages:
                await agent.publish(topic, payload, qos=1, retain=retain)

    with serve_in_thread(app) as url, httpx.Client(base_url=url, headers=ADMIN, timeout=15) as http:
        deadline = time.monotonic() + 10
        while http.get("/metrics/summary").json()["watcher"]["connects"] < 1:
            assert time.monotonic() < deadline, "the watcher never connected"
            time.sleep(0.05)
        asyncio.run(publish(
            [(topics.telemetry(WH, s.zone), encode(s), False) for s in _summaries(now)]
            + [(topics.breaker(WH, "cold_chain"), encode(_trip(now)), True)]))
        deadline = time.monotonic() + 15
        while True:
            r = http.get(f"/incidents/{EPISODE}")
            if r.status_code == 200 and r.json()["destinations"]:
                break
            assert time.monotonic() < deadline, f"no reroute: {r.text[:500]}"
            time.sleep(0.05)
        # the gateway's link drops (the broker publishes its last will) and comes back
        asyncio.run(publish([(topics.agent_status(WH, "gw-wh-02"), encode(status), True)
                             for status in _uplink_drop(now)]))
        deadline = time.monotonic() + 15
        while "uplink_regained" not in [i["kind"] for i in http.get(
                f"/incidents/{EPISODE}").json()["timeline"]]:
            assert time.monotonic() < deadline, "the uplink never came back on the timeline"
            time.sleep(0.05)
        yield Story(url, now, held, workdir, topics.root, path)
        asyncio.run(publish([(topics.breaker(WH, "cold_chain"), b"", True)]))


@pytest.mark.broker
def test_the_incident_json_tells_the_story_in_order(story: Story) -> None:
    view: dict[str, Any] = httpx.get(f"{story.url}/incidents/{EPISODE}", headers=ADMIN,
                                     timeout=15).json()
    head = view["incident"]
    assert (head["warehouse_id"], head["open"], head["moved"]) == (WH, True, story.moved)
    tripping = view["tripping"]
    assert (tripping["zone"], tripping["extreme"], tripping["duration_s"]) == (
        "cold_room_1", 9.6, 360.0)
    assert tripping["limit"] == {"metric": "temperature_c", "op": "above", "value": 8.0,
                                 "for_s": 300.0}
    kinds = [i["kind"] for i in view["timeline"]]
    assert kinds[:3] == ["first_over_limit", "tripped", "event_delivered"]
    assert kinds.index("unavailable") < kinds.index("rerouted")
    assert "notices_pending" in kinds or "notices_sent" in kinds
    # the gateway's last will, then its next birth: after the trip, in that order
    assert kinds.count("uplink_lost") == 1 and kinds.count("uplink_regained") == 1
    assert kinds.index("tripped") < kinds.index("uplink_lost") < kinds.index("uplink_regained")
    lost = next(i for i in view["timeline"] if i["kind"] == "uplink_lost")
    assert (lost["agent_id"], lost["how"]) == ("gw-wh-02", "last_will")
    rerouted = next(i for i in view["timeline"] if i["kind"] == "rerouted")
    assert sum(d["orders"] for d in rerouted["destinations"]) == story.moved
    assert sum(d["orders"] for d in view["destinations"]) == story.moved
    assert len(view["orders"]) == story.moved and all(o["channel_order_id"] for o in view["orders"])
    chart = view["chart"]
    assert sorted(chart["zones"]) == list(ZONES)
    assert len(chart["zones"]["cold_room_1"]["temperature_c"]["t"]) == 60
    assert chart["limit"]["value"] == 8.0
    assert [m["kind"] for m in chart["markers"]] == ["trip"]
    missing = httpx.get(f"{story.url}/incidents/NOPE", headers=ADMIN, timeout=15)
    assert missing.status_code == 404 and "NOPE" in missing.text


@pytest.mark.broker
def test_acting_takes_the_callers_identity_and_operators_only(story: Story) -> None:
    path = story.target
    with httpx.Client(base_url=story.url, timeout=15) as http:
        anonymous = http.post(f"/incidents/{EPISODE}/comments", json={"text": "hi"})
        assert anonymous.status_code == 401
        viewer = headers_for(path, Role.VIEWER, name="看板")
        assert http.get(f"/incidents/{EPISODE}", headers=viewer).status_code == 200
        refused = http.post(f"/incidents/{EPISODE}/comments", json={"text": "hi"},
                            headers=viewer)
        assert refused.status_code == 403
        operator = headers_for(path, Role.OPERATOR, name="王值班")
        junk = http.post(f"/incidents/{EPISODE}/assign", json={"assignee": ""},
                         headers=operator)
        assert junk.status_code == 422 and junk.json()["field"] == "body.assignee"
        # the actor comes from the credential, never from the body
        forged = http.post(f"/incidents/{EPISODE}/comments",
                           json={"text": "冷库一断电", "actor": "someone-else"}, headers=operator)
        assert forged.status_code == 422
        said = http.post(f"/incidents/{EPISODE}/comments", json={"text": "冷库一断电"},
                         headers=operator)
        assert said.status_code == 201 and said.json()["actor"] == "token:王值班"
        # the id is the stored row's (RETURNING on both backends, no lastrowid on PG)
        timeline = http.get(f"/incidents/{EPISODE}", headers=viewer).json()
        assert said.json()["id"] in {a["id"] for a in timeline["actions"]}
        unknown = http.post("/incidents/NOPE/acknowledge", json={}, headers=operator)
        assert unknown.status_code == 404


@pytest.mark.broker
def test_the_page_shows_the_story_and_its_buttons_acknowledge_and_pause(story: Story) -> None:
    from selenium.webdriver.common.by import By

    with webdriver(story.workdir, width=1300, height=2200) as driver:
        login(driver, story.url, OPERATOR, f"{OPERATOR}-test-password")
        driver.get(f"{story.url}/dashboard/incidents/{EPISODE}?lang=en")
        wait_until(driver, lambda d: d.execute_script(
            "return !!(window.chartInfo && window.chartInfo.temperature_c)"), what="the chart")
        info = driver.execute_script("return window.chartInfo.temperature_c")
        assert info["limit"] == 8 and "trip" in info["markers"]
        assert sorted(info["zones"]) == list(ZONES) and info["points"] == 60
        assert driver.execute_script(
            "return document.querySelectorAll('#chart-temperature canvas').length") >= 1
        kinds = driver.execute_script(
            "return [...document.querySelectorAll('#timeline li')].map(l => l.dataset.kind)")
        assert kinds[:2] == ["first_over_limit", "tripped"] and "rerouted" in kinds
        first = driver.find_element(By.CSS_SELECTOR, '#timeline li[data-kind="first_over_limit"]')
        assert "temperature above 8 °C for 5 min" in first.text
        lost = driver.find_element(By.CSS_SELECTOR, '#timeline li[data-kind="uplink_lost"]')
        assert lost.text.endswith("uplink lost · gw-wh-02 (last will)")
        back = driver.find_element(By.CSS_SELECTOR, '#timeline li[data-kind="uplink_regained"]')
        assert back.text.endswith("uplink regained · gw-wh-02 (online status)")
        summary = driver.find_element(By.ID, "tripping-summary").text
        assert "cold_room_1" in summary and "9.6 °C" in summary and "6 min" in summary
        counts = driver.execute_script(
            "return [...document.querySelectorAll('#destinations tr[data-destination]')]"
            ".map(r => Number(r.lastChild.textContent))")
        assert sum(counts) == story.moved
        rows = driver.execute_script("return document.querySelectorAll('#orders tbody tr').length")
        assert rows == story.moved
        screenshot(driver, "incident-view.png")

        driver.find_element(By.ID, "ack").click()
        wait_until(driver, lambda d: f"acknowledged by user:{OPERATOR}" in d.find_element(
            By.ID, "summary").text, what="the acknowledgement")
        driver.find_element(By.ID, "switch-reason").send_keys("power cut in cold room 1")
        driver.find_element(By.ID, "pause").click()
        alert = driver.switch_to.alert
        assert "Pause WH-02?" in alert.text and "power cut in cold room 1" in alert.text
        alert.accept()
        wait_until(driver, lambda d: "pause" in d.execute_script(
            "return [...document.querySelectorAll('#timeline li')].map(l => l.dataset.kind)"),
            what="the pause on the timeline")
        assert console_errors(driver) == []
    with httpx.Client(base_url=story.url, headers=ADMIN, timeout=15) as http:
        actions = http.get(f"/incidents/{EPISODE}").json()["actions"]
        # after the comment test's note, when it ran first on this story (one per module)
        assert [(a["action"], a["actor"]) for a in actions if a["action"] != "commented"
                ] == [("acknowledged", f"user:{OPERATOR}")]
        assert actions[-1]["action"] == "acknowledged"
        audit = http.get(f"/warehouses/{WH}/audit").json()
        assert audit[-1]["action"] == "pause" and audit[-1]["actor"] == f"user:{OPERATOR}"
        assert audit[-1]["reason"] == "power cut in cold room 1"


@pytest.mark.broker
def test_a_breaker_command_is_signed_for_the_gateway_and_its_audit_joins_the_timeline(
        story: Story, mqtt_broker: Broker) -> None:
    from selenium.webdriver.common.by import By

    path = story.target
    db = open_database(path)
    key = gateway_store.command_key(db, "gw-wh-02").encode()
    db.conn.close()
    topics = Topics(story.topic_root)
    received: list[BreakerCommand] = []

    async def agent_side() -> None:
        async with aiomqtt.Client(mqtt_broker.host, mqtt_broker.port) as agent:
            await agent.subscribe(topics.command(WH, "cold_chain"), qos=1)
            ready.set()
            async for message in agent.messages:
                assert isinstance(message.payload, bytes)
                cmd = BreakerCommand.model_validate_json(message.payload)
                # one command per registered gateway of the warehouse: this agent's is ours
                if cmd.agent_id == "gw-wh-02":
                    received.append(cmd)
                    return

    ready = threading.Event()
    listener = threading.Thread(target=lambda: asyncio.run(agent_side()), daemon=True)
    listener.start()
    assert ready.wait(10)
    with httpx.Client(base_url=story.url, timeout=15) as http:
        viewer = headers_for(path, Role.VIEWER, name="看板2")
        url = f"/warehouses/{WH}/breakers/cold_chain/commands"
        body = {"command": "inhibit", "reason": "sensor t-cr1-a reads 5 °C high"}
        assert http.post(url, json=body, headers=viewer).status_code == 403
        assert http.post(url, json=body, headers=ADMIN).status_code == 422  # no duration
    with webdriver(story.workdir) as driver:
        login(driver, story.url, OPERATOR, f"{OPERATOR}-test-password")
        driver.get(f"{story.url}/dashboard/incidents/{EPISODE}?lang=en")
        wait_until(driver, lambda d: d.find_element(By.ID, "cmd-breaker").get_attribute("value")
                   == "cold_chain", what="the tripped breaker preselected")
        driver.find_element(By.ID, "cmd-reason").send_keys("sensor t-cr1-a reads 5 °C high")
        driver.find_element(By.ID, "send-command").click()
        alert = driver.switch_to.alert
        assert "inhibit (hold closed) breaker cold_chain of WH-02?" in alert.text
        alert.accept()
        listener.join(10)
        assert console_errors(driver) == []
    [cmd] = received
    assert (cmd.command.value, cmd.agent_id, cmd.actor) == ("inhibit", "gw-wh-02",
                                                            f"user:{OPERATOR}")
    assert cmd.expires_at is not None and cmd.expires_at - cmd.issued_at == timedelta(minutes=30)
    # what the agent checks before applying it: signed with its key, for it and the
    # breaker whose topic it came on, in time
    verify_command(cmd, key, agent_id="gw-wh-02", breaker="cold_chain", now=datetime.now(UTC),
                   max_ttl=timedelta(hours=12))
    audit = AuditRecord(warehouse_id=WH, agent_id="gw-wh-02", breaker="cold_chain",
                        command_id=cmd.command_id, command=cmd.command, actor=cmd.actor,
                        reason=cmd.reason, outcome="applied", ts=datetime.now(UTC))

    async def answer() -> None:
        async with aiomqtt.Client(mqtt_broker.host, mqtt_broker.port) as agent:
            await agent.publish(topics.audit(WH), encode(audit), qos=1)

    asyncio.run(answer())
    with httpx.Client(base_url=story.url, headers=ADMIN, timeout=15) as http:
        deadline = time.monotonic() + 10
        while True:
            actions = [a for a in http.get(f"/incidents/{EPISODE}").json()["actions"]
                       if a["action"] == "command"]
            if any(a["detail"]["outcome"] == "applied" for a in actions):
                break
            assert time.monotonic() < deadline, actions
            time.sleep(0.05)
    # sent to each registered gateway of WH-02, then this agent's answer
    sent = [a for a in actions if a["detail"]["outcome"] == "sent"]
    assert cmd.command_id in {a["detail"]["command_id"] for a in sent}
    assert all(a["actor"] == f"user:{OPERATOR}" for a in sent)
    [applied] = [a for a in actions if a["detail"]["outcome"] == "applied"]
    assert applied["detail"]["command_id"] == cmd.command_id
    assert actions.index(applied) == len(actions) - 1
