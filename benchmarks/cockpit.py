"""Cockpit: telemetry intake (summaries/s stored) and the dashboard's state latency at the
demo's size.

- **Telemetry intake**: per-zone minute summaries stored through
  :func:`coordinator.ops.telemetry.record`, one transaction per summary (as the ops service
  stores each MQTT message) and in batches of 100; baseline in the same run: the same rows
  into a bare table without key, index or conflict check (SQLite's write floor here).
- **Dashboard state**: the sample region (8 warehouses) with the demo's 287 orders at WH-02
  rerouted by a pause (100 with ``--quick``), and 24 h of minute telemetry for 3 zones x 2
  metrics per warehouse (69,120 rows). ``state_*``:
  :func:`coordinator.dashboard_state.state` in process;
  ``push_*``: a change published on the live hub until the open server-sent event stream
  delivers the new state, over a real uvicorn on loopback; baseline in the same run:
  ``GET /healthz`` over the same HTTP client (the round trip with no work).
"""

from __future__ import annotations

import asyncio
import json
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

from benchmarks.reroute import seed_orders_at
from benchmarks.runner import Result
from coordinator import dashboard, dashboard_state
from coordinator.auth.roles import Role, Scope
from coordinator.auth.store import issue_token
from coordinator.catalog import set_warehouse_paused
from coordinator.db import open_database, write_transaction
from coordinator.ops.app import create_app_with_ops
from coordinator.ops.config import OpsConfig
from coordinator.ops.telemetry import record
from coordinator.reroute import reroute_warehouse
from coordinator.serving import serve_in_thread
from coordinator.settings import Settings
from protocols import TelemetrySummary

T0 = datetime(2026, 11, 24, 0, 0, tzinfo=UTC)
ZONES = ("cold_room_1", "cold_room_2", "dry_1")
METRICS = ("temperature_c", "humidity_pct")


def summaries(warehouses: list[str], minutes: int) -> list[TelemetrySummary]:
    out = []
    for m in range(minutes):
        start = T0 + timedelta(minutes=m)
        for w in warehouses:
            for zone in ZONES:
                for metric in METRICS:
                    v = 4.0 + (m % 30) / 10 if metric == "temperature_c" else 55.0
                    out.append(TelemetrySummary(
                        warehouse_id=w, agent_id=f"gw-{w.lower()}", zone=zone, metric=metric,
                        window_start=start, window_end=start + timedelta(minutes=1), count=12,
                        min=v - 0.3, mean=v, max=v + 0.3, last=v, seq=m))
    return out


def intake(workdir: Path, rows: list[TelemetrySummary], result: Result) -> None:
    single = open_database(workdir / "single.sqlite")
    n = min(len(rows), 2000)
    started = time.perf_counter()
    for s in rows[:n]:
        record(single, [s])
    result.add("telemetry_single_per_s", n / (time.perf_counter() - started), "summaries/s",
               "one transaction per summary, as MQTT messages arrive")
    batched = open_database(workdir / "batched.sqlite")
    started = time.perf_counter()
    for i in range(0, len(rows), 100):
        record(batched, rows[i:i + 100])
    batch_rate = len(rows) / (time.perf_counter() - started)
    result.add("telemetry_batch_per_s", batch_rate, "summaries/s", "batches of 100")
    bare = open_database(workdir / "bare.sqlite")
    bare.conn.execute("CREATE TABLE bare (w TEXT, z TEXT, m TEXT, s TEXT, e TEXT, c INTEGER, "
                      "lo REAL, mean REAL, hi REAL, last REAL)")
    values = [(s.warehouse_id, s.zone, s.metric, s.window_start.isoformat(),
               s.window_end.isoformat(), s.count, s.min, s.mean, s.max, s.last) for s in rows]
    started = time.perf_counter()
    for i in range(0, len(values), 100):
        with write_transaction(bare):
            bare.conn.executemany("INSERT INTO bare VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                                  values[i:i + 100])
    bare_rate = len(values) / (time.perf_counter() - started)
    result.add("bare_batch_per_s", bare_rate, "rows/s", "baseline: plain table, batches of 100")
    result.add("telemetry_batch_ratio", batch_rate / bare_rate, "x", "stored / baseline")
    for db in (single, batched, bare):
        db.conn.close()


def _ms(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return 1000 * ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def _push_latency(url: str, app: Any, rounds: int,
                        headers: dict[str, str]) -> list[float]:
    samples = []
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=30) as http, \
            http.stream("GET", "/dashboard/events") as stream:
        lines = stream.aiter_lines()

        async def next_state() -> dict[str, Any]:
            async for line in lines:
                if line.startswith("data: "):
                    state: dict[str, Any] = json.loads(line[6:])
                    return state
            raise RuntimeError("stream ended")

        await next_state()
        for _ in range(rounds):
            started = time.perf_counter()
            app.state.live.publish("telemetry")
            await next_state()
            samples.append(time.perf_counter() - started - dashboard.COALESCE_S)
    return samples


def state_latency(workdir: Path, quick: bool, result: Result) -> None:
    path = workdir / "demo.sqlite"
    db = open_database(path)
    now = datetime.now(UTC)
    orders = 100 if quick else 287
    seed_orders_at(db, "WH-02", orders, now, stock_boost=200)
    set_warehouse_paused(db, "WH-02", paused=True, reason="bench", now=now)
    reroute_warehouse(db, "WH-02", incident_id="bench-1", reason="bench", now=now,
                      config=Settings().allocation)
    warehouses = [r[0] for r in db.execute("SELECT id FROM warehouses ORDER BY id").fetchall()]
    minutes = 60 if quick else 24 * 60
    rows = summaries(warehouses, minutes)
    for i in range(0, len(rows), 5000):
        record(db, rows[i:i + 5000])
    result.add("telemetry_rows", len(rows), "rows", "stored for the state figures")
    # the board is behind authentication: a viewer's token, as a scraper or page would hold
    _, secret = issue_token(db, name="bench-viewer", role=Role.VIEWER, scope=Scope(), now=now,
                            created_by="benchmark")
    viewer = {"Authorization": f"Bearer {secret}"}
    runs = 10 if quick else 100
    samples = []
    for _ in range(runs):
        started = time.perf_counter()
        dashboard_state.state(db)
        samples.append(time.perf_counter() - started)
    db.conn.close()
    result.add("state_p50_ms", _ms(samples, 0.5), "ms", "dashboard_state.state in process")
    result.add("state_p99_ms", _ms(samples, 0.99), "ms")
    settings = Settings(db_path=str(path), mqtt_url="mqtt://127.0.0.1:1")
    config = OpsConfig.model_validate({"subscribe_mqtt": False, "notify": {"franchisee": {
        "jsonl_path": str(workdir / "franchisee.jsonl")}}})
    app = create_app_with_ops(settings, config=config)
    with serve_in_thread(app) as url:
        push = asyncio.run(_push_latency(url, app, 5 if quick else 50, viewer))
        with httpx.Client(base_url=url, headers=viewer, timeout=30) as http:
            base = []
            for _ in range(5 if quick else 50):
                started = time.perf_counter()
                http.get("/healthz").raise_for_status()
                base.append(time.perf_counter() - started)
            http_state = []
            for _ in range(5 if quick else 50):
                started = time.perf_counter()
                http.get("/dashboard/state").raise_for_status()
                http_state.append(time.perf_counter() - started)
    result.add("push_p50_ms", _ms(push, 0.5), "ms",
               f"publish -> SSE state event, minus the {dashboard.COALESCE_S * 1000:.0f} ms "
               "coalescing wait")
    result.add("push_p99_ms", _ms(push, 0.99), "ms")
    result.add("http_state_p50_ms", _ms(http_state, 0.5), "ms", "GET /dashboard/state")
    result.add("healthz_p50_ms", _ms(base, 0.5), "ms", "baseline: GET /healthz")


def run(quick: bool) -> Result:
    result = Result("cockpit")
    with tempfile.TemporaryDirectory(prefix="bw-bench-cockpit-") as tmp:
        workdir = Path(tmp)
        rows = summaries([f"WH-0{i}" for i in range(1, 9)], 10 if quick else 200)
        intake(workdir, rows, result)
        state_latency(workdir, quick, result)
    return result
