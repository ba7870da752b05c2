"""Telemetry over the real broker into the store, pushed to an open dashboard stream, and
counted in /metrics; through a real uvicorn on loopback."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiomqtt
import httpx
import pytest

from coordinator.catalog import import_file
from coordinator.db import open_database
from coordinator.region import SAMPLE_DIR, SAMPLE_FILES
from protocols import TelemetrySummary, Topics, encode
from protocols.clock import ManualClock
from simulators.brokers import Broker
from tests.auth import ADMIN
from tests.coordinator.ops.app_server import ops_app, serving
from tests.coordinator.ops.helpers import (
    next_state,
    ops_config,
    register_gateways,
    settings_for,
)


def reading(minute: int, value: float) -> TelemetrySummary:
    start = datetime(2026, 11, 24, 2, 0, tzinfo=UTC) + timedelta(minutes=minute)
    return TelemetrySummary(
        warehouse_id="WH-02", agent_id="gw-wh-02", zone="cold-1", metric="temperature_c",
        window_start=start, window_end=start + timedelta(minutes=1), count=6,
        min=value - 0.2, mean=value, max=value + 0.2, last=value, seq=minute)


@pytest.mark.broker
async def test_a_summary_published_by_an_agent_is_stored_pushed_live_and_counted(
        broker: Broker, topics: Topics, tmp_path: Path, db_target: str) -> None:
    path = db_target
    db = open_database(path)
    for name in SAMPLE_FILES:
        import_file(db, SAMPLE_DIR / f"{name}.csv", datetime.now(UTC))
    db.conn.close()
    register_gateways(path, {"gw-wh-02": "WH-02"})
    app = ops_app(settings_for(path, broker.url, topics), ops_config(tmp_path),
                  ManualClock(datetime.now(UTC)))
    async with serving(app) as url, \
            httpx.AsyncClient(base_url=url, headers=ADMIN, timeout=15) as http:
        async with http.stream("GET", "/dashboard/events") as stream:
            assert stream.headers["content-type"].startswith("text/event-stream")
            lines = stream.aiter_lines()
            first = await next_state(lines)
            assert first["timezone"] == "Asia/Shanghai" and first["down"] == []
            wh02 = next(w for w in first["warehouses"] if w["id"] == "WH-02")
            assert wh02["readings"] == []
            async with aiomqtt.Client(broker.host, broker.port) as agent:
                await agent.publish(topics.telemetry("WH-02", "cold-1"),
                                    encode(reading(0, 9.4)), qos=1)
                # junk on the same topic is counted by the watcher, never stored
                await agent.publish(topics.telemetry("WH-02", "cold-1"), b'{"v":1}', qos=1)
                # a redelivery is one row
                await agent.publish(topics.telemetry("WH-02", "cold-1"),
                                    encode(reading(0, 9.4)), qos=1)
                # an agent the registry does not know for WH-02 is not charted
                stranger = reading(1, 30.0).model_copy(update={"agent_id": "gw-unknown"})
                await agent.publish(topics.telemetry("WH-02", "cold-1"), encode(stranger), qos=1)
            async with asyncio.timeout(5):
                pushed = await next_state(lines)
            assert pushed["changed"] == ["telemetry"]
            wh02 = next(w for w in pushed["warehouses"] if w["id"] == "WH-02")
            assert wh02["readings"] == [{
                "zone": "cold-1", "metric": "temperature_c", "last": 9.4, "max": 9.6,
                "at": "2026-11-24T02:01:00.000Z"}]
        async with asyncio.timeout(10):
            while True:
                text = (await http.get("/metrics")).text
                if 'breakwater_telemetry_summaries_total{outcome="duplicate"} 1.0' in text:
                    break
                await asyncio.sleep(0.05)
        assert 'breakwater_telemetry_summaries_total{outcome="stored"} 1.0' in text
        assert 'breakwater_telemetry_summaries_total{outcome="refused"} 1.0' in text
        assert 'breakwater_ops_events_total{kind="bad_payloads"} 1.0' in text
        assert "# TYPE breakwater_http_request_duration_seconds histogram" in text
        assert ('breakwater_http_request_duration_seconds_count{method="GET",'
                'route="/dashboard/events",status="2xx"} 1.0') in text
        assert "breakwater_live_clients 0.0" in text
