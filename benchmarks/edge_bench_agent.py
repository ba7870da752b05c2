"""The benchmarked edge agent: its configuration (SENSORS sensors in ZONES zones, one rule
per zone, one breaker), stopping it, and the measuring process's resident memory."""

from __future__ import annotations

import asyncio
import contextlib
import resource
from pathlib import Path

from edge_agent.config import AgentConfig

SENSORS = 1000
ZONES = 100
WAREHOUSE = "wh-bench"
ROOT = "bench"
AGENT_ID = "gw-bench"


def rss_mb() -> float:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def agent_config(
    state_dir: Path, port: int, *, persistent_session: bool = False, sensors: int = SENSORS
) -> AgentConfig:
    url = f"mqtt://127.0.0.1:{port}"
    zones = min(ZONES, sensors)
    sensor_list = [
        {"id": f"s{i:04d}", "zone": f"zone_{i % zones:03d}", "max_gap_s": 600}
        for i in range(sensors)
    ]
    rules = [
        {
            "id": "temp_high",
            "zone": f"zone_{z:03d}",
            "breaker": "cold_chain",
            "metric": "temperature_c",
            "above": 8.0,
            "for_s": 300,
        }
        for z in range(zones)
    ]
    return AgentConfig.model_validate(
        {
            "agent": {
                "agent_id": AGENT_ID,
                "warehouse_id": WAREHOUSE,
                "state_db": str(state_dir / "edge.sqlite"),
                "max_skew_s": 60,
            },
            "local_mqtt": {"url": url, "persistent_session": persistent_session},
            "uplink_mqtt": {"url": url, "username": AGENT_ID, "topic_root": ROOT},
            "sensors": sensor_list,
            "rules": rules,
            "breakers": [{"name": "cold_chain"}],
        }
    )


async def stop(task: asyncio.Task[None]) -> None:
    """Cancel until it ends: Python 3.11's wait_for (inside aiomqtt) can swallow a cancel."""
    while not task.done():
        task.cancel()
        await asyncio.wait({task}, timeout=1.0)
    with contextlib.suppress(asyncio.CancelledError):
        await task
