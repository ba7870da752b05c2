"""The demo command end to end, in-process through ``python -m simulators``'s ``main``,
against the test broker (MQTT_URL set, so no embedded one): real agents, the real
coordinator with ops and dashboard on uvicorn, the freezing-rain night."""

from __future__ import annotations

import json
import re
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from simulators.__main__ import main
from simulators.brokers import Broker, free_port

pytest.importorskip("edge_agent.agent")
pytest.importorskip("coordinator.ops.app")

pytestmark = [pytest.mark.broker, pytest.mark.slow]


def test_demo_trips_at_0217_and_accounts_for_all_287_orders(
    broker: Broker,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("MQTT_URL", broker.url)
    port = free_port()
    assert main(["demo", "--workdir", str(tmp_path), "--port", str(port)]) == 0
    out = capsys.readouterr().out
    assert f"using MQTT broker {broker.url}" in out
    assert "[02:12:00] cold room 2 of WH-02 crosses 8.0 °C" in out
    assert "WH-02/cold_chain zone cold_room_2: above since 02:12:00, trips at 02:17:00" in out
    assert "native" in out and "zigbee2mqtt" in out and "tasmota" in out and "plain" in out
    assert "287 waiting: 287 at WH-02" in out

    # WH-02's uplink is really cut from 02:16:00 to 02:17:30: the agent trips at 02:17:00
    # on its own, and the trip (with its event time) reaches the coordinator, which
    # reroutes, only once the uplink is back
    lines = out.splitlines()

    def index(start: str) -> int:
        return next(i for i, line in enumerate(lines) if line.startswith(start))

    cut = index("  [02:16:00] uplink outage starts at WH-02: agent cut off from the coordinator")
    ends = index("  [02:17:30] uplink outage ends at WH-02")
    tripped = index("  !! WH-02/cold_chain tripped at 02:17:00 event time")
    reroute = index("  >> WH-02: 287 orders rerouted")
    back = index("  [02:17:30] WH-02 uplink back: agent reconnected and delivered its")
    assert cut < ends < tripped < reroute < back, out
    assert "after its uplink came back at 02:17:30 event time" in lines[reroute]
    assert "(1 breaker event)" in lines[back]
    assert "uplink cut at WH-02 02:16:00-02:17:30 event time:" in out

    # the report: the trip the agents made, and when (event time)
    assert "breakers tripped by the edge agents: 1\n" in out
    assert "  WH-02/cold_chain tripped at 02:17:00 event time (threshold_exceeded)" in out
    # every waiting order moved or accounted for, with the wall time it took
    rerouted = re.search(
        r"orders rerouted from WH-02: (\d+) \((\d+) moved, (\d+) needs_attention\);"
        r" reported when its uplink came back at 02:17:30 event time;"
        r" ([\d.]+) s wall from the uplink's return to commit",
        out,
    )
    assert rerouted is not None, out
    total, moved, stuck, wall = rerouted.groups()
    assert int(total) == 287 and int(moved) + int(stuck) == 287
    assert float(wall) > 0
    now = next(line for line in out.splitlines() if line.startswith("the 287 waiting orders now:"))
    counts = re.findall(r"(\d+) (allocated at WH-\d\d|needs_attention at -)", now)
    assert sum(int(n) for n, _ in counts) == 287, now
    assert "at WH-02" not in now

    # the seed's three metrics, the notices in the file sink, the dashboard URL
    assert "self-healing rate:" in out and "status transparency: 100.0%" in out
    assert "first response time: p95" in out
    # twenty customers asked; each reply reached the channel (the inbox) and was timed
    assert re.search(r"first response time: p95 [\d.]+ s, p50 [\d.]+ s over 20 of 20 "
                     r"inquiries", out), out
    sink = tmp_path / "notifications" / "franchisee.jsonl"
    assert f"franchisee notices (file sink): {sink}" in out
    notices = [json.loads(line) for line in sink.read_text(encoding="utf-8").splitlines()]
    # one message per store and incident (all 287 waiting orders are one store's), in
    # Chinese, with the same local trip time as the report above and the dashboard
    reroutes = [n for n in notices if n["type"] == "reroute_notice"]
    assert len(reroutes) == len({n["store_id"] for n in reroutes}) == 1
    [notice] = reroutes
    assert len(notice["orders"]) == int(moved)
    first, *listed, coupon = notice["text"].splitlines()
    assert first.startswith(f"【改派通知】{notice['store_name']}您好：2026-01-15 02:17:00 "
                            "(Asia/Shanghai)，")
    assert "暂停发货" in first and f"{moved} 笔订单" in first
    assert len(listed) == int(moved)
    assert all(f"订单 {o['channel_order_id']}：" in notice["text"] for o in notice["orders"])
    assert coupon.startswith("为补偿本次改派") and notice["coupon"]["code"] in coupon
    assert notice["tripped_at_local"] == "2026-01-15 02:17:00 (Asia/Shanghai)"
    # the board shows the incident at the same local time (its `tripped_at`, in the zone)
    from coordinator.dashboard_state import state
    from coordinator.db import open_database

    db = open_database(next(tmp_path.glob("*.sqlite")))
    [incident] = state(db)["incidents"]
    db.conn.close()
    tripped = datetime.fromisoformat(incident["tripped_at"]).astimezone(ZoneInfo("Asia/Shanghai"))
    assert f"{tripped:%Y-%m-%d %H:%M:%S}" == "2026-01-15 02:17:00"
    assert f"dashboard: http://127.0.0.1:{port}/" in out

    # operations alerts went over real HTTP to the demo's inbox: one WeCom robot message
    # (its documented markdown JSON) and one SMS request for the incident, not one per order
    alerts = tmp_path / "notifications" / "ops-alerts.jsonl"
    entries = [json.loads(line) for line in alerts.read_text(encoding="utf-8").splitlines()]
    # nobody acknowledges during the demo, so the incident also escalates (event time runs
    # fast): once per level, WeCom first, then SMS
    escalations = [e for e in entries if "升级提醒" in json.dumps(e, ensure_ascii=False)]
    opened = [e for e in entries if e not in escalations]
    wecom = [e["body"] for e in opened if e["channel"] == "wecom"]
    sms = [e["body"] for e in opened if e["channel"] == "sms"]
    assert len(wecom) == 1 and len(sms) == 1, entries
    replies = [e["body"] for e in entries if e["channel"] == "customer"
               and e["body"]["script"] == "inquiry_reply"]
    assert len(replies) == 20 and all(r["text"].startswith("您好，订单") for r in replies)
    assert wecom[0]["msgtype"] == "markdown"
    assert "287" in wecom[0]["markdown"]["content"]
    assert "> 熔断时间：2026-01-15 02:17:00 (Asia/Shanghai)" in wecom[0]["markdown"]["content"]
    levels = [e["channel"] for e in escalations]
    assert levels[:1] in ([], ["wecom"]) and set(levels[1:]) <= {"sms"}
    assert len(levels) <= 3

    waiting = (tmp_path / "orders-waiting.jsonl").read_text().splitlines()
    assert len(waiting) == 287
    assert all(
        json.loads(line)["channel"] in {"wechat_mini", "meituan", "douyin"} for line in waiting
    )
    assert len(list((tmp_path / "edge").glob("*.toml"))) == 8
