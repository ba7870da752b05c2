"""``scripts/cluster`` starts PostgreSQL, Mosquitto, two coordinators and HAProxy, serves
a trip end to end through the proxy, and stops everything it started on SIGTERM."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
from pathlib import Path

import aiomqtt
import httpx
import pytest
import yaml

from protocols import Topics, encode
from simulators.brokers import find_mosquitto
from simulators.cluster import (
    COORDINATOR_CONFIG,
    find_haproxy,
    haproxy_command,
    haproxy_config,
)
from simulators.coordinators import seed_command, serve_command
from tests.auth import ADMIN
from tests.coordinator.ops.factories import breaker_event
from tests.coordinator.ops.helpers import wait_for

ROOT = Path(__file__).resolve().parents[2]
needs_packages = pytest.mark.skipif(
    find_mosquitto() is None or find_haproxy() is None,
    reason="needs the mosquitto and haproxy packages (.ci/run installs them)")


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.mark.slow
@pytest.mark.timeout(120)
@needs_packages
async def test_cluster_script_serves_a_trip_end_to_end_and_stops_cleanly(
    tmp_path: Path,
) -> None:
    errors = tmp_path / "stderr.log"
    with errors.open("wb") as err:
        script = subprocess.Popen(  # noqa: ASYNC220 - runs beside the test until SIGTERM
            [str(ROOT / "scripts" / "cluster"), "--hold", "--workdir", str(tmp_path / "work")],
            stdout=subprocess.PIPE, stderr=err, cwd=ROOT)
    try:
        assert script.stdout is not None
        line = await asyncio.wait_for(asyncio.to_thread(script.stdout.readline), 90)
        info = json.loads(line)
        assert len(info["coordinators"]) == 2
        assert info["database"].startswith("postgresql://")  # the ops side on PG too
        host, port = info["mqtt"].removeprefix("mqtt://").split(":")
        async with httpx.AsyncClient(base_url=info["proxy"], timeout=10,
                                     headers=ADMIN) as client:
            order = {"channel": "manual", "channel_order_id": "cluster-1",
                     "customer_id": "walk-in", "lines": [{"sku_id": "SKU-0002", "qty": 1}],
                     "lat": 30.12, "lon": 120.22}
            placed = await client.post("/orders", json=order)
            assert placed.status_code == 201, placed.text
            result = placed.json()
            first = result["warehouse_id"]
            assert first is not None
            # seed-sample registers the sample's gateways as agent-<warehouse>
            trip = breaker_event(seq=1, agent=f"agent-{first}", warehouse=first)
            async with aiomqtt.Client(host, int(port)) as agent:
                await agent.publish(Topics("breakwater").breaker(first, "cold_chain"),
                                    encode(trip), qos=1, retain=True)
            moved: list[str | None] = [first]

            async def poll() -> None:
                while moved[-1] == first:
                    got = await client.get(f"/orders/{result['order_id']}")
                    moved.append(got.json().get("warehouse_id"))
                    await asyncio.sleep(0.1)

            await asyncio.wait_for(poll(), 60)
            assert moved[-1] not in (None, first)
    finally:
        script.send_signal(signal.SIGTERM)
        code = script.wait(timeout=60)
        if script.stdout is not None:
            script.stdout.close()
    assert code == 0, errors.read_text()[-2000:]
    await wait_for(lambda: not any(alive(pid) for pid in info["pids"]), 10,
                   "every process it started to end")


def test_compose_runs_the_commands_and_files_the_script_runs() -> None:
    compose = yaml.safe_load((ROOT / "deploy" / "compose.yaml").read_text(encoding="utf-8"))
    services = compose["services"]
    config = "/etc/breakwater/coordinator.toml"
    for name in ("coordinator-a", "coordinator-b"):
        assert services[name]["command"] == serve_command("python", config)
        assert "./cluster/coordinator.toml:" + config + ":ro" in services[name]["volumes"]
        env = services[name]["environment"]
        assert env["BREAKWATER_INSTANCE"] == f"coord-{name[-1]}"
        # only the proxy's X-Forwarded-For is believed, and that is the proxy's address
        proxy_address = services["proxy"]["networks"]["default"]["ipv4_address"]
        assert env["BREAKWATER_TRUSTED_PROXIES"] == proxy_address
    for name in ("seed", "coordinator-a", "coordinator-b"):
        assert services[name]["environment"]["BREAKWATER_DB"] == compose["x-database"]
    assert services["seed"]["command"] == seed_command("python", compose["x-database"])
    assert compose["x-database"].startswith("postgresql://")
    haproxy_cfg = "/usr/local/etc/haproxy/haproxy.cfg"
    assert services["proxy"]["command"] == haproxy_command("haproxy", haproxy_cfg)
    shipped = (ROOT / "deploy" / "cluster" / "haproxy.cfg").read_text(encoding="utf-8")
    expected = haproxy_config("0.0.0.0:8080", [("a", "coordinator-a:8080"),
                                               ("b", "coordinator-b:8080")])
    assert shipped.split("\n", 1)[1] == expected
    assert COORDINATOR_CONFIG == ROOT / "deploy" / "cluster" / "coordinator.toml"
